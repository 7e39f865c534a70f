// SessionArena: a session's shared-memory arena on the daemon's side.
//
// The arena is a memfd of fixed size, made on the session's first use of it
// (OpenArena, or an Allocate with ALLOCATION_PLACEMENT_ARENA) and sealed
// (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) so that no process holding it
// (the worker, a client) can shrink it under another's mapping. The daemon
// sends the memfd to the session's worker (WorkerRequest.attach_arena) and,
// through server/arena_broker, to local clients; all of them map it shared.
//
// The daemon maps it too and remembers the arena blocks the worker handed
// out through unary Allocate (handle -> offset, size), so that Read and
// Write of those handles copy straight between the gRPC message and the
// arena, without a round trip to the worker. Handles the daemon does not
// know (allocated in a batch or on a Connect stream) still work through
// the worker.
//
// Thread-safe. fd() and base() stay valid as long as the object.
#ifndef FFID_SERVER_SESSION_ARENA_H_
#define FFID_SERVER_SESSION_ARENA_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace ffid::server {

class SessionArena {
 public:
  // A block the worker placed in the arena.
  struct Block {
    uint64_t offset = 0;
    uint64_t size = 0;
  };

  // Makes a sealed memfd of `size` bytes named after `name` and maps it.
  // RESOURCE_LIMIT if the kernel refuses.
  static absl::StatusOr<std::unique_ptr<SessionArena>> Create(
      uint64_t size, absl::string_view name);

  ~SessionArena();
  SessionArena(const SessionArena&) = delete;
  SessionArena& operator=(const SessionArena&) = delete;

  // The memfd (owned by the arena; dup or pass it, do not close it).
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  // The daemon's mapping.
  char* base() const { return base_; }

  // The handle tag of the worker the arena is attached to ("" if none) and
  // where that worker mapped it.
  std::string attached_tag() const;
  uint64_t worker_address() const;
  void SetAttached(std::string tag, uint64_t worker_address);

  // Arena blocks by memory handle.
  void Remember(const std::string& handle, Block block);
  void Forget(absl::string_view handle);
  std::optional<Block> Find(absl::string_view handle) const;

 private:
  SessionArena(int fd, uint64_t size, char* base);

  const int fd_;
  const uint64_t size_;
  char* const base_;
  mutable absl::Mutex mu_;
  std::string attached_tag_ ABSL_GUARDED_BY(mu_);
  uint64_t worker_address_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Block> blocks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ffid::server

#endif  // FFID_SERVER_SESSION_ARENA_H_
