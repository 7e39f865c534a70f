// WorkerProcess: one running ffid-worker and the daemon's end of its channel.
//
// Start() spawns the worker with one end of a socketpair; Execute() sends a
// WorkerRequest and blocks until the matching WorkerResponse, the deadline,
// or the worker's death. A reader thread owns the receiving side: it
// completes pending requests by id and, when the channel reaches EOF, reaps
// the worker, builds a CrashReport and fails every request in flight with
// UNAVAILABLE + WORKER_CRASHED ("worker 1234 was killed by SIGSEGV
// (Segmentation fault) while calling 'crash_null'"). From then on Execute()
// returns FAILED_PRECONDITION + WORKER_CRASHED, "the session's worker died
// earlier: ...".
//
// A call that outlives its deadline, or whose caller gives up, kills the
// worker: native code cannot be interrupted safely, and the worker handles
// requests in order, so nothing else could run in it anyway.
//
// Only the reader thread reaps the worker (waitid(WNOWAIT), then waitpid
// under the mutex), so kill() never hits a recycled pid. Each death is also
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

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ffid/v1/errors.pb.h"
#include "server/worker/channel.h"
#include "server/worker/protocol.pb.h"

namespace ffid::server {

class WorkerProcess {
 public:
  // Spawns `worker_path --channel-fd=3 --session-tag=TAG --parent-pid=PID`.
  // The worker gets
  // the daemon's environment minus LD_LIBRARY_PATH and LD_PRELOAD (library
  // resolution is the daemon's business), default signal dispositions, an
  // empty signal mask and its own process group (so a Ctrl-C meant for the
  // daemon does not kill workers before the daemon can stop them).
  // The spawn happens on one long-lived internal thread, because the worker
  // arms PR_SET_PDEATHSIG, which fires when the spawning *thread* exits.
  // UNAVAILABLE + WORKER_START_FAILED naming the path if it cannot run.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(
      const std::string& worker_path, const std::string& session_tag);

  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // Sends `request` (its id is assigned here) and waits for the response.
  // `description` says what the request does ("calling 'cos'") for crash
  // and deadline messages; `function` is the symbol being called, if any,
  // for the CrashReport. `is_cancelled`, if given, is polled while waiting;
  // when it returns true the worker is killed and CANCELLED returned.
  // Returns the response only if its status is OK; otherwise the worker's
  // error (reason and payloads preserved).
  absl::StatusOr<worker::WorkerResponse> Execute(
      worker::WorkerRequest request, absl::Time deadline,
      std::string description, std::string function = "",
      const std::function<bool()>& is_cancelled = nullptr);

  // Why a worker is being stopped, for the errors of requests in flight.
  enum class StopCause {
    // CANCELLED + SESSION_NOT_FOUND "the session was deleted while ...".
    kSessionDeleted,
    // UNAVAILABLE + SESSION_NOT_FOUND "ffid is shutting down: ...".
    kServerShutdown,
  };

  // Stops the worker: SIGKILLs it, closes the channel, reaps it, joins the
  // reader. Requests in flight fail as `cause` says; so do later ones (with
  // FAILED_PRECONDITION). Idempotent; the first cause wins.
  void Shutdown(StopCause cause = StopCause::kSessionDeleted);

  pid_t pid() const { return pid_; }
  // How the worker died, once it has (not after a plain Shutdown()).
  std::optional<v1::CrashReport> crash_report() const;
  // Whether the worker can still take requests.
  bool alive() const;

 private:
  struct Pending {
    std::string description;
    std::string function;
    bool done = false;
    absl::StatusOr<worker::WorkerResponse> result;
  };

  WorkerProcess(pid_t pid, int channel_fd, std::string session_tag);

  void ReaderLoop();
  // Kills the worker (if not reaped yet) and records why, for the crash
  // message. The first reason wins.
  void KillLocked(std::string reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Handles the end of the channel: waits for and reaps the worker, then
  // fails everything pending.
  void OnChannelClosed(const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);

  const pid_t pid_;
  const std::string session_tag_;
  worker::FrameChannel channel_;
  std::thread reader_;

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Requests sent and not yet answered, by id; each points into the stack
  // of the Execute() waiting for it.
  std::map<uint64_t, Pending*> pending_ ABSL_GUARDED_BY(mu_);
  absl::CondVar changed_;
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

  absl::Mutex shutdown_mu_;
  bool joined_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// "SIGSEGV" for 11, "signal 99" for unknown numbers.
std::string SignalName(int signal);

}  // namespace ffid::server

#endif  // FFID_SERVER_WORKER_PROCESS_H_
