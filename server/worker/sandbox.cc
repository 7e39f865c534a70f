#include "server/worker/sandbox.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "server/worker/namespaces.h"
#include "server/worker/seccomp_policy.h"

namespace ffid::worker {
namespace {

absl::Status Failed(absl::string_view what, int error = errno) {
  return MakeError(absl::StatusCode::kInternal,
                   v1::ERROR_REASON_WORKER_START_FAILED,
                   absl::StrCat("sandbox: ", what, ": ", strerror(error)));
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Failed(absl::StrCat("open ", path));
  ssize_t n = write(fd, text.data(), text.size());
  int error = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    return Failed(absl::StrCat("write ", path), error);
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------ namespaces

absl::Status Unshare(const WorkerPolicy& policy, int entered) {
  int flags = NamespaceCloneFlags(policy);
  if (flags == 0) return absl::OkStatus();
  // Inside a new user namespace that has no mapping yet, the ids read as
  // the overflow id; the mapping wants the ids outside, which are the
  // same as the parent's: ask /proc for those of the parent's namespace.
  uid_t uid = geteuid();
  gid_t gid = getegid();
  if ((entered & CLONE_NEWUSER) != 0) {
    uid = static_cast<uid_t>(policy.outer_uid());
    gid = static_cast<gid_t>(policy.outer_gid());
  }
  if (policy.user_namespace()) {
    // Writing uid_map needs a dumpable process (it is not after a uid
    // change).
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  }
  if ((flags & ~entered) != 0 && unshare(flags & ~entered) != 0) {
    return Failed("unshare");
  }
  if (policy.user_namespace()) {
    // The same ids inside; the worker keeps full capabilities in its own
    // namespace (for the mounts below) and none outside it.
    RETURN_IF_ERROR(WriteFile("/proc/self/setgroups", "deny"));
    RETURN_IF_ERROR(
        WriteFile("/proc/self/uid_map", absl::StrCat(uid, " ", uid, " 1")));
    RETURN_IF_ERROR(
        WriteFile("/proc/self/gid_map", absl::StrCat(gid, " ", gid, " 1")));
  }
  if (policy.uts_namespace()) {
    static constexpr char kHostname[] = "ffid-worker";
    sethostname(kHostname, sizeof(kHostname) - 1);
  }
  return absl::OkStatus();
}

// Waits for the real worker and dies the same way. Never returns.
[[noreturn]] void MirrorChild(pid_t child) {
  // Nothing here may keep the channel open: the daemon must see EOF when
  // the child dies.
  close_range(0, ~0u, 0);
  int status = 0;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) _exit(125);
  }
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  const int signal = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
  struct sigaction action = {};
  action.sa_handler = SIG_DFL;
  sigaction(signal, &action, nullptr);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, signal);
  sigprocmask(SIG_UNBLOCK, &mask, nullptr);
  kill(getpid(), signal);
  _exit(128 + signal);
}

// ------------------------------------------------------------ mount view

bool Exists(const std::string& path, bool* is_dir) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  *is_dir = S_ISDIR(st.st_mode);
  return true;
}

absl::Status MakeDirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i != path.size() && path[i] != '/') continue;
    std::string prefix = path.substr(0, i);
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return Failed(absl::StrCat("mkdir ", prefix));
    }
  }
  return absl::OkStatus();
}

absl::Status MakeMountPoint(const std::string& target, bool is_dir) {
  if (is_dir) return MakeDirs(target);
  RETURN_IF_ERROR(MakeDirs(target.substr(0, target.rfind('/'))));
  int fd = open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Failed(absl::StrCat("create ", target));
  close(fd);
  return absl::OkStatus();
}

// The flags of the mount holding `path` that a user namespace may not
// clear on a remount (they are locked).
unsigned long LockedFlags(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return 0;
  unsigned long flags = 0;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

struct Bind {
  std::string source;
  bool is_dir;
  bool writable;
};

// The paths to bind: existing ones, none inside another (a recursive bind
// of the parent already shows it).
std::vector<Bind> PlanBinds(const WorkerPolicy& policy) {
  std::vector<std::string> paths(policy.read_only_paths().begin(),
                                 policy.read_only_paths().end());
  std::sort(paths.begin(), paths.end());
  std::vector<Bind> binds;
  for (const std::string& path : paths) {
    if (path.empty() || path[0] != '/' || path == "/") continue;
    bool inside = false;
    for (const Bind& bind : binds) {
      if (bind.is_dir && absl::StartsWith(path, bind.source + "/")) {
        inside = true;
      }
      if (bind.source == path) inside = true;
    }
    bool is_dir = false;
    if (inside || !Exists(path, &is_dir)) continue;
    binds.push_back({path, is_dir, false});
  }
  for (const char* device :
       {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}) {
    bool is_dir = false;
    if (Exists(device, &is_dir)) binds.push_back({device, false, true});
  }
  return binds;
}

// A directory to mount the new root on: one that holds none of the paths
// to bind, since mounting over it hides what is below.
std::string PickRootMountPoint(const std::vector<Bind>& binds) {
  for (const char* candidate :
       {"/mnt", "/media", "/srv", "/opt", "/boot", "/home", "/root", "/var",
        "/run", "/tmp", "/usr/src", "/usr/local"}) {
    bool is_dir = false;
    if (!Exists(candidate, &is_dir) || !is_dir) continue;
    bool hides = false;
    for (const Bind& bind : binds) {
      if (bind.source == candidate ||
          absl::StartsWith(bind.source, absl::StrCat(candidate, "/"))) {
        hides = true;
      }
    }
    if (!hides) return candidate;
  }
  return "";
}

absl::Status BuildMountView(const WorkerPolicy& policy) {
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return Failed("make / private");
  }
  std::vector<Bind> binds = PlanBinds(policy);
  const std::string root = PickRootMountPoint(binds);
  if (root.empty()) return Failed("no directory to build the view on", ENOENT);
  if (mount("ffid-root", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
            "size=1m,mode=0755") != 0) {
    return Failed(absl::StrCat("mount tmpfs on ", root));
  }
  // A private /tmp first: allowed directories below /tmp are bound into it.
  const std::string tmp = root + "/tmp";
  RETURN_IF_ERROR(MakeDirs(tmp));
  if (mount("ffid-tmp", tmp.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
            "size=64m,mode=1777") != 0) {
    return Failed("mount private /tmp");
  }
  for (const Bind& bind : binds) {
    const std::string target = root + bind.source;
    RETURN_IF_ERROR(MakeMountPoint(target, bind.is_dir));
    if (mount(bind.source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC,
              nullptr) != 0) {
      return Failed(absl::StrCat("bind ", bind.source));
    }
  }
  for (const Bind& bind : binds) {
    const std::string target = root + bind.source;
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID |
                          LockedFlags(target);
    if (!bind.writable) flags |= MS_RDONLY;
    if (mount(nullptr, target.c_str(), nullptr, flags, nullptr) != 0) {
      return Failed(absl::StrCat("remount read-only ", bind.source));
    }
  }
  if (policy.pid_namespace()) {
    const std::string proc = root + "/proc";
    RETURN_IF_ERROR(MakeDirs(proc));
    if (mount("proc", proc.c_str(), "proc",
              MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
      return Failed("mount /proc");
    }
  }
  if (chdir(root.c_str()) != 0) return Failed("chdir to the new root");
  if (syscall(SYS_pivot_root, ".", ".") != 0) return Failed("pivot_root");
  // The old root is stacked below the new one: detach it.
  if (umount2(".", MNT_DETACH) != 0) return Failed("detach the old root");
  if (chdir("/") != 0) return Failed("chdir /");
  if (mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
            nullptr) != 0) {
    return Failed("remount the root read-only");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- rlimits

absl::Status Limit(int resource, uint64_t value, const char* name) {
  if (value == 0) return absl::OkStatus();
  struct rlimit current;
  if (getrlimit(resource, &current) != 0) return Failed(name);
  rlim_t limit = static_cast<rlim_t>(value);
  // Never above the hard limit: raising it needs CAP_SYS_RESOURCE.
  if (current.rlim_max != RLIM_INFINITY && limit > current.rlim_max) {
    limit = current.rlim_max;
  }
  struct rlimit wanted = {limit, limit};
  if (resource == RLIMIT_CPU && current.rlim_max != RLIM_INFINITY &&
      limit + 1 <= current.rlim_max) {
    // SIGXCPU at the soft limit (reported), SIGKILL a second later.
    wanted.rlim_max = limit + 1;
  } else if (resource == RLIMIT_CPU && current.rlim_max == RLIM_INFINITY) {
    wanted.rlim_max = limit + 1;
  }
  if (setrlimit(resource, &wanted) != 0) return Failed(name);
  return absl::OkStatus();
}

absl::Status ApplyRlimits(const WorkerPolicy& policy) {
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // AddressSanitizer and ThreadSanitizer reserve terabytes of shadow
  // address space; RLIMIT_AS would stop them (TSan's allocator fails at the
  // first allocation; the sanitized builds document this gap).
  RETURN_IF_ERROR(Limit(RLIMIT_AS, policy.address_space_bytes(), "RLIMIT_AS"));
#endif
  RETURN_IF_ERROR(Limit(RLIMIT_CPU, policy.cpu_seconds(), "RLIMIT_CPU"));
  RETURN_IF_ERROR(Limit(RLIMIT_NOFILE, policy.open_files(), "RLIMIT_NOFILE"));
  RETURN_IF_ERROR(Limit(RLIMIT_FSIZE, policy.file_size_bytes(), "RLIMIT_FSIZE"));
  return absl::OkStatus();
}

// --------------------------------------------------------------- Landlock
// Debian 12's <linux/landlock.h> predates ABI 4+; the few definitions
// needed are spelled out here.

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif

struct LandlockRulesetAttr {
  uint64_t handled_access_fs;
};

struct __attribute__((packed)) LandlockPathBeneathAttr {
  uint64_t allowed_access;
  int32_t parent_fd;
};

constexpr int kLandlockRulePathBeneath = 1;
constexpr uint64_t kFsExecute = 1ULL << 0;
constexpr uint64_t kFsWriteFile = 1ULL << 1;
constexpr uint64_t kFsReadFile = 1ULL << 2;
constexpr uint64_t kFsReadDir = 1ULL << 3;
constexpr uint64_t kFsRefer = 1ULL << 13;     // ABI 2
constexpr uint64_t kFsTruncate = 1ULL << 14;  // ABI 3
constexpr uint64_t kFsIoctlDev = 1ULL << 15;  // ABI 5

uint64_t HandledAccess(int abi) {
  uint64_t access = (1ULL << 13) - 1;  // ABI 1: execute .. make_sym
  if (abi >= 2) access |= kFsRefer;
  if (abi >= 3) access |= kFsTruncate;
  if (abi >= 5) access |= kFsIoctlDev;
  return access;
}

absl::Status AllowBeneath(int ruleset, const std::string& path,
                          uint64_t access, uint64_t handled) {
  int fd = open(path.c_str(), O_PATH | O_CLOEXEC);
  if (fd < 0) return absl::OkStatus();  // Not in the view: nothing to allow.
  struct stat st;
  if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) {
    access &= kFsExecute | kFsWriteFile | kFsReadFile | kFsTruncate |
              kFsIoctlDev;
  }
  LandlockPathBeneathAttr rule = {access & handled, fd};
  long rc = syscall(__NR_landlock_add_rule, ruleset, kLandlockRulePathBeneath,
                    &rule, 0);
  int error = errno;
  close(fd);
  if (rc != 0) return Failed(absl::StrCat("landlock_add_rule ", path), error);
  return absl::OkStatus();
}

absl::Status ApplyLandlock(const WorkerPolicy& policy) {
  const int abi = policy.landlock_abi();
  if (abi <= 0) return absl::OkStatus();
  const uint64_t handled = HandledAccess(abi);
  LandlockRulesetAttr attr = {handled};
  long ruleset =
      syscall(__NR_landlock_create_ruleset, &attr, sizeof(attr), 0);
  if (ruleset < 0) return Failed("landlock_create_ruleset");
  const int fd = static_cast<int>(ruleset);
  absl::Status status;
  for (const std::string& path : policy.read_only_paths()) {
    status.Update(
        AllowBeneath(fd, path, kFsExecute | kFsReadFile | kFsReadDir, handled));
  }
  for (const char* device :
       {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}) {
    status.Update(AllowBeneath(fd, device, kFsReadFile | kFsWriteFile |
                                               kFsTruncate | kFsIoctlDev,
                               handled));
  }
  // Scratch space. Without a mount namespace this is the host's /tmp.
  status.Update(AllowBeneath(fd, "/tmp", handled, handled));
  if (policy.pid_namespace() && policy.mount_namespace()) {
    status.Update(AllowBeneath(fd, "/proc", kFsReadFile | kFsReadDir, handled));
  }
  if (status.ok() && syscall(__NR_landlock_restrict_self, fd, 0) != 0) {
    status = Failed("landlock_restrict_self");
  }
  close(fd);
  return status;
}

}  // namespace

bool DecodePolicy(const std::string& hex, WorkerPolicy* policy) {
  if (hex.size() % 2 != 0) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return policy->ParseFromString(absl::HexStringToBytes(hex));
}

absl::Status EnterSandbox(const WorkerPolicy& policy, int entered) {
  RETURN_IF_ERROR(Unshare(policy, entered));
  if (policy.pid_namespace() && (entered & CLONE_NEWPID) == 0) {
    pid_t child = fork();
    if (child < 0) return Failed("fork into the PID namespace");
    if (child > 0) MirrorChild(child);
    // PID 1 of the new namespace. Die with the waiter, which dies with the
    // daemon (and is killed with the worker's process group).
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return Failed("PDEATHSIG");
  }
  if (policy.mount_namespace()) RETURN_IF_ERROR(BuildMountView(policy));
  RETURN_IF_ERROR(ApplyRlimits(policy));
  RETURN_IF_ERROR(ApplyLandlock(policy));
  if (policy.seccomp()) {
    absl::Status status = InstallSeccompPolicy(policy.allow_network());
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace ffid::worker
