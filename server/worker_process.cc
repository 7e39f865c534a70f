#include "server/worker_process.h"

#include <signal.h>
#include <sys/syscall.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <poll.h>
#include <sys/wait.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cerrno>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ffi/errors.h"
#include "server/crash_report.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/zygote.h"

namespace ffid::server {
namespace {

// The most of a crash record the daemon reads.
constexpr size_t kMaxCrashRecordBytes = 64 * 1024;
// How long a worker may keep running after closing its channel before the
// daemon kills it.
constexpr absl::Duration kExitGrace = absl::Seconds(2);
// How often a wait with an is_cancelled callback polls it.
constexpr absl::Duration kCancelPollInterval = absl::Milliseconds(100);

// Reads what the worker's crash handler wrote, without blocking: a process
// the worker left behind might still hold the pipe open.
std::string ReadCrashRecord(int fd) {
  std::string text;
  char buffer[4096];
  while (text.size() < kMaxCrashRecordBytes) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  return text;
}

std::string SignalDescription(int signal) {
  const char* description = sigdescr_np(signal);
  return description == nullptr ? "" : description;
}

std::string RoundedDuration(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

}  // namespace

std::string SignalName(int signal) {
  const char* abbreviation = sigabbrev_np(signal);
  if (abbreviation == nullptr) return absl::StrCat("signal ", signal);
  return absl::StrCat("SIG", abbreviation);
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(
    const std::string& worker_path, const std::string& session_tag,
    const worker::WorkerPolicy& policy) {
  auto start_failed = [&worker_path](absl::string_view why) {
    return MakeError(
        absl::StatusCode::kUnavailable, v1::ERROR_REASON_WORKER_START_FAILED,
        absl::StrCat("cannot start worker '", worker_path, "': ", why,
                     "; check ffid's --worker-path"));
  };
  int fds[2];
  // CLOEXEC on both ends: a worker spawned concurrently for another session
  // must not inherit this pair, or this worker's death would go unseen.
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return start_failed(absl::StrCat("socketpair: ", strerror(errno)));
  }
  const int parent_fd = fds[0];
  const int child_fd = fds[1];
  int crash_pipe[2];
  if (pipe2(crash_pipe, O_CLOEXEC) != 0) {
    close(parent_fd);
    close(child_fd);
    return start_failed(absl::StrCat("pipe2: ", strerror(errno)));
  }
  // The daemon's end never blocks (see ReadCrashRecord).
  fcntl(crash_pipe[0], F_SETFL, O_NONBLOCK);
  const int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) {
    const int error = errno;
    close(parent_fd);
    close(child_fd);
    close(crash_pipe[0]);
    close(crash_pipe[1]);
    return start_failed(absl::StrCat("eventfd: ", strerror(error)));
  }

  // The zygote places them on the worker's fds 3 (channel) and 4 (crash
  // pipe).
  absl::StatusOr<std::shared_ptr<Zygote>> zygote = Zygote::Get(worker_path);
  absl::StatusOr<Zygote::Child> child =
      zygote.ok() ? (*zygote)->Spawn(session_tag, policy,
                                     {child_fd, crash_pipe[1]})
                  : absl::StatusOr<Zygote::Child>(zygote.status());
  close(child_fd);
  close(crash_pipe[1]);
  if (!child.ok()) {
    close(parent_fd);
    close(crash_pipe[0]);
    close(wake_fd);
    return child.status();
  }
  std::unique_ptr<WorkerProcess> process(new WorkerProcess(
      child->pid, child->pidfd, std::move(*zygote), parent_fd, session_tag,
      crash_pipe[0], wake_fd, policy));
  process->watcher_ = std::thread(&WorkerProcess::WatchLoop, process.get());
  Metrics::Get().WorkerStarted();
  return process;
}

WorkerProcess::WorkerProcess(pid_t pid, int pidfd,
                             std::shared_ptr<Zygote> zygote, int channel_fd,
                             std::string session_tag, int crash_fd,
                             int wake_fd, worker::WorkerPolicy policy)
    : pid_(pid),
      pidfd_(pidfd),
      zygote_(std::move(zygote)),
      session_tag_(std::move(session_tag)),
      channel_(channel_fd),
      crash_fd_(crash_fd),
      policy_(std::move(policy)),
      wake_fd_(wake_fd) {}

WorkerProcess::~WorkerProcess() {
  Shutdown();
  close(crash_fd_);
  close(wake_fd_);
  if (pidfd_ >= 0) close(pidfd_);
}

absl::StatusOr<worker::WorkerResponse> WorkerProcess::Execute(
    worker::WorkerRequest request, absl::Time deadline,
    std::string description, std::string function,
    const std::function<bool()>& is_cancelled, const Route& route,
    int pass_fd, OnCancel on_cancel) {
  const absl::Time start = absl::Now();
  Pending pending;
  pending.description = std::move(description);
  pending.function = std::move(function);
  pending.route = route;
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    if (!dead_status_.ok()) return dead_status_;
    if (start >= deadline) {
      // Nothing has reached the worker yet, so nothing needs killing.
      return MakeError(absl::StatusCode::kDeadlineExceeded,
                       v1::ERROR_REASON_DEADLINE_EXCEEDED,
                       absl::StrCat("the deadline for ", pending.description,
                                    " had passed before it was sent"));
    }
    id = next_id_++;
    pending_[id] = &pending;
  }
  request.set_id(id);
  absl::Status sent = pass_fd >= 0 ? channel_.SendWithFd(request, pass_fd)
                                   : channel_.Send(request);

  absl::MutexLock lock(&mu_);
  if (!sent.ok() && !pending.done) {
    if (sent.code() == absl::StatusCode::kResourceExhausted) {
      // Refused before anything was written: the channel is still in sync.
      pending_.erase(id);
      // A reader may have left while this request was counted as one
      // that would read.
      WakeWatcherIfUnreadLocked();
      return sent;
    }
    // The watcher completes `pending` once the worker is gone.
    KillLocked(absl::StrCat("sending ", pending.description,
                            " to it failed: ", sent.message()));
  }
  // This thread reads the answer itself when nobody else is reading: the
  // worker's write then wakes the thread that needs it, not a reader that
  // would have to wake this one in turn (a second wake-up per call, each a
  // cross-core one as often as not).
  bool leading = false;
  pending.waiting = true;
  while (!pending.done) {
    absl::Time wake = deadline;
    if (is_cancelled) wake = std::min(wake, absl::Now() + kCancelPollInterval);
    if (!leading && !reading_ && !channel_end_.has_value()) {
      reading_ = true;
      leading = true;
    }
    if (leading) {
      mu_.Unlock();
      absl::Status read = ReadOne(wake);
      mu_.Lock();
      if (!read.ok() && read.code() != absl::StatusCode::kDeadlineExceeded) {
        // The worker is gone (or must go); the watcher finishes `pending`.
        EndLocked(std::move(read));
        leading = false;
      }
    } else {
      changed_.WaitWithDeadline(&mu_, wake);
    }
    if (pending.done) break;
    if (absl::Now() >= deadline) {
      pending_.erase(id);
      if (leading) ReleaseReadLocked();
      std::string limit = RoundedDuration(deadline - start);
      KillLocked(absl::StrCat(pending.description,
                              " did not finish within its deadline of ",
                              limit));
      AwaitDeathLocked();
      return MakeError(
          absl::StatusCode::kDeadlineExceeded,
          v1::ERROR_REASON_DEADLINE_EXCEEDED,
          absl::StrCat(pending.description,
                       " did not finish within its deadline of ", limit,
                       "; worker ", pid_,
                       " was killed because a native call cannot be "
                       "interrupted safely, so this session can no longer be "
                       "used: create a new one"));
    }
    if (is_cancelled && is_cancelled()) {
      // This thread stops waiting either way; it hands the reading on only
      // once its own entry is replaced or gone, so that entry does not
      // count as a reader still waiting.
      if (on_cancel == OnCancel::kStopWaiting) {
        // The answer comes later, to nobody: whoever reads it (another
        // Execute, or the watcher once this one stops reading) completes
        // this stand-in, which drops it.
        auto* orphan = new Pending();
        orphan->description = pending.description;
        orphan->route = pending.route;
        orphan->completion = [](absl::StatusOr<worker::WorkerResponse>) {};
        pending_[id] = orphan;
        if (leading) ReleaseReadLocked();
        return MakeError(
            absl::StatusCode::kCancelled, v1::ERROR_REASON_INVALID_REQUEST,
            absl::StrCat("the client cancelled ", pending.description,
                         "; the worker finishes it, and the session goes on"));
      }
      pending_.erase(id);
      if (leading) ReleaseReadLocked();
      KillLocked(absl::StrCat("the client cancelled ", pending.description));
      AwaitDeathLocked();
      return MakeError(
          absl::StatusCode::kCancelled, v1::ERROR_REASON_WORKER_CRASHED,
          absl::StrCat("the client cancelled ", pending.description,
                       "; worker ", pid_,
                       " was killed because a native call cannot be "
                       "interrupted safely, so this session can no longer be "
                       "used"));
    }
  }
  if (leading) ReleaseReadLocked();
  return std::move(pending.result);
}

void WorkerProcess::ExecuteAsync(worker::WorkerRequest request,
                                 std::string description,
                                 std::string function, const Route& route,
                                 Completion done) {
  auto* pending = new Pending();
  pending->description = std::move(description);
  pending->function = std::move(function);
  pending->route = route;
  pending->completion = std::move(done);
  uint64_t id = 0;
  absl::Status dead;
  {
    absl::MutexLock lock(&mu_);
    dead = dead_status_;
    if (dead.ok()) {
      id = next_id_++;
      pending_[id] = pending;
    }
  }
  if (!dead.ok()) {
    pending->completion(std::move(dead));
    delete pending;
    return;
  }
  request.set_id(id);
  absl::Status sent = channel_.Send(request);
  if (sent.ok()) {
    // Nobody waits for this answer: unless someone is reading anyway, the
    // watcher must.
    absl::MutexLock lock(&mu_);
    if (!reading_) WakeWatcherLocked();
    return;
  }
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // Already failed with the worker.
    if (sent.code() == absl::StatusCode::kResourceExhausted) {
      // Refused before anything was written: the channel is still in sync.
      pending_.erase(it);
      CompleteLocked(pending, sent, deferred);
    } else {
      // The reader completes it once the worker is gone.
      KillLocked(absl::StrCat("sending ", pending->description,
                              " to it failed: ", sent.message()));
    }
  }
  RunDeferred(deferred);
}

void WorkerProcess::Post(const worker::WorkerRequest& message) {
  absl::Status sent = channel_.Send(message);
  if (!sent.ok() && sent.code() != absl::StatusCode::kUnavailable) {
    absl::MutexLock lock(&mu_);
    KillLocked(absl::StrCat("sending a message to it failed: ",
                            sent.message()));
  }
}

void WorkerProcess::SetInvocationHandler(InvocationHandler handler) {
  absl::MutexLock lock(&mu_);
  invocation_handler_ = std::move(handler);
}

void WorkerProcess::SetDeathHandler(std::function<void()> on_death) {
  absl::MutexLock lock(&mu_);
  death_handler_ = std::move(on_death);
}

void WorkerProcess::CompleteLocked(
    Pending* pending, absl::StatusOr<worker::WorkerResponse> result,
    Deferred& deferred) {
  if (pending->completion) {
    deferred.emplace_back(pending, std::move(result));
    return;
  }
  pending->result = std::move(result);
  pending->done = true;
  changed_.SignalAll();
}

void WorkerProcess::RunDeferred(Deferred& deferred) {
  for (auto& [pending, result] : deferred) {
    pending->completion(std::move(result));
    delete pending;
  }
  deferred.clear();
}

void WorkerProcess::OnInvocation(worker::CallbackInvocation invocation) {
  InvocationHandler handler;
  Route route;
  {
    absl::MutexLock lock(&mu_);
    handler = invocation_handler_;
    auto it = pending_.find(invocation.request_id());
    if (it != pending_.end()) route = it->second->route;
  }
  if (handler) {
    handler(route, std::move(invocation));
    return;
  }
  worker::WorkerRequest reply;
  reply.mutable_callback_reply()->set_invocation(
      invocation.invocation().invocation());
  *reply.mutable_callback_reply()->mutable_status() =
      StatusToProto(MakeError(absl::StatusCode::kUnavailable,
                              v1::ERROR_REASON_CALLBACK_FAILED,
                              "nobody receives callback invocations for this "
                              "worker"));
  Post(reply);
}

void WorkerProcess::KillLocked(std::string reason) {
  if (reaped_) return;
  if (kill_reason_.empty()) kill_reason_ = std::move(reason);
  // The zygote, not this process, reaps the worker, so its pid could be
  // recycled by the time it is signalled: the pidfd says whether it is
  // still the worker. The worker leads its own process group: take
  // anything it spawned too (a group outlives its leader's pid only while
  // a member lives).
  if (pidfd_ < 0) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    return;
  }
  if (syscall(SYS_pidfd_send_signal, pidfd_, 0, nullptr, 0) == 0) {
    kill(-pid_, SIGKILL);
  }
  syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
}

absl::Status WorkerProcess::ReadOne(absl::Time deadline) {
  worker::WorkerResponse response;
  RETURN_IF_ERROR(channel_.ReceiveUntil(&response, deadline));
  if (response.has_invocation()) {
    OnInvocation(std::move(*response.mutable_invocation()));
    return absl::OkStatus();
  }
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(response.id());
    if (it == pending_.end()) {
      // Requests are only abandoned together with the worker, so an
      // unknown id means the worker is confused; it cannot be trusted.
      KillLocked(absl::StrCat("it answered request ", response.id(),
                              ", which was never sent or already "
                              "answered"));
      return absl::OkStatus();
    }
    Pending* pending = it->second;
    pending_.erase(it);
    if (response.status().code() != 0) {
      CompleteLocked(pending, StatusFromProto(response.status()), deferred);
    } else {
      CompleteLocked(pending, std::move(response), deferred);
    }
  }
  RunDeferred(deferred);
  return absl::OkStatus();
}

void WorkerProcess::ReleaseReadLocked() {
  reading_ = false;
  changed_.SignalAll();
  WakeWatcherIfUnreadLocked();
}

void WorkerProcess::WakeWatcherIfUnreadLocked() {
  if (reading_ || pending_.empty()) return;
  // An Execute() waiting in its read loop takes the role over. One still
  // writing its request does not count: the worker may be blocked writing
  // answers nobody reads, and so not reading that request.
  for (const auto& [id, pending] : pending_) {
    if (!pending->completion && pending->waiting) return;
  }
  WakeWatcherLocked();
}

void WorkerProcess::WakeWatcherLocked() {
  if (watcher_woken_) return;
  watcher_woken_ = true;
  const uint64_t one = 1;
  // Cannot fail short of a counter overflow, which one wake per run of the
  // watcher rules out.
  (void)!write(wake_fd_, &one, sizeof(one));
}

void WorkerProcess::EndLocked(absl::Status why) {
  if (why.code() != absl::StatusCode::kUnavailable) {
    // A truncated or unparsable frame: the stream is out of step.
    KillLocked(absl::StrCat("its channel failed: ", why.message()));
  }
  if (!channel_end_.has_value()) channel_end_ = std::move(why);
  WakeWatcherLocked();
}

void WorkerProcess::WatchLoop() {
  for (;;) {
    // POLLRDHUP alone: the worker's answers do not wake this thread (the
    // kernel wakes pollers by event), only its end, or a request to read.
    pollfd watched[2] = {{channel_.fd(), POLLRDHUP, 0},
                         {wake_fd_, POLLIN, 0}};
    if (poll(watched, 2, -1) < 0) {
      if (errno == EINTR) continue;
      // Cannot happen with valid descriptors; read until the end instead.
      watched[0].revents = POLLHUP;
    }
    if (watched[1].revents & POLLIN) {
      uint64_t count;
      (void)!read(wake_fd_, &count, sizeof(count));
    }
    const bool hung_up = watched[0].revents != 0;
    absl::Status end;
    {
      absl::MutexLock lock(&mu_);
      watcher_woken_ = false;
      if (hung_up) {
        // Whoever reads will see the end soon: the answers sent before it
        // are delivered first, in order.
        auto free_or_ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !reading_ || channel_end_.has_value();
        };
        mu_.Await(absl::Condition(&free_or_ended));
      } else if (!channel_end_.has_value() &&
                 (reading_ || pending_.empty())) {
        continue;
      }
      if (channel_end_.has_value()) {
        end = *channel_end_;
      } else {
        reading_ = true;
      }
    }
    while (end.ok()) {
      absl::Status read = ReadOne(absl::InfiniteFuture());
      absl::MutexLock lock(&mu_);
      if (!read.ok()) {
        EndLocked(read);
        end = *channel_end_;
      } else if (!hung_up && pending_.empty()) {
        reading_ = false;
        changed_.SignalAll();
        break;
      }
    }
    if (!end.ok()) {
      OnChannelClosed(end);
      return;
    }
  }
}

void WorkerProcess::OnChannelClosed(const absl::Status& why) {
  // A clean EOF is UNAVAILABLE "peer closed the channel"; anything else
  // (a truncated or unparsable frame) means the stream is out of step.
  if (why.code() != absl::StatusCode::kUnavailable) {
    absl::MutexLock lock(&mu_);
    KillLocked(absl::StrCat("its channel failed: ", why.message()));
  }
  // What the crash handler wrote is complete once the channel is closed:
  // the worker only closes it by exiting. A record means the worker is
  // dying of the signal it names, so its wait status adds nothing and need
  // not wait for the teardown of its namespaces: answer now.
  const std::string record_text = ReadCrashRecord(crash_fd_);
  CrashRecord record = ParseCrashRecord(record_text);
  bool early = false;
  if (record.present) {
    absl::MutexLock lock(&mu_);
    early = !shutting_down_ && kill_reason_.empty();
  }
  // The zygote reaps the worker and reports how it ended.
  absl::Time give_up = absl::Now() + kExitGrace;
  std::optional<int> exit_status;
  std::string lost;
  if (early) {
    zygote_->Forget(pid_);
    // Its status is not awaited: make sure nothing of it lingers.
    if (pidfd_ >= 0) syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
    exit_status = record.signal;  // W_EXITCODE(0, signal): killed by it.
  }
  while (!early) {
    absl::StatusOr<std::optional<int>> waited =
        zygote_->WaitExit(pid_, give_up);
    if (!waited.ok()) {
      lost = std::string(waited.status().message());
      break;
    }
    if (waited->has_value()) {
      exit_status = **waited;
      break;
    }
    absl::MutexLock lock(&mu_);
    KillLocked("it closed its channel but did not exit");
    give_up = absl::InfiniteFuture();
  }

  Deferred deferred;
  absl::MutexLock lock(&mu_);
  const int wait_status = exit_status.value_or(0);
  const bool reaped = exit_status.has_value();
  reaped_ = true;
  Metrics::Get().WorkerExited();

  if (shutting_down_) {
    const bool server_stops = stop_cause_ == StopCause::kServerShutdown;
    for (auto& [id, pending] : pending_) {
      CompleteLocked(
          pending,
          server_stops
              ? MakeError(absl::StatusCode::kUnavailable,
                          v1::ERROR_REASON_SESSION_NOT_FOUND,
                          absl::StrCat("ffid is shutting down: the session "
                                       "ended while ",
                                       pending->description))
              : MakeError(absl::StatusCode::kCancelled,
                          v1::ERROR_REASON_SESSION_NOT_FOUND,
                          absl::StrCat("the session was deleted while ",
                                       pending->description)),
          deferred);
    }
    pending_.clear();
    dead_status_ = FailedPreconditionError(
        v1::ERROR_REASON_SESSION_NOT_FOUND,
        server_stops ? "ffid is shutting down: the session has ended"
                     : "the session was deleted; its worker has stopped");
    changed_.SignalAll();
    mu_.Unlock();
    RunDeferred(deferred);
    mu_.Lock();
    return;
  }

  v1::CrashReport report;
  report.set_pid(pid_);
  std::string how;
  if (reaped && WIFSIGNALED(wait_status)) {
    int signal = WTERMSIG(wait_status);
    report.set_signal(signal);
    report.set_signal_name(SignalName(signal));
    if (!kill_reason_.empty() && signal == SIGKILL) {
      how = absl::StrCat("was killed by ffid (", SignalName(signal),
                         ") because ", kill_reason_);
    } else {
      std::string description = SignalDescription(signal);
      how = absl::StrCat("was killed by ", SignalName(signal),
                         description.empty() ? "" : " (", description,
                         description.empty() ? "" : ")");
    }
  } else if (reaped && WIFEXITED(wait_status)) {
    report.set_exit_code(WEXITSTATUS(wait_status));
    how = absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  } else {
    how = absl::StrCat("disappeared (", lost, ")");
  }
  v1::ErrorReason reason = v1::ERROR_REASON_WORKER_CRASHED;
  if (kill_reason_.empty()) {
    reason = ExplainDeath(record, policy_, report, how);
  }
  std::string message = absl::StrCat("worker ", pid_, " ", how);
  if (!pending_.empty()) {
    // The worker runs requests in order: the oldest one was running.
    const Pending& running = *pending_.begin()->second;
    report.set_function(running.function);
    absl::StrAppend(&message, " while ", running.description);
  }
  crash_ = report;
  // The signal as the crash record tells it (the worker's init inside its
  // PID namespace exits with a status instead of dying of the signal).
  Metrics::Get().WorkerCrashed(report.signal_name().empty()
                                   ? std::string("exit")
                                   : report.signal_name());
  // One line per death for whoever runs the daemon; clients get the same
  // text in their errors.
  Log(LogLevel::kWarning, message,
      {{"session", session_tag_},
       {"reason", ReasonName(reason)},
       {"function", report.function()}});

  for (auto& [id, pending] : pending_) {
    absl::Status failed =
        MakeError(reason == v1::ERROR_REASON_WORKER_CRASHED
                      ? absl::StatusCode::kUnavailable
                      : reason == v1::ERROR_REASON_SANDBOX_VIOLATION
                            ? absl::StatusCode::kPermissionDenied
                            : absl::StatusCode::kResourceExhausted,
                  reason, message);
    SetCrashReport(failed, report);
    CompleteLocked(pending, std::move(failed), deferred);
  }
  pending_.clear();
  dead_status_ = FailedPreconditionError(
      v1::ERROR_REASON_WORKER_CRASHED,
      absl::StrCat("the session's worker died earlier: ", message,
                   "; delete the session and create a new one"));
  SetCrashReport(dead_status_, report);
  changed_.SignalAll();
  std::function<void()> on_death = std::move(death_handler_);
  death_handler_ = nullptr;
  mu_.Unlock();
  RunDeferred(deferred);
  if (on_death) on_death();
  mu_.Lock();
}

void WorkerProcess::Shutdown(StopCause cause) {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  if (joined_) return;
  {
    absl::MutexLock lock(&mu_);
    if (!reaped_ && !shutting_down_) {
      shutting_down_ = true;
      stop_cause_ = cause;
      KillLocked("the session was deleted");
    }
  }
  // Wakes whoever is reading, and the watcher.
  channel_.Shutdown();
  if (watcher_.joinable()) watcher_.join();
  joined_ = true;
}

std::optional<v1::CrashReport> WorkerProcess::crash_report() const {
  absl::MutexLock lock(&mu_);
  return crash_;
}

void WorkerProcess::AwaitDeathLocked() {
  const absl::Time give_up = absl::Now() + kExitGrace;
  while (dead_status_.ok() && absl::Now() < give_up) {
    changed_.WaitWithDeadline(&mu_, give_up);
  }
}

absl::StatusOr<bool> WorkerProcess::CopyMemory(bool write, char* local,
                                               uint64_t remote,
                                               uint64_t length) const {
  // Pieces small enough that a dying worker is noticed between them.
  constexpr uint64_t kPiece = uint64_t{16} << 20;
  uint64_t done = 0;
  while (done < length) {
    if (pidfd_ >= 0) {
      pollfd exited = {pidfd_, POLLIN, 0};
      if (poll(&exited, 1, 0) != 0) {
        return MakeError(absl::StatusCode::kUnavailable,
                         v1::ERROR_REASON_WORKER_CRASHED,
                         "the worker ended during a memory copy");
      }
    }
    const uint64_t piece = std::min(kPiece, length - done);
    iovec mine = {local + done, piece};
    iovec theirs = {reinterpret_cast<void*>(remote + done), piece};
    const ssize_t copied =
        write ? process_vm_writev(pid_, &mine, 1, &theirs, 1, 0)
              : process_vm_readv(pid_, &mine, 1, &theirs, 1, 0);
    if (copied < 0) {
      const int error = errno;
      if (error == EINTR) continue;
      if (done == 0 && (error == EPERM || error == EACCES || error == ENOSYS)) {
        return false;
      }
      if (error == ESRCH) {
        return MakeError(absl::StatusCode::kUnavailable,
                         v1::ERROR_REASON_WORKER_CRASHED,
                         "the worker ended during a memory copy");
      }
      if (error != EFAULT) {
        return MakeError(absl::StatusCode::kInternal,
                         v1::ERROR_REASON_INTERNAL,
                         absl::StrCat(write ? "process_vm_writev" :
                                      "process_vm_readv", " on the worker: ",
                                      strerror(error)));
      }
    }
    if (copied <= 0) {
      return MakeError(
          absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_BAD_ADDRESS,
          absl::StrFormat("cannot %s %u bytes at 0x%x: the memory at 0x%x is "
                          "not %s in the worker%s",
                          write ? "write" : "read", length, remote,
                          remote + done, write ? "writable" : "readable",
                          done == 0 ? ""
                                    : absl::StrFormat(
                                          " (only the first %u bytes could "
                                          "be %s)",
                                          done, write ? "written" : "read")));
    }
    done += static_cast<uint64_t>(copied);
  }
  return true;
}

bool WorkerProcess::alive() const {
  absl::MutexLock lock(&mu_);
  return dead_status_.ok() && !shutting_down_;
}

bool WorkerProcess::busy() const {
  absl::MutexLock lock(&mu_);
  return !pending_.empty();
}

bool WorkerProcess::doomed() const {
  absl::MutexLock lock(&mu_);
  return !dead_status_.ok() || shutting_down_ || !kill_reason_.empty();
}

absl::Status WorkerProcess::dead_status() const {
  absl::MutexLock lock(&mu_);
  return dead_status_;
}

}  // namespace ffid::server
