#include "server/arena_broker.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "ffi/errors.h"
#include "server/worker/channel.h"

namespace ffid::server {
namespace {

constexpr size_t kTokenBytes = 16;

std::string NewToken() {
  unsigned char bytes[kTokenBytes];
  size_t filled = 0;
  while (filled < sizeof(bytes)) {
    ssize_t n = ::getrandom(bytes + filled, sizeof(bytes) - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      abort();  // Never hand out a guessable token.
    }
    filled += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

void SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

void Refuse(int connection, absl::string_view why) {
  SendAll(connection, absl::StrCat(std::string(1, '\1'), why));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ArenaBroker>> ArenaBroker::Start(
    std::string socket_path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) {
    return MakeError(absl::StatusCode::kInvalidArgument,
                     v1::ERROR_REASON_INVALID_REQUEST,
                     absl::StrCat("arena socket path '", socket_path,
                                  "' is longer than ",
                                  sizeof(address.sun_path) - 1, " bytes"));
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return MakeError(absl::StatusCode::kUnavailable, v1::ERROR_REASON_INTERNAL,
                     absl::StrCat("socket: ", std::strerror(errno)));
  }
  struct stat st;
  if (::lstat(socket_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    ::unlink(socket_path.c_str());  // Stale, from a daemon that died.
  }
  const mode_t old_umask = ::umask(077);
  const int bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&address),
                           sizeof(address));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (bound != 0 || ::listen(fd, 16) != 0) {
    const int error = bound != 0 ? bind_errno : errno;
    ::close(fd);
    return MakeError(absl::StatusCode::kUnavailable, v1::ERROR_REASON_INTERNAL,
                     absl::StrCat("cannot listen on the arena socket '",
                                  socket_path, "': ", std::strerror(error)));
  }
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC) != 0) {
    const int error = errno;
    ::close(fd);
    return MakeError(absl::StatusCode::kUnavailable, v1::ERROR_REASON_INTERNAL,
                     absl::StrCat("pipe: ", std::strerror(error)));
  }
  return std::unique_ptr<ArenaBroker>(
      new ArenaBroker(std::move(socket_path), fd, wake[0], wake[1]));
}

ArenaBroker::ArenaBroker(std::string socket_path, int listen_fd,
                         int wake_read, int wake_write)
    : socket_path_(std::move(socket_path)),
      listen_fd_(listen_fd),
      wake_read_(wake_read),
      wake_write_(wake_write) {
  thread_ = std::thread([this] { AcceptLoop(); });
}

ArenaBroker::~ArenaBroker() {
  ::close(wake_write_);
  thread_.join();
  ::close(wake_read_);
  ::close(listen_fd_);
  ::unlink(socket_path_.c_str());
}

std::string ArenaBroker::IssueToken(
    const std::shared_ptr<SessionArena>& arena) {
  std::string token = NewToken();
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  // Expired grants go as new ones come, so the table stays small.
  for (auto it = grants_.begin(); it != grants_.end();) {
    if (it->second.expires < now) {
      grants_.erase(it++);
    } else {
      ++it;
    }
  }
  grants_[token] = Grant{arena, now + kTokenLifetime};
  return token;
}

void ArenaBroker::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // The destructor closed the pipe.
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int connection = ::accept4(listen_fd_, nullptr, nullptr,
                                     SOCK_CLOEXEC);
    if (connection < 0) continue;
    Serve(connection);
    ::close(connection);
  }
}

void ArenaBroker::Serve(int connection) {
  const timeval timeout{1, 0};
  ::setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout,
               sizeof(timeout));
  ::setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout,
               sizeof(timeout));
  std::string token;
  char c;
  while (token.size() <= 2 * kTokenBytes) {
    ssize_t n = ::recv(connection, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') break;
    token.push_back(c);
  }
  std::shared_ptr<SessionArena> arena;
  {
    absl::MutexLock lock(&mu_);
    auto it = grants_.find(token);
    if (it != grants_.end()) {
      if (it->second.expires >= absl::Now()) arena = it->second.arena.lock();
      grants_.erase(it);  // One use, whatever the outcome.
    }
  }
  if (arena == nullptr) {
    Refuse(connection,
           "unknown, used or expired arena token (or the session ended); "
           "call OpenArena again");
    return;
  }
  const char ok = 0;
  while (worker::SendWithDescriptor(connection, &ok, 1, arena->fd()) < 0 &&
         errno == EINTR) {
  }
}

}  // namespace ffid::server
