// Running a program to completion and collecting its output, for tests.
//
// RunProcess spawns a child with posix_spawn (safe in a process that runs
// gRPC threads), captures stdout and stderr, and waits for it with a bound.
// Thread-safe: each call owns its pipes and child.
#ifndef FFID_TESTS_TESTING_SUBPROCESS_H_
#define FFID_TESTS_TESTING_SUBPROCESS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ffid::testing {

struct ProcessResult {
  // The exit status, or -1 if a signal ended the process.
  int exit_code = -1;
  // The signal that ended the process, or 0.
  int signal = 0;
  std::string out;
  std::string err;
};

// Changes to the inherited environment: a value sets the variable, nullopt
// removes it.
using EnvironmentChanges = std::map<std::string, std::optional<std::string>>;

// The current environment with `changes` applied, as NAME=VALUE strings.
std::vector<std::string> MakeEnvironment(const EnvironmentChanges& changes);

// Runs argv[0] (a path) with `argv`, waiting at most `timeout` (then killing
// it with SIGKILL and failing with DEADLINE_EXCEEDED).
absl::StatusOr<ProcessResult> RunProcess(
    const std::vector<std::string>& argv,
    const EnvironmentChanges& environment = {},
    absl::Duration timeout = absl::Seconds(60));

// A fresh directory under /tmp (mode 0700) named after `prefix`.
absl::StatusOr<std::string> MakeTempDir(const std::string& prefix);
// Removes `path` and everything below it; errors are ignored.
void RemoveTree(const std::string& path);

}  // namespace ffid::testing

#endif  // FFID_TESTS_TESTING_SUBPROCESS_H_
