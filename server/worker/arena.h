// SharedArena: the session's shared-memory arena as the worker sees it, and
// the allocator of ALLOCATION_PLACEMENT_ARENA memory inside it.
//
// The daemon creates the arena (a memfd of fixed size, sealed so that nobody
// can shrink or grow it) and sends it over the channel; the worker maps it
// MAP_SHARED and carves allocations out of it. The daemon and local clients
// map the same memfd, so they see and change the same bytes as native code,
// without a copy.
//
// Allocations are 64-byte aligned (a cache line) and zero-filled: freed
// blocks are zeroed at once (large ones by punching a hole in the memfd,
// which also returns their pages to the system).
//
// Thread-safe. The mapping lives as long as the SharedArena; memory it
// handed out must not be used after it is destroyed.
#ifndef FFID_SERVER_WORKER_ARENA_H_
#define FFID_SERVER_WORKER_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace ffid::worker {

class SharedArena {
 public:
  // The alignment (and size granule) of every allocation.
  static constexpr size_t kAlignment = 64;

  // Maps `fd` (taking ownership; it is closed here, the mapping keeps the
  // memory) after checking that it is `size` bytes and sealed against
  // shrinking (F_SEAL_SHRINK), so that no other process can make the
  // mapping fault. INVALID_ARGUMENT + INTERNAL otherwise; RESOURCE_LIMIT if
  // it cannot be mapped (address-space limit).
  static absl::StatusOr<std::unique_ptr<SharedArena>> Map(int fd,
                                                          uint64_t size);

  ~SharedArena();
  SharedArena(const SharedArena&) = delete;
  SharedArena& operator=(const SharedArena&) = delete;

  char* base() const { return base_; }
  uint64_t size() const { return size_; }

  // `bytes` (> 0) of zeroed memory, or RESOURCE_LIMIT when no free block is
  // large enough.
  absl::StatusOr<void*> Allocate(uint64_t bytes);
  // Releases memory from Allocate (zeroing it). Ignores anything else.
  void Free(void* memory);
  // Bytes handed out and not freed (rounded up to kAlignment).
  uint64_t used() const;

 private:
  SharedArena(char* base, uint64_t size);
  // Zeroes [offset, offset + length).
  void Zero(uint64_t offset, uint64_t length);

  char* const base_;
  const uint64_t size_;
  mutable absl::Mutex mu_;
  // Free blocks: offset -> length, coalesced.
  std::map<uint64_t, uint64_t> free_ ABSL_GUARDED_BY(mu_);
  // Live blocks: offset -> length.
  std::map<uint64_t, uint64_t> used_ ABSL_GUARDED_BY(mu_);
  uint64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_ARENA_H_
