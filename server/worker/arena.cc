#include "server/worker/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"

namespace ffid::worker {
namespace {

// Blocks at least this large are zeroed by punching a hole (pages go back
// to the system); smaller ones by memset.
constexpr uint64_t kPunchBytes = uint64_t{256} << 10;

absl::Status ArenaError(absl::string_view what) {
  return MakeError(absl::StatusCode::kInvalidArgument,
                   v1::ERROR_REASON_INTERNAL,
                   absl::StrCat("the session's arena: ", what));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SharedArena>> SharedArena::Map(int fd,
                                                              uint64_t size) {
  if (fd < 0) return ArenaError("no file descriptor came with the request");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return ArenaError(absl::StrCat("fstat: ", std::strerror(error)));
  }
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (size == 0 || static_cast<uint64_t>(st.st_size) != size || seals < 0 ||
      (seals & F_SEAL_SHRINK) == 0) {
    ::close(fd);
    return ArenaError(absl::StrCat(
        "expected a memfd of ", size, " bytes sealed against shrinking, got ",
        st.st_size, " bytes with seals ", seals));
  }
  void* base =
      ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int error = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    return MakeError(absl::StatusCode::kResourceExhausted,
                     v1::ERROR_REASON_RESOURCE_LIMIT,
                     absl::StrCat("cannot map the session's ", size,
                                  "-byte arena in the worker: ",
                                  std::strerror(error)));
  }
  return std::unique_ptr<SharedArena>(
      new SharedArena(static_cast<char*>(base), size));
}

SharedArena::SharedArena(char* base, uint64_t size) : base_(base), size_(size) {
  free_[0] = size - size % kAlignment;
}

SharedArena::~SharedArena() { ::munmap(base_, size_); }

absl::StatusOr<void*> SharedArena::Allocate(uint64_t bytes) {
  if (bytes == 0 || bytes > size_) {
    return MakeError(absl::StatusCode::kResourceExhausted,
                     v1::ERROR_REASON_RESOURCE_LIMIT,
                     absl::StrCat("cannot place ", bytes,
                                  " bytes in the session's ", size_,
                                  "-byte arena"));
  }
  const uint64_t length = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  absl::MutexLock lock(&mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < length) continue;
    const uint64_t offset = it->first;
    const uint64_t rest = it->second - length;
    free_.erase(it);
    if (rest > 0) free_[offset + length] = rest;
    used_[offset] = length;
    used_bytes_ += length;
    return static_cast<void*>(base_ + offset);
  }
  return MakeError(
      absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
      absl::StrCat("the session's ", size_, "-byte arena has no free block of ",
                   length, " bytes (", used_bytes_,
                   " bytes in use); free arena memory or allocate on the heap"));
}

void SharedArena::Free(void* memory) {
  char* const at = static_cast<char*>(memory);
  if (at < base_ || at >= base_ + size_) return;
  const uint64_t offset = static_cast<uint64_t>(at - base_);
  uint64_t length;
  {
    absl::MutexLock lock(&mu_);
    auto it = used_.find(offset);
    if (it == used_.end()) return;
    length = it->second;
    used_.erase(it);
    used_bytes_ -= length;
  }
  // Zeroed before it can be handed out again.
  Zero(offset, length);
  absl::MutexLock lock(&mu_);
  uint64_t start = offset;
  uint64_t end = offset + length;
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == end) {
    end += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second == start) {
      start = previous->first;
      free_.erase(previous);
    }
  }
  free_[start] = end - start;
}

uint64_t SharedArena::used() const {
  absl::MutexLock lock(&mu_);
  return used_bytes_;
}

void SharedArena::Zero(uint64_t offset, uint64_t length) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (length >= kPunchBytes) {
    const uint64_t first = (offset + page - 1) / page * page;
    const uint64_t last = (offset + length) / page * page;
    // MADV_REMOVE punches the hole in the memfd behind the mapping: every
    // mapping then reads zeros, and the pages are released.
    if (last > first &&
        ::madvise(base_ + first, last - first, MADV_REMOVE) == 0) {
      std::memset(base_ + offset, 0, first - offset);
      std::memset(base_ + last, 0, offset + length - last);
      return;
    }
  }
  std::memset(base_ + offset, 0, length);
}

}  // namespace ffid::worker
