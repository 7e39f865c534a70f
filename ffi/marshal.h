// Marshalling between ffid.v1.Value and native memory laid out as a CType.
//
// Every check happens here, before native code runs: a value of the wrong
// kind is TYPE_MISMATCH, one that does not fit its type is
// VALUE_OUT_OF_RANGE; messages start with the caller's `param` name. The
// functions are thread-compatible: they touch only their arguments.
#ifndef FFID_FFI_MARSHAL_H_
#define FFID_FFI_MARSHAL_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ffi/types.h"
#include "ffid/v1/types.pb.h"

namespace ffid::ffi {

// Maps pointer values to native addresses and native pointers to values. The
// worker implements it over its handle table; tests over a plain map.
class PointerResolver {
 public:
  virtual ~PointerResolver() = default;
  // The address that `pointer` designates (handle + offset, or a raw
  // address). HANDLE_INVALID for an unknown or freed handle, naming `param`.
  virtual absl::StatusOr<void*> Resolve(const v1::PointerValue& pointer,
                                        absl::string_view param) = 0;
  // A value for a non-NULL pointer that native code returned (a borrowed
  // memory handle with its address).
  virtual v1::Value Wrap(void* address) = 0;
  // The native function pointer of callback `handle`, which must have the
  // signature `type`. The default says callbacks are UNSUPPORTED; the worker
  // overrides it once it has callback handles.
  virtual absl::StatusOr<void*> ResolveCallback(absl::string_view handle,
                                                const v1::FunctionType& type,
                                                absl::string_view param);
};

// Scratch memory that lives for one call: copies of string arguments and
// temporaries for by-reference parameters. Everything is freed with it.
class CallArena {
 public:
  CallArena() = default;
  CallArena(const CallArena&) = delete;
  CallArena& operator=(const CallArena&) = delete;
  // Zero-filled, aligned to `alignment` (a power of two, at most 16).
  // The first few hundred bytes come from storage inside the arena, so a
  // call with small arguments allocates nothing.
  void* Allocate(size_t size, size_t alignment);

 private:
  alignas(16) unsigned char inline_[256];
  size_t inline_used_ = 0;
  std::vector<std::unique_ptr<unsigned char[]>> blocks_;
};

// Writes `value` as `type` into `dest`, which has room for type.size() bytes
// at type.alignment(). Strings are copied into `arena`.
[[nodiscard]] absl::Status EncodeValue(const CType& type,
                                       const v1::Value& value, void* dest,
                                       PointerResolver& resolver,
                                       CallArena& arena,
                                       absl::string_view param);

// Reads a value of `type` from `src`. A returned string is copied; a NULL
// pointer or string becomes null_value.
[[nodiscard]] absl::StatusOr<v1::Value> DecodeValue(const CType& type,
                                                    const void* src,
                                                    PointerResolver& resolver);

}  // namespace ffid::ffi

#endif  // FFID_FFI_MARSHAL_H_
