#include "server/worker/handle_table.h"

#include <dlfcn.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "ffi/errors.h"

namespace ffid::worker {
namespace {

constexpr size_t kRandomBytes = 16;

// 32 lowercase hex digits from the kernel's CSPRNG. Handles must be
// unguessable, so there is no weaker fallback: without getrandom the worker
// cannot safely issue handles at all.
std::string RandomHex() {
  unsigned char bytes[kRandomBytes];
  size_t done = 0;
  while (done < kRandomBytes) {
    ssize_t n = ::getrandom(bytes + done, kRandomBytes - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("ffid-worker: getrandom");
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(2 * kRandomBytes, '0');
  for (size_t i = 0; i < kRandomBytes; ++i) {
    hex[2 * i] = kDigits[bytes[i] >> 4];
    hex[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return hex;
}

absl::Status HandleError(absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_HANDLE_INVALID, message);
}

bool ParseKind(absl::string_view prefix, HandleKind* kind) {
  for (HandleKind k :
       {HandleKind::kLibrary, HandleKind::kFunction, HandleKind::kMemory,
        HandleKind::kCallback}) {
    if (prefix == HandlePrefix(k)) {
      *kind = k;
      return true;
    }
  }
  return false;
}

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

}  // namespace

absl::string_view HandlePrefix(HandleKind kind) {
  switch (kind) {
    case HandleKind::kLibrary:
      return "lib";
    case HandleKind::kFunction:
      return "fn";
    case HandleKind::kMemory:
      return "mem";
    case HandleKind::kCallback:
      return "cb";
  }
  return "?";
}

absl::string_view HandleKindName(HandleKind kind) {
  switch (kind) {
    case HandleKind::kLibrary:
      return "library";
    case HandleKind::kFunction:
      return "function";
    case HandleKind::kMemory:
      return "memory";
    case HandleKind::kCallback:
      return "callback";
  }
  return "?";
}

HandleTable::HandleTable(std::string session_tag, size_t max_retired)
    : session_tag_(std::move(session_tag)), max_retired_(max_retired) {}

HandleTable::~HandleTable() {
  // Functions first (they point into the libraries), then memory, then the
  // libraries themselves, newest first as a loader would unwind them.
  functions_.clear();
  for (auto& [handle, entry] : memory_) {
    if (!entry.owned) continue;
    if (entry.release) {
      entry.release(entry.address);
    } else if (entry.destructor != nullptr) {
      entry.destructor(entry.address);
    } else {
      std::free(entry.address);
    }
  }
  memory_.clear();
  for (auto it = library_order_.rbegin(); it != library_order_.rend(); ++it) {
    auto lib = libraries_.find(*it);
    if (lib != libraries_.end() && lib->second.dl_handle != nullptr) {
      ::dlclose(lib->second.dl_handle);
    }
  }
}

std::string HandleTable::NewHandle(HandleKind kind) const {
  return absl::StrCat(HandlePrefix(kind), "_", session_tag_, "_", RandomHex());
}

absl::Status HandleTable::CheckHandle(absl::string_view handle,
                                      HandleKind kind) const {
  if (handle.empty()) {
    return HandleError(absl::StrCat("no ", HandleKindName(kind),
                                    " handle was given"));
  }
  const size_t first = handle.find('_');
  const size_t last = handle.rfind('_');
  HandleKind actual;
  if (first == absl::string_view::npos || first == last ||
      !ParseKind(handle.substr(0, first), &actual) ||
      handle.size() - last - 1 != 2 * kRandomBytes ||
      !IsLowerHex(handle.substr(last + 1))) {
    return HandleError(absl::StrCat("'", handle, "' is not a valid ",
                                    HandleKindName(kind), " handle (expected ",
                                    HandlePrefix(kind), "_", session_tag_,
                                    "_ followed by 32 hex digits)"));
  }
  if (handle.substr(first + 1, last - first - 1) != session_tag_) {
    return HandleError(
        absl::StrCat("handle ", handle, " belongs to another session"));
  }
  if (actual != kind) {
    return HandleError(absl::StrCat("handle ", handle, " is a ",
                                    HandleKindName(actual), " handle, not a ",
                                    HandleKindName(kind), " handle"));
  }
  return absl::OkStatus();
}

absl::Status HandleTable::MissingHandle(absl::string_view handle,
                                        HandleKind kind) const {
  auto it = retired_.find(handle);
  if (it != retired_.end()) {
    return HandleError(absl::StrCat(HandleKindName(kind), " handle ", handle,
                                    " ", it->second));
  }
  return HandleError(absl::StrCat(HandleKindName(kind), " handle ", handle,
                                  " does not exist in this session"));
}

void HandleTable::Retire(const std::string& handle, std::string why) {
  if (max_retired_ == 0) return;
  if (retired_.size() >= max_retired_ && !retired_order_.empty()) {
    retired_.erase(retired_order_.front());
    retired_order_.pop_front();
  }
  if (retired_.emplace(handle, std::move(why)).second) {
    retired_order_.push_back(handle);
  }
}

std::string HandleTable::AddLibrary(void* dl_handle, std::string path) {
  std::string handle = NewHandle(HandleKind::kLibrary);
  libraries_.emplace(handle, LibraryEntry{dl_handle, std::move(path)});
  library_order_.push_back(handle);
  return handle;
}

absl::StatusOr<const LibraryEntry*> HandleTable::GetLibrary(
    absl::string_view handle) {
  RETURN_IF_ERROR(CheckHandle(handle, HandleKind::kLibrary));
  auto it = libraries_.find(handle);
  if (it == libraries_.end()) {
    return MissingHandle(handle, HandleKind::kLibrary);
  }
  return &it->second;
}

absl::StatusOr<LibraryEntry> HandleTable::RemoveLibrary(
    absl::string_view handle) {
  RETURN_IF_ERROR(CheckHandle(handle, HandleKind::kLibrary));
  auto it = libraries_.find(handle);
  if (it == libraries_.end()) {
    return MissingHandle(handle, HandleKind::kLibrary);
  }
  const std::string library(handle);
  for (auto fn = functions_.begin(); fn != functions_.end();) {
    if (fn->second.library == library) {
      Retire(fn->first,
             absl::StrCat("was unloaded with its library ", library));
      functions_.erase(fn++);
    } else {
      ++fn;
    }
  }
  LibraryEntry entry = std::move(it->second);
  libraries_.erase(it);
  for (auto order = library_order_.begin(); order != library_order_.end();
       ++order) {
    if (*order == library) {
      library_order_.erase(order);
      break;
    }
  }
  Retire(library, "was unloaded");
  return entry;
}

std::string HandleTable::AddFunction(
    std::string library, std::unique_ptr<ffi::PreparedFunction> function) {
  std::string handle = NewHandle(HandleKind::kFunction);
  functions_.emplace(handle,
                     FunctionEntry{std::move(function), std::move(library)});
  return handle;
}

absl::StatusOr<const FunctionEntry*> HandleTable::GetFunction(
    absl::string_view handle) {
  // Found: it is a well-formed function handle of this session (every key
  // was made by NewHandle). Checked only otherwise, to say what is wrong.
  auto it = functions_.find(handle);
  if (it != functions_.end()) return &it->second;
  RETURN_IF_ERROR(CheckHandle(handle, HandleKind::kFunction));
  return MissingHandle(handle, HandleKind::kFunction);
}

std::string HandleTable::AddOwnedMemory(void* address, size_t size,
                                        std::shared_ptr<void> keep_alive) {
  std::string handle = NewHandle(HandleKind::kMemory);
  memory_.emplace(handle,
                  MemoryEntry{address, size, true, std::move(keep_alive),
                              /*sized=*/true});
  if (address != nullptr) {
    memory_by_address_[reinterpret_cast<uintptr_t>(address)] = handle;
  }
  return handle;
}

std::string HandleTable::AddOwnedMemory(void* address, size_t size,
                                        std::function<void(void*)> release) {
  std::string handle = AddOwnedMemory(address, size);
  memory_[handle].release = std::move(release);
  return handle;
}

std::string HandleTable::AddBorrowedMemory(void* address) {
  const uintptr_t key = reinterpret_cast<uintptr_t>(address);
  auto existing = memory_by_address_.find(key);
  if (existing != memory_by_address_.end()) return existing->second;
  std::string handle = NewHandle(HandleKind::kMemory);
  memory_.emplace(handle, MemoryEntry{address, 0, false, nullptr});
  memory_by_address_.emplace(key, handle);
  return handle;
}

absl::StatusOr<MemoryEntry*> HandleTable::GetMemory(absl::string_view handle) {
  RETURN_IF_ERROR(CheckHandle(handle, HandleKind::kMemory));
  auto it = memory_.find(handle);
  if (it == memory_.end()) {
    return MissingHandle(handle, HandleKind::kMemory);
  }
  return &it->second;
}

absl::Status HandleTable::FreeMemory(absl::string_view handle) {
  RETURN_IF_ERROR(CheckHandle(handle, HandleKind::kMemory));
  auto it = memory_.find(handle);
  if (it == memory_.end()) {
    return MissingHandle(handle, HandleKind::kMemory);
  }
  if (!it->second.owned) {
    return FailedPreconditionError(
        v1::ERROR_REASON_HANDLE_INVALID,
        absl::StrCat("memory handle ", handle,
                     " is borrowed; ffid does not own it, so it cannot be "
                     "freed (free it by calling the library's own release "
                     "function)"));
  }
  const uintptr_t key = reinterpret_cast<uintptr_t>(it->second.address);
  auto by_address = memory_by_address_.find(key);
  if (by_address != memory_by_address_.end() &&
      by_address->second == it->first) {
    memory_by_address_.erase(by_address);
  }
  if (it->second.release) {
    it->second.release(it->second.address);
  } else if (it->second.destructor != nullptr) {
    it->second.destructor(it->second.address);
  } else {
    std::free(it->second.address);
  }
  const std::string retired = it->first;
  memory_.erase(it);
  Retire(retired, "was freed");
  return absl::OkStatus();
}


std::string HandleTable::AddSizedBorrowedMemory(void* address, size_t size) {
  const uintptr_t key = reinterpret_cast<uintptr_t>(address);
  auto existing = memory_by_address_.find(key);
  if (existing != memory_by_address_.end()) {
    MemoryEntry& entry = memory_.at(existing->second);
    if (!entry.owned) {
      entry.sized = true;
      entry.size = size;
      return existing->second;
    }
  }
  std::string handle = NewHandle(HandleKind::kMemory);
  MemoryEntry entry;
  entry.address = address;
  entry.size = size;
  entry.sized = true;
  memory_.emplace(handle, std::move(entry));
  if (existing == memory_by_address_.end()) {
    memory_by_address_.emplace(key, handle);
  }
  return handle;
}

absl::Status HandleTable::Adopt(absl::string_view handle,
                                void (*destructor)(void*), size_t size) {
  ASSIGN_OR_RETURN(MemoryEntry * entry, GetMemory(handle));
  if (entry->owned) {
    return FailedPreconditionError(
        v1::ERROR_REASON_HANDLE_INVALID,
        absl::StrCat("memory handle ", handle,
                     " is owned by the session already; adopting it again "
                     "would release it twice"));
  }
  entry->owned = true;
  entry->destructor = destructor;
  if (size != 0) {
    entry->sized = true;
    entry->size = size;
  }
  // Owned entries win the address lookup over borrowed ones.
  memory_by_address_[reinterpret_cast<uintptr_t>(entry->address)] =
      std::string(handle);
  return absl::OkStatus();
}

void HandleTable::KeepAlive(absl::string_view handle,
                            std::shared_ptr<void> thing) {
  auto it = memory_.find(handle);
  if (it == memory_.end()) return;
  auto both = std::make_shared<std::pair<std::shared_ptr<void>,
                                         std::shared_ptr<void>>>(
      std::move(it->second.keep_alive), std::move(thing));
  it->second.keep_alive = std::move(both);
}

}  // namespace ffid::worker
