// The worker's seccomp-bpf policy (through libseccomp).
//
// An allowlist suited to ordinary C libraries: memory, threads, files (the
// mount view and Landlock decide which), clocks, signals, polling, and
// sending/receiving on descriptors the worker already has. Anything else
// traps (SECCOMP_RET_TRAP): the worker's SIGSYS handler reports the system
// call to the daemon and the worker dies, which the daemon answers with
// SANDBOX_VIOLATION naming the call. Creating processes (fork, vfork, clone
// without CLONE_THREAD), execve, ptrace, mount, and socket creation (unless
// `allow_network`) are not on the list. clone3 fails with ENOSYS so that
// glibc falls back to clone, whose flags a filter can inspect.
// Applies to every thread of the process (TSYNC). Not reversible.
#ifndef FFID_SERVER_WORKER_SECCOMP_POLICY_H_
#define FFID_SERVER_WORKER_SECCOMP_POLICY_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace ffid::worker {

// The system calls allowed without conditions (names as libseccomp knows
// them; names unknown on this architecture are skipped).
const std::vector<std::string>& SeccompAllowlist();

// The extra calls `allow_network` permits.
const std::vector<std::string>& SeccompNetworkCalls();

// Installs the policy on the calling process: a program compiled ahead by
// PrepareSeccompPolicy() for this process's pid, or one built now.
[[nodiscard]] absl::Status InstallSeccompPolicy(bool allow_network);

// Compiles the policy for a future process whose pid (as it will see it)
// is `self_pid` and keeps the BPF program, so that InstallSeccompPolicy()
// in a forked child only loads it (building with libseccomp takes about a
// millisecond). The zygote does this for PID-namespaced workers (pid 1)
// before it forks. Not thread-safe: call before forking, single-threaded.
[[nodiscard]] absl::Status PrepareSeccompPolicy(bool allow_network,
                                                pid_t self_pid);

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_SECCOMP_POLICY_H_
