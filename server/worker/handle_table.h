// HandleTable: the worker's tables of library, function and memory handles.
//
// A handle is "<kind>_<session tag>_<32 hex digits from getrandom>" with kind
// lib, fn or mem, so it is unguessable and says which session issued it.
// Lookups fail with INVALID_ARGUMENT + HANDLE_INVALID and a message that says
// why: another session's handle, the wrong kind, freed, unloaded, or never
// issued. A bounded number of retired handles is remembered so that "was
// freed" can be told apart from "does not exist".
//
// Ownership: the table owns every PreparedFunction, every owned memory block
// (released by FreeMemory() and by the destructor: with free(), or with its
// destructor for memory adopted from a library) and every
// library's dlopen handle (dlclose()d by the destructor, newest first, after
// the functions and memory are gone). Borrowed memory is never released.
// Pointers returned by the getters stay valid until the entry is removed.
//
// Not thread-safe, by design: the worker executes requests one at a time on
// its main thread, and the table is touched only from there.
#ifndef FFID_SERVER_WORKER_HANDLE_TABLE_H_
#define FFID_SERVER_WORKER_HANDLE_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ffi/function.h"

namespace ffid::worker {

// kCallback handles ("cb") are issued here but kept by the Executor.
enum class HandleKind { kLibrary, kFunction, kMemory, kCallback };

// "lib", "fn", "mem", "cb": the handle prefix.
absl::string_view HandlePrefix(HandleKind kind);
// "library", "function", "memory", "callback": for messages.
absl::string_view HandleKindName(HandleKind kind);

struct LibraryEntry {
  // From dlopen(); owned by the table.
  void* dl_handle = nullptr;
  // The real path that was loaded.
  std::string path;
};

struct FunctionEntry {
  std::unique_ptr<ffi::PreparedFunction> function;
  // The library handle the symbol was resolved in.
  std::string library;
};

struct MemoryEntry {
  void* address = nullptr;
  // Bytes; meaningful only when `sized` (borrowed memory usually has no
  // known size).
  size_t size = 0;
  // Owned memory is released by the table: with `destructor` if set (an
  // adopted pointer), else with free() (it came from malloc/calloc).
  bool owned = false;
  // Things that must live as long as the memory, e.g. the strings an
  // initial value points to.
  std::shared_ptr<void> keep_alive;
  // Whether `size` is known, so accesses are bounds-checked: owned memory
  // that ffid allocated, a variable of known type, an adoption with a size.
  bool sized = false;
  // For adopted memory: the library's release function.
  void (*destructor)(void*) = nullptr;
  // For owned memory from elsewhere than malloc (the session's arena): how
  // to release it. Takes precedence over `destructor` and free().
  std::function<void(void*)> release;
};

class HandleTable {
 public:
  // How many retired handles are remembered for "was freed" messages.
  static constexpr size_t kMaxRetired = 1 << 16;

  // `session_tag` is the tag embedded in every handle (lowercase hex);
  // `max_retired` bounds the memory spent on "was freed" messages.
  explicit HandleTable(std::string session_tag,
                       size_t max_retired = kMaxRetired);
  ~HandleTable();
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;

  const std::string& session_tag() const { return session_tag_; }

  // A fresh handle of `kind` for this session (not registered).
  std::string NewHandle(HandleKind kind) const;

  // Libraries. AddLibrary takes ownership of `dl_handle`.
  std::string AddLibrary(void* dl_handle, std::string path);
  absl::StatusOr<const LibraryEntry*> GetLibrary(absl::string_view handle);
  // Removes the library and every function resolved in it (those handles
  // then report "was unloaded"). Returns the entry; the caller dlclose()s.
  absl::StatusOr<LibraryEntry> RemoveLibrary(absl::string_view handle);

  // Functions. `library` must be a live library handle.
  std::string AddFunction(std::string library,
                          std::unique_ptr<ffi::PreparedFunction> function);
  absl::StatusOr<const FunctionEntry*> GetFunction(absl::string_view handle);

  // Memory. AddOwnedMemory takes ownership of `address`, which must come
  // from malloc/calloc (may be NULL only if size is 0).
  std::string AddOwnedMemory(void* address, size_t size,
                             std::shared_ptr<void> keep_alive = nullptr);
  // Owned memory released with `release` instead of free() (arena memory).
  std::string AddOwnedMemory(void* address, size_t size,
                             std::function<void(void*)> release);
  // A borrowed handle for a pointer native code returned. Returns the
  // existing handle if live memory (owned or borrowed) starts at `address`.
  std::string AddBorrowedMemory(void* address);
  absl::StatusOr<MemoryEntry*> GetMemory(absl::string_view handle);
  // A borrowed handle of known size, e.g. a library's global variable.
  std::string AddSizedBorrowedMemory(void* address, size_t size);
  // Makes borrowed memory owned: released with `destructor` on FreeMemory
  // and when the table is destroyed. `size` 0 keeps the size unknown.
  // FAILED_PRECONDITION + HANDLE_INVALID if it is owned already.
  [[nodiscard]] absl::Status Adopt(absl::string_view handle,
                                   void (*destructor)(void*), size_t size);
  // Keeps `thing` alive as long as the memory `handle` (strings a typed
  // Write stored pointers to).
  void KeepAlive(absl::string_view handle, std::shared_ptr<void> thing);
  // Releases owned memory. FAILED_PRECONDITION + HANDLE_INVALID for
  // borrowed memory; INVALID_ARGUMENT + HANDLE_INVALID for a bad handle.
  [[nodiscard]] absl::Status FreeMemory(absl::string_view handle);

  size_t library_count() const { return libraries_.size(); }
  size_t function_count() const { return functions_.size(); }
  size_t memory_count() const { return memory_.size(); }

 public:
  // Checks that `handle` is well formed, of this session and of `kind`;
  // otherwise explains why it is not (including retired handles). Public
  // for the kinds kept outside this table (callbacks).
  [[nodiscard]] absl::Status CheckHandle(absl::string_view handle, HandleKind kind) const;

 private:
  // The error for a well-formed handle of this session that is not live.
  [[nodiscard]] absl::Status MissingHandle(absl::string_view handle, HandleKind kind) const;
  void Retire(const std::string& handle, std::string why);

  const std::string session_tag_;
  const size_t max_retired_;
  absl::flat_hash_map<std::string, LibraryEntry> libraries_;
  // Load order, for dlclose() in reverse on destruction.
  std::vector<std::string> library_order_;
  absl::flat_hash_map<std::string, FunctionEntry> functions_;
  absl::flat_hash_map<std::string, MemoryEntry> memory_;
  // Live memory by start address -> handle; owned entries win over borrowed
  // ones at the same address.
  absl::flat_hash_map<uintptr_t, std::string> memory_by_address_;
  // Retired handle -> why ("was freed", "was unloaded with library ...").
  absl::flat_hash_map<std::string, std::string> retired_;
  std::deque<std::string> retired_order_;
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_HANDLE_TABLE_H_
