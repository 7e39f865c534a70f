// Finds out, at daemon start-up, which sandbox layers this kernel and this
// user allow: user, network, mount, PID, IPC and UTS namespaces, seccomp
// (with SECCOMP_RET_TRAP), Landlock (its ABI version) and rlimits. Each
// namespace is tried for real in a short-lived child process, the way the
// worker will use it (inside a new user namespace when one is available,
// else directly, which needs root).
//
// ProbeSandbox() forks; the children only make system calls and _exit, so
// it is safe in a threaded process, but it is meant to run once before the
// server starts. The result is a value the caller owns; the daemon logs it,
// reports it in GetServerInfo and asks workers only for what works.
#ifndef FFID_SERVER_SANDBOX_PROBE_H_
#define FFID_SERVER_SANDBOX_PROBE_H_

#include <string>
#include <vector>

#include "ffid/v1/ffid.pb.h"

namespace ffid::server {

v1::SandboxStatus ProbeSandbox();

// One line per layer: "sandbox: user_namespace on", "sandbox: landlock off
// (...)"; for the daemon's start-up log.
std::vector<std::string> DescribeSandbox(const v1::SandboxStatus& status);

}  // namespace ffid::server

#endif  // FFID_SERVER_SANDBOX_PROBE_H_
