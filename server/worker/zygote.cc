#include "server/worker/zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "server/worker/namespaces.h"

namespace ffid::worker {
namespace {

absl::Status Unavailable(absl::string_view what) {
  return MakeError(absl::StatusCode::kUnavailable,
                   v1::ERROR_REASON_WORKER_START_FAILED,
                   absl::StrCat("zygote: ", what));
}

// glibc keeps the calling thread's id in its thread descriptor and fills
// it in a forked child through CLONE_CHILD_SETTID. A raw clone() must do
// the same, or the new process's main thread keeps the zygote's id there.
// The field is found by its value: the one word of the descriptor that
// holds our thread id. Null if it is not found exactly once.
pid_t* FindOwnTidField() {
#if defined(__x86_64__)
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  auto* base = reinterpret_cast<pid_t*>(pthread_self());
  pid_t* found = nullptr;
  for (int i = 0; i < 1024; ++i) {
    if (base[i] != tid) continue;
    if (found != nullptr) return nullptr;
    found = &base[i];
  }
  return found;
#else
  return nullptr;
#endif
}

int NamespaceFlags(const WorkerPolicy& policy) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer's runtime must see the fork; the worker unshares.
  (void)policy;
  return 0;
#else
  return NamespaceCloneFlags(policy);
#endif
}

// fork(), or a fork-like clone into new namespaces.
pid_t CloneInto(int namespaces, pid_t* tid_field) {
  if (namespaces == 0) return fork();
  unsigned long flags = static_cast<unsigned long>(namespaces) | SIGCHLD;
  if (tid_field != nullptr) flags |= CLONE_CHILD_SETTID;
  // x86-64 order: flags, stack (0: the child continues on a copy of
  // ours), parent_tid, child_tid, tls.
  return static_cast<pid_t>(
      syscall(SYS_clone, flags, nullptr, nullptr, tid_field, nullptr));
}

// In the child: the received descriptors onto 3, 4, ... (in order), the
// zygote's pidfd (if any) right after them; everything else closed.
// Returns where the pidfd landed (-1 without one).
int PlaceDescriptors(const std::vector<int>& fds, int zygote_pidfd) {
  const int count = static_cast<int>(fds.size());
  std::vector<int> sources = fds;
  if (zygote_pidfd >= 0) sources.push_back(zygote_pidfd);
  const int total = static_cast<int>(sources.size());
  // First out of the way of the targets, then down onto them.
  std::vector<int> high;
  for (int fd : sources) {
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3 + total);
    if (moved < 0) _exit(126);
    high.push_back(moved);
  }
  for (int i = 0; i < total; ++i) {
    if (dup2(high[i], 3 + i) < 0) _exit(126);  // clears close-on-exec
  }
  close_range(3 + total, ~0u, 0);
  if (zygote_pidfd < 0) return -1;
  // Only the worker's own code uses it: not inherited past an exec.
  fcntl(3 + count, F_SETFD, FD_CLOEXEC);
  return 3 + count;
}

absl::Status SendEvent(int control_fd, const ZygoteEvent& event,
                       const std::vector<int>& fds = {}) {
  return SendZygoteMessage(control_fd, event, fds);
}

// Reports every child that has ended. False if the daemon is gone.
bool ReapChildren(int control_fd) {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return true;
    ZygoteEvent event;
    event.mutable_exited()->set_pid(pid);
    event.mutable_exited()->set_wait_status(status);
    if (!SendEvent(control_fd, event).ok()) return false;
  }
}

}  // namespace

absl::Status SendZygoteMessage(int fd,
                               const google::protobuf::MessageLite& message,
                               const std::vector<int>& fds) {
  std::string bytes;
  if (!message.SerializeToString(&bytes) ||
      bytes.size() > kMaxZygoteMessageBytes ||
      fds.size() > static_cast<size_t>(kMaxZygoteFds)) {
    return MakeError(absl::StatusCode::kInvalidArgument,
                     v1::ERROR_REASON_INTERNAL,
                     "zygote: message too large to send");
  }
  if (bytes.empty()) bytes.push_back('\0');  // A zero-length message is EOF.
  iovec iov = {bytes.data(), bytes.size()};
  msghdr header = {};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxZygoteFds)];
  if (!fds.empty()) {
    const size_t length = sizeof(int) * fds.size();
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(length);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(length);
    memcpy(CMSG_DATA(cmsg), fds.data(), length);
  }
  for (;;) {
    ssize_t sent = sendmsg(fd, &header, MSG_NOSIGNAL);
    if (sent >= 0) return absl::OkStatus();
    if (errno == EINTR) continue;
    return Unavailable(absl::StrCat("send: ", strerror(errno)));
  }
}

absl::Status ReceiveZygoteMessage(int fd,
                                  google::protobuf::MessageLite* message,
                                  std::vector<int>* fds) {
  std::string bytes(kMaxZygoteMessageBytes, '\0');
  iovec iov = {bytes.data(), bytes.size()};
  msghdr header = {};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxZygoteFds)];
  header.msg_control = control;
  header.msg_controllen = sizeof(control);
  ssize_t received;
  do {
    received = recvmsg(fd, &header, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  fds->clear();
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg != nullptr;
       cmsg = CMSG_NXTHDR(&header, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
      continue;
    }
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received_fd;
      memcpy(&received_fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      fds->push_back(received_fd);
    }
  }
  if (received <= 0) {
    for (int received_fd : *fds) close(received_fd);
    fds->clear();
    return Unavailable(received == 0 ? "peer closed the socket"
                                     : absl::StrCat("receive: ",
                                                    strerror(errno)));
  }
  bytes.resize(static_cast<size_t>(received));
  if ((header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 ||
      !message->ParseFromString(bytes == std::string(1, '\0') ? "" : bytes)) {
    for (int received_fd : *fds) close(received_fd);
    fds->clear();
    return MakeError(absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
                     "zygote: a message was truncated or did not parse");
  }
  return absl::OkStatus();
}

int RunZygote(int control_fd,
              const std::function<int(const ZygoteChild&)>& run_worker) {
  pid_t* const tid_field = FindOwnTidField();
  // Deaths arrive as readable signalfd, never as a handler.
  sigset_t child_signal;
  sigemptyset(&child_signal);
  sigaddset(&child_signal, SIGCHLD);
  sigprocmask(SIG_BLOCK, &child_signal, nullptr);
  const int signal_fd = signalfd(-1, &child_signal, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0) return 3;
  const int self_pidfd =
      static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));  // -1: none

  for (;;) {
    pollfd polled[2] = {{control_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    if (poll(polled, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 3;
    }
    if (polled[1].revents != 0) {
      signalfd_siginfo info;
      while (read(signal_fd, &info, sizeof(info)) > 0) {
      }
      if (!ReapChildren(control_fd)) return 0;
    }
    if (polled[0].revents == 0) continue;
    ZygoteRequest request;
    std::vector<int> fds;
    absl::Status received = ReceiveZygoteMessage(control_fd, &request, &fds);
    if (received.code() == absl::StatusCode::kUnavailable) return 0;
    if (!received.ok()) continue;  // Nothing to answer: no id.

    ZygoteChild child;
    child.session_tag = request.session_tag();
    child.fd_count = static_cast<int>(fds.size());
    child.namespaces = NamespaceFlags(request.policy());
    request.mutable_policy()->set_outer_uid(geteuid());
    request.mutable_policy()->set_outer_gid(getegid());
    child.zygote_pidfd = self_pidfd;
    const pid_t pid = CloneInto(child.namespaces, tid_field);
    if (pid == 0) {
      // The new worker. Nothing of the zygote's may stay open in it.
      close(control_fd);
      close(signal_fd);
      sigprocmask(SIG_UNBLOCK, &child_signal, nullptr);
      child.zygote_pidfd = PlaceDescriptors(fds, self_pidfd);
      child.policy = std::move(*request.mutable_policy());
      std::exit(run_worker(child));
    }
    const int error = errno;
    for (int fd : fds) close(fd);
    ZygoteEvent event;
    ZygoteEvent::Spawned* spawned = event.mutable_spawned();
    spawned->set_id(request.id());
    std::vector<int> attached;
    if (pid < 0) {
      spawned->set_error(absl::StrCat("clone: ", strerror(error)));
    } else {
      spawned->set_pid(pid);
      // The child does the same; whichever runs first, the group exists
      // before the daemon hears of the pid.
      setpgid(pid, pid);
      // The child cannot have been reaped yet (only this thread reaps), so
      // the pidfd names it and nothing else.
      const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
      if (pidfd >= 0) attached.push_back(pidfd);
    }
    absl::Status sent = SendEvent(control_fd, event, attached);
    for (int fd : attached) close(fd);
    if (!sent.ok()) return 0;
  }
}

}  // namespace ffid::worker
