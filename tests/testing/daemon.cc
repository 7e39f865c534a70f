#include "tests/testing/daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/testing/subprocess.h"

namespace ffid::testing {
namespace {

constexpr absl::string_view kListeningLine = "ffid: listening on ";
// The same line with --log-format=json.
constexpr absl::string_view kListeningJson = R"("msg":"listening on )";

bool SaysListening(absl::string_view log) {
  return absl::StrContains(log, kListeningLine) ||
         absl::StrContains(log, kListeningJson);
}

// The system library directories, as globs; --allow-library replaces the
// daemon's defaults, so they are listed again.
constexpr const char* kSystemLibraryGlobs[] = {
    "/lib/*", "/lib64/*", "/usr/lib/*", "/usr/lib64/*", "/usr/local/lib/*"};

std::string Describe(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("wait status ", status);
}

}  // namespace

std::string FfidPath() { return FFID_TEST_FFID_PATH; }
std::string WorkerPath() { return FFID_TEST_WORKER_PATH; }
std::string FfictlPath() { return FFID_TEST_FFICTL_PATH; }
std::string FixturePath() { return FFID_TEST_FIXTURE_PATH; }
std::string CallbacksFixturePath() { return FFID_TEST_CALLBACKS_FIXTURE_PATH; }
std::string FixtureDir() {
  const std::string path = FixturePath();
  return path.substr(0, path.rfind('/'));
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(DaemonOptions options) {
  std::unique_ptr<Daemon> daemon(new Daemon());
  daemon->options_ = std::move(options);
  absl::StatusOr<std::string> dir = MakeTempDir("ffid-test");
  if (!dir.ok()) return dir.status();
  daemon->temp_dir_ = *dir;
  if (mkdir(daemon->allowed_dir().c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat(
        "mkdir ", daemon->allowed_dir(), ": ", std::strerror(errno)));
  }
  if (daemon->options_.omit_listen) {
    daemon->address_ = daemon->options_.default_address;
    if (absl::StartsWith(daemon->address_, "unix:")) {
      daemon->socket_path_ = daemon->address_.substr(5);
    }
  } else if (daemon->options_.listen.empty()) {
    daemon->socket_path_ = daemon->temp_dir_ + "/ffid.sock";
    daemon->address_ = "unix:" + daemon->socket_path_;
  } else {
    daemon->address_ = daemon->options_.listen;
    if (absl::StartsWith(daemon->address_, "unix:")) {
      daemon->socket_path_ = daemon->address_.substr(5);
    }
  }
  absl::Status status = daemon->Spawn();
  if (!status.ok()) return status;
  return daemon;
}

Daemon::~Daemon() {
  if (pid_ > 0) (void)Stop();
  StopReader();
  RemoveTree(temp_dir_);
}

absl::Status Daemon::Spawn() {
  std::vector<std::string> argv = {FfidPath(), "--worker-path", WorkerPath()};
  if (!options_.omit_listen) {
    argv.push_back("--listen");
    argv.push_back(address_);
  }
  std::vector<std::string> globs = {FixtureDir() + "/*", allowed_dir() + "/*"};
  for (const char* glob : kSystemLibraryGlobs) globs.push_back(glob);
  for (const std::string& glob : options_.allow_library) globs.push_back(glob);
  for (const std::string& glob : globs) {
    argv.push_back("--allow-library");
    argv.push_back(glob);
  }
  for (const std::string& flag : options_.extra_flags) argv.push_back(flag);
  if (!options_.command_prefix.empty()) {
    argv.insert(argv.begin(), options_.command_prefix.begin(),
                options_.command_prefix.end());
  }

  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  EnvironmentChanges changes = options_.environment;
  if (changes.count("ASAN_OPTIONS") == 0) {
    // In sanitized builds the worker carries ASan's own SIGSEGV/SIGBUS/SIGFPE
    // handlers, which turn a crash into exit(1). The tests check that ffid
    // reports the real signal, so let those signals through. (No effect on
    // unsanitized builds.)
    const char* inherited = getenv("ASAN_OPTIONS");
    changes["ASAN_OPTIONS"] = absl::StrCat(
        inherited != nullptr && *inherited != '\0' ? inherited : "",
        inherited != nullptr && *inherited != '\0' ? ":" : "",
        "handle_segv=0:handle_sigbus=0:handle_sigfpe=0");
  }
  std::vector<std::string> env = MakeEnvironment(changes);
  std::vector<char*> arg_pointers;
  for (std::string& arg : argv) arg_pointers.push_back(arg.data());
  arg_pointers.push_back(nullptr);
  std::vector<char*> env_pointers;
  for (std::string& entry : env) env_pointers.push_back(entry.data());
  env_pointers.push_back(nullptr);
  pid_t pid = 0;
  // posix_spawnp: a command prefix is looked up on PATH ("unshare").
  const int spawn_error = posix_spawnp(&pid, argv[0].c_str(), &actions,
                                       nullptr, arg_pointers.data(),
                                       env_pointers.data());
  posix_spawn_file_actions_destroy(&actions);
  close(err_pipe[1]);
  if (spawn_error != 0) {
    close(err_pipe[0]);
    return absl::InternalError(absl::StrCat(
        "cannot start ", argv[0], ": ", std::strerror(spawn_error)));
  }
  pid_ = pid;
  {
    absl::MutexLock lock(&mu_);
    log_.clear();
    log_closed_ = false;
    stop_reader_ = false;
  }
  const int fd = err_pipe[0];
  reader_ = std::thread([this, fd] { ReadLog(fd); });

  // Wait for the "listening" line, the daemon's death or the deadline.
  const absl::Time deadline = absl::Now() + options_.start_timeout;
  bool listening = false;
  {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return SaysListening(log_) || log_closed_;
    };
    while (!ready() && absl::Now() < deadline) {
      mu_.AwaitWithDeadline(absl::Condition(&ready),
                            std::min(deadline, absl::Now() + absl::Milliseconds(100)));
      if (!IsRunning()) break;
    }
    listening = SaysListening(log_);
  }
  struct stat info;
  while (listening && !socket_path_.empty() &&
         stat(socket_path_.c_str(), &info) != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (listening && (socket_path_.empty() ||
                    stat(socket_path_.c_str(), &info) == 0)) {
    return absl::OkStatus();
  }
  const bool running = IsRunning();
  std::string why = running
                        ? absl::StrCat("did not print \"", kListeningLine,
                                       "...\" within ",
                                       absl::FormatDuration(options_.start_timeout))
                        : absl::StrCat("exited with ", Describe(exit_status_));
  if (running) (void)Stop(absl::Seconds(2));
  StopReader();
  return absl::UnavailableError(absl::StrCat(
      "ffid (", absl::StrJoin(argv, " "), ") ", why, "; its stderr:\n",
      Log()));
}

void Daemon::ReadLog(int fd) {
  pollfd poll_fd = {fd, POLLIN, 0};
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_reader_) break;
    }
    const int ready = poll(&poll_fd, 1, 50);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buffer[4096];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    // Echoed so that a failing test shows what the daemon said.
    (void)!write(2, buffer, static_cast<size_t>(n));
    absl::MutexLock lock(&mu_);
    log_.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  absl::MutexLock lock(&mu_);
  log_closed_ = true;
}

void Daemon::StopReader() {
  if (!reader_.joinable()) return;
  {
    // Workers inherit the daemon's stderr, so a worker that outlives the
    // daemon keeps the pipe open: give the reader a moment to drain, then
    // stop it rather than wait for an EOF that may never come.
    absl::MutexLock lock(&mu_);
    auto closed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return log_closed_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&closed), absl::Seconds(2));
    stop_reader_ = true;
  }
  reader_.join();
}

bool Daemon::IsRunning() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t result = waitpid(pid_, &status, WNOHANG);
  if (result == pid_) {
    exit_status_ = status;
    pid_ = 0;
    return false;
  }
  return result == 0;
}

absl::Status Daemon::Stop(absl::Duration grace) {
  if (pid_ <= 0) {
    StopReader();
    return WIFEXITED(exit_status_) && WEXITSTATUS(exit_status_) == 0
               ? absl::OkStatus()
               : absl::InternalError(absl::StrCat(
                     "ffid had already ended with ", Describe(exit_status_)));
  }
  const pid_t pid = pid_;
  kill(pid, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  bool killed = false;
  int status = 0;
  for (;;) {
    const pid_t result = waitpid(pid, &status, WNOHANG);
    if (result == pid) break;
    if (result < 0 && errno != EINTR) break;
    if (absl::Now() >= deadline && !killed) {
      kill(pid, SIGKILL);
      killed = true;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  pid_ = 0;
  exit_status_ = status;
  StopReader();
  if (killed) {
    return absl::DeadlineExceededError(absl::StrCat(
        "ffid did not exit within ", absl::FormatDuration(grace),
        " of SIGTERM and was killed"));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("ffid ended with ", Describe(status), " after SIGTERM"));
  }
  return absl::OkStatus();
}

absl::Status Daemon::Restart() {
  if (pid_ > 0) {
    absl::Status stopped = Stop();
    if (!stopped.ok()) return stopped;
  }
  StopReader();
  return Spawn();
}

std::string Daemon::Log() const {
  absl::MutexLock lock(&mu_);
  return log_;
}

std::string Daemon::ReportedAddress() const {
  const std::string log = Log();
  const absl::string_view text(log);
  const size_t at = text.find(kListeningLine);
  if (at == absl::string_view::npos) return "";
  const size_t start = at + kListeningLine.size();
  const size_t end = text.find('\n', start);
  if (end == absl::string_view::npos) return "";
  return std::string(text.substr(start, end - start));
}

bool WaitForProcessGone(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace ffid::testing
