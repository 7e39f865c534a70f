#include "server/sandbox_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include "absl/strings/str_cat.h"

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif

namespace ffid::server {
namespace {

constexpr unsigned kLandlockCreateRulesetVersion = 1U << 0;

// Async-signal-safe: writes "A B 1" for uid/gid maps.
bool WriteMap(const char* path, unsigned id) {
  char text[64];
  char digits[16];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + id % 10);
    id /= 10;
  } while (id != 0);
  int length = 0;
  for (int copy = 0; copy < 2; ++copy) {
    for (int i = n - 1; i >= 0; --i) text[length++] = digits[i];
    text[length++] = ' ';
  }
  text[length++] = '1';
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, text, static_cast<size_t>(length)) == length;
  close(fd);
  return ok;
}

bool EnterUserNamespace(int extra_flags, unsigned uid, unsigned gid) {
  if (unshare(CLONE_NEWUSER | extra_flags) != 0) return false;
  int fd = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (write(fd, "deny", 4) != 4) {
      close(fd);
      return false;
    }
    close(fd);
  }
  return WriteMap("/proc/self/uid_map", uid) &&
         WriteMap("/proc/self/gid_map", gid);
}

// Runs `check` in a child; 0 if it succeeded, else the errno it saw.
template <typename Check>
int InChild(Check check) {
  pid_t pid = fork();
  if (pid < 0) return errno;
  if (pid == 0) {
    errno = 0;
    if (check()) _exit(0);
    _exit(errno == 0 ? EPERM : (errno & 0xff));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ECHILD;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return EFAULT;
}

}  // namespace

v1::SandboxStatus ProbeSandbox() {
  v1::SandboxStatus status;
  const unsigned uid = geteuid();
  const unsigned gid = getegid();
  int error = InChild([&] { return EnterUserNamespace(0, uid, gid); });
  status.set_user_namespace(error == 0);
  if (error != 0) {
    status.add_disabled(absl::StrCat(
        "user_namespace: unshare(CLONE_NEWUSER): ", strerror(error),
        " (user namespaces disabled; other namespaces need root then)"));
  }
  const bool userns = status.user_namespace();
  // Each namespace, the way the worker enters it.
  auto enter = [&](int flag) {
    return userns ? EnterUserNamespace(flag, uid, gid) : unshare(flag) == 0;
  };
  struct Namespace {
    const char* name;
    int flag;
    void (v1::SandboxStatus::*set)(bool);
  };
  const Namespace namespaces[] = {
      {"network_namespace", CLONE_NEWNET, &v1::SandboxStatus::set_network_namespace},
      {"mount_namespace", CLONE_NEWNS, &v1::SandboxStatus::set_mount_namespace},
      {"pid_namespace", CLONE_NEWPID, &v1::SandboxStatus::set_pid_namespace},
      {"ipc_namespace", CLONE_NEWIPC, &v1::SandboxStatus::set_ipc_namespace},
      {"uts_namespace", CLONE_NEWUTS, &v1::SandboxStatus::set_uts_namespace},
  };
  for (const Namespace& ns : namespaces) {
    error = InChild([&] {
      if (!enter(ns.flag)) return false;
      if (ns.flag == CLONE_NEWNS) {
        // The view needs private propagation and a tmpfs.
        if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
          return false;
        }
        if (mount("probe", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=4k") !=
            0) {
          return false;
        }
      }
      if (ns.flag == CLONE_NEWPID) {
        pid_t child = fork();
        if (child < 0) return false;
        if (child == 0) _exit(0);
        int child_status = 0;
        return waitpid(child, &child_status, 0) == child;
      }
      return true;
    });
    (status.*ns.set)(error == 0);
    if (error != 0) {
      status.add_disabled(absl::StrCat(ns.name, ": ", strerror(error)));
    }
  }

  // seccomp with SECCOMP_RET_TRAP (the violation report needs it).
  uint32_t trap = SECCOMP_RET_TRAP;
  if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0) {
    status.add_disabled(
        absl::StrCat("seccomp: prctl(PR_GET_SECCOMP): ", strerror(errno)));
  } else if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &trap) != 0) {
    status.add_disabled(absl::StrCat(
        "seccomp: SECCOMP_RET_TRAP not available: ", strerror(errno)));
  } else {
    status.set_seccomp(true);
  }

  long abi = syscall(__NR_landlock_create_ruleset, nullptr, 0,
                     kLandlockCreateRulesetVersion);
  if (abi > 0) {
    status.set_landlock_abi(static_cast<int32_t>(abi));
  } else {
    status.add_disabled(absl::StrCat(
        "landlock: ", strerror(errno),
        errno == EOPNOTSUPP ? " (built in but disabled at boot)" : ""));
  }
  status.set_rlimits(true);
  return status;
}

std::vector<std::string> DescribeSandbox(const v1::SandboxStatus& status) {
  auto on = [](bool value) { return value ? "on" : "OFF"; };
  std::vector<std::string> lines = {absl::StrCat(
      "sandbox: user namespace ", on(status.user_namespace()), ", network ",
      on(status.network_namespace()), ", mount ", on(status.mount_namespace()),
      ", pid ", on(status.pid_namespace()), ", ipc ",
      on(status.ipc_namespace()), ", uts ", on(status.uts_namespace()),
      ", seccomp ", on(status.seccomp()), ", landlock ",
      status.landlock_abi() > 0
          ? absl::StrCat("ABI ", status.landlock_abi())
          : std::string("OFF"),
      ", rlimits ", on(status.rlimits()))};
  for (const std::string& why : status.disabled()) {
    lines.push_back(absl::StrCat("sandbox: off: ", why));
  }
  return lines;
}

}  // namespace ffid::server
