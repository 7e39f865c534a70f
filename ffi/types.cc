#include "ffi/types.h"

#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ffi/errors.h"

namespace ffid::ffi {

// Everything a CType had to build for libffi, and the parts of the type it
// is made of. Lives exactly as long as the CType.
struct CType::Storage {
  // The FFI_TYPE_STRUCT description of a record or array.
  ffi_type aggregate{};
  // Its NULL-terminated element list.
  std::vector<ffi_type*> elements;
  std::vector<CTypeMember> members;
  std::shared_ptr<const CType> element;
  uint64_t length = 0;
  std::shared_ptr<const CType> pointee;
  absl::Status by_value;
  // Whether libffi's own layout of `aggregate` is the C layout, so it can
  // be an element of an enclosing struct libffi lays out.
  bool native = true;
};

namespace {

// Arrays beyond this many elements would need an equally long libffi element
// list; nothing sensible passes such an array by value.
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 24;

std::string Prefixed(absl::string_view context, absl::string_view message) {
  if (context.empty()) return std::string(message);
  return absl::StrCat(context, ": ", message);
}

absl::Status Mismatch(absl::string_view context, absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_TYPE_MISMATCH,
                              Prefixed(context, message));
}

absl::Status Unsupported(absl::string_view context,
                         absl::string_view message) {
  return MakeError(absl::StatusCode::kUnimplemented,
                   v1::ERROR_REASON_UNSUPPORTED, Prefixed(context, message));
}

template <typename T>
ffi_type* IntegerFfiType() {
  constexpr bool kSigned = std::is_signed_v<T>;
  switch (sizeof(T)) {
    case 1:
      return kSigned ? &ffi_type_sint8 : &ffi_type_uint8;
    case 2:
      return kSigned ? &ffi_type_sint16 : &ffi_type_uint16;
    case 4:
      return kSigned ? &ffi_type_sint32 : &ffi_type_uint32;
    case 8:
      return kSigned ? &ffi_type_sint64 : &ffi_type_uint64;
  }
  return nullptr;
}

template <typename T>
ScalarInfo IntegerInfo() {
  static_assert(std::is_integral_v<T>);
  ScalarInfo info;
  info.size = sizeof(T);
  info.alignment = alignof(T);
  info.is_integer = true;
  info.is_signed = std::is_signed_v<T>;
  info.ffi = IntegerFfiType<T>();
  return info;
}

template <typename T>
ScalarInfo FloatingInfo(ffi_type* type) {
  ScalarInfo info;
  info.size = sizeof(T);
  info.alignment = alignof(T);
  info.is_floating = true;
  info.is_signed = true;
  info.ffi = type;
  return info;
}

size_t RoundUp(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

bool IsPowerOfTwo(uint64_t value) {
  return value != 0 && (value & (value - 1)) == 0;
}

// The x86-64 System V classes an eightbyte of an aggregate can have.
enum class ArgClass { kNone, kInteger, kSse, kX87, kX87Up, kMemory };

// One scalar (or bitfield) inside an aggregate, for classifying it.
struct Leaf {
  // In bits from the start of the aggregate.
  uint64_t bit_offset;
  uint64_t bit_size;
  ArgClass arg_class;
  // Whether it sits at an offset its type's alignment allows; GCC passes
  // aggregates with misaligned members in memory.
  bool aligned;
};

ArgClass Merge(ArgClass a, ArgClass b) {
  if (a == b) return a;
  if (a == ArgClass::kNone) return b;
  if (b == ArgClass::kNone) return a;
  if (a == ArgClass::kMemory || b == ArgClass::kMemory) {
    return ArgClass::kMemory;
  }
  if (a == ArgClass::kInteger || b == ArgClass::kInteger) {
    return ArgClass::kInteger;
  }
  if (a == ArgClass::kX87 || a == ArgClass::kX87Up || b == ArgClass::kX87 ||
      b == ArgClass::kX87Up) {
    return ArgClass::kMemory;
  }
  return ArgClass::kSse;
}

void CollectLeaves(const CType& type, uint64_t base_bits,
                   std::vector<Leaf>& leaves) {
  const v1::TypeDescriptor& d = type.descriptor();
  if (d.has_record()) {
    for (const CTypeMember& member : type.members()) {
      const uint64_t at = base_bits + member.offset * 8 + member.bit_offset;
      if (member.zero_width) continue;  // GCC 12 ignores them here
      if (member.bit_width != 0) {
        // Bitfields are always INTEGER, over the bits they occupy (unnamed
        // ones too).
        leaves.push_back({at, member.bit_width, ArgClass::kInteger, true});
        continue;
      }
      CollectLeaves(*member.type, at, leaves);
    }
    return;
  }
  if (d.has_array()) {
    const CType& element = *type.element();
    for (uint64_t i = 0; i < type.length(); ++i) {
      CollectLeaves(element, base_bits + i * element.size() * 8, leaves);
    }
    return;
  }
  const bool aligned = base_bits % (type.alignment() * 8) == 0;
  if (d.has_scalar()) {
    switch (d.scalar()) {
      case v1::SCALAR_KIND_FLOAT:
      case v1::SCALAR_KIND_DOUBLE:
        leaves.push_back({base_bits, type.size() * 8, ArgClass::kSse, aligned});
        return;
      case v1::SCALAR_KIND_COMPLEX_FLOAT:
      case v1::SCALAR_KIND_COMPLEX_DOUBLE: {
        const uint64_t half = type.size() * 4;
        leaves.push_back({base_bits, half, ArgClass::kSse, aligned});
        leaves.push_back({base_bits + half, half, ArgClass::kSse, aligned});
        return;
      }
      case v1::SCALAR_KIND_LONG_DOUBLE:
        leaves.push_back({base_bits, 64, ArgClass::kX87, aligned});
        leaves.push_back({base_bits + 64, 64, ArgClass::kX87Up, aligned});
        return;
      case v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE:
        // 32 bytes: any aggregate holding one is passed in memory.
        leaves.push_back({base_bits, type.size() * 8, ArgClass::kMemory,
                          aligned});
        return;
      default:
        break;
    }
  }
  leaves.push_back({base_bits, type.size() * 8, ArgClass::kInteger, aligned});
}

// The classes of an aggregate's eightbytes as GCC assigns them on x86-64;
// a single kMemory when it is passed and returned in memory.
std::vector<ArgClass> ClassifyAggregate(const CType& type) {
  const size_t size = type.size();
  if (size > 16 || size == 0) return {ArgClass::kMemory};
  std::vector<Leaf> leaves;
  CollectLeaves(type, 0, leaves);
  std::vector<ArgClass> classes((size + 7) / 8, ArgClass::kNone);
  for (const Leaf& leaf : leaves) {
    if (!leaf.aligned) return {ArgClass::kMemory};
    if (leaf.bit_size == 0) continue;
    for (uint64_t e = leaf.bit_offset / 64;
         e <= (leaf.bit_offset + leaf.bit_size - 1) / 64 && e < classes.size();
         ++e) {
      classes[e] = Merge(leaf.arg_class, classes[e]);
    }
  }
  for (size_t i = 0; i < classes.size(); ++i) {
    if (classes[i] == ArgClass::kMemory) return {ArgClass::kMemory};
    if (classes[i] == ArgClass::kX87Up &&
        (i == 0 || classes[i - 1] != ArgClass::kX87)) {
      return {ArgClass::kMemory};
    }
  }
  return classes;
}

// Element types for libffi's classifier that stand for one class each.
// A struct larger than 32 bytes makes libffi pass its container in memory;
// an empty 8-byte struct is an eightbyte of class NO_CLASS.
ffi_type* MemoryMarker() {
  static ffi_type* const kMarker = [] {
    static ffi_type* elements[] = {&ffi_type_uint8, nullptr};
    auto* type = new ffi_type();
    type->size = 64;
    type->alignment = 1;
    type->type = FFI_TYPE_STRUCT;
    type->elements = elements;
    return type;
  }();
  return kMarker;
}

ffi_type* PaddingEightbyte() {
  static ffi_type* const kPadding = [] {
    static ffi_type* elements[] = {nullptr};
    auto* type = new ffi_type();
    type->size = 8;
    type->alignment = 1;
    type->type = FFI_TYPE_STRUCT;
    type->elements = elements;
    return type;
  }();
  return kPadding;
}

}  // namespace

absl::StatusOr<ScalarInfo> GetScalarInfo(v1::ScalarKind kind) {
  switch (kind) {
    case v1::SCALAR_KIND_UNSPECIFIED:
      return InvalidArgumentError(v1::ERROR_REASON_TYPE_MISMATCH,
                                  "the scalar kind is unspecified");
    case v1::SCALAR_KIND_VOID: {
      ScalarInfo info;
      info.size = 0;
      info.alignment = 1;
      info.ffi = &ffi_type_void;
      return info;
    }
    case v1::SCALAR_KIND_BOOL: {
      static_assert(sizeof(bool) == 1, "libffi has no bool; uint8 stands in");
      ScalarInfo info;
      info.size = sizeof(bool);
      info.alignment = alignof(bool);
      info.ffi = &ffi_type_uint8;
      return info;
    }
    case v1::SCALAR_KIND_CHAR:
      return IntegerInfo<char>();
    case v1::SCALAR_KIND_SIGNED_CHAR:
      return IntegerInfo<signed char>();
    case v1::SCALAR_KIND_UNSIGNED_CHAR:
      return IntegerInfo<unsigned char>();
    case v1::SCALAR_KIND_SHORT:
      return IntegerInfo<short>();  // NOLINT(runtime/int)
    case v1::SCALAR_KIND_UNSIGNED_SHORT:
      return IntegerInfo<unsigned short>();  // NOLINT(runtime/int)
    case v1::SCALAR_KIND_INT:
      return IntegerInfo<int>();
    case v1::SCALAR_KIND_UNSIGNED_INT:
      return IntegerInfo<unsigned int>();
    case v1::SCALAR_KIND_LONG:
      return IntegerInfo<long>();  // NOLINT(runtime/int)
    case v1::SCALAR_KIND_UNSIGNED_LONG:
      return IntegerInfo<unsigned long>();  // NOLINT(runtime/int)
    case v1::SCALAR_KIND_LONG_LONG:
      return IntegerInfo<long long>();  // NOLINT(runtime/int)
    case v1::SCALAR_KIND_UNSIGNED_LONG_LONG:
      return IntegerInfo<unsigned long long>();  // NOLINT(runtime/int)
    case v1::SCALAR_KIND_INT8:
      return IntegerInfo<int8_t>();
    case v1::SCALAR_KIND_UINT8:
      return IntegerInfo<uint8_t>();
    case v1::SCALAR_KIND_INT16:
      return IntegerInfo<int16_t>();
    case v1::SCALAR_KIND_UINT16:
      return IntegerInfo<uint16_t>();
    case v1::SCALAR_KIND_INT32:
      return IntegerInfo<int32_t>();
    case v1::SCALAR_KIND_UINT32:
      return IntegerInfo<uint32_t>();
    case v1::SCALAR_KIND_INT64:
      return IntegerInfo<int64_t>();
    case v1::SCALAR_KIND_UINT64:
      return IntegerInfo<uint64_t>();
    case v1::SCALAR_KIND_SIZE_T:
      return IntegerInfo<size_t>();
    case v1::SCALAR_KIND_SSIZE_T:
      return IntegerInfo<ssize_t>();
    case v1::SCALAR_KIND_INTPTR_T:
      return IntegerInfo<intptr_t>();
    case v1::SCALAR_KIND_UINTPTR_T:
      return IntegerInfo<uintptr_t>();
    case v1::SCALAR_KIND_PTRDIFF_T:
      return IntegerInfo<ptrdiff_t>();
    case v1::SCALAR_KIND_FLOAT:
      return FloatingInfo<float>(&ffi_type_float);
    case v1::SCALAR_KIND_DOUBLE:
      return FloatingInfo<double>(&ffi_type_double);
    case v1::SCALAR_KIND_LONG_DOUBLE:
      return FloatingInfo<long double>(&ffi_type_longdouble);
    case v1::SCALAR_KIND_WCHAR_T:
      return IntegerInfo<wchar_t>();
    case v1::SCALAR_KIND_CHAR16_T:
      return IntegerInfo<char16_t>();
    case v1::SCALAR_KIND_CHAR32_T:
      return IntegerInfo<char32_t>();
    case v1::SCALAR_KIND_COMPLEX_FLOAT:
    case v1::SCALAR_KIND_COMPLEX_DOUBLE: {
#ifdef FFI_TARGET_HAS_COMPLEX_TYPE
      bool is_float = kind == v1::SCALAR_KIND_COMPLEX_FLOAT;
      ScalarInfo info;
      info.size = is_float ? 2 * sizeof(float) : 2 * sizeof(double);
      info.alignment = is_float ? alignof(float) : alignof(double);
      info.is_floating = true;
      info.is_signed = true;
      info.ffi = is_float ? &ffi_type_complex_float : &ffi_type_complex_double;
      return info;
#else
      return MakeError(absl::StatusCode::kUnimplemented,
                       v1::ERROR_REASON_UNSUPPORTED,
                       absl::StrCat("libffi cannot pass '", ScalarKindName(kind),
                                    "' on this platform"));
#endif
    }
    case v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE: {
#if defined(FFI_TARGET_HAS_COMPLEX_TYPE) && defined(__x86_64__)
      // libffi 3.4 passes it in memory and returns it in st(0)/st(1) as
      // GCC does (COMPLEX_X87); checked by tests/type_system_test.
      ScalarInfo info;
      info.size = 2 * sizeof(long double);
      info.alignment = alignof(long double);
      info.is_floating = true;
      info.is_signed = true;
      info.ffi = &ffi_type_complex_longdouble;
      return info;
#else
      return MakeError(absl::StatusCode::kUnimplemented,
                       v1::ERROR_REASON_UNSUPPORTED,
                       absl::StrCat("libffi cannot pass '", ScalarKindName(kind),
                                    "' on this platform"));
#endif
    }
    default:
      break;
  }
  return InvalidArgumentError(
      v1::ERROR_REASON_TYPE_MISMATCH,
      absl::StrCat("unknown scalar kind ", static_cast<int>(kind)));
}

absl::string_view ScalarKindName(v1::ScalarKind kind) {
  switch (kind) {
    case v1::SCALAR_KIND_UNSPECIFIED:
      return "<unspecified>";
    case v1::SCALAR_KIND_VOID:
      return "void";
    case v1::SCALAR_KIND_BOOL:
      return "bool";
    case v1::SCALAR_KIND_CHAR:
      return "char";
    case v1::SCALAR_KIND_SIGNED_CHAR:
      return "signed char";
    case v1::SCALAR_KIND_UNSIGNED_CHAR:
      return "unsigned char";
    case v1::SCALAR_KIND_SHORT:
      return "short";
    case v1::SCALAR_KIND_UNSIGNED_SHORT:
      return "unsigned short";
    case v1::SCALAR_KIND_INT:
      return "int";
    case v1::SCALAR_KIND_UNSIGNED_INT:
      return "unsigned int";
    case v1::SCALAR_KIND_LONG:
      return "long";
    case v1::SCALAR_KIND_UNSIGNED_LONG:
      return "unsigned long";
    case v1::SCALAR_KIND_LONG_LONG:
      return "long long";
    case v1::SCALAR_KIND_UNSIGNED_LONG_LONG:
      return "unsigned long long";
    case v1::SCALAR_KIND_INT8:
      return "int8_t";
    case v1::SCALAR_KIND_UINT8:
      return "uint8_t";
    case v1::SCALAR_KIND_INT16:
      return "int16_t";
    case v1::SCALAR_KIND_UINT16:
      return "uint16_t";
    case v1::SCALAR_KIND_INT32:
      return "int32_t";
    case v1::SCALAR_KIND_UINT32:
      return "uint32_t";
    case v1::SCALAR_KIND_INT64:
      return "int64_t";
    case v1::SCALAR_KIND_UINT64:
      return "uint64_t";
    case v1::SCALAR_KIND_SIZE_T:
      return "size_t";
    case v1::SCALAR_KIND_SSIZE_T:
      return "ssize_t";
    case v1::SCALAR_KIND_INTPTR_T:
      return "intptr_t";
    case v1::SCALAR_KIND_UINTPTR_T:
      return "uintptr_t";
    case v1::SCALAR_KIND_PTRDIFF_T:
      return "ptrdiff_t";
    case v1::SCALAR_KIND_FLOAT:
      return "float";
    case v1::SCALAR_KIND_DOUBLE:
      return "double";
    case v1::SCALAR_KIND_LONG_DOUBLE:
      return "long double";
    case v1::SCALAR_KIND_WCHAR_T:
      return "wchar_t";
    case v1::SCALAR_KIND_CHAR16_T:
      return "char16_t";
    case v1::SCALAR_KIND_CHAR32_T:
      return "char32_t";
    case v1::SCALAR_KIND_COMPLEX_FLOAT:
      return "float _Complex";
    case v1::SCALAR_KIND_COMPLEX_DOUBLE:
      return "double _Complex";
    case v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE:
      return "long double _Complex";
    default:
      break;
  }
  return "<unknown scalar>";
}

// Builds CTypes; a friend of CType so it can fill in the private fields.
struct CTypeBuilder {
  static absl::Status Build(CType& type, const std::string& context);
  static absl::Status BuildRecord(CType& type, const std::string& context);
  static absl::Status BuildArray(CType& type, const std::string& context);
  static absl::Status BuildPointer(CType& type, const std::string& context);
  // An array's element type, laid out; writes its laid-out descriptor back.
  static absl::StatusOr<std::shared_ptr<const CType>> ArrayElement(
      v1::ArrayType& array, const std::string& context);
  // The type of a flexible array member `T m[]`: size 0, T's alignment.
  static absl::StatusOr<std::shared_ptr<const CType>> FlexibleArray(
      const v1::TypeDescriptor& descriptor, const std::string& context);
  // Describes a record to libffi as a struct whose eightbytes have the
  // classes GCC gives the record's on x86-64 (unions, packed and
  // over-aligned structs, bitfields: layouts libffi cannot express).
  static absl::Status EmulateAggregate(CType& type);
  // Checks libffi's layout of the struct built for `type` against ours.
  static absl::Status CheckLibffiLayout(CType& type, bool check_offsets);
};

absl::Status CTypeBuilder::Build(CType& type, const std::string& context) {
  v1::TypeDescriptor& d = type.descriptor_;
  switch (d.kind_case()) {
    case v1::TypeDescriptor::kScalar: {
      absl::StatusOr<ScalarInfo> info = GetScalarInfo(d.scalar());
      if (!info.ok()) return WithContext(info.status(), context);
      type.has_scalar_ = true;
      type.scalar_ = *info;
      type.ffi_ = info->ffi;
      type.size_ = info->size;
      type.alignment_ = info->alignment;
      return absl::OkStatus();
    }
    case v1::TypeDescriptor::kPointer:
      return BuildPointer(type, context);
    case v1::TypeDescriptor::kString: {
      switch (d.string().encoding()) {
        case v1::STRING_ENCODING_UNSPECIFIED:
        case v1::STRING_ENCODING_UTF8:
        case v1::STRING_ENCODING_LATIN1:
        case v1::STRING_ENCODING_UTF16:
        case v1::STRING_ENCODING_UTF32:
        case v1::STRING_ENCODING_WCHAR:
          break;
        default:
          return Mismatch(context,
                          absl::StrCat("unknown string encoding ",
                                       static_cast<int>(d.string().encoding())));
      }
      type.ffi_ = &ffi_type_pointer;
      type.size_ = sizeof(void*);
      type.alignment_ = alignof(void*);
      return absl::OkStatus();
    }
    case v1::TypeDescriptor::kFunctionPointer:
      type.ffi_ = &ffi_type_pointer;
      type.size_ = sizeof(void (*)());
      type.alignment_ = alignof(void (*)());
      return absl::OkStatus();
    case v1::TypeDescriptor::kEnumType: {
      v1::ScalarKind underlying = d.enum_type().underlying();
      if (underlying == v1::SCALAR_KIND_UNSPECIFIED) {
        underlying = v1::SCALAR_KIND_INT;
      }
      absl::StatusOr<ScalarInfo> info = GetScalarInfo(underlying);
      if (!info.ok()) return WithContext(info.status(), context);
      if (!info->is_integer) {
        return Mismatch(context,
                        absl::StrCat("the underlying type of ", TypeName(d),
                                     " must be an integer type, not '",
                                     ScalarKindName(underlying), "'"));
      }
      type.has_scalar_ = true;
      type.scalar_ = *info;
      type.ffi_ = info->ffi;
      type.size_ = info->size;
      type.alignment_ = info->alignment;
      return absl::OkStatus();
    }
    case v1::TypeDescriptor::kRecord:
      return BuildRecord(type, context);
    case v1::TypeDescriptor::kArray:
      return BuildArray(type, context);
    case v1::TypeDescriptor::kNamed:
      return Mismatch(context,
                      absl::StrCat("unresolved type name '", d.named(), "'"));
    case v1::TypeDescriptor::KIND_NOT_SET:
      break;
  }
  return Mismatch(context, "the type descriptor has no kind");
}

absl::Status CTypeBuilder::BuildPointer(CType& type,
                                        const std::string& context) {
  type.ffi_ = &ffi_type_pointer;
  type.size_ = sizeof(void*);
  type.alignment_ = alignof(void*);
  const v1::PointerType& pointer = type.descriptor_.pointer();
  if (pointer.direction() == v1::POINTER_DIRECTION_UNSPECIFIED) {
    // A plain pointer never touches its pointee, which may be incomplete
    // (`struct sqlite3 *`), so it is not laid out.
    return absl::OkStatus();
  }
  if (!v1::PointerDirection_IsValid(pointer.direction())) {
    return Mismatch(context, absl::StrCat("unknown pointer direction ",
                                          static_cast<int>(pointer.direction())));
  }
  if (!pointer.has_pointee() ||
      (pointer.pointee().has_scalar() &&
       pointer.pointee().scalar() == v1::SCALAR_KIND_VOID)) {
    return Mismatch(context,
                    "an IN, OUT or INOUT pointer needs a pointee type; 'void *' "
                    "has none");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const CType> pointee,
                   CType::Create(pointer.pointee(),
                                 Prefixed(context, "the pointee")));
  type.storage_ = std::make_unique<CType::Storage>();
  type.storage_->pointee = std::move(pointee);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const CType>> CTypeBuilder::ArrayElement(
    v1::ArrayType& array, const std::string& context) {
  if (!array.has_element()) {
    return Mismatch(context, "the array has no element type");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const CType> element,
                   CType::Create(array.element(), context));
  if (element->is_void()) {
    return Mismatch(context, "an array cannot have elements of type void");
  }
  *array.mutable_element() = element->descriptor();
  return element;
}

absl::StatusOr<std::shared_ptr<const CType>> CTypeBuilder::FlexibleArray(
    const v1::TypeDescriptor& descriptor, const std::string& context) {
  std::shared_ptr<CType> type(new CType());
  type->descriptor_ = descriptor;
  ASSIGN_OR_RETURN(
      std::shared_ptr<const CType> element,
      ArrayElement(*type->descriptor_.mutable_array(), context));
  auto storage = std::make_unique<CType::Storage>();
  storage->length = 0;
  storage->elements.push_back(nullptr);
  storage->aggregate.type = FFI_TYPE_STRUCT;
  storage->aggregate.elements = storage->elements.data();
  storage->native = false;
  storage->by_value = Unsupported(
      "", "a flexible array member has no size of its own: pass a pointer to "
          "the struct instead (Allocate/Read/Write reach its elements with "
          "flexible_length)");
  type->size_ = 0;
  type->alignment_ = element->alignment();
  storage->element = std::move(element);
  type->storage_ = std::move(storage);
  type->ffi_ = &type->storage_->aggregate;
  return std::shared_ptr<const CType>(std::move(type));
}

absl::Status CTypeBuilder::BuildArray(CType& type, const std::string& context) {
  v1::ArrayType& array = *type.descriptor_.mutable_array();
  if (array.length() == 0) {
    return Mismatch(context, "an array needs a length of at least 1 (length "
                             "0 is only for a flexible array member, the "
                             "last member of a struct)");
  }
  if (array.length() > kMaxArrayElements) {
    return Unsupported(context,
                       absl::StrCat("arrays of more than ", kMaxArrayElements,
                                    " elements are not supported"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const CType> element,
                   ArrayElement(array, context));
  if (element->flexible_member() != nullptr) {
    return Mismatch(context,
                    absl::StrCat("an array cannot have elements of type '",
                                 TypeName(element->descriptor()),
                                 "', which ends in a flexible array member"));
  }
  auto storage = std::make_unique<CType::Storage>();
  storage->length = array.length();
  storage->elements.assign(array.length(), element->ffi());
  storage->elements.push_back(nullptr);
  storage->aggregate.type = FFI_TYPE_STRUCT;
  storage->aggregate.elements = storage->elements.data();
  storage->by_value = element->by_value_status();
  storage->native = element->native_layout();
  type.size_ = element->size() * array.length();
  type.alignment_ = element->alignment();
  storage->element = std::move(element);
  type.storage_ = std::move(storage);
  type.ffi_ = &type.storage_->aggregate;
  if (type.storage_->by_value.ok()) {
    type.storage_->by_value = CheckLibffiLayout(type, /*check_offsets=*/false);
  }
  return absl::OkStatus();
}

absl::Status CTypeBuilder::BuildRecord(CType& type,
                                       const std::string& context) {
  v1::RecordType& record = *type.descriptor_.mutable_record();
  const bool is_union = record.kind() == v1::RECORD_KIND_UNION;
  const std::string record_name = TypeName(type.descriptor_);
  if (record.alignment() != 0 && !IsPowerOfTwo(record.alignment())) {
    return Mismatch(context, absl::StrCat("the alignment ", record.alignment(),
                                          " of ", record_name,
                                          " is not a power of two"));
  }
  auto storage = std::make_unique<CType::Storage>();
  std::set<std::string> names;
  // The end of the members so far, in bits (the largest member's for a
  // union).
  uint64_t end_bits = 0;
  size_t alignment = 1;
  bool has_bitfields = false;
  bool native = true;
  absl::Status by_value;
  bool has_named_member = false;
  const int field_count = record.fields_size();
  for (int index = 0; index < field_count; ++index) {
    v1::Field& field = *record.mutable_fields(index);
    std::string member_context = Prefixed(
        context, field.name().empty()
                     ? absl::StrCat("an unnamed member of ", record_name)
                     : absl::StrCat("member '", field.name(), "' of ",
                                    record_name));
    if (!field.name().empty() && !names.insert(field.name()).second) {
      return Mismatch(context, absl::StrCat(record_name, " has two members named '",
                                            field.name(), "'"));
    }
    const bool flexible = field.type().has_array() &&
                          field.type().array().length() == 0 &&
                          field.bit_width() == 0 &&
                          !field.zero_width_bitfield();
    if (flexible) {
      if (is_union) {
        return Mismatch(member_context,
                        "a union cannot have a flexible array member");
      }
      if (index != field_count - 1) {
        return Mismatch(member_context,
                        "a flexible array member must be the last member");
      }
      if (!has_named_member || field.name().empty()) {
        return Mismatch(member_context,
                        "a flexible array member needs a name and a named "
                        "member before it");
      }
    }
    std::shared_ptr<const CType> member;
    if (flexible) {
      ASSIGN_OR_RETURN(member, FlexibleArray(field.type(), member_context));
    } else {
      ASSIGN_OR_RETURN(member, CType::Create(field.type(), member_context));
    }
    if (member->is_void()) {
      return Mismatch(member_context, "a member cannot have type void");
    }
    if (member->flexible_member() != nullptr &&
        (is_union || index != field_count - 1)) {
      // GCC lets such a struct be the last member of another struct (an
      // extension): its flexible array then ends the outer one too.
      return Mismatch(member_context,
                      absl::StrCat("'", TypeName(member->descriptor()),
                                   "' ends in a flexible array member and "
                                   "can only be the last member of a struct, ",
                                   is_union ? "not a member of a union"
                                            : "not followed by other members",
                                   "; use a pointer to it"));
    }
    if (!field.name().empty()) has_named_member = true;
    if (field.alignment() != 0 && !IsPowerOfTwo(field.alignment())) {
      return Mismatch(member_context,
                      absl::StrCat("the alignment ", field.alignment(),
                                   " is not a power of two"));
    }
    // GCC: packed (the record's or the member's own) makes the alignment 1;
    // aligned(N) then raises it to N, never lowers it.
    const bool packed = record.packed() || field.packed();
    const size_t member_alignment = std::max<size_t>(
        packed ? 1 : member->alignment(), field.alignment());
    CTypeMember laid_out{field.name(), member, 0};
    if (field.zero_width_bitfield()) {
      const v1::TypeDescriptor& md = member->descriptor();
      if (!field.name().empty() || field.bit_width() != 0 ||
          member->scalar() == nullptr ||
          !(member->scalar()->is_integer ||
            (md.has_scalar() && md.scalar() == v1::SCALAR_KIND_BOOL))) {
        return Mismatch(member_context,
                        "a zero-width bitfield must be unnamed, of an integer "
                        "type, with bit_width 0");
      }
      // GCC: what follows starts at the next unit of the type's alignment,
      // packed or not; the record's alignment does not change.
      if (!is_union) {
        end_bits = RoundUp(end_bits, std::max<size_t>(member->alignment(),
                                                      field.alignment()) *
                                         8);
      }
      laid_out.offset = is_union ? 0 : end_bits / 8;
      laid_out.zero_width = true;
      has_bitfields = true;
    } else if (field.bit_width() != 0) {
      const v1::TypeDescriptor& md = member->descriptor();
      const bool is_bool =
          md.has_scalar() && md.scalar() == v1::SCALAR_KIND_BOOL;
      if (member->scalar() == nullptr ||
          !(member->scalar()->is_integer || is_bool)) {
        return Mismatch(member_context,
                        absl::StrCat("a bitfield must have an integer type, "
                                     "not '", TypeName(md), "'"));
      }
      const uint64_t width = field.bit_width();
      const uint64_t unit_bits = member->size() * 8;
      if (width > unit_bits) {
        return Mismatch(member_context,
                        absl::StrCat("the bitfield is ", width,
                                     " bits wide, more than its type '",
                                     TypeName(md), "' holds (", unit_bits,
                                     ")"));
      }
      has_bitfields = true;
      uint64_t start = is_union ? 0 : end_bits;
      // aligned(N) on a bitfield: it starts at the next multiple of N bytes.
      if (field.alignment() != 0) start = RoundUp(start, field.alignment() * 8);
      uint64_t offset_bytes = start / 8;
      if (!packed) {
        // GCC on x86-64: a bitfield never straddles a storage unit of its
        // type's size at its type's alignment; it moves to the next one.
        const uint64_t align_bits = member->alignment() * 8;
        uint64_t unit_start = start / align_bits * align_bits;
        if (start + width > unit_start + unit_bits) {
          start = RoundUp(start, align_bits);
          unit_start = start;
        }
        offset_bytes = unit_start / 8;
      }
      laid_out.offset = offset_bytes;
      laid_out.bit_offset = static_cast<uint32_t>(start - offset_bytes * 8);
      laid_out.bit_width = static_cast<uint32_t>(width);
      end_bits = std::max(end_bits, start + width);
      // Unnamed bitfields do not affect the record's alignment.
      if (!field.name().empty()) {
        alignment = std::max(alignment, member_alignment);
      }
    } else {
      if (field.name().empty() && !member->descriptor().has_record()) {
        return Mismatch(member_context,
                        "only a struct or union member may be unnamed");
      }
      const uint64_t offset =
          is_union ? 0 : RoundUp((end_bits + 7) / 8, member_alignment);
      laid_out.offset = offset;
      laid_out.flexible = flexible;
      end_bits = std::max(end_bits, (offset + member->size()) * 8);
      alignment = std::max(alignment, member_alignment);
    }
    if (by_value.ok() && !member->by_value_status().ok()) {
      by_value = WithContext(member->by_value_status(), member_context);
    }
    if (!member->native_layout()) native = false;
    *field.mutable_type() = member->descriptor();
    field.set_offset(laid_out.offset);
    field.set_bit_offset(laid_out.bit_offset);
    storage->members.push_back(std::move(laid_out));
  }
  alignment = std::max<size_t>(alignment, record.alignment());
  type.size_ = RoundUp((end_bits + 7) / 8, alignment);
  type.alignment_ = alignment;
  record.set_size(type.size_);
  record.set_computed_alignment(static_cast<uint32_t>(alignment));

  storage->aggregate.type = FFI_TYPE_STRUCT;
  type.storage_ = std::move(storage);
  type.ffi_ = &type.storage_->aggregate;
  const CTypeMember* flexible_member = type.flexible_member();
  if (flexible_member != nullptr) {
    type.storage_->by_value = Unsupported(
        "", absl::StrCat(record_name, " ends in the flexible array member '",
                         flexible_member->name,
                         "' and cannot be passed by value: pass a pointer "
                         "to it"));
    type.storage_->native = false;
    type.storage_->elements.push_back(nullptr);
    type.storage_->aggregate.elements = type.storage_->elements.data();
    return absl::OkStatus();
  }
  if (record.fields().empty()) {
    type.storage_->by_value = Unsupported(
        "", absl::StrCat(record_name,
                         " has no members and cannot be passed by value"));
    type.storage_->native = false;
    type.storage_->elements.push_back(nullptr);
    type.storage_->aggregate.elements = type.storage_->elements.data();
    return absl::OkStatus();
  }
  if (!by_value.ok()) {
    type.storage_->by_value = by_value;
    type.storage_->native = false;
    type.storage_->elements.push_back(nullptr);
    type.storage_->aggregate.elements = type.storage_->elements.data();
    return absl::OkStatus();
  }
  // libffi returns a struct holding a lone long double in rax:rdx rather
  // than st(0); records with long doubles take the ABI-class description.
  bool has_long_double = false;
  {
    std::vector<Leaf> leaves;
    CollectLeaves(type, 0, leaves);
    for (const Leaf& leaf : leaves) {
      if (leaf.arg_class == ArgClass::kX87) has_long_double = true;
    }
  }
  if (!is_union && !has_bitfields && native && !has_long_double) {
    // An ordinary struct: libffi lays it out and classifies it itself, as
    // long as its layout is the one libffi computes.
    for (const CTypeMember& member : type.storage_->members) {
      type.storage_->elements.push_back(member.type->ffi());
    }
    type.storage_->elements.push_back(nullptr);
    type.storage_->aggregate.elements = type.storage_->elements.data();
    if (CheckLibffiLayout(type, /*check_offsets=*/true).ok()) {
      type.storage_->native = true;
      return absl::OkStatus();
    }
    // Packed or over-aligned: fall through to the emulation. The layout
    // check filled in libffi's idea of size and alignment; reset them.
    type.storage_->elements.clear();
    type.storage_->aggregate = ffi_type{};
    type.storage_->aggregate.type = FFI_TYPE_STRUCT;
  }
  type.storage_->native = false;
  type.storage_->by_value = EmulateAggregate(type);
  return absl::OkStatus();
}

absl::Status CTypeBuilder::EmulateAggregate(CType& type) {
  CType::Storage& storage = *type.storage_;
  storage.elements.clear();
#if defined(__x86_64__)
  const std::vector<ArgClass> classes = ClassifyAggregate(type);
  storage.aggregate.type = FFI_TYPE_STRUCT;
  storage.aggregate.size = type.size_;
  storage.aggregate.alignment = static_cast<unsigned short>(type.alignment_);
  if (classes.size() == 2 && classes[0] == ArgClass::kX87 &&
      classes[1] == ArgClass::kX87Up) {
    // Exactly a long double: passed in memory, returned in st(0), like the
    // scalar itself, which is what libffi is given.
    // At the record's own alignment: a packed one sits on an 8-byte stack
    // slot, not a 16-byte one.
    storage.elements.push_back(nullptr);
    storage.aggregate.type = FFI_TYPE_LONGDOUBLE;
    storage.aggregate.elements = nullptr;
    return absl::OkStatus();
  } else if (classes.size() == 1 && classes[0] == ArgClass::kMemory) {
    storage.elements.push_back(MemoryMarker());
  } else {
    for (size_t i = 0; i < classes.size(); ++i) {
      const size_t bytes = std::min<size_t>(8, type.size_ - i * 8);
      switch (classes[i]) {
        case ArgClass::kInteger:
          storage.elements.push_back(&ffi_type_uint64);
          break;
        case ArgClass::kSse:
          storage.elements.push_back(bytes <= 4 ? &ffi_type_float
                                                : &ffi_type_double);
          break;
        default:
          // NO_CLASS: nothing in this eightbyte needs a register.
          storage.elements.push_back(PaddingEightbyte());
          break;
      }
    }
  }
  storage.elements.push_back(nullptr);
  storage.aggregate.elements = storage.elements.data();
  return absl::OkStatus();
#else
  storage.elements.push_back(nullptr);
  storage.aggregate.elements = storage.elements.data();
  return Unsupported("", absl::StrCat("passing ", TypeName(type.descriptor_),
                                      " by value is not supported on this "
                                      "platform yet"));
#endif
}

absl::Status CTypeBuilder::CheckLibffiLayout(CType& type, bool check_offsets) {
  CType::Storage& storage = *type.storage_;
  const std::string name = TypeName(type.descriptor_);
  std::vector<size_t> offsets(storage.elements.size());
  // Lays the aggregate out now, while only this thread can see it: libffi
  // would otherwise fill in size and alignment inside ffi_prep_cif.
  ffi_status status = ffi_get_struct_offsets(FFI_DEFAULT_ABI,
                                             &storage.aggregate, offsets.data());
  if (status != FFI_OK) {
    return Unsupported(
        "", absl::StrCat("libffi cannot describe ", name, " (status ",
                         static_cast<int>(status), ")"));
  }
  bool same = storage.aggregate.size == type.size_ &&
              storage.aggregate.alignment == type.alignment_;
  if (same && check_offsets) {
    for (size_t i = 0; i < storage.members.size(); ++i) {
      if (offsets[i] != storage.members[i].offset) same = false;
    }
  }
  if (!same) {
    return Unsupported("", absl::StrCat("the layout of ", name,
                                        " (packed or over-aligned) cannot be "
                                        "passed by value through libffi yet"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const CType>> CType::Create(
    const v1::TypeDescriptor& descriptor, const std::string& context) {
  std::shared_ptr<CType> type(new CType());
  type->descriptor_ = descriptor;
  RETURN_IF_ERROR(CTypeBuilder::Build(*type, context));
  return std::shared_ptr<const CType>(std::move(type));
}

CType::~CType() = default;

bool CType::is_void() const {
  return descriptor_.has_scalar() &&
         descriptor_.scalar() == v1::SCALAR_KIND_VOID;
}

const std::vector<CTypeMember>& CType::members() const {
  static const std::vector<CTypeMember>* const kNone =
      new std::vector<CTypeMember>();
  return storage_ != nullptr ? storage_->members : *kNone;
}

const CTypeMember* CType::flexible_member() const {
  if (storage_ == nullptr || storage_->members.empty() ||
      !descriptor_.has_record()) {
    return nullptr;
  }
  const CTypeMember& last = storage_->members.back();
  if (last.flexible) return &last;
  if (last.bit_width == 0 && !last.zero_width &&
      last.type->descriptor().has_record()) {
    return last.type->flexible_member();
  }
  return nullptr;
}

const CType* CType::element() const {
  return storage_ != nullptr ? storage_->element.get() : nullptr;
}

uint64_t CType::length() const {
  return storage_ != nullptr ? storage_->length : 0;
}

const CType* CType::pointee() const {
  return storage_ != nullptr ? storage_->pointee.get() : nullptr;
}

bool CType::native_layout() const {
  return storage_ == nullptr || storage_->native;
}

const absl::Status& CType::by_value_status() const {
  static const absl::Status* const kOk = new absl::Status();
  return storage_ != nullptr ? storage_->by_value : *kOk;
}

namespace {

std::string FunctionParameters(const v1::FunctionType& function) {
  std::vector<std::string> parameters;
  for (const v1::Parameter& parameter : function.parameters()) {
    parameters.push_back(TypeName(parameter.type()));
  }
  if (function.variadic()) parameters.push_back("...");
  if (parameters.empty()) return "(void)";
  return absl::StrCat("(", absl::StrJoin(parameters, ", "), ")");
}

std::string Join(absl::string_view base, absl::string_view declarator) {
  if (declarator.empty()) return std::string(base);
  return absl::StrCat(base, " ", declarator);
}

// Spells `d` around `declarator`, the part of a C declarator that derives
// from it ("*", "(*)[4]"), as C writes types inside out.
std::string Spell(const v1::TypeDescriptor& d, const std::string& declarator) {
  const std::string qualifier = d.is_const() ? "const " : "";
  switch (d.kind_case()) {
    case v1::TypeDescriptor::kScalar:
      return Join(absl::StrCat(qualifier, ScalarKindName(d.scalar())),
                  declarator);
    case v1::TypeDescriptor::kPointer: {
      std::string inner =
          absl::StrCat("*", d.is_const() ? "const" : "",
                       d.is_const() && !declarator.empty() ? " " : "",
                       declarator);
      if (!d.pointer().has_pointee()) return Join("void", inner);
      const v1::TypeDescriptor& pointee = d.pointer().pointee();
      if (pointee.has_array()) inner = absl::StrCat("(", inner, ")");
      return Spell(pointee, inner);
    }
    case v1::TypeDescriptor::kString: {
      absl::string_view unit = "char";
      switch (d.string().encoding()) {
        case v1::STRING_ENCODING_UTF16:
          unit = "char16_t";
          break;
        case v1::STRING_ENCODING_UTF32:
          unit = "char32_t";
          break;
        case v1::STRING_ENCODING_WCHAR:
          unit = "wchar_t";
          break;
        default:
          break;
      }
      std::string inner =
          absl::StrCat("*", d.is_const() ? "const" : "",
                       d.is_const() && !declarator.empty() ? " " : "",
                       declarator);
      return Join(absl::StrCat(d.string().is_const() ? "const " : "", unit),
                  inner);
    }
    case v1::TypeDescriptor::kArray:
      if (d.array().length() == 0) {  // a flexible array member
        return Spell(d.array().element(), absl::StrCat(declarator, "[]"));
      }
      return Spell(d.array().element(),
                   absl::StrCat(declarator, "[", d.array().length(), "]"));
    case v1::TypeDescriptor::kRecord: {
      const v1::RecordType& record = d.record();
      absl::string_view tag =
          record.kind() == v1::RECORD_KIND_UNION ? "union" : "struct";
      return Join(absl::StrCat(qualifier, tag, " ",
                               record.name().empty() ? "<anonymous>"
                                                     : record.name()),
                  declarator);
    }
    case v1::TypeDescriptor::kEnumType:
      return Join(absl::StrCat(qualifier, "enum ",
                               d.enum_type().name().empty()
                                   ? "<anonymous>"
                                   : d.enum_type().name()),
                  declarator);
    case v1::TypeDescriptor::kFunctionPointer: {
      const v1::FunctionType& function = d.function_pointer();
      std::string inner =
          absl::StrCat("(*", d.is_const() ? "const" : "",
                       d.is_const() && !declarator.empty() ? " " : "",
                       declarator, ")", FunctionParameters(function));
      if (!function.has_return_type()) return Join("void", inner);
      return Spell(function.return_type(), inner);
    }
    case v1::TypeDescriptor::kNamed:
      return Join(absl::StrCat(qualifier, d.named()), declarator);
    case v1::TypeDescriptor::KIND_NOT_SET:
      break;
  }
  return Join("<no type>", declarator);
}

}  // namespace

namespace {

// The flexible array member's type at the end of `record` (directly, or at
// the end of a struct that is its last member), or nullptr.
v1::ArrayType* TrailingFlexibleArray(v1::TypeDescriptor& record) {
  v1::TypeDescriptor* d = &record;
  while (d->has_record() && d->record().kind() != v1::RECORD_KIND_UNION &&
         d->record().fields_size() > 0) {
    v1::Field& last = *d->mutable_record()->mutable_fields()->rbegin();
    if (last.bit_width() != 0 || last.zero_width_bitfield()) return nullptr;
    if (last.type().has_array()) {
      return last.type().array().length() == 0
                 ? last.mutable_type()->mutable_array()
                 : nullptr;
    }
    d = last.mutable_type();
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<v1::TypeDescriptor> WithFlexibleLength(
    const v1::TypeDescriptor& record, uint64_t length) {
  v1::TypeDescriptor result = record;
  v1::ArrayType* flexible = TrailingFlexibleArray(result);
  if (flexible == nullptr) {
    return InvalidArgumentError(
        v1::ERROR_REASON_TYPE_MISMATCH,
        absl::StrCat("flexible_length ", length, " was given, but '",
                     TypeName(record),
                     "' does not end in a flexible array member"));
  }
  if (length == 0) return record;
  if (length > kMaxArrayElements) {
    return Unsupported("", absl::StrCat("flexible_length ", length,
                                        " is more than the ",
                                        kMaxArrayElements,
                                        " elements an array may have"));
  }
  flexible->set_length(length);
  return result;
}

v1::TypeDescriptor DecayArray(const v1::TypeDescriptor& descriptor) {
  if (!descriptor.has_array()) return descriptor;
  v1::TypeDescriptor pointer;
  *pointer.mutable_pointer()->mutable_pointee() = descriptor.array().element();
  return pointer;
}

std::string TypeName(const v1::TypeDescriptor& descriptor) {
  return Spell(descriptor, "");
}

std::string FunctionTypeName(const v1::FunctionType& function,
                             absl::string_view name) {
  std::string declarator = absl::StrCat(name, FunctionParameters(function));
  if (!function.has_return_type()) return Join("void", declarator);
  return Spell(function.return_type(), declarator);
}

std::string EightbyteClasses(const CType& type) {
#if defined(__x86_64__)
  const v1::TypeDescriptor& d = type.descriptor();
  if (d.has_record()) {
    if (type.ffi()->type == FFI_TYPE_LONGDOUBLE) return "";
    std::string classes;
    for (ArgClass c : ClassifyAggregate(type)) {
      switch (c) {
        case ArgClass::kInteger:
          classes += 'I';
          break;
        case ArgClass::kSse:
          classes += 'S';
          break;
        case ArgClass::kNone:
          classes += 'N';
          break;
        default:
          return "";
      }
    }
    return classes;
  }
  if (d.has_scalar()) {
    switch (d.scalar()) {
      case v1::SCALAR_KIND_FLOAT:
      case v1::SCALAR_KIND_DOUBLE:
      case v1::SCALAR_KIND_COMPLEX_FLOAT:
        return "S";
      case v1::SCALAR_KIND_COMPLEX_DOUBLE:
        return "SS";
      case v1::SCALAR_KIND_LONG_DOUBLE:
      case v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE:
        return "";
      default:
        return "I";
    }
  }
  return "I";
#else
  return "";
#endif
}

}  // namespace ffid::ffi
