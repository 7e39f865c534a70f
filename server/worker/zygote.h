// The zygote: a pre-started `ffid-worker --zygote` that forks workers.
//
// The daemon starts one zygote (server/zygote.h) and asks it for each new
// worker over a SOCK_SEQPACKET socketpair: one ZygoteRequest per message
// (server/worker/protocol.proto), the new worker's descriptors attached as
// SCM_RIGHTS. The zygote has already loaded and relocated every library the
// worker links and warmed what a worker would otherwise set up on its first
// request, so a new worker costs a fork instead of an exec, dynamic linking
// and start-up.
//
// For each request RunZygote() clones a child directly into the
// namespaces its policy asks for (clone(CLONE_NEWUSER | CLONE_NEWPID |
// ...)), so the worker is PID 1 of its own PID namespace *and* the
// zygote's child: the zygote reaps it and reports its real wait status,
// with no waiter process in between. (ThreadSanitizer builds too: a
// child of TSan's fork interceptor gets a TSan background thread and could
// not unshare a user namespace.) The child
// moves its descriptors to fds 3, 4, ... and runs `run_worker`, which never
// returns to the loop.
//
// Spares: after serving a request, the zygote clones one spare worker for
// that request's policy (at most `max_spares` policies, kMaxSpares unless
// the daemon says otherwise; the least recently used dropped; 0: none). A spare enters its namespaces and sandbox at once, then
// waits on a socket of its own for its session: the next request with the
// same policy hands it the descriptors and the session tag (SCM_RIGHTS)
// instead of cloning, so starting or restarting a worker costs a message
// instead of the clone into new namespaces and the sandbox set-up. A spare
// that dies unused is reaped silently. `ps` shows spares with "--spare".
//
// The zygote answers each request with ZygoteEvent.spawned (the pid, and a
// pidfd of the worker as SCM_RIGHTS) and reports every child it reaps with
// ZygoteEvent.exited. It exits when the daemon closes the socket; its
// workers then die by PR_SET_PDEATHSIG (armed in each worker, pointing at
// the zygote, which itself dies with the daemon).
//
// Single-threaded by design: everything here runs on the zygote's only
// thread.
#ifndef FFID_SERVER_WORKER_ZYGOTE_H_
#define FFID_SERVER_WORKER_ZYGOTE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/message_lite.h"
#include "server/worker/protocol.pb.h"

namespace ffid::worker {

// What a worker cloned by the zygote starts with.
struct ZygoteChild {
  std::string session_tag;
  WorkerPolicy policy;
  // Its descriptors are 3 .. 3 + fd_count - 1: 3 the channel, 4 the
  // crash-report pipe, then whatever else the daemon sent.
  int fd_count = 0;
  // The CLONE_NEW* flags the clone already applied (EnterSandbox() must
  // not unshare them again).
  int namespaces = 0;
  // A pidfd of the zygote (or -1): after arming PR_SET_PDEATHSIG the
  // worker checks through it that the zygote is still there.
  int zygote_pidfd = -1;
  // For a spare (>= 0): the socket its session arrives on
  // (AwaitAssignment()); session_tag and fd_count are set then.
  int assignment_fd = -1;
};

// In a spare, after it entered its sandbox: waits for the request it is to
// serve, moves the descriptors that came with it onto 3, 4, ... (closing
// the socket and anything else) and fills in `child`. False if the zygote
// went away first (the spare then just exits).
[[nodiscard]] bool AwaitAssignment(ZygoteChild& child);

// How many policies the zygote keeps a spare worker for, by default.
inline constexpr size_t kMaxSpares = 4;

// Serves requests on `control_fd` until the daemon closes it, keeping
// spares for up to `max_spares` policies; returns the zygote's exit status.
// `run_worker` runs in each child (and spare), which exits with its result.
int RunZygote(int control_fd, size_t max_spares,
              const std::function<int(const ZygoteChild&)>& run_worker);

// The longest message either side sends.
inline constexpr size_t kMaxZygoteMessageBytes = 256 * 1024;
// The most descriptors one message carries.
inline constexpr int kMaxZygoteFds = 8;

// Sends `message` as one SOCK_SEQPACKET message on `fd` with `fds`
// attached (they stay open here). UNAVAILABLE if the peer has gone.
[[nodiscard]] absl::Status SendZygoteMessage(
    int fd, const google::protobuf::MessageLite& message,
    const std::vector<int>& fds = {});

// Receives one message and the descriptors attached to it (the caller owns
// them, close-on-exec). UNAVAILABLE on EOF; DATA_LOSS on a message that
// does not parse (its descriptors are closed).
[[nodiscard]] absl::Status ReceiveZygoteMessage(
    int fd, google::protobuf::MessageLite* message, std::vector<int>* fds);

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_ZYGOTE_H_
