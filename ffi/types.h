// CType: a C type laid out for this platform and described to libffi.
//
// Built from an ffid.v1.TypeDescriptor once and then shared: a CType is
// immutable after Create(), so it is thread-safe, and it owns every ffi_type
// structure it had to build (for records and arrays), which live as long as
// the CType does.
#ifndef FFID_FFI_TYPES_H_
#define FFID_FFI_TYPES_H_

#include <ffi.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ffid/v1/types.pb.h"

namespace ffid::ffi {

// Size, alignment and libffi type of a scalar kind on this platform.
struct ScalarInfo {
  size_t size = 0;
  size_t alignment = 0;
  bool is_integer = false;
  bool is_signed = false;
  bool is_floating = false;
  ffi_type* ffi = nullptr;
};

// Fails with TYPE_MISMATCH for SCALAR_KIND_UNSPECIFIED and UNSUPPORTED for
// kinds libffi cannot pass on this platform.
absl::StatusOr<ScalarInfo> GetScalarInfo(v1::ScalarKind kind);

class CType {
 public:
  // Lays out `descriptor`. Named types must have been resolved by the caller.
  // Errors: TYPE_MISMATCH (malformed descriptor), UNSUPPORTED (valid C that
  // this version cannot pass yet), with `context` (e.g. "parameter 2 'x'")
  // at the start of the message.
  static absl::StatusOr<std::shared_ptr<const CType>> Create(
      const v1::TypeDescriptor& descriptor, const std::string& context = "");

  ~CType();
  CType(const CType&) = delete;
  CType& operator=(const CType&) = delete;

  const v1::TypeDescriptor& descriptor() const { return descriptor_; }
  // libffi's description; &ffi_type_void for void. Owned by this CType.
  ffi_type* ffi() const { return ffi_; }
  size_t size() const { return size_; }
  size_t alignment() const { return alignment_; }
  bool is_void() const;

 private:
  CType() = default;

  v1::TypeDescriptor descriptor_;
  ffi_type* ffi_ = nullptr;
  size_t size_ = 0;
  size_t alignment_ = 1;
  // Storage for built ffi_type structures and their element arrays.
  struct Storage;
  std::unique_ptr<Storage> storage_;
  friend struct CTypeBuilder;
};

// The C spelling of a type, for messages: "unsigned long", "const char *",
// "double (*)(double)".
std::string TypeName(const v1::TypeDescriptor& descriptor);

}  // namespace ffid::ffi

#endif  // FFID_FFI_TYPES_H_
