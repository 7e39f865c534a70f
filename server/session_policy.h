// A session's worker policy: the limits, sandbox and restart policy a
// CreateSession asks for, checked against the server's maxima and filled
// in with its defaults, plus the WorkerPolicy the worker is started with.
//
// Values; the functions are pure and thread-safe.
#ifndef FFID_SERVER_SESSION_POLICY_H_
#define FFID_SERVER_SESSION_POLICY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ffid/v1/ffid.pb.h"
#include "server/worker/protocol.pb.h"

namespace ffid::server {

// Server-wide settings (from flags).
struct PolicyOptions {
  // The most a session may ask for; each 0 field means "no maximum". A
  // session that asks for nothing gets these.
  v1::ResourceLimits max_limits;
  // Whether a session may ask for network access.
  bool network_allowed = false;
  // Whether to sandbox workers at all (namespaces, seccomp, Landlock).
  bool sandbox = true;
  // What the kernel supports (ProbeSandbox()).
  v1::SandboxStatus available;
  // The library allowlist globs; the directories they name become the
  // worker's read-only view.
  std::vector<std::string> allow_library;
};

struct SessionPolicy {
  v1::ResourceLimits limits;
  v1::SandboxPolicy sandbox;
  v1::RestartPolicy restart = v1::RESTART_POLICY_NEVER;
  // The layers the worker runs under.
  v1::SandboxStatus status;
  // What the worker is started with.
  worker::WorkerPolicy worker;
  // limits.max_call_duration; InfiniteDuration() when unset.
  absl::Duration max_call_duration = absl::InfiniteDuration();
  // The principal that created the session (server/access.h); only it may
  // use the session and its handles. Empty when access control is off.
  std::string owner;
};

// RESOURCE_LIMIT naming the field when a limit is above the maximum;
// SANDBOX_VIOLATION when network access is asked for and not allowed;
// INVALID_ARGUMENT + INVALID_REQUEST for malformed values.
absl::StatusOr<SessionPolicy> ResolveSessionPolicy(
    const PolicyOptions& options, const v1::CreateSessionRequest& request);

// The default limits (the maxima) as the session view shows them.
v1::ResourceLimits DefaultLimits(const PolicyOptions& options);

// The read-only view for `allow_library`: for each glob the directory
// before its first wildcard (the file itself for a plain path), plus the
// system library directories and /etc/ld.so.cache that dependencies are
// loaded from. Only paths that exist.
std::vector<std::string> ReadOnlyView(
    const std::vector<std::string>& allow_library);

}  // namespace ffid::server

#endif  // FFID_SERVER_SESSION_POLICY_H_
