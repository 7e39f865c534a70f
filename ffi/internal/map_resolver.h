// MapResolver: a PointerResolver for ffi/ unit tests, over a plain map.
//
// Handles are names in `handles`; a pointer value without a handle passes
// its raw address through; returned pointers come back as a handle named
// "borrowed" with their address. The worker's real resolver lives over its
// handle table (server/worker/executor.cc). Not thread-safe.
#ifndef FFID_FFI_INTERNAL_MAP_RESOLVER_H_
#define FFID_FFI_INTERNAL_MAP_RESOLVER_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "ffi/marshal.h"

namespace ffid::ffi::internal {

class MapResolver : public PointerResolver {
 public:
  absl::StatusOr<void*> Resolve(const v1::PointerValue& pointer,
                                absl::string_view param) override {
    if (pointer.handle().empty()) {
      return reinterpret_cast<void*>(pointer.address());
    }
    auto it = handles.find(pointer.handle());
    if (it == handles.end()) {
      return InvalidArgumentError(
          v1::ERROR_REASON_HANDLE_INVALID,
          absl::StrCat(param, ": handle ", pointer.handle(),
                       " does not exist in this session"));
    }
    return static_cast<char*>(it->second) + pointer.offset();
  }
  v1::Value Wrap(void* address) override {
    v1::Value value;
    value.mutable_pointer_value()->set_handle("borrowed");
    value.mutable_pointer_value()->set_address(
        reinterpret_cast<uintptr_t>(address));
    return value;
  }
  std::map<std::string, void*> handles;
};

}  // namespace ffid::ffi::internal

#endif  // FFID_FFI_INTERNAL_MAP_RESOLVER_H_
