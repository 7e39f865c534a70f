#include "clients/cpp/ffid/arena.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"

namespace ffid::client {
namespace {

// Closes a descriptor when it goes out of scope.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

absl::StatusOr<std::shared_ptr<Arena>> Arena::Receive(
    const std::string& socket_path, absl::string_view token, uint64_t size,
    uint64_t worker_address) {
  if (socket_path.empty()) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           "UNSUPPORTED",
                           "the daemon has no arena socket (it listens on "
                           "TCP only): the arena cannot be mapped from here");
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena socket path too long: ", socket_path));
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  FdCloser socket{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (socket.fd < 0 ||
      ::connect(socket.fd, reinterpret_cast<const sockaddr*>(&address),
                sizeof(address)) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot connect to the daemon's arena socket '", socket_path,
        "': ", std::strerror(errno),
        " (mapping an arena needs a client on the daemon's host)"));
  }
  const std::string line = absl::StrCat(token, "\n");
  if (::send(socket.fd, line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size())) {
    return absl::UnavailableError(absl::StrCat(
        "cannot send the arena token: ", std::strerror(errno)));
  }
  char reply[512];
  iovec iov{reply, sizeof(reply)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr header{};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(socket.fd, &header, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  FdCloser arena_fd{-1};
  for (cmsghdr* c = CMSG_FIRSTHDR(&header); c != nullptr;
       c = CMSG_NXTHDR(&header, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      std::memcpy(&arena_fd.fd, CMSG_DATA(c), sizeof(int));
    }
  }
  if (n <= 0) {
    return absl::UnavailableError(
        "the daemon closed the arena socket without answering");
  }
  if (reply[0] != 0) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied, "HANDLE_INVALID",
        absl::StrCat("the daemon refused the arena token: ",
                     absl::string_view(reply + 1, static_cast<size_t>(n - 1))));
  }
  struct stat st;
  if (arena_fd.fd < 0 || ::fstat(arena_fd.fd, &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != size) {
    return absl::InternalError(absl::StrCat(
        "the daemon's answer carried no arena of ", size, " bytes"));
  }
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED,
                      arena_fd.fd, 0);
  if (data == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot map the ", size, "-byte arena: ", std::strerror(errno)));
  }
  return std::shared_ptr<Arena>(
      new Arena(static_cast<char*>(data), size, worker_address));
}

Arena::~Arena() { ::munmap(data_, size_); }

absl::StatusOr<absl::Span<char>> Arena::Bytes(const Memory& memory) const {
  if (!memory.in_arena) {
    return absl::FailedPreconditionError(absl::StrCat(
        "memory ", memory.handle,
        " is not in the session's arena (allocate it with placement "
        "ALLOCATION_PLACEMENT_ARENA)"));
  }
  if (memory.arena_offset > size_ || memory.size > size_ - memory.arena_offset) {
    return absl::OutOfRangeError(absl::StrCat(
        "memory ", memory.handle, " (", memory.size, " bytes at offset ",
        memory.arena_offset, ") is outside the ", size_, "-byte arena"));
  }
  return absl::Span<char>(data_ + memory.arena_offset, memory.size);
}

}  // namespace ffid::client
