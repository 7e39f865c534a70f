#include "server/session_arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"

namespace ffid::server {
namespace {

absl::Status ArenaFailure(absl::string_view what, int error) {
  return MakeError(absl::StatusCode::kResourceExhausted,
                   v1::ERROR_REASON_RESOURCE_LIMIT,
                   absl::StrCat("cannot make the session's shared-memory "
                                "arena: ",
                                what, ": ", std::strerror(error)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SessionArena>> SessionArena::Create(
    uint64_t size, absl::string_view name) {
  if (size == 0) {
    return MakeError(absl::StatusCode::kFailedPrecondition,
                     v1::ERROR_REASON_UNSUPPORTED,
                     "shared-memory arenas are turned off on this server "
                     "(--arena-bytes=0)");
  }
  const std::string memfd_name = absl::StrCat("ffid-arena-", name);
  const int fd =
      ::memfd_create(memfd_name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return ArenaFailure("memfd_create", errno);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int error = errno;
    ::close(fd);
    return ArenaFailure("ftruncate", error);
  }
  if (::fcntl(fd, F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    const int error = errno;
    ::close(fd);
    return ArenaFailure("sealing", error);
  }
  void* base =
      ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    const int error = errno;
    ::close(fd);
    return ArenaFailure("mmap", error);
  }
  return std::unique_ptr<SessionArena>(
      new SessionArena(fd, size, static_cast<char*>(base)));
}

SessionArena::SessionArena(int fd, uint64_t size, char* base)
    : fd_(fd), size_(size), base_(base) {}

SessionArena::~SessionArena() {
  ::munmap(base_, size_);
  ::close(fd_);
}

std::string SessionArena::attached_tag() const {
  absl::MutexLock lock(&mu_);
  return attached_tag_;
}

uint64_t SessionArena::worker_address() const {
  absl::MutexLock lock(&mu_);
  return worker_address_;
}

void SessionArena::SetAttached(std::string tag, uint64_t worker_address) {
  absl::MutexLock lock(&mu_);
  if (tag != attached_tag_) blocks_.clear();  // Another worker's handles.
  attached_tag_ = std::move(tag);
  worker_address_ = worker_address;
}

void SessionArena::Remember(const std::string& handle, Block block) {
  absl::MutexLock lock(&mu_);
  blocks_[handle] = block;
}

void SessionArena::Forget(absl::string_view handle) {
  absl::MutexLock lock(&mu_);
  blocks_.erase(handle);
}

std::optional<SessionArena::Block> SessionArena::Find(
    absl::string_view handle) const {
  absl::MutexLock lock(&mu_);
  auto it = blocks_.find(handle);
  if (it == blocks_.end()) return std::nullopt;
  return it->second;
}

}  // namespace ffid::server
