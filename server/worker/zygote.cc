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
#include <map>
#include <set>
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
  return NamespaceCloneFlags(policy);
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

namespace {

// A spare worker waiting for its session.
struct Spare {
  pid_t pid = 0;
  // The zygote's end of the spare's assignment socket.
  int socket = -1;
  // When it was last asked for (a request counter), for eviction.
  uint64_t used = 0;
};

// The zygote's state; only its one thread touches it.
class ZygoteLoop {
 public:
  ZygoteLoop(int control_fd, size_t max_spares,
             const std::function<int(const ZygoteChild&)>& run_worker)
      : control_fd_(control_fd),
        max_spares_(max_spares),
        run_worker_(run_worker) {}

  int Run();

 private:
  // Reports every child that has ended (spares that died unused silently).
  // False if the daemon is gone.
  bool ReapChildren();
  // Answers one request; false if the daemon is gone.
  bool Serve(ZygoteRequest& request, std::vector<int>& fds);
  // Hands `fds` and the tag to the spare for `key`, if there is a live one:
  // its pid, else 0.
  pid_t UseSpare(const std::string& key, const ZygoteRequest& request,
                 const std::vector<int>& fds);
  // Clones a spare for `policy` (under `key`) unless there is one.
  void StartSpare(const std::string& key, const WorkerPolicy& policy);
  // In a new child: everything of the zygote's closed, SIGCHLD unblocked.
  void LeaveZygote();

  const int control_fd_;
  const size_t max_spares_;
  const std::function<int(const ZygoteChild&)>& run_worker_;
  pid_t* tid_field_ = nullptr;
  sigset_t child_signal_;
  int signal_fd_ = -1;
  int self_pidfd_ = -1;
  uint64_t requests_ = 0;
  // Spares by serialized policy, and the pids of spares not yet handed out
  // (their deaths are not reported).
  std::map<std::string, Spare> spares_;
  std::set<pid_t> unused_spares_;
};

void ZygoteLoop::LeaveZygote() {
  close(control_fd_);
  close(signal_fd_);
  for (auto& [key, spare] : spares_) close(spare.socket);
  sigprocmask(SIG_UNBLOCK, &child_signal_, nullptr);
}

bool ZygoteLoop::ReapChildren() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return true;
    if (unused_spares_.erase(pid) != 0) {
      for (auto it = spares_.begin(); it != spares_.end(); ++it) {
        if (it->second.pid != pid) continue;
        close(it->second.socket);
        spares_.erase(it);
        break;
      }
      continue;
    }
    ZygoteEvent event;
    event.mutable_exited()->set_pid(pid);
    event.mutable_exited()->set_wait_status(status);
    if (!SendEvent(control_fd_, event).ok()) return false;
  }
}

pid_t ZygoteLoop::UseSpare(const std::string& key,
                           const ZygoteRequest& request,
                           const std::vector<int>& fds) {
  auto it = spares_.find(key);
  if (it == spares_.end()) return 0;
  Spare spare = it->second;
  spares_.erase(it);
  ZygoteRequest assignment;
  assignment.set_session_tag(request.session_tag());
  const bool sent = SendZygoteMessage(spare.socket, assignment, fds).ok();
  close(spare.socket);
  if (!sent) {
    // It died meanwhile (or is wedged): make sure, and reap it silently.
    kill(spare.pid, SIGKILL);
    return 0;
  }
  unused_spares_.erase(spare.pid);
  return spare.pid;
}

void ZygoteLoop::StartSpare(const std::string& key,
                            const WorkerPolicy& policy) {
  if (max_spares_ == 0) return;
  auto existing = spares_.find(key);
  if (existing != spares_.end()) {
    existing->second.used = requests_;
    return;
  }
  if (spares_.size() >= max_spares_) {
    auto oldest = spares_.begin();
    for (auto it = spares_.begin(); it != spares_.end(); ++it) {
      if (it->second.used < oldest->second.used) oldest = it;
    }
    kill(oldest->second.pid, SIGKILL);  // Reaped silently.
    close(oldest->second.socket);
    spares_.erase(oldest);
  }
  int sockets[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockets) != 0) {
    return;
  }
  ZygoteChild child;
  child.namespaces = NamespaceFlags(policy);
  const pid_t pid = CloneInto(child.namespaces, tid_field_);
  if (pid == 0) {
    LeaveZygote();
    close(sockets[0]);
    // The assignment socket on 3, the zygote's pidfd on 4 until
    // AwaitAssignment() puts the session's descriptors there.
    child.zygote_pidfd = PlaceDescriptors({sockets[1]}, self_pidfd_);
    child.assignment_fd = 3;
    child.policy = policy;
    std::exit(run_worker_(child));
  }
  close(sockets[1]);
  if (pid < 0) {
    close(sockets[0]);
    return;
  }
  setpgid(pid, pid);
  unused_spares_.insert(pid);
  spares_[key] = Spare{pid, sockets[0], requests_};
}

bool ZygoteLoop::Serve(ZygoteRequest& request, std::vector<int>& fds) {
  ++requests_;
  request.mutable_policy()->set_outer_uid(geteuid());
  request.mutable_policy()->set_outer_gid(getegid());
  std::string key;
  request.policy().SerializeToString(&key);
  ZygoteEvent event;
  ZygoteEvent::Spawned* spawned = event.mutable_spawned();
  spawned->set_id(request.id());
  pid_t pid = UseSpare(key, request, fds);
  int error = 0;
  if (pid > 0) {
    spawned->set_spare(true);
  } else {
    ZygoteChild child;
    child.session_tag = request.session_tag();
    child.fd_count = static_cast<int>(fds.size());
    child.namespaces = NamespaceFlags(request.policy());
    pid = CloneInto(child.namespaces, tid_field_);
    if (pid == 0) {
      // The new worker. Nothing of the zygote's may stay open in it.
      LeaveZygote();
      child.zygote_pidfd = PlaceDescriptors(fds, self_pidfd_);
      child.policy = std::move(*request.mutable_policy());
      std::exit(run_worker_(child));
    }
    error = errno;
    // The child does the same; whichever runs first, the group exists
    // before the daemon hears of the pid.
    if (pid > 0) setpgid(pid, pid);
  }
  for (int fd : fds) close(fd);
  std::vector<int> attached;
  if (pid < 0) {
    spawned->set_error(absl::StrCat("clone: ", strerror(error)));
  } else {
    spawned->set_pid(pid);
    // The child cannot have been reaped yet (only this thread reaps), so
    // the pidfd names it and nothing else.
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd >= 0) attached.push_back(pidfd);
  }
  absl::Status sent = SendEvent(control_fd_, event, attached);
  for (int fd : attached) close(fd);
  if (!sent.ok()) return false;
  // Ready for the next request with this policy (a restart, another
  // session): the clone happens now, off the path of this one.
  if (pid > 0) StartSpare(key, request.policy());
  return true;
}

int ZygoteLoop::Run() {
  tid_field_ = FindOwnTidField();
  // Deaths arrive as readable signalfd, never as a handler.
  sigemptyset(&child_signal_);
  sigaddset(&child_signal_, SIGCHLD);
  sigprocmask(SIG_BLOCK, &child_signal_, nullptr);
  signal_fd_ = signalfd(-1, &child_signal_, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd_ < 0) return 3;
  self_pidfd_ =
      static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));  // -1: none

  for (;;) {
    pollfd polled[2] = {{control_fd_, POLLIN, 0}, {signal_fd_, POLLIN, 0}};
    if (poll(polled, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 3;
    }
    if (polled[1].revents != 0) {
      signalfd_siginfo info;
      while (read(signal_fd_, &info, sizeof(info)) > 0) {
      }
      if (!ReapChildren()) return 0;
    }
    if (polled[0].revents == 0) continue;
    ZygoteRequest request;
    std::vector<int> fds;
    absl::Status received = ReceiveZygoteMessage(control_fd_, &request, &fds);
    if (received.code() == absl::StatusCode::kUnavailable) return 0;
    if (!received.ok()) continue;  // Nothing to answer: no id.
    if (!Serve(request, fds)) return 0;
  }
}

}  // namespace

int RunZygote(int control_fd, size_t max_spares,
              const std::function<int(const ZygoteChild&)>& run_worker) {
  ZygoteLoop loop(control_fd, max_spares, run_worker);
  return loop.Run();
}

bool AwaitAssignment(ZygoteChild& child) {
  ZygoteRequest assignment;
  std::vector<int> fds;
  for (;;) {
    absl::Status received =
        ReceiveZygoteMessage(child.assignment_fd, &assignment, &fds);
    if (received.ok()) break;
    if (received.code() == absl::StatusCode::kUnavailable) return false;
  }
  child.session_tag = assignment.session_tag();
  child.fd_count = static_cast<int>(fds.size());
  // Onto 3, 4, ...: the socket on 3 is replaced (or closed with the rest).
  PlaceDescriptors(fds, -1);
  child.assignment_fd = -1;
  return true;
}

}  // namespace ffid::worker
