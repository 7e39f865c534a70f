// WorkerProcess: one running ffid-worker and the daemon's end of its channel.
//
// Start() spawns the worker with one end of a socketpair; Execute() sends a
// WorkerRequest and blocks until the matching WorkerResponse, the deadline,
// or the worker's death. Whoever waits reads the channel: the thread of an
// Execute() reads the answers itself (one reader at a time; other waiters
// wait for it to hand over), so a call costs the daemon no extra thread
// wake-up. A watcher thread reads only for requests nobody waits on
// (ExecuteAsync) and otherwise sleeps until the channel hangs up. When the
// channel reaches EOF, the watcher reaps the worker, builds a CrashReport
// and fails every request in flight with UNAVAILABLE + WORKER_CRASHED
// ("worker 1234 was killed by SIGSEGV (Segmentation fault) while calling
// 'crash_null'"). From then on Execute() returns FAILED_PRECONDITION +
// WORKER_CRASHED, "the session's worker died earlier: ...".
//
// A call that outlives its deadline, or whose caller gives up, kills the
// worker: native code cannot be interrupted safely, and the worker handles
// requests in order, so nothing else could run in it anyway.
//
// Callbacks: the worker also sends CallbackInvocations (native code called a
// client callback). Whichever thread reads hands each to the invocation
// handler with the Route of the request the calling native thread was
// executing, so the session can deliver it to the client that made that
// request; Post() carries the client's reply back. ExecuteAsync() sends a
// request without blocking a thread (calls pipelined on a Connect stream)
// and reports the answer through a callback.
//
// The zygote reaps the worker and reports its wait status; the daemon
// signals it through a pidfd, so a kill never hits a recycled pid. Each death is also
// logged as one line on stderr. Thread-safe: Execute() may be called from
// many threads at once; Shutdown() from any thread, once or more. The
// destructor calls Shutdown().
#ifndef FFID_SERVER_WORKER_PROCESS_H_
#define FFID_SERVER_WORKER_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ffid/v1/errors.pb.h"
#include "server/worker/channel.h"
#include "server/zygote.h"
#include "server/worker/protocol.pb.h"

namespace ffid::server {

// Where the answer to a request, and the callback invocations it causes, go:
// a Connect stream of the session and the client's tag on it. The zero
// Route is "no stream" (a unary RPC).
struct Route {
  uint64_t stream = 0;
  uint64_t tag = 0;
};

// What a client's cancellation does to a request the worker has.
enum class OnCancel {
  // Kill the worker: the request may be running native code (a call, a
  // library's constructors, a destructor), which cannot be stopped any
  // other way.
  kKillWorker,
  // Stop waiting and return CANCELLED; the worker still carries the
  // request out (it only copies bytes, which ends soon) and its answer is
  // dropped. Later requests queue behind it, so a cancelled write still
  // lands before them.
  kStopWaiting,
};

class WorkerProcess {
 public:
  // Receives the invocations the worker sends, with the route of the
  // request they came from. Runs on whichever thread is reading the
  // channel (an Execute()'s or the watcher): it must not block (queue the
  // invocation) and must not call Execute().
  using InvocationHandler =
      std::function<void(const Route& route, worker::CallbackInvocation)>;
  // Receives the outcome of an ExecuteAsync() request, on the thread that
  // read its answer (an Execute()'s or the watcher) or the watcher when the
  // worker ends; must not block.
  using Completion =
      std::function<void(absl::StatusOr<worker::WorkerResponse>)>;

  // Starts a worker: the zygote of `worker_path` (server/zygote.h, started
  // on first use) forks it with one end of a socketpair on its fd 3 and the
  // write end of a crash-report pipe on fd 4. The worker enters `policy`'s
  // sandbox (server/worker/sandbox.h; the default policy applies none).
  // What its crash handler writes to the pipe lands in the CrashReport and
  // decides whether a death is WORKER_CRASHED, SANDBOX_VIOLATION or
  // RESOURCE_LIMIT (server/crash_report.h).
  // UNAVAILABLE + WORKER_START_FAILED naming the path if it cannot run.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(
      const std::string& worker_path, const std::string& session_tag,
      const worker::WorkerPolicy& policy = worker::WorkerPolicy());

  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // Sends `request` (its id is assigned here) and waits for the response.
  // `description` says what the request does ("calling 'cos'") for crash
  // and deadline messages; `function` is the symbol being called, if any,
  // for the CrashReport. `is_cancelled`, if given, is polled while waiting;
  // when it returns true CANCELLED is returned, after killing the worker or
  // not as `on_cancel` says.
  // Returns the response only if its status is OK; otherwise the worker's
  // error (reason and payloads preserved). `pass_fd`, if >= 0, travels with
  // the request (SCM_RIGHTS; the caller keeps its descriptor).
  absl::StatusOr<worker::WorkerResponse> Execute(
      worker::WorkerRequest request, absl::Time deadline,
      std::string description, std::string function = "",
      const std::function<bool()>& is_cancelled = nullptr,
      const Route& route = {}, int pass_fd = -1,
      OnCancel on_cancel = OnCancel::kKillWorker);

  // Sends `request` and returns at once; `done` gets the response (or the
  // error, as Execute() would return it) exactly once. No deadline: the
  // request ends with its answer or with the worker.
  void ExecuteAsync(worker::WorkerRequest request, std::string description,
                    std::string function, const Route& route,
                    Completion done);

  // Sends a message that is not answered (a callback reply). Errors are
  // those of the channel; a dead worker is not an error here (its death is
  // reported to every request in flight).
  void Post(const worker::WorkerRequest& message);

  // Installs the invocation handler; set it before requests that may call
  // callbacks. Without one, every invocation is answered with an error.
  void SetInvocationHandler(InvocationHandler handler);

  // Installs `on_death`, called once when the worker dies on its own or is
  // killed for a deadline, a cancelled call or a broken channel (never for
  // Shutdown()), after every request in flight has been failed. Runs on
  // the watcher thread: it must not block or call Execute().
  void SetDeathHandler(std::function<void()> on_death);

  // Why a worker is being stopped, for the errors of requests in flight.
  enum class StopCause {
    // CANCELLED + SESSION_NOT_FOUND "the session was deleted while ...".
    kSessionDeleted,
    // UNAVAILABLE + SESSION_NOT_FOUND "ffid is shutting down: ...".
    kServerShutdown,
  };

  // Stops the worker: SIGKILLs it, closes the channel, reaps it, joins the
  // watcher. Requests in flight fail as `cause` says; so do later ones (with
  // FAILED_PRECONDITION). Idempotent; the first cause wins.
  void Shutdown(StopCause cause = StopCause::kSessionDeleted);

  // Copies `length` bytes between `local` (in this process) and `remote`
  // (an address in the worker) with process_vm_readv (`write` false: from
  // the worker) or process_vm_writev, without the worker's help: how the
  // daemon serves big untyped Read/Write of heap memory. Checks through the
  // pidfd before each piece that the pid still names this worker. Returns
  // false, having copied nothing, when the kernel does not let the daemon
  // reach the worker's memory (EPERM, ENOSYS; the caller then goes through
  // the worker). Errors: BAD_ADDRESS when part of the range is not mapped
  // (a write may have written the part before it), WORKER_CRASHED when the
  // worker died. Thread-safe.
  absl::StatusOr<bool> CopyMemory(bool write, char* local, uint64_t remote,
                                  uint64_t length) const;

  pid_t pid() const { return pid_; }
  // The tag embedded in the handles this worker issues.
  const std::string& session_tag() const { return session_tag_; }
  // How the worker died, once it has (not after a plain Shutdown()).
  std::optional<v1::CrashReport> crash_report() const;
  // Whether the worker can still take requests.
  bool alive() const;
  // Whether a request sent to it is still unanswered (a call from any RPC
  // or stream, a callback's native thread waiting included).
  bool busy() const;
  // Whether it is dead or being killed (a deadline, a cancelled call), even
  // if not reaped yet: it will answer nothing more.
  bool doomed() const;
  // What a request sent now would fail with once the worker is dead: its
  // crash (WORKER_CRASHED, with the crash report), the session's deletion
  // or the daemon's shutdown (SESSION_NOT_FOUND). OK until then.
  absl::Status dead_status() const;

 private:
  struct Pending {
    std::string description;
    std::string function;
    Route route;
    bool done = false;
    // For Execute: its request is sent and its thread waits in the read
    // loop, so it will read when nobody else does. Until then (a big
    // request still being written) it cannot be counted on to read.
    bool waiting = false;
    absl::StatusOr<worker::WorkerResponse> result;
    // For ExecuteAsync: called with the result instead of setting it; the
    // Pending is then heap-allocated and deleted after the call.
    Completion completion;
  };
  // Completions to run once mu_ is released.
  using Deferred = std::vector<
      std::pair<Pending*, absl::StatusOr<worker::WorkerResponse>>>;

  // Finishes `pending` with `result`: wakes its Execute(), or queues its
  // completion in `deferred`.
  void CompleteLocked(Pending* pending,
                      absl::StatusOr<worker::WorkerResponse> result,
                      Deferred& deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RunDeferred(Deferred& deferred);
  void OnInvocation(worker::CallbackInvocation invocation)
      ABSL_LOCKS_EXCLUDED(mu_);

  WorkerProcess(pid_t pid, int pidfd, std::shared_ptr<Zygote> zygote,
                int channel_fd, std::string session_tag, int crash_fd,
                int wake_fd, worker::WorkerPolicy policy);

  // The watcher thread: sleeps until the channel hangs up or it is asked to
  // read (requests nobody waits on), reads while needed, and handles the
  // channel's end.
  void WatchLoop();
  // Receives one frame (the caller holds the read role, mu_ not held) and
  // routes it: an invocation to the handler, an answer to its request.
  // DEADLINE_EXCEEDED if none came by `deadline`; any other error is the
  // channel's end.
  absl::Status ReadOne(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // Gives the read role up: wakes the Execute()s waiting to take it, and
  // the watcher if requests remain that no waiting Execute() will read.
  void ReleaseReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes the watcher when nobody reads and requests remain that no
  // Execute() waiting in its read loop will read.
  void WakeWatcherIfUnreadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes the watcher (once until it runs).
  void WakeWatcherLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records how the channel ended, as the reader saw it. The reader keeps
  // the role, so nobody reads again; the watcher handles the death.
  void EndLocked(absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Kills the worker (if not reaped yet) and records why, for the crash
  // message. The first reason wins.
  void KillLocked(std::string reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After KillLocked: waits (up to kExitGrace) until the watcher has
  // recorded the death, so that whoever is told the worker was killed finds
  // the session CRASHED, with its report, when it looks next.
  void AwaitDeathLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Handles the end of the channel: waits for and reaps the worker, then
  // fails everything pending.
  void OnChannelClosed(const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);

  const pid_t pid_;
  // A pidfd of the worker (owned; -1 if the kernel has none), and the
  // zygote that forked it and reports its end.
  const int pidfd_;
  const std::shared_ptr<Zygote> zygote_;
  const std::string session_tag_;
  worker::FrameChannel channel_;
  // The read end of the crash-report pipe (owned), and the policy the
  // worker runs under (for the limits named in reports).
  const int crash_fd_;
  const worker::WorkerPolicy policy_;
  // An eventfd (owned) that wakes the watcher.
  const int wake_fd_;
  std::thread watcher_;

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Requests sent and not yet answered, by id; each points into the stack
  // of the Execute() waiting for it.
  std::map<uint64_t, Pending*> pending_ ABSL_GUARDED_BY(mu_);
  absl::CondVar changed_;
  // Someone (an Execute() or the watcher) is reading the channel; nobody
  // else may.
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  // The watcher was woken and has not run yet.
  bool watcher_woken_ ABSL_GUARDED_BY(mu_) = false;
  // How the channel ended, once a reader saw it end.
  std::optional<absl::Status> channel_end_ ABSL_GUARDED_BY(mu_);
  // Set once the worker has been waited for; kill() is illegal after.
  bool reaped_ ABSL_GUARDED_BY(mu_) = false;
  // Set by Shutdown(): the death that follows is not a crash.
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  StopCause stop_cause_ ABSL_GUARDED_BY(mu_) = StopCause::kSessionDeleted;
  // Why the daemon killed the worker, if it did.
  std::string kill_reason_ ABSL_GUARDED_BY(mu_);
  // Set when the worker died on its own or was killed for a deadline.
  std::optional<v1::CrashReport> crash_ ABSL_GUARDED_BY(mu_);
  // The error every later Execute() returns; OK while alive.
  absl::Status dead_status_ ABSL_GUARDED_BY(mu_);

  InvocationHandler invocation_handler_ ABSL_GUARDED_BY(mu_);
  std::function<void()> death_handler_ ABSL_GUARDED_BY(mu_);

  absl::Mutex shutdown_mu_;
  bool joined_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// "SIGSEGV" for 11, "signal 99" for unknown numbers.
std::string SignalName(int signal);

}  // namespace ffid::server

#endif  // FFID_SERVER_WORKER_PROCESS_H_
