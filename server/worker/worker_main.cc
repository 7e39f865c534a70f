// ffid-worker: one per session, started by the daemon with
//
//   ffid-worker --channel-fd=N --session-tag=TAG [--parent-pid=PID]
//               [--crash-fd=M] [--policy=HEX]
//
// N is the worker's end of a socketpair (inherited without FD_CLOEXEC), TAG
// the session's lowercase hex tag embedded in every handle, PID (optional)
// the daemon's pid: if the worker's parent is no longer that process by the
// time it starts, it exits at once. M is the write end of the crash-report
// pipe (server/worker/crash_handler.h), HEX a serialized WorkerPolicy: the
// sandbox the worker enters (server/worker/sandbox.h) before it reads its
// first request. The worker hardens itself, then answers
// WorkerRequests until the daemon closes the channel (exit 0): ordinary
// ones one at a time on the main thread, calls made from inside a callback
// on the native thread waiting for it (see dispatcher.h). Exit 5: a
// callback's TERMINATE_WORKER failure policy ended it.
// A crash in native code kills the process on purpose: the daemon sees EOF
// on the channel and reports the signal from waitpid(), plus what the crash
// handler wrote (fault address, frames, refused system call). No handler
// swallows a signal.
#include <dirent.h>
#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "ffi/errors.h"
#include "server/worker/channel.h"
#include "server/worker/crash_handler.h"
#include "server/worker/dispatcher.h"
#include "server/worker/executor.h"
#include "server/worker/protocol.pb.h"
#include "server/worker/sandbox.h"
#include "server/worker/seccomp_policy.h"
#include "server/worker/zygote.h"

namespace ffid::worker {
namespace {

constexpr int kExitUsage = 2;
constexpr int kExitSetup = 3;
constexpr int kExitChannel = 4;

constexpr char kUsage[] =
    "usage: ffid-worker --channel-fd=N --session-tag=TAG [--parent-pid=PID]\n"
    "  Executes native calls for one ffid session. Started by the ffid\n"
    "  daemon; not meant to be run by hand.\n"
    "  --channel-fd=N     the inherited socketpair end to serve\n"
    "  --session-tag=TAG  the session's tag (1-32 lowercase hex digits)\n"
    "  --parent-pid=PID   exit at once unless the parent is still PID\n"
    "  --crash-fd=M       write crash reports to this inherited pipe\n"
    "  --policy=HEX       the sandbox to enter (a serialized WorkerPolicy)\n"
    "  --zygote           serve the SOCK_SEQPACKET socket --control-fd=N as\n"
    "                     the daemon's zygote: fork a worker per request\n"
    "  --max-spares=N     (zygote) keep a spare worker for up to N policies\n";

struct Options {
  int channel_fd = -1;
  std::string session_tag;
  pid_t parent_pid = 0;
  int crash_fd = -1;
  WorkerPolicy policy;
  // --zygote: control_fd is the daemon's socket, no channel.
  bool zygote = false;
  int control_fd = -1;
  // --max-spares=N: how many policies the zygote keeps a spare worker for.
  size_t spares = kMaxSpares;
};

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "ffid-worker: %s\n%s", message.c_str(), kUsage);
  std::exit(kExitUsage);
}

bool IsSessionTag(absl::string_view tag) {
  if (tag.empty() || tag.size() > 32) return false;
  for (char c : tag) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Options ParseArgs(int argc, char** argv) {
  Options options;
  bool have_fd = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--zygote") {
      options.zygote = true;
      continue;
    }
    absl::string_view name = arg;
    std::string value;
    const size_t eq = arg.find('=');
    if (eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = std::string(arg.substr(eq + 1));
    } else if (arg == "--channel-fd" || arg == "--session-tag" ||
               arg == "--parent-pid" || arg == "--crash-fd" ||
               arg == "--policy" || arg == "--control-fd" ||
               arg == "--max-spares") {
      if (i + 1 >= argc) UsageError(std::string(arg) + " needs a value");
      value = argv[++i];
    }
    if (name == "--channel-fd") {
      if (!absl::SimpleAtoi(value, &options.channel_fd) ||
          options.channel_fd < 0) {
        UsageError("--channel-fd must be a file descriptor number, got '" +
                   value + "'");
      }
      have_fd = true;
    } else if (name == "--control-fd") {
      if (!absl::SimpleAtoi(value, &options.control_fd) ||
          options.control_fd < 0 || ::fcntl(options.control_fd, F_GETFD) < 0) {
        UsageError("--control-fd must be an open file descriptor, got '" +
                   value + "'");
      }
    } else if (name == "--max-spares") {
      if (!absl::SimpleAtoi(value, &options.spares) || options.spares > 64) {
        UsageError("--max-spares must be a number from 0 to 64, got '" + value +
                   "'");
      }
    } else if (name == "--session-tag") {
      if (!IsSessionTag(value)) {
        UsageError("--session-tag must be 1-32 lowercase hex digits, got '" +
                   value + "'");
      }
      options.session_tag = value;
    } else if (name == "--parent-pid") {
      if (!absl::SimpleAtoi(value, &options.parent_pid) ||
          options.parent_pid <= 0) {
        UsageError("--parent-pid must be a process id, got '" + value + "'");
      }
    } else if (name == "--crash-fd") {
      if (!absl::SimpleAtoi(value, &options.crash_fd) ||
          options.crash_fd < 0 || ::fcntl(options.crash_fd, F_GETFD) < 0) {
        UsageError("--crash-fd must be an open file descriptor, got '" +
                   value + "'");
      }
    } else if (name == "--policy") {
      if (!DecodePolicy(value, &options.policy)) {
        UsageError("--policy must be a hex-encoded WorkerPolicy");
      }
    } else {
      UsageError("unknown argument '" + std::string(arg) + "'");
    }
  }
  if (options.zygote) {
    if (options.control_fd < 0) UsageError("--zygote needs --control-fd");
    return options;
  }
  if (!have_fd) UsageError("--channel-fd is required");
  if (options.session_tag.empty()) UsageError("--session-tag is required");
  int type = 0;
  socklen_t length = sizeof(type);
  if (::fcntl(options.channel_fd, F_GETFD) < 0) {
    UsageError("--channel-fd=" + std::to_string(options.channel_fd) +
               " is not an open file descriptor");
  }
  if (::getsockopt(options.channel_fd, SOL_SOCKET, SO_TYPE, &type, &length) !=
          0 ||
      type != SOCK_STREAM) {
    UsageError("--channel-fd=" + std::to_string(options.channel_fd) +
               " is not a stream socket");
  }
  return options;
}

[[noreturn]] void SetupFailed(const char* what) {
  std::fprintf(stderr, "ffid-worker: %s: %s\n", what, std::strerror(errno));
  std::exit(kExitSetup);
}

// Closes every descriptor but stdin/out/err and `keep`, so nothing the
// daemon had open (listening sockets, other sessions' channels) leaks into
// code that runs here.
void CloseOtherFds(int keep, int keep_too) {
  if (keep_too >= 0 && keep_too != keep) {
    // Move the second descriptor right after the first so one range
    // covers both.
    if (keep_too != keep + 1) {
      if (::dup2(keep_too, keep + 1) < 0) SetupFailed("dup2 crash fd");
    }
    keep_too = keep + 1;
  }
  bool ok = true;
  if (keep < 3) {
    ok = ::close_range(3, ~0u, 0) == 0;
  } else {
    if (keep > 3) ok = ::close_range(3, keep - 1, 0) == 0;
    const int last = keep_too >= 0 ? keep_too : keep;
    if (ok) ok = ::close_range(last + 1, ~0u, 0) == 0;
  }
  if (ok) return;
  // close_range needs Linux 5.9; otherwise walk /proc/self/fd.
  std::vector<int> fds;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) SetupFailed("cannot list /proc/self/fd");
  const int dir_fd = ::dirfd(dir);
  while (dirent* entry = ::readdir(dir)) {
    int fd;
    if (absl::SimpleAtoi(entry->d_name, &fd) && fd > 2 && fd != keep &&
        fd != keep_too && fd != dir_fd) {
      fds.push_back(fd);
    }
  }
  ::closedir(dir);
  for (int fd : fds) ::close(fd);
}

// Signal state survives exec: undo whatever the daemon's threads had
// blocked or ignored so native code sees a normal process.
void ResetSignals() {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int signal = 1; signal < NSIG; ++signal) {
    if (signal == SIGKILL || signal == SIGSTOP) continue;
    struct sigaction current;
    if (::sigaction(signal, nullptr, &current) == 0 &&
        current.sa_handler == SIG_IGN) {
      ::signal(signal, SIG_DFL);
    }
  }
}

// Dies with the parent: the daemon for an exec'd worker and the zygote,
// the zygote for the workers it forks (which dies with the daemon). The
// signal is tied to the *thread* that forked us, so the daemon spawns from
// a thread that lives as long as it does. `parent_pidfd` (when >= 0) names
// the parent to check instead of --parent-pid: inside a PID namespace
// getppid() says 0.
void DieWithParent(pid_t parent_pid, int parent_pidfd) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    SetupFailed("prctl(PR_SET_PDEATHSIG)");
  }
  if (parent_pidfd >= 0) {
    // Still there after arming, or it died before and we would be orphaned.
    // (A pidfd polls readable once its process has exited; signalling it
    // is not allowed from inside a new PID namespace.)
    pollfd parent = {parent_pidfd, POLLIN, 0};
    if (::poll(&parent, 1, 0) != 0) std::exit(kExitSetup);
    ::close(parent_pidfd);
  } else if (parent_pid != 0 && ::getppid() != parent_pid) {
    // The daemon died before PDEATHSIG was armed.
    std::exit(kExitSetup);
  }
}

// What every ffid-worker process does first, zygote or not.
void HardenProcess() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    SetupFailed("prctl(PR_SET_NO_NEW_PRIVS)");
  }
  // A crash is reported by the daemon; a core file would only leak the
  // session's memory to disk.
  struct rlimit no_core = {0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
    SetupFailed("setrlimit(RLIMIT_CORE)");
  }
  ResetSignals();
}

// The crash handler, then the sandbox (`entered` namespaces exist already).
void EnterWorkerSandbox(Options& options, int entered) {
  if (options.crash_fd >= 0) {
    if (!InstallCrashHandler(options.crash_fd)) {
      SetupFailed("installing the crash handler");
    }
  }
  absl::Status sandboxed = EnterSandbox(options.policy, entered);
  if (!sandboxed.ok()) {
    std::fprintf(stderr, "ffid-worker: %s\n",
                 std::string(sandboxed.message()).c_str());
    std::exit(kExitSetup);
  }
}

void Harden(Options& options) {
  DieWithParent(options.parent_pid, -1);
  HardenProcess();
  CloseOtherFds(options.channel_fd, options.crash_fd);
  if (options.crash_fd >= 0 && options.crash_fd != options.channel_fd + 1) {
    options.crash_fd = options.channel_fd + 1;  // moved by CloseOtherFds
  }
  EnterWorkerSandbox(options, 0);
}

int Serve(const Options& options) {
  FrameChannel channel(options.channel_fd);
  Executor executor(options.session_tag);
  // A reader thread routes the daemon's frames; this thread executes the
  // ordinary requests in order; native threads waiting for callbacks run
  // the calls made from inside them.
  Dispatcher dispatcher(channel, executor);
  absl::Status served = dispatcher.Run();
  if (served.ok()) return 0;
  std::fprintf(stderr, "ffid-worker: %s\n",
               std::string(served.message()).c_str());
  return kExitChannel;
}

// Loads and initializes now, once, what each worker would otherwise do on
// its own: the unwinder the crash handler uses, protobuf's message tables.
void Warm() {
  void* frames[2];
  ::backtrace(frames, 2);
  WorkerRequest request;
  WorkerResponse response;
  (void)request.ParseFromString(request.SerializeAsString());
  (void)response.ParseFromString(response.SerializeAsString());
  // Workers in a PID namespace are pid 1: their seccomp programs can be
  // compiled once, here.
  for (bool allow_network : {false, true}) {
    (void)PrepareSeccompPolicy(allow_network, 1);
  }
}

// --zygote: harden this process, warm up, then fork workers on request.
int RunAsZygote(Options& options, int argc, char** argv) {
  DieWithParent(options.parent_pid, -1);
  HardenProcess();
  CloseOtherFds(options.control_fd, -1);
  Warm();
  return RunZygote(options.control_fd, options.spares,
                   [&](const ZygoteChild& cloned) {
    ZygoteChild child = cloned;
    // `ps` tells workers (and spares) from the zygote: rewrite "--zygote"
    // in place.
    auto rename = [&](const char (&name)[9]) {
      for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--zygote") == 0 ||
            std::strcmp(argv[i], "--spare") == 0) {
          std::memcpy(argv[i], name, 8);
        }
      }
    };
    const bool spare = child.assignment_fd >= 0;
    rename(spare ? "--spare\0" : "--worker");
    Options worker;
    worker.channel_fd = 3;
    worker.crash_fd = spare || child.fd_count >= 2 ? 4 : -1;
    worker.session_tag = child.session_tag;
    worker.policy = child.policy;
    // Its own process group, as an exec'd worker's: the daemon kills the
    // group, taking anything the worker started.
    ::setpgid(0, 0);
    DieWithParent(0, child.zygote_pidfd);
    HardenProcess();
    // A spare's crash handler writes to fd 4, where AwaitAssignment() puts
    // the session's crash pipe before anything else runs.
    EnterWorkerSandbox(worker, child.namespaces);
    if (spare) {
      if (!AwaitAssignment(child)) return 0;
      rename("--worker");
      worker.session_tag = child.session_tag;
      if (child.fd_count < 2) worker.crash_fd = -1;
    }
    return Serve(worker);
  });
}

}  // namespace
}  // namespace ffid::worker

#if defined(__SANITIZE_ADDRESS__)
// Under AddressSanitizer the worker must still die of a native crash's own
// signal: the daemon's crash report names that signal. ASan would otherwise
// turn SIGSEGV/SIGBUS/SIGFPE/SIGILL into a report and exit(1).
extern "C" const char* __asan_default_options() {
  // LeakSanitizer's exit-time check clones a tracer process, which the
  // worker's seccomp policy refuses (and a worker's leaks die with it).
  return "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:"
         "handle_abort=0:detect_leaks=0";
}
#endif

#if defined(__SANITIZE_THREAD__)
// Likewise under ThreadSanitizer: a native crash must reach the worker's own
// handler and then kill it with its signal, not become a TSan report.
extern "C" const char* __tsan_default_options() {
  return "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:"
         "handle_abort=0";
}
#endif

int main(int argc, char** argv) {
  // As in the daemon (server/main.cc): Debian's abseil keeps absl::Mutex's
  // lock graph on every Lock(), which perf showed among the worker's top
  // symbols on pipelined calls (the dispatcher locks several times per
  // request). The unit tests keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  ffid::worker::Options options = ffid::worker::ParseArgs(argc, argv);
  if (options.zygote) return ffid::worker::RunAsZygote(options, argc, argv);
  ffid::worker::Harden(options);
  return ffid::worker::Serve(options);
}
