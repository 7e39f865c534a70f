#include "server/worker/seccomp_policy.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"

namespace ffid::worker {
namespace {

absl::Status SeccompError(absl::string_view what, int rc) {
  return MakeError(absl::StatusCode::kInternal, v1::ERROR_REASON_INTERNAL,
                   absl::StrCat("seccomp: ", what, ": ", strerror(-rc)));
}

struct ContextDeleter {
  void operator()(void* context) const { seccomp_release(context); }
};

}  // namespace

const std::vector<std::string>& SeccompAllowlist() {
  static const auto* const names = new std::vector<std::string>{
      // I/O on descriptors
      "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
      "pwritev", "preadv2", "pwritev2", "lseek", "close", "close_range",
      "dup", "dup2", "dup3", "fcntl", "ioctl", "pipe", "pipe2", "sendfile",
      "splice", "tee", "copy_file_range", "fsync", "fdatasync", "flock",
      "ftruncate", "fallocate", "fadvise64", "readahead", "sync_file_range",
      "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
      "shutdown", "getsockopt", "getsockname", "getpeername",
      // files (which ones: the mount view and Landlock decide)
      "open", "openat", "openat2", "creat", "stat", "fstat", "lstat",
      "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
      "faccessat2", "getdents", "getdents64", "readlink", "readlinkat",
      "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename",
      "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
      "chmod", "fchmod", "fchmodat", "truncate", "utimensat", "futimesat",
      "utime", "utimes", "getcwd", "chdir", "fchdir", "umask",
      "getxattr", "lgetxattr", "fgetxattr", "listxattr", "flistxattr",
      "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
      "memfd_create",
      // memory
      "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync",
      "mincore", "mlock", "munlock", "mlock2", "membarrier",
      "get_mempolicy",
      // threads and synchronisation
      "futex", "futex_waitv", "set_robust_list", "get_robust_list", "rseq",
      "set_tid_address", "sched_yield", "sched_getaffinity",
      "sched_getparam", "sched_getscheduler",
      "sched_get_priority_max", "sched_get_priority_min", "getpriority",
      "arch_prctl", "prctl", "exit", "exit_group",
      // signals
      "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
      "rt_sigsuspend", "rt_sigtimedwait", "sigaltstack",
      "pause", "alarm", "getitimer", "setitimer", "signalfd", "signalfd4",
      // time
      "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep",
      "gettimeofday", "time", "times", "timer_create", "timer_settime",
      "timer_gettime", "timer_getoverrun", "timer_delete",
      "timerfd_create", "timerfd_settime", "timerfd_gettime",
      // polling
      "poll", "ppoll", "select", "pselect6", "epoll_create",
      "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
      "epoll_pwait2", "eventfd", "eventfd2",
      // identity and limits (read-only, or only lowering)
      "getpid", "gettid", "getppid", "getpgrp", "getpgid", "getsid",
      "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
      "getgroups", "getrlimit", "setrlimit", "prlimit64", "getrusage",
      "uname", "sysinfo", "getrandom", "getcpu", "capget",
  };
  return *names;
}

const std::vector<std::string>& SeccompNetworkCalls() {
  static const auto* const names = new std::vector<std::string>{
      "socket", "socketpair", "connect", "bind", "listen", "accept",
      "accept4", "setsockopt"};
  return *names;
}

namespace {

using Context = std::unique_ptr<void, ContextDeleter>;

// The policy for a process whose pid (as it sees it) is `self`.
absl::StatusOr<Context> BuildPolicy(bool allow_network, pid_t self_pid) {
  Context context(seccomp_init(SCMP_ACT_TRAP));
  if (context == nullptr) return SeccompError("seccomp_init", -ENOMEM);
  int rc = seccomp_attr_set(context.get(), SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc != 0) return SeccompError("TSYNC", rc);
  auto allow = [&context](const std::string& name) -> absl::Status {
    int number = seccomp_syscall_resolve_name(name.c_str());
    if (number == __NR_SCMP_ERROR) return absl::OkStatus();
    int rc = seccomp_rule_add(context.get(), SCMP_ACT_ALLOW, number, 0);
    // A pseudo-syscall this architecture lacks is not an error.
    if (rc != 0 && rc != -EDOM) return SeccompError(name, rc);
    return absl::OkStatus();
  };
  for (const std::string& name : SeccompAllowlist()) RETURN_IF_ERROR(allow(name));
  if (allow_network) {
    for (const std::string& name : SeccompNetworkCalls()) {
      RETURN_IF_ERROR(allow(name));
    }
  }
  // Calls that name a process: only this one (the worker reads its own
  // memory with process_vm_readv; raise() and abort() signal themselves).
  const scmp_datum_t self = static_cast<scmp_datum_t>(self_pid);
  for (int number : {SCMP_SYS(kill), SCMP_SYS(tgkill), SCMP_SYS(rt_sigqueueinfo),
                     SCMP_SYS(rt_tgsigqueueinfo), SCMP_SYS(process_vm_readv),
                     SCMP_SYS(process_vm_writev), SCMP_SYS(sched_setaffinity),
                     SCMP_SYS(setpriority)}) {
    if (number == SCMP_SYS(setpriority)) {
      // setpriority(which, who, prio): who == 0 is this process.
      rc = seccomp_rule_add(context.get(), SCMP_ACT_ALLOW, number, 1,
                            SCMP_A1(SCMP_CMP_EQ, 0));
    } else {
      rc = seccomp_rule_add(context.get(), SCMP_ACT_ALLOW, number, 1,
                            SCMP_A0(SCMP_CMP_EQ, self));
      if (rc == 0 && number == SCMP_SYS(sched_setaffinity)) {
        rc = seccomp_rule_add(context.get(), SCMP_ACT_ALLOW, number, 1,
                              SCMP_A0(SCMP_CMP_EQ, 0));
      }
    }
    if (rc != 0) return SeccompError("process-scoped rule", rc);
  }
  // Threads yes, processes no.
  rc = seccomp_rule_add(context.get(), SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                        SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD,
                                CLONE_THREAD));
  if (rc != 0) return SeccompError("clone", rc);
  rc = seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(ENOSYS),
                        SCMP_SYS(clone3), 0);
  if (rc != 0 && rc != -EDOM) return SeccompError("clone3", rc);
  return context;
}

// Compiled programs, by (allow_network, self pid). Filled before the
// zygote forks (PrepareSeccompPolicy), read in single-threaded workers.
struct Compiled {
  bool allow_network;
  pid_t self;
  std::vector<sock_filter> program;
};
std::vector<Compiled>& CompiledPolicies() {
  static auto* const compiled = new std::vector<Compiled>();
  return *compiled;
}

}  // namespace

absl::Status PrepareSeccompPolicy(bool allow_network, pid_t self_pid) {
  for (const Compiled& compiled : CompiledPolicies()) {
    if (compiled.allow_network == allow_network && compiled.self == self_pid) {
      return absl::OkStatus();
    }
  }
  ASSIGN_OR_RETURN(Context context, BuildPolicy(allow_network, self_pid));
  const int fd = memfd_create("ffid-seccomp", MFD_CLOEXEC);
  if (fd < 0) return SeccompError("memfd_create", -errno);
  int rc = seccomp_export_bpf(context.get(), fd);
  std::vector<sock_filter> program;
  if (rc == 0) {
    const off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % sizeof(sock_filter) != 0) {
      rc = -EINVAL;
    } else {
      program.resize(static_cast<size_t>(size) / sizeof(sock_filter));
      if (pread(fd, program.data(), static_cast<size_t>(size), 0) != size) {
        rc = -EIO;
      }
    }
  }
  close(fd);
  if (rc != 0) return SeccompError("seccomp_export_bpf", rc);
  CompiledPolicies().push_back({allow_network, self_pid, std::move(program)});
  return absl::OkStatus();
}

absl::Status InstallSeccompPolicy(bool allow_network) {
  const pid_t self = getpid();
  for (Compiled& compiled : CompiledPolicies()) {
    if (compiled.allow_network != allow_network || compiled.self != self) {
      continue;
    }
    sock_fprog program = {static_cast<unsigned short>(compiled.program.size()),
                          compiled.program.data()};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_TSYNC, &program) != 0) {
      return SeccompError("seccomp(SECCOMP_SET_MODE_FILTER)", -errno);
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Context context, BuildPolicy(allow_network, self));
  int rc = seccomp_load(context.get());
  if (rc != 0) return SeccompError("seccomp_load", rc);
  return absl::OkStatus();
}

}  // namespace ffid::worker
