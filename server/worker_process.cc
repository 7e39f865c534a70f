#include "server/worker_process.h"

#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
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

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "ffi/errors.h"
#include "server/crash_report.h"

extern char** environ;

namespace ffid::server {
namespace {

// The fd number the worker finds its end of the channel on.
constexpr int kWorkerChannelFd = 3;
// ... and the write end of its crash-report pipe.
constexpr int kWorkerCrashFd = 4;
// The most of a crash record the daemon reads.
constexpr size_t kMaxCrashRecordBytes = 64 * 1024;
// How long a worker may keep running after closing its channel before the
// daemon kills it.
constexpr absl::Duration kExitGrace = absl::Seconds(2);
// How often a wait with an is_cancelled callback polls it.
constexpr absl::Duration kCancelPollInterval = absl::Milliseconds(100);

// The worker's environment: ours, minus what would let the dynamic loader
// load something other than the path the daemon resolved and allowed.
std::vector<std::string> WorkerEnvironment() {
  std::vector<std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr;
       ++entry) {
    absl::string_view variable(*entry);
    if (absl::StartsWith(variable, "LD_LIBRARY_PATH=") ||
        absl::StartsWith(variable, "LD_PRELOAD=")) {
      continue;
    }
#if defined(__SANITIZE_ADDRESS__)
    // LeakSanitizer's exit-time check clones a tracer, which the worker's
    // seccomp policy refuses: the worker would die of SIGSYS instead of
    // exiting. An ASAN_OPTIONS asking for it (as the asan preset's does)
    // would override the worker's own default, so turn it off here.
    if (absl::StartsWith(variable, "ASAN_OPTIONS=")) {
      env.push_back(absl::StrCat(variable, ":detect_leaks=0"));
      continue;
    }
#endif
    env.emplace_back(variable);
  }
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

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

// Runs every worker spawn on one thread that lives as long as the daemon.
// The worker arms PR_SET_PDEATHSIG, which fires when the *thread* that
// spawned it exits, not the process; gRPC's sync server retires idle
// threads, so spawning from an RPC thread would get healthy workers killed.
class SpawnThread {
 public:
  static SpawnThread& Get() {
    // Never destroyed: the thread must outlive every worker.
    static SpawnThread* const instance = new SpawnThread();
    return *instance;
  }

  // Runs `job` on the spawn thread and waits for it.
  void Run(const std::function<void()>& job) {
    Job item{&job};
    absl::MutexLock lock(&mu_);
    queue_.push_back(&item);
    changed_.SignalAll();
    while (!item.done) changed_.Wait(&mu_);
  }

 private:
  struct Job {
    const std::function<void()>* run;
    bool done = false;
  };

  SpawnThread() { std::thread([this] { Loop(); }).detach(); }

  void Loop() {
    absl::MutexLock lock(&mu_);
    for (;;) {
      while (queue_.empty()) changed_.Wait(&mu_);
      Job* job = queue_.front();
      queue_.pop_front();
      mu_.Unlock();
      (*job->run)();
      mu_.Lock();
      job->done = true;
      changed_.SignalAll();
    }
  }

  absl::Mutex mu_;
  absl::CondVar changed_;
  std::deque<Job*> queue_ ABSL_GUARDED_BY(mu_);
};

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

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears FD_CLOEXEC on the copy (glibc does so even when child_fd is
  // already 3); everything above it is closed for good measure.
  posix_spawn_file_actions_adddup2(&actions, child_fd, kWorkerChannelFd);
  posix_spawn_file_actions_adddup2(&actions, crash_pipe[1], kWorkerCrashFd);
  posix_spawn_file_actions_addclosefrom_np(&actions, kWorkerCrashFd + 1);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty;
  sigemptyset(&empty);
  sigset_t all;
  sigfillset(&all);
  // The daemon ignores SIGPIPE and blocks SIGTERM/SIGINT for its signal
  // thread; neither must leak into the worker.
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);

  std::vector<std::string> args = {
      worker_path, absl::StrCat("--channel-fd=", kWorkerChannelFd),
      absl::StrCat("--session-tag=", session_tag),
      // Lets the worker notice a daemon that died before its
      // PR_SET_PDEATHSIG took effect.
      absl::StrCat("--parent-pid=", getpid()),
      absl::StrCat("--crash-fd=", kWorkerCrashFd)};
  std::string serialized_policy;
  if (!policy.SerializeToString(&serialized_policy)) {
    return start_failed("cannot serialize the worker policy");
  }
  if (!serialized_policy.empty()) {
    args.push_back(
        absl::StrCat("--policy=", absl::BytesToHexString(serialized_policy)));
  }
  std::vector<std::string> env = WorkerEnvironment();
  std::vector<char*> argv = Pointers(args);
  std::vector<char*> envp = Pointers(env);

  pid_t pid = -1;
  int error = 0;
  // posix_spawn (vfork + exec in glibc) is safe in a threaded process and
  // reports exec failures as its return value.
  SpawnThread::Get().Run([&] {
    error = posix_spawn(&pid, worker_path.c_str(), &actions, &attr,
                        argv.data(), envp.data());
  });
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(child_fd);
  close(crash_pipe[1]);
  if (error != 0) {
    close(parent_fd);
    close(crash_pipe[0]);
    return start_failed(strerror(error));
  }
  std::unique_ptr<WorkerProcess> process(new WorkerProcess(
      pid, parent_fd, session_tag, crash_pipe[0], policy));
  process->reader_ = std::thread(&WorkerProcess::ReaderLoop, process.get());
  return process;
}

WorkerProcess::WorkerProcess(pid_t pid, int channel_fd,
                             std::string session_tag, int crash_fd,
                             worker::WorkerPolicy policy)
    : pid_(pid),
      session_tag_(std::move(session_tag)),
      channel_(channel_fd),
      crash_fd_(crash_fd),
      policy_(std::move(policy)) {}

WorkerProcess::~WorkerProcess() {
  Shutdown();
  close(crash_fd_);
}

absl::StatusOr<worker::WorkerResponse> WorkerProcess::Execute(
    worker::WorkerRequest request, absl::Time deadline,
    std::string description, std::string function,
    const std::function<bool()>& is_cancelled, const Route& route) {
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
  absl::Status sent = channel_.Send(request);

  absl::MutexLock lock(&mu_);
  if (!sent.ok() && !pending.done) {
    if (sent.code() == absl::StatusCode::kResourceExhausted) {
      // Refused before anything was written: the channel is still in sync.
      pending_.erase(id);
      return sent;
    }
    // The reader thread completes `pending` once the worker is gone.
    KillLocked(absl::StrCat("sending ", pending.description,
                            " to it failed: ", sent.message()));
  }
  while (!pending.done) {
    absl::Time wake = deadline;
    if (is_cancelled) wake = std::min(wake, absl::Now() + kCancelPollInterval);
    changed_.WaitWithDeadline(&mu_, wake);
    if (pending.done) break;
    if (absl::Now() >= deadline) {
      pending_.erase(id);
      std::string limit = RoundedDuration(deadline - start);
      KillLocked(absl::StrCat(pending.description,
                              " did not finish within its deadline of ",
                              limit));
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
      pending_.erase(id);
      KillLocked(absl::StrCat("the client cancelled ", pending.description));
      return MakeError(
          absl::StatusCode::kCancelled, v1::ERROR_REASON_WORKER_CRASHED,
          absl::StrCat("the client cancelled ", pending.description,
                       "; worker ", pid_,
                       " was killed because a native call cannot be "
                       "interrupted safely, so this session can no longer be "
                       "used"));
    }
  }
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
  if (sent.ok()) return;
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
  // The worker leads its own process group: take anything it spawned too.
  kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
}

void WorkerProcess::ReaderLoop() {
  for (;;) {
    worker::WorkerResponse response;
    absl::Status received = channel_.Receive(&response);
    if (!received.ok()) {
      OnChannelClosed(received);
      return;
    }
    if (response.has_invocation()) {
      OnInvocation(std::move(*response.mutable_invocation()));
      continue;
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
        continue;
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
  }
}

void WorkerProcess::OnChannelClosed(const absl::Status& why) {
  // A clean EOF is UNAVAILABLE "peer closed the channel"; anything else
  // (a truncated or unparsable frame) means the stream is out of step.
  if (why.code() != absl::StatusCode::kUnavailable) {
    absl::MutexLock lock(&mu_);
    KillLocked(absl::StrCat("its channel failed: ", why.message()));
  }
  // Wait for the exit without reaping, so that kill() stays safe until the
  // reap below happens under the mutex.
  const absl::Time give_up = absl::Now() + kExitGrace;
  absl::Duration nap = absl::Microseconds(50);
  for (;;) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    int rc = waitid(P_PID, static_cast<id_t>(pid_), &info,
                    WEXITED | WNOWAIT | WNOHANG);
    if (rc == 0 && info.si_pid == pid_) break;
    if (rc != 0 && errno != EINTR) break;  // ECHILD: nothing to wait for.
    if (absl::Now() > give_up) {
      absl::MutexLock lock(&mu_);
      KillLocked("it closed its channel but did not exit");
    }
    absl::SleepFor(nap);
    nap = std::min(nap * 2, absl::Milliseconds(20));
  }

  Deferred deferred;
  absl::MutexLock lock(&mu_);
  int wait_status = 0;
  pid_t reaped;
  do {
    reaped = waitpid(pid_, &wait_status, 0);
  } while (reaped < 0 && errno == EINTR);
  reaped_ = true;

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
  if (reaped == pid_ && WIFSIGNALED(wait_status)) {
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
  } else if (reaped == pid_ && WIFEXITED(wait_status)) {
    report.set_exit_code(WEXITSTATUS(wait_status));
    how = absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  } else {
    how = absl::StrCat("disappeared (waitpid: ", strerror(errno), ")");
  }
  v1::ErrorReason reason = v1::ERROR_REASON_WORKER_CRASHED;
  if (kill_reason_.empty()) {
    reason = ExplainDeath(ParseCrashRecord(ReadCrashRecord(crash_fd_)),
                          policy_, report, how);
  }
  std::string message = absl::StrCat("worker ", pid_, " ", how);
  if (!pending_.empty()) {
    // The worker runs requests in order: the oldest one was running.
    const Pending& running = *pending_.begin()->second;
    report.set_function(running.function);
    absl::StrAppend(&message, " while ", running.description);
  }
  crash_ = report;
  // One line per death for whoever runs the daemon; clients get the same
  // text in their errors.
  fprintf(stderr, "ffid: session %s...: %s\n", session_tag_.c_str(),
          message.c_str());

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
  mu_.Unlock();
  RunDeferred(deferred);
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
  // Wakes the reader if it is blocked in Receive().
  channel_.Shutdown();
  if (reader_.joinable()) reader_.join();
  joined_ = true;
}

std::optional<v1::CrashReport> WorkerProcess::crash_report() const {
  absl::MutexLock lock(&mu_);
  return crash_;
}

bool WorkerProcess::alive() const {
  absl::MutexLock lock(&mu_);
  return dead_status_.ok() && !shutting_down_;
}

bool WorkerProcess::doomed() const {
  absl::MutexLock lock(&mu_);
  return !dead_status_.ok() || shutting_down_ || !kill_reason_.empty();
}

}  // namespace ffid::server
