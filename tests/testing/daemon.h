// A real `ffid` daemon for tests: started as a child process on a fresh
// temporary unix socket, stopped with SIGTERM.
//
// Daemon::Start() spawns build/<preset>/bin/ffid with --listen on a socket in
// a new temporary directory and --allow-library for the fixture library's
// directory, `allowed_dir()` (for tests that plant files) and the system
// library directories, and returns once the daemon has printed its
// "ffid: listening on" line (or its --log-format=json form) and the socket
// exists (or fails, with the
// daemon's output, after a bounded wait). Everything the daemon writes to
// stderr is kept (Log()) and echoed to the test's stderr.
//
// The destructor stops the daemon (SIGTERM, then SIGKILL after a grace
// period) and removes the temporary directory. A Daemon is used from one
// test thread; Log() may be called from any thread.
#ifndef FFID_TESTS_TESTING_DAEMON_H_
#define FFID_TESTS_TESTING_DAEMON_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/testing/subprocess.h"

namespace ffid::testing {

// Paths of the built artifacts, fixed at build time.
std::string FfidPath();
std::string WorkerPath();
std::string FfictlPath();
// libffid_fixture.so and the directory holding it.
std::string FixturePath();
std::string FixtureDir();
// libffid_callbacks_fixture.so (in FixtureDir() too).
std::string CallbacksFixturePath();

struct DaemonOptions {
  // Extra --allow-library globs, besides the fixture directory, the
  // daemon's allowed_dir() and the system library directories.
  std::vector<std::string> allow_library;
  // Extra command-line flags.
  std::vector<std::string> extra_flags;
  // A command that runs the daemon: its arguments come first, then the
  // daemon's command line ({"unshare", "--user", ..., "--"}). It must end
  // in exec'ing the daemon, so that pid() is the daemon's.
  std::vector<std::string> command_prefix;
  // The --listen address; empty means unix:<temp dir>/ffid.sock.
  std::string listen;
  // Start without --listen, so the daemon picks its default address (with
  // `environment` setting XDG_RUNTIME_DIR, say); `default_address` is then
  // the address the test expects it to use.
  bool omit_listen = false;
  std::string default_address;
  // Changes to the daemon's environment.
  EnvironmentChanges environment;
  // How long to wait for the daemon to start listening (sanitized builds
  // start slowly).
  absl::Duration start_timeout = absl::Seconds(30);
};

class Daemon {
 public:
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      DaemonOptions options = {});

  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // "unix:/tmp/ffid-test-XXXXXX/ffid.sock" (or options.listen).
  const std::string& address() const { return address_; }
  // The socket's path, for unix addresses.
  const std::string& socket_path() const { return socket_path_; }
  // The temporary directory, removed by the destructor.
  const std::string& temp_dir() const { return temp_dir_; }
  // A directory (inside temp_dir) whose files the daemon may load.
  std::string allowed_dir() const { return temp_dir_ + "/allowed"; }
  // The daemon's process id; 0 once stopped.
  pid_t pid() const { return pid_; }

  // Whether the daemon process is still running (not exited, not a zombie
  // we have reaped).
  bool IsRunning();

  // Sends SIGTERM and waits up to `grace` for the daemon to exit, then
  // SIGKILLs it. OK only if it exited by itself with status 0.
  [[nodiscard]] absl::Status Stop(absl::Duration grace = absl::Seconds(15));

  // Stops (if running) and starts again on the same address.
  [[nodiscard]] absl::Status Restart();

  // Everything the daemon wrote to stderr so far.
  std::string Log() const;

  // The address of the daemon's "listening on" line (text log format): for
  // a --listen host:0, the port it picked. Empty before the line.
  std::string ReportedAddress() const;

 private:
  Daemon() = default;
  [[nodiscard]] absl::Status Spawn();
  void ReadLog(int fd);
  void StopReader();

  DaemonOptions options_;
  std::string temp_dir_;
  std::string address_;
  std::string socket_path_;
  pid_t pid_ = 0;
  int exit_status_ = 0;

  std::thread reader_;
  mutable absl::Mutex mu_;
  std::string log_ ABSL_GUARDED_BY(mu_);
  bool log_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_reader_ ABSL_GUARDED_BY(mu_) = false;
};

// Waits until process `pid` no longer exists (kill(pid, 0) fails with
// ESRCH), up to `timeout`. For processes that are not our children.
bool WaitForProcessGone(pid_t pid, absl::Duration timeout);

}  // namespace ffid::testing

#endif  // FFID_TESTS_TESTING_DAEMON_H_
