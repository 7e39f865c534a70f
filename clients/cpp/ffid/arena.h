// Arena: a session's shared-memory arena mapped into this process.
//
// Session::MapArena() asks the daemon (OpenArena) for a one-time token,
// presents it on the daemon's arena socket, receives the arena's memfd
// (SCM_RIGHTS) and maps it shared. Memory allocated in the arena
// (Session::Allocate with ALLOCATION_PLACEMENT_ARENA) is then plain memory
// of this process too: Bytes(memory) is the same bytes native code in the
// worker sees at memory.address, with no copy and no RPC. Synchronizing
// with native code that uses the memory at the same time is the caller's
// business, as with threads.
//
// Only for a client on the daemon's host (the daemon listens on a unix
// socket). The mapping stays valid as long as the Arena lives, even after
// the session ends; memory in it is valid until freed.
//
// Ownership: created by Session::MapArena, shared (std::shared_ptr).
// Thread-safe (immutable after construction).
#ifndef FFID_CLIENTS_CPP_FFID_ARENA_H_
#define FFID_CLIENTS_CPP_FFID_ARENA_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace ffid::client {

struct Memory;

class Arena {
 public:
  // Connects to `socket_path`, sends `token`, receives the memfd and maps
  // `size` bytes of it. UNAVAILABLE if the socket cannot be reached,
  // PERMISSION_DENIED if the daemon refuses the token (its message says
  // why), INTERNAL if what arrives is not an arena of `size` bytes.
  static absl::StatusOr<std::shared_ptr<Arena>> Receive(
      const std::string& socket_path, absl::string_view token, uint64_t size,
      uint64_t worker_address);

  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // The mapping in this process.
  char* data() const { return data_; }
  uint64_t size() const { return size_; }
  // Where the arena starts in the worker (native pointers into the arena are
  // this plus an offset).
  uint64_t worker_address() const { return worker_address_; }

  // The bytes of `memory` in this process. FAILED_PRECONDITION if the
  // memory is not in the arena, OUT_OF_RANGE if it does not fit in it.
  absl::StatusOr<absl::Span<char>> Bytes(const Memory& memory) const;

 private:
  Arena(char* data, uint64_t size, uint64_t worker_address)
      : data_(data), size_(size), worker_address_(worker_address) {}

  char* const data_;
  const uint64_t size_;
  const uint64_t worker_address_;
};

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_ARENA_H_
