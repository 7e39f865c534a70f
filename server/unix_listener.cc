#include "server/unix_listener.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/server_posix.h"

namespace ffid::server {

UnixListener::UnixListener(std::string path,
                           std::shared_ptr<PeerRegistry> peers)
    : path_(std::move(path)), peers_(std::move(peers)) {}

UnixListener::~UnixListener() { Stop(); }

absl::Status UnixListener::Bind() {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(address.sun_path)) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket path '", path_, "' is too long"));
  }
  memcpy(address.sun_path, path_.data(), path_.size());
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket(AF_UNIX): ", strerror(errno)));
  }
  // The socket must never be reachable by others, not even between bind()
  // and chmod().
  const mode_t old_umask = umask(077);
  const int bound = bind(listen_fd_, reinterpret_cast<sockaddr*>(&address),
                         sizeof(address));
  const int bind_errno = errno;
  umask(old_umask);
  if (bound != 0 || chmod(path_.c_str(), 0600) != 0 ||
      listen(listen_fd_, 128) != 0) {
    const int error = bound != 0 ? bind_errno : errno;
    close(listen_fd_);
    listen_fd_ = -1;
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot listen on '", path_, "': ", strerror(error)));
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  return absl::OkStatus();
}

void UnixListener::Start(grpc::Server* server) {
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void UnixListener::Stop() {
  if (stopped_.exchange(true)) return;
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  listen_fd_ = wake_fd_ = -1;
}

void UnixListener::AcceptLoop(grpc::Server* server) {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "ffid: error: poll on '%s': %s\n", path_.c_str(),
              strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int fd =
        accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      fprintf(stderr, "ffid: warning: accept on '%s': %s\n", path_.c_str(),
              strerror(errno));
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: wait a little instead of spinning.
        poll(nullptr, 0, 100);
      }
      continue;
    }
    ucred credentials{};
    socklen_t size = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) {
      fprintf(stderr, "ffid: warning: SO_PEERCRED: %s; connection refused\n",
              strerror(errno));
      close(fd);
      continue;
    }
    // A bigger send buffer than the default (~208 KiB): a 1 MiB answer
    // (a Read piece) then goes to the socket in one or two writes instead
    // of five, each waiting for the client to drain the socket and wake the
    // daemon again (a third fewer context switches per 64 MiB Write+Read,
    // docs/performance.md). The kernel caps it at net.core.wmem_max; a
    // refusal leaves the default.
    constexpr int kSendBufferBytes = 4 << 20;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSendBufferBytes,
                     sizeof(kSendBufferBytes));
    peers_->Set(fd, absl::StrCat("unix:", credentials.uid));
    grpc::AddInsecureChannelFromFd(server, fd);
  }
}

}  // namespace ffid::server
