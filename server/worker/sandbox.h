// Puts the worker process into its sandbox, as a WorkerPolicy asks.
//
// EnterSandbox() applies, in this order: namespaces (a user namespace owning
// new network, mount, IPC, UTS and PID namespaces), the mount view (a
// read-only tmpfs root holding read-only binds of `read_only_paths`, /dev's
// null, zero, full, random and urandom, a private /tmp and, with a PID
// namespace, a fresh /proc; then pivot_root), rlimits, Landlock (file
// access limited to the same paths), and last the seccomp allowlist
// (seccomp_policy.h).
//
// A PID namespace only applies to children, so with one EnterSandbox()
// forks: the child becomes PID 1 of the new namespace and returns to serve;
// the parent closes every descriptor and stays behind as a waiter that dies
// the way the child died (same signal, same exit status), so the daemon,
// whose child the waiter is, sees the worker's real fate in waitpid(). The
// waiter never returns.
//
// A worker the zygote cloned straight into its namespaces passes them as
// `entered` (CLONE_NEW* flags): those are not unshared again, and with
// CLONE_NEWPID the worker is PID 1 already, so there is no fork and no
// waiter (the zygote, its parent, sees how it died). The uid/gid maps are
// still written from here, with the ids outside taken from the policy's
// outer_uid/outer_gid.
//
// Returns an error naming the step that failed; the worker then exits and
// the daemon reports WORKER_START_FAILED. Call once, single-threaded.
#ifndef FFID_SERVER_WORKER_SANDBOX_H_
#define FFID_SERVER_WORKER_SANDBOX_H_

#include "absl/status/status.h"
#include "server/worker/protocol.pb.h"

namespace ffid::worker {

[[nodiscard]] absl::Status EnterSandbox(const WorkerPolicy& policy,
                                        int entered = 0);

// Parses --policy's value (hex of a serialized WorkerPolicy).
[[nodiscard]] bool DecodePolicy(const std::string& hex, WorkerPolicy* policy);

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_SANDBOX_H_
