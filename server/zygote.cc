#include "server/zygote.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "server/log.h"
#include "server/worker/zygote.h"

extern char** environ;

namespace ffid::server {
namespace {

// The fd the zygote finds its socket on.
constexpr int kZygoteControlFd = 3;

absl::Status StartFailed(const std::string& worker_path,
                         absl::string_view why) {
  return MakeError(
      absl::StatusCode::kUnavailable, v1::ERROR_REASON_WORKER_START_FAILED,
      absl::StrCat("cannot start worker '", worker_path, "': ", why,
                   "; check ffid's --worker-path"));
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// Runs every spawn on one thread that lives as long as the daemon (see
// RunOnSpawnThread).
class SpawnThread {
 public:
  static SpawnThread& Get() {
    // Never destroyed: the thread must outlive every child.
    static SpawnThread* const instance = new SpawnThread();
    return *instance;
  }

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

// The current zygote of each worker path.
absl::Mutex g_zygotes_mu(absl::kConstInit);
std::map<std::string, std::shared_ptr<Zygote>>& Zygotes() {
  static auto* const zygotes =
      new std::map<std::string, std::shared_ptr<Zygote>>();
  return *zygotes;
}

// How many policies the zygote keeps a spare worker for:
// FFID_ZYGOTE_SPARES from the daemon's environment (0 turns spares off, for
// comparisons and tight memory), else worker::kMaxSpares.
size_t SpareCount() {
  const char* value = getenv("FFID_ZYGOTE_SPARES");
  size_t count = 0;
  if (value == nullptr || !absl::SimpleAtoi(value, &count) || count > 64) {
    return worker::kMaxSpares;
  }
  return count;
}

}  // namespace

void RunOnSpawnThread(const std::function<void()>& job) {
  SpawnThread::Get().Run(job);
}

std::vector<std::string> WorkerEnvironment() {
  // Nothing of the daemon's environment (tokens, paths, proxies, whatever
  // the operator's shell had) reaches native code; these suffice for
  // ordinary libraries. HOME and TMPDIR name the worker's private /tmp.
  std::vector<std::string> env = {
      "PATH=/usr/local/bin:/usr/bin:/bin",
      "HOME=/tmp",
      "TMPDIR=/tmp",
  };
  // Passed on when the daemon has them: the time zone, and the sanitizer
  // runtimes' options (they configure the worker binary itself).
  for (const char* name : {"TZ", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                           "LSAN_OPTIONS", "TSAN_OPTIONS"}) {
    const char* value = getenv(name);
    if (value == nullptr) continue;
    std::string variable = absl::StrCat(name, "=", value);
#if defined(__SANITIZE_ADDRESS__)
    // LeakSanitizer's exit-time check clones a tracer, which the worker's
    // seccomp policy refuses: the worker would die of SIGSYS instead of
    // exiting. An ASAN_OPTIONS asking for it (as the asan preset's does)
    // would override the worker's own default, so turn it off here.
    if (absl::string_view(name) == "ASAN_OPTIONS") {
      absl::StrAppend(&variable, ":detect_leaks=0");
    }
#endif
    env.push_back(std::move(variable));
  }
  return env;
}

absl::StatusOr<std::shared_ptr<Zygote>> Zygote::Get(
    const std::string& worker_path) {
  absl::MutexLock registry_lock(&g_zygotes_mu);
  auto it = Zygotes().find(worker_path);
  if (it != Zygotes().end() && it->second->alive()) return it->second;

  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    return StartFailed(worker_path,
                       absl::StrCat("socketpair: ", strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears FD_CLOEXEC on the copy; everything above it is closed.
  posix_spawn_file_actions_adddup2(&actions, fds[1], kZygoteControlFd);
  posix_spawn_file_actions_addclosefrom_np(&actions, kZygoteControlFd + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty;
  sigemptyset(&empty);
  sigset_t all;
  sigfillset(&all);
  // The daemon ignores SIGPIPE and blocks SIGTERM/SIGINT for its signal
  // thread; neither must leak into the zygote and its workers.
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
  std::vector<std::string> args = {
      worker_path, absl::StrCat("--control-fd=", kZygoteControlFd),
      // Lets the zygote notice a daemon that died before its
      // PR_SET_PDEATHSIG took effect.
      absl::StrCat("--parent-pid=", getpid()),
      absl::StrCat("--max-spares=", SpareCount()),
      // Last, so that a worker can rewrite it in place ("--worker").
      "--zygote"};
  std::vector<std::string> env = WorkerEnvironment();
  std::vector<char*> argv = Pointers(args);
  std::vector<char*> envp = Pointers(env);
  pid_t pid = -1;
  int error = 0;
  // posix_spawn (vfork + exec in glibc) is safe in a threaded process and
  // reports exec failures as its return value.
  RunOnSpawnThread([&] {
    error = posix_spawn(&pid, worker_path.c_str(), &actions, &attr,
                        argv.data(), envp.data());
  });
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[1]);
  if (error != 0) {
    close(fds[0]);
    return StartFailed(worker_path, strerror(error));
  }
  std::shared_ptr<Zygote> zygote(new Zygote(pid, fds[0]));
  zygote->reader_ = std::thread(&Zygote::ReaderLoop, zygote.get());
  Zygotes()[worker_path] = zygote;
  return zygote;
}

Zygote::Zygote(pid_t pid, int control_fd) : pid_(pid), control_fd_(control_fd) {}

Zygote::~Zygote() {
  // Only reached when no worker of it is known any more (and, for the
  // registry's zygotes, never): closing the socket ends the zygote.
  shutdown(control_fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  close(control_fd_);
}

bool Zygote::alive() const {
  absl::MutexLock lock(&mu_);
  return !dead_;
}

absl::StatusOr<Zygote::Child> Zygote::Spawn(const std::string& session_tag,
                                            const worker::WorkerPolicy& policy,
                                            const std::vector<int>& fds) {
  PendingSpawn pending;
  worker::ZygoteRequest request;
  {
    absl::MutexLock lock(&mu_);
    if (dead_) {
      return MakeError(absl::StatusCode::kUnavailable,
                       v1::ERROR_REASON_WORKER_START_FAILED,
                       "cannot start a worker: ffid's zygote has ended");
    }
    request.set_id(next_id_++);
    spawns_[request.id()] = &pending;
  }
  request.set_session_tag(session_tag);
  *request.mutable_policy() = policy;
  absl::Status sent = worker::SendZygoteMessage(control_fd_, request, fds);
  absl::MutexLock lock(&mu_);
  if (!sent.ok()) {
    spawns_.erase(request.id());
    return MakeError(absl::StatusCode::kUnavailable,
                     v1::ERROR_REASON_WORKER_START_FAILED,
                     absl::StrCat("cannot start a worker: ", sent.message()));
  }
  while (!pending.done) changed_.Wait(&mu_);
  return std::move(pending.result);
}

absl::StatusOr<std::optional<int>> Zygote::WaitExit(pid_t pid,
                                                    absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  for (;;) {
    auto it = exits_.find(pid);
    if (it != exits_.end()) {
      const int status = it->second;
      exits_.erase(it);
      return std::optional<int>(status);
    }
    if (dead_) {
      return MakeError(absl::StatusCode::kUnavailable,
                       v1::ERROR_REASON_WORKER_CRASHED,
                       absl::StrCat("ffid's zygote (pid ", pid_,
                                    "), the worker's parent, ended"));
    }
    if (changed_.WaitWithDeadline(&mu_, deadline)) {
      return std::optional<int>();
    }
  }
}

void Zygote::Forget(pid_t pid) {
  absl::MutexLock lock(&mu_);
  if (exits_.erase(pid) == 0) forgotten_.insert(pid);
}

void Zygote::ReaderLoop() {
  for (;;) {
    worker::ZygoteEvent event;
    std::vector<int> fds;
    absl::Status received =
        worker::ReceiveZygoteMessage(control_fd_, &event, &fds);
    if (received.code() == absl::StatusCode::kDataLoss) continue;
    if (!received.ok()) break;
    absl::MutexLock lock(&mu_);
    if (event.has_exited()) {
      if (forgotten_.erase(event.exited().pid()) == 0) {
        exits_[event.exited().pid()] = event.exited().wait_status();
      }
      changed_.SignalAll();
      for (int fd : fds) close(fd);
      continue;
    }
    if (!event.has_spawned()) {
      for (int fd : fds) close(fd);
      continue;
    }
    auto it = spawns_.find(event.spawned().id());
    if (it == spawns_.end()) {
      for (int fd : fds) close(fd);
      continue;
    }
    PendingSpawn* pending = it->second;
    spawns_.erase(it);
    if (event.spawned().pid() <= 0) {
      for (int fd : fds) close(fd);
      pending->result = MakeError(
          absl::StatusCode::kUnavailable, v1::ERROR_REASON_WORKER_START_FAILED,
          absl::StrCat("cannot start a worker: ", event.spawned().error()));
    } else {
      Child child;
      child.pid = event.spawned().pid();
      if (!fds.empty()) child.pidfd = fds[0];
      for (size_t i = 1; i < fds.size(); ++i) close(fds[i]);
      pending->result = child;
    }
    pending->done = true;
    changed_.SignalAll();
  }
  // The zygote is gone (or going): reap it, then fail whoever waits.
  int status;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  Log(LogLevel::kWarning,
      absl::StrCat("the zygote (pid ", pid_,
                   ") ended; its workers ended with it"));
  absl::MutexLock lock(&mu_);
  dead_ = true;
  forgotten_.clear();
  for (auto& [id, pending] : spawns_) {
    pending->result = MakeError(absl::StatusCode::kUnavailable,
                                v1::ERROR_REASON_WORKER_START_FAILED,
                                "cannot start a worker: ffid's zygote ended");
    pending->done = true;
  }
  spawns_.clear();
  changed_.SignalAll();
}

}  // namespace ffid::server
