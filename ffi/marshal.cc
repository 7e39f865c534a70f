#include "ffi/marshal.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ffi/errors.h"
#include "ffi/internal/unicode.h"

namespace ffid::ffi {
namespace {

using Int128 = __int128;

// The smallest magnitude a double rounds up to float infinity from: halfway
// between FLT_MAX and 2^128. Anything below rounds to a finite float.
constexpr double kFloatOverflow = 0x1.ffffffp+127;

std::string Prefixed(absl::string_view param, absl::string_view message) {
  if (param.empty()) return std::string(message);
  return absl::StrCat(param, ": ", message);
}

absl::Status Mismatch(absl::string_view param, absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_TYPE_MISMATCH,
                              Prefixed(param, message));
}

absl::Status OutOfRange(absl::string_view param, absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_VALUE_OUT_OF_RANGE,
                              Prefixed(param, message));
}

absl::Status Unsupported(absl::string_view param, absl::string_view message) {
  return MakeError(absl::StatusCode::kUnimplemented,
                   v1::ERROR_REASON_UNSUPPORTED, Prefixed(param, message));
}

absl::string_view ValueKindName(const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      return "a boolean";
    case v1::Value::kIntValue:
    case v1::Value::kUintValue:
      return "an integer";
    case v1::Value::kDoubleValue:
      return "a floating-point number";
    case v1::Value::kStringValue:
      return "a string";
    case v1::Value::kBytesValue:
      return "bytes";
    case v1::Value::kPointerValue:
      return "a pointer";
    case v1::Value::kNullValue:
      return "null";
    case v1::Value::kRecordValue:
      return "a record";
    case v1::Value::kArrayValue:
      return "an array";
    case v1::Value::kEnumValue:
      return "an enum constant name";
    case v1::Value::kLongDoubleValue:
      return "long double bytes";
    case v1::Value::kLongDouble:
      return "a long double";
    case v1::Value::kCallbackHandle:
      return "a callback handle";
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return "no value";
}

absl::Status WrongKind(absl::string_view param, absl::string_view expected,
                       const CType& type, const v1::Value& value) {
  return Mismatch(param, absl::StrCat("expected ", expected, " for '",
                                      TypeName(type.descriptor()), "', got ",
                                      ValueKindName(value)));
}

// The shortest decimal form that reads back as exactly `value`.
std::string ShortestDouble(double value) {
  for (int precision = 1; precision < 17; ++precision) {
    std::string text = absl::StrFormat("%.*g", precision, value);
    if (std::strtod(text.c_str(), nullptr) == value) return text;
  }
  return absl::StrFormat("%.17g", value);
}

// The shortest decimal form that reads back (strtold) as exactly `value`.
std::string ShortestLongDouble(long double value) {
  if (std::isnan(value)) return std::signbit(value) ? "-nan" : "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  for (int precision = 1; precision < 21; ++precision) {
    std::string text = absl::StrFormat("%.*Lg", precision, value);
    if (std::strtold(text.c_str(), nullptr) == value) return text;
  }
  return absl::StrFormat("%.21Lg", value);
}

// A long double result: its bytes (padding zeroed), the nearest double and
// the shortest exact decimal.
v1::Value LongDoubleResult(const void* src) {
  long double d;
  std::memcpy(&d, src, sizeof(d));
  std::string bytes(sizeof(long double), '\0');
  std::memcpy(bytes.data(), src, sizeof(long double));
#if defined(__x86_64__) || defined(__i386__)
  // Only the first 10 bytes (x87 extended) hold the value.
  std::fill(bytes.begin() + 10, bytes.end(), '\0');
#endif
  v1::Value value;
  v1::LongDoubleValue* out = value.mutable_long_double();
  out->set_bytes(std::move(bytes));
  out->set_approximate(static_cast<double>(d));
  out->set_decimal(ShortestLongDouble(d));
  return value;
}

std::string Int128ToString(Int128 value) {
  if (value < 0) return absl::StrCat(static_cast<int64_t>(value));
  return absl::StrCat(static_cast<uint64_t>(value));
}

void IntegerRange(const ScalarInfo& info, Int128* min, Int128* max) {
  const int bits = static_cast<int>(info.size * 8);
  if (info.is_signed) {
    *max = (Int128{1} << (bits - 1)) - 1;
    *min = -*max - 1;
  } else {
    *min = 0;
    *max = (Int128{1} << bits) - 1;
  }
}

void StoreInteger(void* dest, const ScalarInfo& info, Int128 value) {
  switch (info.size) {
    case 1: {
      uint8_t v = static_cast<uint8_t>(value);
      std::memcpy(dest, &v, 1);
      break;
    }
    case 2: {
      uint16_t v = static_cast<uint16_t>(value);
      std::memcpy(dest, &v, 2);
      break;
    }
    case 4: {
      uint32_t v = static_cast<uint32_t>(value);
      std::memcpy(dest, &v, 4);
      break;
    }
    case 8: {
      uint64_t v = static_cast<uint64_t>(value);
      std::memcpy(dest, &v, 8);
      break;
    }
  }
}

Int128 LoadInteger(const void* src, const ScalarInfo& info) {
  switch (info.size) {
    case 1: {
      uint8_t v;
      std::memcpy(&v, src, 1);
      return info.is_signed ? Int128{static_cast<int8_t>(v)} : Int128{v};
    }
    case 2: {
      uint16_t v;
      std::memcpy(&v, src, 2);
      return info.is_signed ? Int128{static_cast<int16_t>(v)} : Int128{v};
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, src, 4);
      return info.is_signed ? Int128{static_cast<int32_t>(v)} : Int128{v};
    }
    case 8: {
      uint64_t v;
      std::memcpy(&v, src, 8);
      return info.is_signed ? Int128{static_cast<int64_t>(v)} : Int128{v};
    }
  }
  return 0;
}

bool IsCharLike(v1::ScalarKind kind) {
  switch (kind) {
    case v1::SCALAR_KIND_CHAR:
    case v1::SCALAR_KIND_SIGNED_CHAR:
    case v1::SCALAR_KIND_UNSIGNED_CHAR:
    case v1::SCALAR_KIND_WCHAR_T:
    case v1::SCALAR_KIND_CHAR16_T:
    case v1::SCALAR_KIND_CHAR32_T:
      return true;
    default:
      return false;
  }
}

bool IsByteKind(v1::ScalarKind kind) {
  switch (kind) {
    case v1::SCALAR_KIND_CHAR:
    case v1::SCALAR_KIND_SIGNED_CHAR:
    case v1::SCALAR_KIND_UNSIGNED_CHAR:
    case v1::SCALAR_KIND_INT8:
    case v1::SCALAR_KIND_UINT8:
      return true;
    default:
      return false;
  }
}

// Writes an integer value into an integer type of `info`, checking its range.
// `what` names the type in messages.
absl::Status EncodeIntegerValue(Int128 value, const ScalarInfo& info,
                                absl::string_view what, void* dest,
                                absl::string_view param,
                                absl::string_view shown) {
  Int128 min, max;
  IntegerRange(info, &min, &max);
  if (value < min || value > max) {
    return OutOfRange(
        param, absl::StrCat(shown.empty() ? absl::StrCat("value ",
                                                         Int128ToString(value))
                                          : std::string(shown),
                            " does not fit in ", what, " (range ",
                            Int128ToString(min), "..", Int128ToString(max),
                            ")"));
  }
  StoreInteger(dest, info, value);
  return absl::OkStatus();
}

absl::Status EncodeInteger(const CType& type, const ScalarInfo& info,
                           const v1::Value& value, void* dest,
                           absl::string_view param) {
  // The common case first, without building the type's name (only
  // messages need it).
  if (value.kind_case() == v1::Value::kIntValue ||
      value.kind_case() == v1::Value::kUintValue) {
    const Int128 v = value.kind_case() == v1::Value::kIntValue
                         ? Int128{value.int_value()}
                         : Int128{value.uint_value()};
    Int128 min, max;
    IntegerRange(info, &min, &max);
    if (v >= min && v <= max) {
      StoreInteger(dest, info, v);
      return absl::OkStatus();
    }
  }
  const std::string name = TypeName(type.descriptor());
  const bool char_like =
      type.descriptor().has_scalar() && IsCharLike(type.descriptor().scalar());
  switch (value.kind_case()) {
    case v1::Value::kIntValue:
      return EncodeIntegerValue(value.int_value(), info, name, dest, param, "");
    case v1::Value::kUintValue:
      return EncodeIntegerValue(value.uint_value(), info, name, dest, param,
                                "");
    case v1::Value::kStringValue:
      if (char_like) {
        const std::string& text = value.string_value();
        char32_t code_point = 0;
        size_t length = internal::NextCodePoint(text, 0, &code_point);
        if (length == 0 || length != text.size()) {
          return Mismatch(
              param,
              absl::StrCat("expected a one-character string for '", name,
                           "', got a string of ", text.size(), " bytes"));
        }
        return EncodeIntegerValue(
            code_point, info, name, dest, param,
            absl::StrFormat("character U+%04X", static_cast<uint32_t>(code_point)));
      }
      break;
    case v1::Value::kBytesValue:
      if (char_like && info.size == 1) {
        if (value.bytes_value().size() != 1) {
          return Mismatch(param, absl::StrCat("expected one byte for '", name,
                                              "', got ",
                                              value.bytes_value().size()));
        }
        std::memcpy(dest, value.bytes_value().data(), 1);
        return absl::OkStatus();
      }
      break;
    case v1::Value::kEnumValue:
      if (type.descriptor().has_enum_type()) {
        const v1::EnumType& enum_type = type.descriptor().enum_type();
        std::vector<absl::string_view> names;
        for (const v1::EnumConstant& constant : enum_type.constants()) {
          if (constant.name() == value.enum_value()) {
            return EncodeIntegerValue(
                constant.value(), info, name, dest, param,
                absl::StrCat("constant ", constant.name(), " (",
                             constant.value(), ")"));
          }
          names.push_back(constant.name());
        }
        return Mismatch(param,
                        absl::StrCat("'", value.enum_value(),
                                     "' is not a constant of ", name,
                                     names.empty() ? "" : " (its constants: ",
                                     absl::StrJoin(names, ", "),
                                     names.empty() ? "" : ")"));
      }
      break;
    default:
      break;
  }
  absl::string_view expected = "an integer";
  if (type.descriptor().has_enum_type()) {
    expected = "an integer or a constant name";
  } else if (char_like) {
    expected = "an integer or a one-character string";
  }
  return WrongKind(param, expected, type, value);
}

absl::Status EncodeFloating(const CType& type, v1::ScalarKind kind,
                            const v1::Value& value, void* dest,
                            absl::string_view param) {
  long double number;
  switch (value.kind_case()) {
    case v1::Value::kDoubleValue:
      number = value.double_value();
      break;
    case v1::Value::kIntValue:
      number = static_cast<long double>(value.int_value());
      break;
    case v1::Value::kUintValue:
      number = static_cast<long double>(value.uint_value());
      break;
    case v1::Value::kLongDoubleValue:
    case v1::Value::kLongDouble: {
      const v1::LongDoubleValue* full =
          value.has_long_double() ? &value.long_double() : nullptr;
      const std::string& bytes =
          full != nullptr ? full->bytes() : value.long_double_value();
      if (!bytes.empty() || full == nullptr) {
        if (bytes.size() != sizeof(long double)) {
          return Mismatch(
              param, absl::StrCat("long double bytes must be ",
                                  sizeof(long double), " bytes, got ",
                                  bytes.size()));
        }
        std::memcpy(&number, bytes.data(), sizeof(long double));
      } else if (!full->decimal().empty()) {
        const std::string& text = full->decimal();
        char* end = nullptr;
        number = std::strtold(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0') {
          return Mismatch(param, absl::StrCat("long double decimal '", text,
                                              "' is not a number"));
        }
      } else {
        number = full->approximate();
      }
      break;
    }
    default:
      return WrongKind(param, "a number", type, value);
  }
  switch (kind) {
    case v1::SCALAR_KIND_FLOAT: {
      double d = static_cast<double>(number);
      if ((std::isfinite(d) && std::fabs(d) >= kFloatOverflow) ||
          (std::isinf(d) && std::isfinite(number))) {
        return OutOfRange(
            param, absl::StrFormat("value %s does not fit in float (range "
                                   "-%.9g..%.9g)",
                                   ShortestDouble(d),
                                   std::numeric_limits<float>::max(),
                                   std::numeric_limits<float>::max()));
      }
      float f = static_cast<float>(d);
      std::memcpy(dest, &f, sizeof(f));
      return absl::OkStatus();
    }
    case v1::SCALAR_KIND_DOUBLE: {
      // From an integer the conversion rounds to nearest, as C's does.
      double d = value.kind_case() == v1::Value::kDoubleValue
                     ? value.double_value()
                     : static_cast<double>(number);
      if (std::isinf(d) && std::isfinite(number)) {
        return OutOfRange(param,
                          absl::StrCat("value ", ShortestLongDouble(number),
                                       " does not fit in double"));
      }
      std::memcpy(dest, &d, sizeof(d));
      return absl::OkStatus();
    }
    default:
      std::memcpy(dest, &number, sizeof(number));
      return absl::OkStatus();
  }
}

// A complex number travels as an array of two numbers (real, imaginary) or
// as its raw bytes.
absl::Status EncodeComplex(const CType& type, v1::ScalarKind kind,
                           const v1::Value& value, void* dest,
                           absl::string_view param) {
  const v1::ScalarKind part_kind =
      kind == v1::SCALAR_KIND_COMPLEX_FLOAT    ? v1::SCALAR_KIND_FLOAT
      : kind == v1::SCALAR_KIND_COMPLEX_DOUBLE ? v1::SCALAR_KIND_DOUBLE
                                               : v1::SCALAR_KIND_LONG_DOUBLE;
  if (value.has_bytes_value()) {
    if (value.bytes_value().size() != type.size()) {
      return Mismatch(param, absl::StrCat("'", TypeName(type.descriptor()),
                                          "' takes ", type.size(),
                                          " bytes, got ",
                                          value.bytes_value().size()));
    }
    std::memcpy(dest, value.bytes_value().data(), type.size());
    return absl::OkStatus();
  }
  if (!value.has_array_value() || value.array_value().elements_size() != 2) {
    return WrongKind(param, "an array of two numbers (real, imaginary)", type,
                     value);
  }
  absl::StatusOr<std::shared_ptr<const CType>> part = CType::Create(
      [&] {
        v1::TypeDescriptor d;
        d.set_scalar(part_kind);
        return d;
      }());
  if (!part.ok()) return part.status();
  unsigned char* out = static_cast<unsigned char*>(dest);
  for (int i = 0; i < 2; ++i) {
    RETURN_IF_ERROR(EncodeFloating(
        **part, part_kind,
        value.array_value().elements(i), out + i * (*part)->size(),
        absl::StrCat(param, i == 0 ? " (real part)" : " (imaginary part)")));
  }
  return absl::OkStatus();
}

absl::Status EncodeScalar(const CType& type, const ScalarInfo& info,
                          const v1::Value& value, void* dest,
                          absl::string_view param) {
  const v1::ScalarKind kind = type.descriptor().has_scalar()
                                  ? type.descriptor().scalar()
                                  : v1::SCALAR_KIND_INT;
  if (type.descriptor().has_enum_type() || info.is_integer) {
    return EncodeInteger(type, info, value, dest, param);
  }
  switch (kind) {
    case v1::SCALAR_KIND_VOID:
      return Mismatch(param, "'void' has no values");
    case v1::SCALAR_KIND_BOOL: {
      bool b;
      if (value.has_bool_value()) {
        b = value.bool_value();
      } else if (value.kind_case() == v1::Value::kIntValue ||
                 value.kind_case() == v1::Value::kUintValue) {
        Int128 v = value.has_int_value() ? Int128{value.int_value()}
                                         : Int128{value.uint_value()};
        if (v != 0 && v != 1) {
          return OutOfRange(param, absl::StrCat("value ", Int128ToString(v),
                                                " does not fit in bool (0 or "
                                                "1)"));
        }
        b = v == 1;
      } else {
        return WrongKind(param, "a boolean", type, value);
      }
      std::memcpy(dest, &b, sizeof(b));
      return absl::OkStatus();
    }
    case v1::SCALAR_KIND_COMPLEX_FLOAT:
    case v1::SCALAR_KIND_COMPLEX_DOUBLE:
    case v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE:
      return EncodeComplex(type, kind, value, dest, param);
    default:
      return EncodeFloating(type, kind, value, dest, param);
  }
}

// The code unit width of a string encoding.
size_t UnitSize(v1::StringEncoding encoding) {
  switch (encoding) {
    case v1::STRING_ENCODING_UTF16:
      return sizeof(char16_t);
    case v1::STRING_ENCODING_UTF32:
      return sizeof(char32_t);
    case v1::STRING_ENCODING_WCHAR:
      return sizeof(wchar_t);
    default:
      return 1;
  }
}

// Converts UTF-8 `text` to the code units of `encoding`, NUL-terminated, in
// the arena.
absl::StatusOr<void*> EncodeText(const CType& type, absl::string_view text,
                                 CallArena& arena, absl::string_view param) {
  const v1::StringEncoding encoding = type.descriptor().string().encoding();
  const size_t unit = UnitSize(encoding);
  if (encoding == v1::STRING_ENCODING_UNSPECIFIED ||
      encoding == v1::STRING_ENCODING_UTF8) {
    size_t nul = text.find('\0');
    if (nul != absl::string_view::npos) {
      return Mismatch(param, absl::StrCat("the string has a NUL byte at "
                                          "offset ",
                                          nul,
                                          ", where C would end it; pass bytes "
                                          "to send it anyway"));
    }
    char* copy = static_cast<char*>(arena.Allocate(text.size() + 1, 1));
    std::memcpy(copy, text.data(), text.size());
    return copy;
  }
  std::vector<char32_t> code_points;
  std::vector<size_t> offsets;
  for (size_t pos = 0; pos < text.size();) {
    char32_t code_point;
    size_t length = internal::NextCodePoint(text, pos, &code_point);
    if (length == 0) {
      return Mismatch(param, absl::StrCat("the string is not valid UTF-8 at "
                                          "byte offset ",
                                          pos));
    }
    if (code_point == 0) {
      return Mismatch(param, absl::StrCat("the string has a NUL character at "
                                          "byte offset ",
                                          pos,
                                          ", where C would end it; pass bytes "
                                          "to send it anyway"));
    }
    code_points.push_back(code_point);
    offsets.push_back(pos);
    pos += length;
  }
  if (encoding == v1::STRING_ENCODING_LATIN1) {
    unsigned char* out =
        static_cast<unsigned char*>(arena.Allocate(code_points.size() + 1, 1));
    for (size_t i = 0; i < code_points.size(); ++i) {
      if (code_points[i] > 0xFF) {
        return OutOfRange(
            param, absl::StrFormat("character U+%04X at byte offset %d cannot "
                                   "be encoded in Latin-1",
                                   static_cast<uint32_t>(code_points[i]),
                                   offsets[i]));
      }
      out[i] = static_cast<unsigned char>(code_points[i]);
    }
    return out;
  }
  if (unit == sizeof(char16_t)) {
    std::vector<char16_t> units;
    for (char32_t code_point : code_points) {
      if (code_point >= 0x10000) {
        code_point -= 0x10000;
        units.push_back(static_cast<char16_t>(0xD800 + (code_point >> 10)));
        units.push_back(static_cast<char16_t>(0xDC00 + (code_point & 0x3FF)));
      } else {
        units.push_back(static_cast<char16_t>(code_point));
      }
    }
    void* out = arena.Allocate((units.size() + 1) * unit, unit);
    if (!units.empty()) std::memcpy(out, units.data(), units.size() * unit);
    return out;
  }
  void* out = arena.Allocate((code_points.size() + 1) * unit, unit);
  if (!code_points.empty()) {
    std::memcpy(out, code_points.data(), code_points.size() * unit);
  }
  return out;
}

absl::Status EncodeString(const CType& type, const v1::Value& value,
                          void* dest, PointerResolver& resolver,
                          CallArena& arena, absl::string_view param) {
  void* address = nullptr;
  switch (value.kind_case()) {
    case v1::Value::kNullValue:
      break;
    case v1::Value::kPointerValue: {
      ASSIGN_OR_RETURN(address, resolver.Resolve(value.pointer_value(), param));
      break;
    }
    case v1::Value::kStringValue: {
      ASSIGN_OR_RETURN(address,
                       EncodeText(type, value.string_value(), arena, param));
      break;
    }
    case v1::Value::kBytesValue: {
      // Raw code units, terminated by one zero unit after them.
      const size_t unit = UnitSize(type.descriptor().string().encoding());
      const std::string& bytes = value.bytes_value();
      address = arena.Allocate(bytes.size() + unit, unit);
      if (!bytes.empty()) std::memcpy(address, bytes.data(), bytes.size());
      break;
    }
    default:
      return WrongKind(param, "a string, bytes, a pointer or null", type,
                       value);
  }
  std::memcpy(dest, &address, sizeof(address));
  return absl::OkStatus();
}

absl::Status EncodePointer(const CType& type, const v1::Value& value,
                           void* dest, PointerResolver& resolver,
                           CallArena& arena, absl::string_view param) {
  void* address = nullptr;
  const v1::TypeDescriptor& d = type.descriptor();
  switch (value.kind_case()) {
    case v1::Value::kNullValue:
      break;
    case v1::Value::kPointerValue: {
      ASSIGN_OR_RETURN(address, resolver.Resolve(value.pointer_value(), param));
      break;
    }
    case v1::Value::kCallbackHandle:
      if (d.has_function_pointer()) {
        ASSIGN_OR_RETURN(address,
                         resolver.ResolveCallback(value.callback_handle(),
                                                  d.function_pointer(), param));
        break;
      }
      return WrongKind(param, "a pointer or null", type, value);
    default: {
      const CType* pointee = type.pointee();
      if (pointee == nullptr) {
        return WrongKind(param,
                         d.has_function_pointer()
                             ? "a callback handle, a pointer or null"
                             : "a pointer or null",
                         type, value);
      }
      // A by-reference parameter: the value goes to a temporary.
      address = arena.Allocate(pointee->size(), pointee->alignment());
      if (value.kind_case() != v1::Value::KIND_NOT_SET) {
        RETURN_IF_ERROR(
            EncodeValue(*pointee, value, address, resolver, arena, param));
      } else if (d.pointer().direction() == v1::POINTER_DIRECTION_IN) {
        return WrongKind(param, "a value, a pointer or null", type, value);
      }
      break;
    }
  }
  std::memcpy(dest, &address, sizeof(address));
  return absl::OkStatus();
}

// Finds member `name` of a record, looking inside unnamed struct and union
// members as C11 does. Adds the member's offset to `*offset`.
const CTypeMember* FindMember(const CType& record, absl::string_view name,
                              size_t* offset) {
  for (const CTypeMember& member : record.members()) {
    if (member.name == name) {
      *offset += member.offset;
      return &member;
    }
  }
  for (const CTypeMember& member : record.members()) {
    if (!member.name.empty() || !member.type->descriptor().has_record()) {
      continue;
    }
    size_t inner = *offset + member.offset;
    const CTypeMember* found = FindMember(*member.type, name, &inner);
    if (found != nullptr) {
      *offset = inner;
      return found;
    }
  }
  return nullptr;
}

using UInt128 = unsigned __int128;

// The bytes that hold a bitfield: from its storage unit's first byte to the
// byte holding its last bit (at most 9 bytes for a packed 64-bit field).
size_t BitfieldBytes(const CTypeMember& member) {
  return (member.bit_offset + member.bit_width + 7) / 8;
}

UInt128 LoadBits(const unsigned char* at, size_t bytes) {
  UInt128 bits = 0;
  for (size_t i = bytes; i > 0; --i) bits = (bits << 8) | at[i - 1];
  return bits;
}

void StoreBits(unsigned char* at, size_t bytes, UInt128 bits) {
  for (size_t i = 0; i < bytes; ++i) {
    at[i] = static_cast<unsigned char>(bits & 0xff);
    bits >>= 8;
  }
}

// Encodes `value` into bitfield `member`, whose storage unit starts at
// `at`. The value must fit the field's width, not just its type.
absl::Status EncodeBitfield(const CTypeMember& member, const v1::Value& value,
                            unsigned char* at, PointerResolver& resolver,
                            CallArena& arena, absl::string_view param,
                            absl::string_view record_name) {
  const CType& type = *member.type;
  unsigned char scratch[16] = {};
  RETURN_IF_ERROR(EncodeValue(type, value, scratch, resolver, arena, param));
  const ScalarInfo& info = *type.scalar();
  const Int128 v = LoadInteger(scratch, info);
  const uint32_t width = member.bit_width;
  const bool is_signed = info.is_signed && info.is_integer;
  const Int128 min = is_signed ? -(Int128{1} << (width - 1)) : 0;
  const Int128 max = is_signed ? (Int128{1} << (width - 1)) - 1
                               : (Int128{1} << width) - 1;
  if (v < min || v > max) {
    return OutOfRange(
        param, absl::StrCat("bitfield '", member.name, "' of '", record_name,
                            "' is ", width, " bit", width == 1 ? "" : "s",
                            " wide: ", Int128ToString(v),
                            " does not fit (range ", Int128ToString(min), "..",
                            Int128ToString(max), ")"));
  }
  const size_t bytes = BitfieldBytes(member);
  const UInt128 mask = ((UInt128{1} << width) - 1) << member.bit_offset;
  UInt128 bits = LoadBits(at, bytes);
  bits = (bits & ~mask) |
         ((static_cast<UInt128>(v) << member.bit_offset) & mask);
  StoreBits(at, bytes, bits);
  return absl::OkStatus();
}

absl::StatusOr<v1::Value> DecodeBitfield(const CTypeMember& member,
                                         const unsigned char* at,
                                         PointerResolver& resolver) {
  const CType& type = *member.type;
  const ScalarInfo& info = *type.scalar();
  const uint32_t width = member.bit_width;
  UInt128 bits = LoadBits(at, BitfieldBytes(member)) >> member.bit_offset;
  bits &= (UInt128{1} << width) - 1;
  Int128 v = static_cast<Int128>(bits);
  if (info.is_signed && info.is_integer && width < 128 &&
      (bits >> (width - 1)) != 0) {
    v -= Int128{1} << width;
  }
  unsigned char scratch[16] = {};
  const UInt128 stored = static_cast<UInt128>(v);
  StoreBits(scratch, info.size, stored);
  return DecodeValue(type, scratch, resolver);
}

absl::Status EncodeRecord(const CType& type, const v1::Value& value,
                          void* dest, PointerResolver& resolver,
                          CallArena& arena, absl::string_view param) {
  const std::string name = TypeName(type.descriptor());
  std::memset(dest, 0, type.size());
  if (value.has_bytes_value()) {
    if (value.bytes_value().size() != type.size()) {
      return Mismatch(param, absl::StrCat("'", name, "' takes ", type.size(),
                                          " bytes, got ",
                                          value.bytes_value().size()));
    }
    std::memcpy(dest, value.bytes_value().data(), type.size());
    return absl::OkStatus();
  }
  if (!value.has_record_value()) {
    return WrongKind(param, "a record or bytes", type, value);
  }
  const auto& fields = value.record_value().fields();
  const bool is_union =
      type.descriptor().record().kind() == v1::RECORD_KIND_UNION;
  if (is_union && !value.record_value().union_bytes().empty()) {
    // A union as it came back from a result or a read: its bytes.
    const std::string& bytes = value.record_value().union_bytes();
    if (bytes.size() != type.size()) {
      return Mismatch(param, absl::StrCat("'", name, "' takes ", type.size(),
                                          " bytes, got ", bytes.size(),
                                          " in union_bytes"));
    }
    std::memcpy(dest, bytes.data(), bytes.size());
    return absl::OkStatus();
  }
  if (is_union && fields.size() != 1) {
    return Mismatch(param, absl::StrCat("a value of '", name,
                                        "' sets exactly one member, got ",
                                        fields.size()));
  }
  // Sorted, so the first error reported does not depend on map order.
  std::vector<std::string> names;
  for (const auto& [field_name, unused] : fields) names.push_back(field_name);
  std::sort(names.begin(), names.end());
  unsigned char* out = static_cast<unsigned char*>(dest);
  for (const std::string& field_name : names) {
    size_t offset = 0;
    const CTypeMember* member = FindMember(type, field_name, &offset);
    if (member == nullptr) {
      return Mismatch(param, absl::StrCat("'", name, "' has no member '",
                                          field_name, "'"));
    }
    const std::string member_param = absl::StrCat(
        param, param.empty() ? "" : ", ", "member '", field_name, "'");
    if (member->flexible) {
      return Mismatch(member_param,
                      absl::StrCat("'", field_name, "' is the flexible array "
                                   "member of '", name, "': give its length "
                                   "as flexible_length (Allocate, Read, "
                                   "Write) to set its elements"));
    }
    if (member->bit_width != 0) {
      RETURN_IF_ERROR(EncodeBitfield(*member, fields.at(field_name),
                                     out + offset, resolver, arena,
                                     member_param, name));
      continue;
    }
    RETURN_IF_ERROR(EncodeValue(*member->type, fields.at(field_name),
                                out + offset, resolver, arena, member_param));
  }
  return absl::OkStatus();
}

absl::Status EncodeArray(const CType& type, const v1::Value& value,
                         void* dest, PointerResolver& resolver,
                         CallArena& arena, absl::string_view param) {
  const std::string name = TypeName(type.descriptor());
  const CType& element = *type.element();
  const bool bytes_like = element.descriptor().has_scalar() &&
                          IsByteKind(element.descriptor().scalar());
  std::memset(dest, 0, type.size());
  if (value.has_bytes_value() || (bytes_like && value.has_string_value())) {
    const std::string& bytes =
        value.has_bytes_value() ? value.bytes_value() : value.string_value();
    if (bytes_like ? bytes.size() > type.size() : bytes.size() != type.size()) {
      return OutOfRange(param, absl::StrCat("'", name, "' holds ", type.size(),
                                            " bytes, got ", bytes.size()));
    }
    if (!bytes.empty()) std::memcpy(dest, bytes.data(), bytes.size());
    return absl::OkStatus();
  }
  if (!value.has_array_value()) {
    return WrongKind(param, bytes_like ? "an array, bytes or a string"
                                       : "an array or bytes",
                     type, value);
  }
  const auto& elements = value.array_value().elements();
  if (static_cast<uint64_t>(elements.size()) != type.length()) {
    return Mismatch(param, absl::StrCat("'", name, "' has ", type.length(),
                                        " elements, got ", elements.size()));
  }
  unsigned char* out = static_cast<unsigned char*>(dest);
  for (int i = 0; i < elements.size(); ++i) {
    RETURN_IF_ERROR(EncodeValue(
        element, elements[i], out + i * element.size(), resolver, arena,
        absl::StrCat(param, param.empty() ? "" : ", ", "element ", i)));
  }
  return absl::OkStatus();
}

v1::Value NullValue() {
  v1::Value value;
  value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
  return value;
}

v1::Value DecodeText(const CType& type, const void* address) {
  v1::Value value;
  const v1::StringEncoding encoding = type.descriptor().string().encoding();
  const size_t unit = UnitSize(encoding);
  if (unit == 1) {
    const char* text = static_cast<const char*>(address);
    absl::string_view bytes(text, std::strlen(text));
    if (encoding == v1::STRING_ENCODING_LATIN1) {
      std::string utf8;
      for (char c : bytes) {
        internal::AppendUtf8(static_cast<unsigned char>(c), utf8);
      }
      value.set_string_value(std::move(utf8));
    } else if (internal::IsValidUtf8(bytes)) {
      value.set_string_value(std::string(bytes));
    } else {
      value.set_bytes_value(std::string(bytes));
    }
    return value;
  }
  std::string utf8;
  bool valid = true;
  size_t count = 0;
  const unsigned char* base = static_cast<const unsigned char*>(address);
  if (unit == sizeof(char16_t)) {
    const auto at = [&](size_t i) {
      char16_t u;
      std::memcpy(&u, base + i * unit, unit);
      return u;
    };
    while (at(count) != 0) ++count;
    for (size_t i = 0; i < count; ++i) {
      char32_t u = at(i);
      if (u >= 0xD800 && u <= 0xDBFF && i + 1 < count && at(i + 1) >= 0xDC00 &&
          at(i + 1) <= 0xDFFF) {
        u = 0x10000 + ((u - 0xD800) << 10) + (at(i + 1) - 0xDC00);
        ++i;
      } else if (u >= 0xD800 && u <= 0xDFFF) {
        valid = false;
        break;
      }
      internal::AppendUtf8(u, utf8);
    }
  } else {
    const auto at = [&](size_t i) {
      char32_t u;
      std::memcpy(&u, base + i * unit, unit);
      return u;
    };
    while (at(count) != 0) ++count;
    for (size_t i = 0; i < count; ++i) {
      if (!internal::IsScalarValue(at(i))) {
        valid = false;
        break;
      }
      internal::AppendUtf8(at(i), utf8);
    }
  }
  if (valid) {
    value.set_string_value(std::move(utf8));
  } else {
    value.set_bytes_value(
        std::string(reinterpret_cast<const char*>(base), count * unit));
  }
  return value;
}

absl::StatusOr<v1::Value> DecodeScalar(const CType& type,
                                       const ScalarInfo& info,
                                       const void* src) {
  v1::Value value;
  if (info.is_integer) {
    Int128 v = LoadInteger(src, info);
    if (type.descriptor().has_enum_type()) {
      // Enums come back by name when the value is one of their constants.
      for (const v1::EnumConstant& constant :
           type.descriptor().enum_type().constants()) {
        if (Int128{constant.value()} == v) {
          value.set_enum_value(constant.name());
          return value;
        }
      }
    }
    if (info.is_signed) {
      value.set_int_value(static_cast<int64_t>(v));
    } else {
      value.set_uint_value(static_cast<uint64_t>(v));
    }
    return value;
  }
  switch (type.descriptor().scalar()) {
    case v1::SCALAR_KIND_VOID:
      return Mismatch("", "'void' has no values");
    case v1::SCALAR_KIND_BOOL: {
      unsigned char b;
      std::memcpy(&b, src, 1);
      value.set_bool_value(b != 0);
      return value;
    }
    case v1::SCALAR_KIND_FLOAT: {
      float f;
      std::memcpy(&f, src, sizeof(f));
      value.set_double_value(f);
      return value;
    }
    case v1::SCALAR_KIND_DOUBLE: {
      double d;
      std::memcpy(&d, src, sizeof(d));
      value.set_double_value(d);
      return value;
    }
    case v1::SCALAR_KIND_LONG_DOUBLE:
      return LongDoubleResult(src);
    case v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE: {
      const unsigned char* parts = static_cast<const unsigned char*>(src);
      for (int i = 0; i < 2; ++i) {
        *value.mutable_array_value()->add_elements() =
            LongDoubleResult(parts + i * sizeof(long double));
      }
      return value;
    }
    case v1::SCALAR_KIND_COMPLEX_FLOAT: {
      float parts[2];
      std::memcpy(parts, src, sizeof(parts));
      for (float part : parts) {
        value.mutable_array_value()->add_elements()->set_double_value(part);
      }
      return value;
    }
    case v1::SCALAR_KIND_COMPLEX_DOUBLE: {
      double parts[2];
      std::memcpy(parts, src, sizeof(parts));
      for (double part : parts) {
        value.mutable_array_value()->add_elements()->set_double_value(part);
      }
      return value;
    }
    default:
      break;
  }
  return Unsupported("", absl::StrCat("cannot decode '",
                                      TypeName(type.descriptor()), "'"));
}

absl::StatusOr<v1::Value> Decode(const CType& type, const void* src,
                                 PointerResolver& resolver, bool in_union);

// Decodes the members of a struct or union into `out`. `in_union`: the
// bytes may belong to another member, so pointers are not followed (a
// string is given as its address).
absl::Status DecodeRecordInto(const CType& type, const unsigned char* src,
                              PointerResolver& resolver, bool in_union,
                              v1::RecordValue& out) {
  const bool is_union =
      type.descriptor().record().kind() == v1::RECORD_KIND_UNION;
  in_union = in_union || is_union;
  for (const CTypeMember& member : type.members()) {
    // Unnamed bitfields are padding; a flexible array member's elements are
    // not part of the value (see flexible_length).
    if (member.zero_width || member.flexible) continue;
    if (member.name.empty()) {
      if (member.bit_width != 0) continue;
      // Members of an unnamed struct or union read as the parent's own.
      RETURN_IF_ERROR(DecodeRecordInto(*member.type, src + member.offset,
                                       resolver, in_union, out));
      continue;
    }
    if (member.bit_width != 0) {
      ASSIGN_OR_RETURN(v1::Value field,
                       DecodeBitfield(member, src + member.offset, resolver));
      (*out.mutable_fields())[member.name] = std::move(field);
      continue;
    }
    ASSIGN_OR_RETURN(v1::Value field, Decode(*member.type, src + member.offset,
                                             resolver, in_union));
    (*out.mutable_fields())[member.name] = std::move(field);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<void*> PointerResolver::ResolveCallback(
    absl::string_view handle, const v1::FunctionType& type,
    absl::string_view param) {
  return Unsupported(param, absl::StrCat("callback handle '", handle,
                                         "': callbacks are not supported yet"));
}

void* CallArena::Allocate(size_t size, size_t alignment) {
  if (alignment == 0) alignment = 1;
  if (size == 0) size = 1;
  const size_t offset =
      (inline_used_ + alignment - 1) & ~(size_t{alignment} - 1);
  if (alignment <= 16 && offset + size <= sizeof(inline_)) {
    inline_used_ = offset + size;
    std::memset(inline_ + offset, 0, size);
    return inline_ + offset;
  }
  auto block = std::make_unique<unsigned char[]>(size + alignment - 1);
  uintptr_t start = reinterpret_cast<uintptr_t>(block.get());
  uintptr_t aligned = (start + alignment - 1) & ~(uintptr_t{alignment} - 1);
  void* result = block.get() + (aligned - start);
  blocks_.push_back(std::move(block));
  return result;
}

absl::Status EncodeValue(const CType& type, const v1::Value& value,
                         void* dest, PointerResolver& resolver,
                         CallArena& arena, absl::string_view param) {
  const v1::TypeDescriptor& d = type.descriptor();
  switch (d.kind_case()) {
    case v1::TypeDescriptor::kScalar:
    case v1::TypeDescriptor::kEnumType:
      return EncodeScalar(type, *type.scalar(), value, dest, param);
    case v1::TypeDescriptor::kString:
      return EncodeString(type, value, dest, resolver, arena, param);
    case v1::TypeDescriptor::kPointer:
    case v1::TypeDescriptor::kFunctionPointer:
      return EncodePointer(type, value, dest, resolver, arena, param);
    case v1::TypeDescriptor::kRecord:
      return EncodeRecord(type, value, dest, resolver, arena, param);
    case v1::TypeDescriptor::kArray:
      return EncodeArray(type, value, dest, resolver, arena, param);
    default:
      break;
  }
  return Mismatch(param, absl::StrCat("cannot pass a value of '",
                                      TypeName(d), "'"));
}

absl::StatusOr<v1::Value> DecodeValue(const CType& type, const void* src,
                                      PointerResolver& resolver) {
  return Decode(type, src, resolver, /*in_union=*/false);
}

namespace {

absl::StatusOr<v1::Value> Decode(const CType& type, const void* src,
                                 PointerResolver& resolver, bool in_union) {
  const v1::TypeDescriptor& d = type.descriptor();
  switch (d.kind_case()) {
    case v1::TypeDescriptor::kScalar:
    case v1::TypeDescriptor::kEnumType:
      return DecodeScalar(type, *type.scalar(), src);
    case v1::TypeDescriptor::kString:
    case v1::TypeDescriptor::kPointer:
    case v1::TypeDescriptor::kFunctionPointer: {
      void* address;
      std::memcpy(&address, src, sizeof(address));
      if (address == nullptr) return NullValue();
      // In a union the bytes may be another member's: a string member is
      // given as its address rather than followed.
      if (d.has_string() && !in_union) return DecodeText(type, address);
      return resolver.Wrap(address);
    }
    case v1::TypeDescriptor::kRecord: {
      // A union comes back with every member decoded from its bytes (which
      // one is live is the caller's knowledge) and the bytes themselves.
      v1::Value value;
      v1::RecordValue& record = *value.mutable_record_value();
      RETURN_IF_ERROR(DecodeRecordInto(
          type, static_cast<const unsigned char*>(src), resolver, in_union,
          record));
      if (d.record().kind() == v1::RECORD_KIND_UNION) {
        record.set_union_bytes(
            std::string(static_cast<const char*>(src), type.size()));
      }
      return value;
    }
    case v1::TypeDescriptor::kArray: {
      v1::Value value;
      const CType& element = *type.element();
      if (element.descriptor().has_scalar() &&
          IsByteKind(element.descriptor().scalar())) {
        value.set_bytes_value(
            std::string(static_cast<const char*>(src), type.size()));
        return value;
      }
      const unsigned char* in = static_cast<const unsigned char*>(src);
      value.mutable_array_value();
      for (uint64_t i = 0; i < type.length(); ++i) {
        ASSIGN_OR_RETURN(
            *value.mutable_array_value()->add_elements(),
            Decode(element, in + i * element.size(), resolver, in_union));
      }
      return value;
    }
    default:
      break;
  }
  return Mismatch("", absl::StrCat("cannot decode a value of '", TypeName(d),
                                   "'"));
}

}  // namespace
}  // namespace ffid::ffi
