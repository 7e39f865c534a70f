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

// The status of a part, restated in the context of its enclosing type.
absl::Status WithContext(const absl::Status& status,
                         absl::string_view context) {
  if (status.ok() || context.empty()) return status;
  return MakeError(status.code(), GetErrorReason(status),
                   Prefixed(context, status.message()));
}

// The x86-64 System V classes an eightbyte of an aggregate can have.
enum class ArgClass { kNone, kInteger, kSse, kX87 };

// One scalar inside an aggregate, for classifying unions.
struct Leaf {
  size_t offset;
  size_t size;
  ArgClass arg_class;
};

void CollectLeaves(const CType& type, size_t base, std::vector<Leaf>& leaves) {
  const v1::TypeDescriptor& d = type.descriptor();
  if (d.has_record()) {
    for (const CTypeMember& member : type.members()) {
      CollectLeaves(*member.type, base + member.offset, leaves);
    }
    return;
  }
  if (d.has_array()) {
    const CType& element = *type.element();
    for (uint64_t i = 0; i < type.length(); ++i) {
      CollectLeaves(element, base + i * element.size(), leaves);
    }
    return;
  }
  ArgClass arg_class = ArgClass::kInteger;
  if (d.has_scalar()) {
    switch (d.scalar()) {
      case v1::SCALAR_KIND_FLOAT:
      case v1::SCALAR_KIND_DOUBLE:
      case v1::SCALAR_KIND_COMPLEX_FLOAT:
      case v1::SCALAR_KIND_COMPLEX_DOUBLE:
        arg_class = ArgClass::kSse;
        break;
      case v1::SCALAR_KIND_LONG_DOUBLE:
        arg_class = ArgClass::kX87;
        break;
      default:
        break;
    }
  }
  leaves.push_back({base, type.size(), arg_class});
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
  // Describes a union to libffi as a struct whose eightbytes have the
  // classes the System V x86-64 ABI gives the union's.
  static absl::Status EmulateUnion(CType& type);
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

absl::Status CTypeBuilder::BuildArray(CType& type, const std::string& context) {
  v1::ArrayType& array = *type.descriptor_.mutable_array();
  if (array.length() == 0) {
    return Mismatch(context, "an array needs a length of at least 1");
  }
  if (array.length() > kMaxArrayElements) {
    return Unsupported(context,
                       absl::StrCat("arrays of more than ", kMaxArrayElements,
                                    " elements are not supported"));
  }
  if (!array.has_element()) {
    return Mismatch(context, "the array has no element type");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const CType> element,
                   CType::Create(array.element(), context));
  if (element->is_void()) {
    return Mismatch(context, "an array cannot have elements of type void");
  }
  *array.mutable_element() = element->descriptor();
  auto storage = std::make_unique<CType::Storage>();
  storage->length = array.length();
  storage->elements.assign(array.length(), element->ffi());
  storage->elements.push_back(nullptr);
  storage->aggregate.type = FFI_TYPE_STRUCT;
  storage->aggregate.elements = storage->elements.data();
  storage->by_value = element->by_value_status();
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
  size_t end = 0;
  size_t alignment = 1;
  absl::Status by_value;
  for (v1::Field& field : *record.mutable_fields()) {
    std::string member_context = Prefixed(
        context, field.name().empty()
                     ? absl::StrCat("an unnamed member of ", record_name)
                     : absl::StrCat("member '", field.name(), "' of ",
                                    record_name));
    if (!field.name().empty() && !names.insert(field.name()).second) {
      return Mismatch(context, absl::StrCat(record_name, " has two members named '",
                                            field.name(), "'"));
    }
    if (field.bit_width() != 0) {
      return Unsupported(member_context, "bitfields are not supported yet");
    }
    ASSIGN_OR_RETURN(std::shared_ptr<const CType> member,
                     CType::Create(field.type(), member_context));
    if (member->is_void()) {
      return Mismatch(member_context, "a member cannot have type void");
    }
    if (field.name().empty() && !member->descriptor().has_record()) {
      return Mismatch(member_context,
                      "only a struct or union member may be unnamed");
    }
    size_t member_alignment = record.packed() ? 1 : member->alignment();
    size_t offset = is_union ? 0 : RoundUp(end, member_alignment);
    end = std::max(end, offset + member->size());
    alignment = std::max(alignment, member_alignment);
    if (by_value.ok() && !member->by_value_status().ok()) {
      by_value = WithContext(member->by_value_status(), member_context);
    }
    *field.mutable_type() = member->descriptor();
    field.set_offset(offset);
    field.set_bit_offset(0);
    storage->members.push_back({field.name(), std::move(member), offset});
  }
  alignment = std::max<size_t>(alignment, record.alignment());
  type.size_ = RoundUp(end, alignment);
  type.alignment_ = alignment;
  record.set_size(type.size_);
  record.set_computed_alignment(static_cast<uint32_t>(alignment));

  storage->aggregate.type = FFI_TYPE_STRUCT;
  type.storage_ = std::move(storage);
  type.ffi_ = &type.storage_->aggregate;
  if (record.fields().empty()) {
    type.storage_->by_value = Unsupported(
        "", absl::StrCat(record_name,
                         " has no members and cannot be passed by value"));
    type.storage_->elements.push_back(nullptr);
    type.storage_->aggregate.elements = type.storage_->elements.data();
    return absl::OkStatus();
  }
  if (!by_value.ok()) {
    type.storage_->by_value = by_value;
    type.storage_->elements.push_back(nullptr);
    type.storage_->aggregate.elements = type.storage_->elements.data();
    return absl::OkStatus();
  }
  if (is_union) {
    type.storage_->by_value = EmulateUnion(type);
    if (type.storage_->by_value.ok()) {
      type.storage_->by_value =
          CheckLibffiLayout(type, /*check_offsets=*/false);
    }
    return absl::OkStatus();
  }
  for (const CTypeMember& member : type.storage_->members) {
    type.storage_->elements.push_back(member.type->ffi());
  }
  type.storage_->elements.push_back(nullptr);
  type.storage_->aggregate.elements = type.storage_->elements.data();
  type.storage_->by_value = CheckLibffiLayout(type, /*check_offsets=*/true);
  return absl::OkStatus();
}

absl::Status CTypeBuilder::EmulateUnion(CType& type) {
  CType::Storage& storage = *type.storage_;
  storage.elements.clear();
  const std::string name = TypeName(type.descriptor_);
#if defined(__x86_64__)
  // Only unions of up to two eightbytes travel in registers; larger ones go
  // in memory, where size and alignment are all that matter.
  std::vector<Leaf> leaves;
  if (type.size_ <= 16) CollectLeaves(type, 0, leaves);
  for (const Leaf& leaf : leaves) {
    if (leaf.arg_class == ArgClass::kX87) {
      storage.elements.push_back(nullptr);
      storage.aggregate.elements = storage.elements.data();
      return Unsupported("", absl::StrCat(name,
                                          " contains a long double and cannot "
                                          "be passed by value yet"));
    }
  }
  const size_t unit = std::min<size_t>(type.alignment_, 8);
  const size_t eightbytes = (type.size_ + 7) / 8;
  std::vector<ArgClass> classes(eightbytes, ArgClass::kNone);
  for (const Leaf& leaf : leaves) {
    if (leaf.size == 0) continue;
    for (size_t e = leaf.offset / 8; e <= (leaf.offset + leaf.size - 1) / 8;
         ++e) {
      if (classes[e] != ArgClass::kInteger) classes[e] = leaf.arg_class;
    }
  }
  for (size_t offset = 0; offset < type.size_; offset += unit) {
    bool sse = type.size_ <= 16 && classes[offset / 8] == ArgClass::kSse;
    ffi_type* element = nullptr;
    if (sse) {
      element = unit == 8 ? &ffi_type_double : &ffi_type_float;
    } else {
      switch (unit) {
        case 1:
          element = &ffi_type_uint8;
          break;
        case 2:
          element = &ffi_type_uint16;
          break;
        case 4:
          element = &ffi_type_uint32;
          break;
        default:
          element = &ffi_type_uint64;
          break;
      }
    }
    storage.elements.push_back(element);
  }
  storage.elements.push_back(nullptr);
  storage.aggregate.elements = storage.elements.data();
  return absl::OkStatus();
#else
  storage.elements.push_back(nullptr);
  storage.aggregate.elements = storage.elements.data();
  return Unsupported("", absl::StrCat("passing ", name,
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

const CType* CType::element() const {
  return storage_ != nullptr ? storage_->element.get() : nullptr;
}

uint64_t CType::length() const {
  return storage_ != nullptr ? storage_->length : 0;
}

const CType* CType::pointee() const {
  return storage_ != nullptr ? storage_->pointee.get() : nullptr;
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

std::string TypeName(const v1::TypeDescriptor& descriptor) {
  return Spell(descriptor, "");
}

std::string FunctionTypeName(const v1::FunctionType& function,
                             absl::string_view name) {
  std::string declarator = absl::StrCat(name, FunctionParameters(function));
  if (!function.has_return_type()) return Join("void", declarator);
  return Spell(function.return_type(), declarator);
}

}  // namespace ffid::ffi
