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
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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

// The C spelling of a scalar kind ("unsigned long", "int8_t").
absl::string_view ScalarKindName(v1::ScalarKind kind);

class CType;

// A member of a laid-out struct or union.
struct CTypeMember {
  std::string name;
  std::shared_ptr<const CType> type;
  // The byte offset; for a bitfield, of the storage unit that holds it.
  size_t offset = 0;
  // For a bitfield: its width (0 for an ordinary member) and its first bit
  // counted from the least significant bit of the byte at `offset`.
  uint32_t bit_width = 0;
  uint32_t bit_offset = 0;
  // An unnamed zero-width bitfield (`int : 0;`): it only moves what follows
  // to its type's alignment, and holds no value.
  bool zero_width = false;
  // A flexible array member (`T m[];`, the last member of a struct): its
  // type is an array of length 0 and size 0.
  bool flexible = false;
};

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

  // For scalars, and for enums (their underlying integer type); nullptr for
  // every other kind.
  const ScalarInfo* scalar() const { return has_scalar_ ? &scalar_ : nullptr; }
  // A record's members in declaration order, with their byte offsets; empty
  // for every other kind.
  const std::vector<CTypeMember>& members() const;
  // An array's element type; nullptr for every other kind.
  const CType* element() const;
  // An array's length; 0 for every other kind (and for a flexible array
  // member's type).
  uint64_t length() const;
  // A struct's flexible array member, if it ends in one, directly or
  // through its last member being a struct that ends in one (a GCC
  // extension); else nullptr. Owned by this CType or one of its members.
  const CTypeMember* flexible_member() const;
  // The pointee of a pointer whose direction is IN, OUT or INOUT (laid out
  // so a temporary can be made for it); nullptr otherwise.
  const CType* pointee() const;
  // OK if libffi can pass and return this type by value; else why not
  // (UNSUPPORTED), e.g. a packed struct whose layout libffi cannot express.
  const absl::Status& by_value_status() const;
  // Whether libffi's own layout of ffi() equals the C layout (false for
  // records ffid describes to libffi by their ABI classes instead).
  bool native_layout() const;

 private:
  CType() = default;

  v1::TypeDescriptor descriptor_;
  ffi_type* ffi_ = nullptr;
  size_t size_ = 0;
  size_t alignment_ = 1;
  bool has_scalar_ = false;
  ScalarInfo scalar_;
  // Storage for built ffi_type structures and their element arrays.
  struct Storage;
  std::unique_ptr<Storage> storage_;
  friend struct CTypeBuilder;
};

// `record` (a struct ending in a flexible array member `T m[]`, directly or
// in a struct that is its last member) with `m` given `length` elements: an
// ordinary struct whose size covers them, for Allocate, Read and Write. `length` 0 returns `record` itself. TYPE_MISMATCH
// when `record` has no flexible array member; UNSUPPORTED beyond the array
// length limit.
absl::StatusOr<v1::TypeDescriptor> WithFlexibleLength(
    const v1::TypeDescriptor& record, uint64_t length);

// How an argument of `type` travels on x86-64 System V, one letter per
// eightbyte: 'I' a general register, 'S' an SSE register, 'N' nothing;
// empty when it is passed in memory (or on other platforms).
std::string EightbyteClasses(const CType& type);

// The C spelling of a type, for messages: "unsigned long", "const char *",
// "double (*)(double)".
std::string TypeName(const v1::TypeDescriptor& descriptor);

// The type a parameter declared with `descriptor` really has: an array is a
// pointer to its first element, as in C; anything else is itself.
v1::TypeDescriptor DecayArray(const v1::TypeDescriptor& descriptor);

// The C spelling of a function's prototype: "double cos(double)".
std::string FunctionTypeName(const v1::FunctionType& function,
                             absl::string_view name);

}  // namespace ffid::ffi

#endif  // FFID_FFI_TYPES_H_
