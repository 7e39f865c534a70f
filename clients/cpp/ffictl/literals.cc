#include "clients/cpp/ffictl/literals.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/ffid/client.h"

namespace ffid::ffictl {
namespace {

using client::ErrorWithReason;

absl::Status Mismatch(absl::string_view message) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, "TYPE_MISMATCH",
                         message);
}

absl::Status OutOfRange(absl::string_view message) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         "VALUE_OUT_OF_RANGE", message);
}

absl::Status Unsupported(absl::string_view message) {
  return ErrorWithReason(absl::StatusCode::kUnimplemented, "UNSUPPORTED",
                         message);
}

// Returns `status` with `prefix` before its message, keeping code and
// payloads (so the reason survives).
absl::Status Prefixed(const absl::Status& status, absl::string_view prefix) {
  absl::Status result(status.code(), absl::StrCat(prefix, status.message()));
  status.ForEachPayload(
      [&result](absl::string_view type_url, const absl::Cord& payload) {
        result.SetPayload(type_url, payload);
      });
  return result;
}

bool IsNullWord(absl::string_view text) {
  return text == "NULL" || text == "null" || text == "nullptr";
}

bool IsOctalDigit(char c) { return c >= '0' && c <= '7'; }

int HexDigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void AppendUtf8(uint32_t code_point, std::string& out) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

// Decodes one UTF-8 sequence at the start of `in`, advancing it.
absl::StatusOr<uint32_t> TakeUtf8(absl::string_view& in) {
  const auto lead = static_cast<unsigned char>(in[0]);
  int length = 0;
  uint32_t code_point = 0;
  if (lead < 0x80) {
    length = 1;
    code_point = lead;
  } else if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return Mismatch("invalid UTF-8");
  }
  if (in.size() < static_cast<size_t>(length)) {
    return Mismatch("invalid UTF-8");
  }
  for (int i = 1; i < length; ++i) {
    const auto byte = static_cast<unsigned char>(in[i]);
    if ((byte & 0xC0) != 0x80) return Mismatch("invalid UTF-8");
    code_point = (code_point << 6) | (byte & 0x3F);
  }
  in.remove_prefix(length);
  return code_point;
}

// A C string argument travels as string_value, which protobuf requires to be
// UTF-8; other bytes (from "\xff" escapes or a non-UTF-8 shell) travel as
// bytes_value and reach the function unchanged.
void SetStringOrBytes(std::string text, v1::Value& value) {
  absl::string_view rest = text;
  bool valid = true;
  while (!rest.empty()) {
    if (!TakeUtf8(rest).ok()) {
      valid = false;
      break;
    }
  }
  if (valid) {
    value.set_string_value(std::move(text));
  } else {
    value.set_bytes_value(std::move(text));
  }
}

// One decoded escape sequence: either a raw byte (\x41, \101) or a Unicode
// code point (\u00e9, or a plain character).
struct Escape {
  uint32_t value = 0;
  bool is_byte = false;
};

// Decodes the escape sequence at the start of `in` (which starts with a
// backslash), advancing it.
absl::StatusOr<Escape> TakeEscape(absl::string_view& in) {
  if (in.size() < 2) return Mismatch("a backslash ends the literal");
  const char c = in[1];
  in.remove_prefix(2);
  switch (c) {
    case 'a': return Escape{'\a', true};
    case 'b': return Escape{'\b', true};
    case 'f': return Escape{'\f', true};
    case 'n': return Escape{'\n', true};
    case 'r': return Escape{'\r', true};
    case 't': return Escape{'\t', true};
    case 'v': return Escape{'\v', true};
    case 'e': return Escape{0x1B, true};
    case '\\': return Escape{'\\', true};
    case '\'': return Escape{'\'', true};
    case '"': return Escape{'"', true};
    case '?': return Escape{'?', true};
    case 'x': {
      uint32_t value = 0;
      size_t digits = 0;
      while (!in.empty() && HexDigitValue(in[0]) >= 0) {
        value = value * 16 + static_cast<uint32_t>(HexDigitValue(in[0]));
        if (value > 0xFF) {
          return OutOfRange("hex escape \\x... does not fit in a byte");
        }
        in.remove_prefix(1);
        ++digits;
      }
      if (digits == 0) return Mismatch("\\x needs at least one hex digit");
      return Escape{value, true};
    }
    case 'u':
    case 'U': {
      const size_t want = c == 'u' ? 4 : 8;
      if (in.size() < want) {
        return Mismatch(absl::StrCat("\\", std::string(1, c), " needs ", want,
                                     " hex digits"));
      }
      uint32_t value = 0;
      for (size_t i = 0; i < want; ++i) {
        const int digit = HexDigitValue(in[i]);
        if (digit < 0) {
          return Mismatch(absl::StrCat("\\", std::string(1, c), " needs ",
                                       want, " hex digits"));
        }
        value = value * 16 + static_cast<uint32_t>(digit);
      }
      in.remove_prefix(want);
      if (value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) {
        return OutOfRange(absl::StrCat("\\", std::string(1, c), " escape ",
                                       absl::Hex(value),
                                       " is not a Unicode scalar value"));
      }
      return Escape{value, false};
    }
    default:
      if (IsOctalDigit(c)) {
        uint32_t value = static_cast<uint32_t>(c - '0');
        for (int i = 0; i < 2 && !in.empty() && IsOctalDigit(in[0]); ++i) {
          value = value * 8 + static_cast<uint32_t>(in[0] - '0');
          in.remove_prefix(1);
        }
        if (value > 0xFF) {
          return OutOfRange("octal escape does not fit in a byte");
        }
        return Escape{value, true};
      }
      return Mismatch(
          absl::StrCat("unknown escape sequence \\", std::string(1, c)));
  }
}

// Parses 'c', '\n', '\x41', '\u00e9' or 'é' (quotes included).
absl::StatusOr<uint32_t> ParseCharLiteral(absl::string_view text) {
  if (text.size() < 3 || text.front() != '\'' || text.back() != '\'') {
    return Mismatch(absl::StrCat(text, " is not a character literal"));
  }
  absl::string_view in = text.substr(1, text.size() - 2);
  uint32_t value = 0;
  if (in[0] == '\\') {
    absl::StatusOr<Escape> escape = TakeEscape(in);
    if (!escape.ok()) {
      return Prefixed(escape.status(),
                      absl::StrCat("character literal ", text, ": "));
    }
    value = escape->value;
  } else {
    absl::StatusOr<uint32_t> code_point = TakeUtf8(in);
    if (!code_point.ok()) {
      return Prefixed(code_point.status(),
                      absl::StrCat("character literal ", text, ": "));
    }
    value = *code_point;
  }
  if (!in.empty()) {
    return Mismatch(absl::StrCat(
        text, " holds more than one character (a string needs \"...\")"));
  }
  return value;
}

// Removes a C integer suffix (u, l, ll, ul, lu, ull, llu in either case,
// "ll" not mixed-case) and records it in `literal`.
absl::string_view StripIntegerSuffix(absl::string_view digits,
                                     IntegerLiteral& literal) {
  for (absl::string_view suffix : {"ull", "llu", "ul", "lu", "ll", "u", "l"}) {
    if (digits.size() <= suffix.size() ||
        !absl::EndsWithIgnoreCase(digits, suffix)) {
      continue;
    }
    absl::string_view found = digits.substr(digits.size() - suffix.size());
    if (absl::StrContains(found, "lL") || absl::StrContains(found, "Ll")) {
      continue;
    }
    literal.unsigned_suffix = absl::StrContains(suffix, 'u');
    literal.long_suffix = absl::StrContains(suffix, "ll") ? 2
                          : absl::StrContains(suffix, 'l') ? 1
                                                           : 0;
    digits.remove_suffix(suffix.size());
    break;
  }
  return digits;
}

template <typename T>
absl::StatusOr<T> ParseFloating(absl::string_view text) {
  const std::string original(text);
  absl::string_view rest = text;
  bool negative = false;
  if (!rest.empty() && (rest[0] == '-' || rest[0] == '+')) {
    negative = rest[0] == '-';
    rest.remove_prefix(1);
  }
  const std::string lower = absl::AsciiStrToLower(rest);
  T value{};
  if (lower == "inf" || lower == "infinity") {
    value = std::numeric_limits<T>::infinity();
  } else if (lower == "nan") {
    value = std::numeric_limits<T>::quiet_NaN();
  } else {
    if (!rest.empty() && (rest.back() == 'f' || rest.back() == 'F' ||
                          rest.back() == 'l' || rest.back() == 'L')) {
      const bool is_hex = absl::StartsWithIgnoreCase(rest, "0x");
      // In hex, 'f' is a digit unless an exponent came first.
      if (!is_hex || absl::StrContains(lower, 'p') ||
          rest.back() == 'l' || rest.back() == 'L') {
        rest.remove_suffix(1);
      }
    }
    std::chars_format format = std::chars_format::general;
    if (absl::StartsWithIgnoreCase(rest, "0x")) {
      rest.remove_prefix(2);
      format = std::chars_format::hex;
    }
    if (rest.empty() || rest[0] == '-' || rest[0] == '+') {
      return Mismatch(absl::StrCat(original,
                                   " is not a floating-point literal"));
    }
    const char* end = rest.data() + rest.size();
    std::from_chars_result result =
        std::from_chars(rest.data(), end, value, format);
    if (result.ec == std::errc::result_out_of_range) {
      return OutOfRange(absl::StrCat(original, " is out of the range of ",
                                     sizeof(T) == sizeof(float) ? "float"
                                                                : "double"));
    }
    if (result.ec != std::errc() || result.ptr != end) {
      return Mismatch(absl::StrCat(original,
                                   " is not a floating-point literal"));
    }
  }
  return negative ? -value : value;
}

// The value of an integer literal converted to the floating type T, as C
// converts an integer constant.
template <typename T>
T IntegerToFloating(const IntegerLiteral& literal) {
  const T magnitude = static_cast<T>(literal.magnitude);
  return literal.negative ? -magnitude : magnitude;
}

bool LooksNumeric(absl::string_view text) {
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    text.remove_prefix(1);
  }
  if (text.empty()) return false;
  if (absl::ascii_isdigit(static_cast<unsigned char>(text[0]))) return true;
  return text.size() > 1 && text[0] == '.' &&
         absl::ascii_isdigit(static_cast<unsigned char>(text[1]));
}

bool IsUnsignedKind(v1::ScalarKind kind) {
  switch (kind) {
    case v1::SCALAR_KIND_UNSIGNED_CHAR:
    case v1::SCALAR_KIND_UNSIGNED_SHORT:
    case v1::SCALAR_KIND_UNSIGNED_INT:
    case v1::SCALAR_KIND_UNSIGNED_LONG:
    case v1::SCALAR_KIND_UNSIGNED_LONG_LONG:
    case v1::SCALAR_KIND_UINT8:
    case v1::SCALAR_KIND_UINT16:
    case v1::SCALAR_KIND_UINT32:
    case v1::SCALAR_KIND_UINT64:
    case v1::SCALAR_KIND_SIZE_T:
    case v1::SCALAR_KIND_UINTPTR_T:
    case v1::SCALAR_KIND_CHAR16_T:
    case v1::SCALAR_KIND_CHAR32_T:
      return true;
    default:
      return false;
  }
}

bool IsIntegerKind(v1::ScalarKind kind) {
  return (kind >= v1::SCALAR_KIND_CHAR && kind <= v1::SCALAR_KIND_PTRDIFF_T) ||
         kind == v1::SCALAR_KIND_WCHAR_T || kind == v1::SCALAR_KIND_CHAR16_T ||
         kind == v1::SCALAR_KIND_CHAR32_T;
}

bool IsCharKind(v1::ScalarKind kind) {
  return kind == v1::SCALAR_KIND_CHAR || kind == v1::SCALAR_KIND_SIGNED_CHAR ||
         kind == v1::SCALAR_KIND_UNSIGNED_CHAR;
}

absl::StatusOr<v1::Value> IntegerValue(const IntegerLiteral& literal,
                                       bool is_unsigned,
                                       absl::string_view text) {
  v1::Value value;
  constexpr uint64_t kMaxInt64 =
      static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (literal.negative) {
    if (literal.magnitude > kMaxInt64 + 1) {
      return OutOfRange(
          absl::StrCat(text, " is below the range of any integer type"));
    }
    // Two's complement negation of the magnitude, without signed overflow.
    value.set_int_value(static_cast<int64_t>(0 - literal.magnitude));
  } else if (is_unsigned) {
    value.set_uint_value(literal.magnitude);
  } else {
    if (literal.magnitude > kMaxInt64) {
      return OutOfRange(
          absl::StrCat(text, " is above the range of any signed type"));
    }
    value.set_int_value(static_cast<int64_t>(literal.magnitude));
  }
  return value;
}

absl::StatusOr<std::vector<std::string>> SplitInitializer(
    absl::string_view text);

absl::StatusOr<v1::Value> ParseScalar(absl::string_view text,
                                      v1::ScalarKind kind) {
  v1::Value value;
  if (kind == v1::SCALAR_KIND_BOOL) {
    const std::string lower = absl::AsciiStrToLower(text);
    if (lower == "true" || lower == "false") {
      value.set_bool_value(lower == "true");
      return value;
    }
    absl::StatusOr<IntegerLiteral> literal = ParseIntegerLiteral(text);
    if (literal.ok() && literal->magnitude <= 1 &&
        !(literal->negative && literal->magnitude == 1)) {
      value.set_bool_value(literal->magnitude == 1);
      return value;
    }
    return Mismatch(absl::StrCat(text, " is not a bool (true, false, 1, 0)"));
  }
  if (IsIntegerKind(kind)) {
    // A single bare character is taken as that character for char types,
    // which saves quoting 'a' through the shell.
    if (IsCharKind(kind) && text.size() == 1 &&
        !absl::ascii_isdigit(static_cast<unsigned char>(text[0]))) {
      value.set_int_value(static_cast<unsigned char>(text[0]));
      return value;
    }
    absl::StatusOr<IntegerLiteral> literal = ParseIntegerLiteral(text);
    if (!literal.ok()) return literal.status();
    return IntegerValue(*literal, IsUnsignedKind(kind), text);
  }
  switch (kind) {
    case v1::SCALAR_KIND_FLOAT: {
      absl::StatusOr<float> parsed = ParseFloatLiteral(text);
      if (!parsed.ok()) return parsed.status();
      value.set_double_value(static_cast<double>(*parsed));
      return value;
    }
    case v1::SCALAR_KIND_DOUBLE: {
      absl::StatusOr<double> parsed = ParseDoubleLiteral(text);
      if (!parsed.ok()) return parsed.status();
      value.set_double_value(*parsed);
      return value;
    }
    case v1::SCALAR_KIND_LONG_DOUBLE: {
      // strtold reads every C floating form (hex, inf, nan) into the full
      // 64-bit mantissa; ffictl never changes the "C" locale.
      std::string copy(text);
      if (!copy.empty() && (copy.back() == 'l' || copy.back() == 'L')) {
        copy.pop_back();
      }
      char* end = nullptr;
      errno = 0;
      const long double parsed = std::strtold(copy.c_str(), &end);
      if (copy.empty() || end != copy.c_str() + copy.size()) {
        return Mismatch(absl::StrCat(text, " is not a floating-point literal"));
      }
      if (errno == ERANGE && std::isinf(parsed)) {
        return OutOfRange(
            absl::StrCat(text, " is out of the range of long double"));
      }
      char bytes[16] = {};
      static_assert(sizeof(long double) <= sizeof(bytes));
      // Only the 10 bytes of the x87 format carry the value; the padding
      // stays zero so equal values have equal bytes.
      std::memcpy(bytes, &parsed,
                  std::numeric_limits<long double>::digits == 64
                      ? 10
                      : sizeof(long double));
      value.set_long_double_value(std::string(bytes, sizeof(bytes)));
      return value;
    }
    case v1::SCALAR_KIND_VOID:
      return Mismatch("a parameter cannot have type void");
    case v1::SCALAR_KIND_COMPLEX_FLOAT:
    case v1::SCALAR_KIND_COMPLEX_DOUBLE:
    case v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE: {
      // `{real, imaginary}`, or a real number alone.
      const v1::ScalarKind part =
          kind == v1::SCALAR_KIND_COMPLEX_FLOAT    ? v1::SCALAR_KIND_FLOAT
          : kind == v1::SCALAR_KIND_COMPLEX_DOUBLE ? v1::SCALAR_KIND_DOUBLE
                                                   : v1::SCALAR_KIND_LONG_DOUBLE;
      std::vector<std::string> items;
      if (!text.empty() && text.front() == '{') {
        absl::StatusOr<std::vector<std::string>> split = SplitInitializer(text);
        if (!split.ok()) return split.status();
        items = *std::move(split);
      } else {
        items.emplace_back(text);
      }
      if (items.size() > 2) {
        return Mismatch(absl::StrCat(text, ": a complex number takes {real, "
                                           "imaginary}"));
      }
      if (items.size() < 2) items.resize(2, "0");
      for (const std::string& item : items) {
        absl::StatusOr<v1::Value> number = ParseScalar(item, part);
        if (!number.ok()) return number.status();
        *value.mutable_array_value()->add_elements() = *std::move(number);
      }
      return value;
    }
    default:
      return Mismatch(absl::StrCat("unknown scalar kind ",
                                   v1::ScalarKind_Name(kind)));
  }
}

// Infers the promoted C type of a variadic argument from its literal.
// The type a cast names: "(float)", "(unsigned long)", "(const char *)".
std::optional<v1::TypeDescriptor> CastType(absl::string_view name) {
  static const auto* const kScalars =
      new std::map<std::string, v1::ScalarKind, std::less<>>{
          {"bool", v1::SCALAR_KIND_BOOL},
          {"_Bool", v1::SCALAR_KIND_BOOL},
          {"char", v1::SCALAR_KIND_CHAR},
          {"signed char", v1::SCALAR_KIND_SIGNED_CHAR},
          {"unsigned char", v1::SCALAR_KIND_UNSIGNED_CHAR},
          {"short", v1::SCALAR_KIND_SHORT},
          {"unsigned short", v1::SCALAR_KIND_UNSIGNED_SHORT},
          {"int", v1::SCALAR_KIND_INT},
          {"unsigned", v1::SCALAR_KIND_UNSIGNED_INT},
          {"unsigned int", v1::SCALAR_KIND_UNSIGNED_INT},
          {"long", v1::SCALAR_KIND_LONG},
          {"unsigned long", v1::SCALAR_KIND_UNSIGNED_LONG},
          {"long long", v1::SCALAR_KIND_LONG_LONG},
          {"unsigned long long", v1::SCALAR_KIND_UNSIGNED_LONG_LONG},
          {"int8_t", v1::SCALAR_KIND_INT8},
          {"uint8_t", v1::SCALAR_KIND_UINT8},
          {"int16_t", v1::SCALAR_KIND_INT16},
          {"uint16_t", v1::SCALAR_KIND_UINT16},
          {"int32_t", v1::SCALAR_KIND_INT32},
          {"uint32_t", v1::SCALAR_KIND_UINT32},
          {"int64_t", v1::SCALAR_KIND_INT64},
          {"uint64_t", v1::SCALAR_KIND_UINT64},
          {"size_t", v1::SCALAR_KIND_SIZE_T},
          {"ssize_t", v1::SCALAR_KIND_SSIZE_T},
          {"float", v1::SCALAR_KIND_FLOAT},
          {"double", v1::SCALAR_KIND_DOUBLE},
          {"long double", v1::SCALAR_KIND_LONG_DOUBLE},
      };
  const std::string spelled = absl::StrJoin(
      absl::StrSplit(name, ' ', absl::SkipWhitespace()), " ");
  v1::TypeDescriptor type;
  auto it = kScalars->find(spelled);
  if (it != kScalars->end()) {
    type.set_scalar(it->second);
    return type;
  }
  if (spelled == "char *" || spelled == "const char *" || spelled == "char*" ||
      spelled == "const char*") {
    type.mutable_string()->set_is_const(true);
    return type;
  }
  if (spelled == "void *" || spelled == "void*") {
    type.mutable_pointer();
    return type;
  }
  return std::nullopt;
}

absl::StatusOr<std::pair<v1::TypeDescriptor, v1::Value>> InferVariadic(
    absl::string_view text) {
  v1::TypeDescriptor type;
  v1::Value value;
  if (!text.empty() && text.front() == '(') {
    const size_t close = text.find(')');
    if (close != absl::string_view::npos) {
      std::optional<v1::TypeDescriptor> cast =
          CastType(text.substr(1, close - 1));
      if (!cast.has_value()) {
        return Mismatch(absl::StrCat("unknown type in the cast ",
                                     text.substr(0, close + 1)));
      }
      absl::StatusOr<v1::Value> cast_value =
          ParseLiteral(absl::StripAsciiWhitespace(text.substr(close + 1)),
                       *cast);
      if (!cast_value.ok()) return cast_value.status();
      return std::make_pair(*cast, *std::move(cast_value));
    }
  }
  if (IsNullWord(text)) {
    type.mutable_pointer();
    value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
    return std::make_pair(type, value);
  }
  if (!text.empty() && text.front() == '"') {
    absl::StatusOr<std::string> string = ParseStringLiteral(text);
    if (!string.ok()) return string.status();
    type.mutable_string()->set_is_const(true);
    SetStringOrBytes(*std::move(string), value);
    return std::make_pair(type, value);
  }
  if (text == "true" || text == "false") {
    type.set_scalar(v1::SCALAR_KIND_INT);
    value.set_int_value(text == "true" ? 1 : 0);
    return std::make_pair(type, value);
  }
  if (!text.empty() && text.front() == '\'') {
    absl::StatusOr<uint32_t> c = ParseCharLiteral(text);
    if (!c.ok()) return c.status();
    type.set_scalar(v1::SCALAR_KIND_INT);
    value.set_int_value(*c);
    return std::make_pair(type, value);
  }
  if (!LooksNumeric(text)) {
    type.mutable_string()->set_is_const(true);
    SetStringOrBytes(std::string(text), value);
    return std::make_pair(type, value);
  }
  absl::StatusOr<IntegerLiteral> integer = ParseIntegerLiteral(text);
  if (integer.ok()) {
    constexpr uint64_t kMaxInt = std::numeric_limits<int32_t>::max();
    constexpr uint64_t kMaxUint = std::numeric_limits<uint32_t>::max();
    constexpr uint64_t kMaxInt64 = std::numeric_limits<int64_t>::max();
    const uint64_t limit = integer->negative ? kMaxInt + 1 : kMaxInt;
    v1::ScalarKind kind;
    if (integer->unsigned_suffix) {
      kind = integer->long_suffix == 0 && integer->magnitude <= kMaxUint
                 ? v1::SCALAR_KIND_UNSIGNED_INT
                 : v1::SCALAR_KIND_UNSIGNED_LONG_LONG;
    } else if (integer->long_suffix == 0 && integer->magnitude <= limit) {
      kind = v1::SCALAR_KIND_INT;
    } else if (integer->magnitude <= (integer->negative ? kMaxInt64 + 1
                                                        : kMaxInt64)) {
      kind = v1::SCALAR_KIND_LONG_LONG;
    } else {
      kind = v1::SCALAR_KIND_UNSIGNED_LONG_LONG;
    }
    absl::StatusOr<v1::Value> converted =
        IntegerValue(*integer, IsUnsignedKind(kind), text);
    if (!converted.ok()) return converted.status();
    type.set_scalar(kind);
    return std::make_pair(type, *converted);
  }
  absl::StatusOr<double> floating = ParseDoubleLiteral(text);
  if (!floating.ok()) {
    if (client::ErrorReason(integer.status()) == "VALUE_OUT_OF_RANGE") {
      return integer.status();
    }
    return Mismatch(absl::StrCat(text, " is not a number"));
  }
  type.set_scalar(v1::SCALAR_KIND_DOUBLE);
  value.set_double_value(*floating);
  return std::make_pair(type, value);
}

}  // namespace

absl::StatusOr<IntegerLiteral> ParseIntegerLiteral(absl::string_view text) {
  IntegerLiteral literal;
  absl::string_view rest = text;
  if (!rest.empty() && (rest[0] == '-' || rest[0] == '+')) {
    literal.negative = rest[0] == '-';
    rest.remove_prefix(1);
  }
  if (!rest.empty() && rest[0] == '\'') {
    absl::StatusOr<uint32_t> c = ParseCharLiteral(rest);
    if (!c.ok()) return c.status();
    literal.magnitude = *c;
    if (literal.magnitude == 0) literal.negative = false;
    return literal;
  }
  auto not_integer = [&text]() {
    return Mismatch(absl::StrCat(text, " is not an integer literal"));
  };
  rest = StripIntegerSuffix(rest, literal);
  int base = 10;
  if (absl::StartsWithIgnoreCase(rest, "0x")) {
    base = 16;
    rest.remove_prefix(2);
  } else if (absl::StartsWithIgnoreCase(rest, "0b")) {
    base = 2;
    rest.remove_prefix(2);
  } else if (rest.size() > 1 && rest[0] == '0') {
    base = 8;
    rest.remove_prefix(1);
  }
  if (rest.empty()) return not_integer();
  uint64_t magnitude = 0;
  for (char c : rest) {
    const int digit = HexDigitValue(c);
    if (digit < 0 || digit >= base) return not_integer();
    if (magnitude > (std::numeric_limits<uint64_t>::max() -
                     static_cast<uint64_t>(digit)) /
                        static_cast<uint64_t>(base)) {
      return OutOfRange(absl::StrCat(text, " does not fit in 64 bits"));
    }
    magnitude = magnitude * static_cast<uint64_t>(base) +
                static_cast<uint64_t>(digit);
  }
  literal.magnitude = magnitude;
  if (magnitude == 0) literal.negative = false;
  return literal;
}

absl::StatusOr<double> ParseDoubleLiteral(absl::string_view text) {
  // An integer literal (including octal and character literals) means what
  // it means in C; everything else is read as a floating-point literal.
  absl::StatusOr<IntegerLiteral> integer = ParseIntegerLiteral(text);
  if (integer.ok()) {
    double value = IntegerToFloating<double>(*integer);
    // "-0" is the integer zero in C, but whoever types it for a double
    // wants the negative zero.
    if (integer->magnitude == 0 && !text.empty() && text[0] == '-') {
      value = -0.0;
    }
    return value;
  }
  return ParseFloating<double>(text);
}

absl::StatusOr<float> ParseFloatLiteral(absl::string_view text) {
  absl::StatusOr<IntegerLiteral> integer = ParseIntegerLiteral(text);
  if (integer.ok()) {
    float value = IntegerToFloating<float>(*integer);
    if (integer->magnitude == 0 && !text.empty() && text[0] == '-') {
      value = -0.0f;
    }
    return value;
  }
  return ParseFloating<float>(text);
}

absl::StatusOr<std::string> ParseStringLiteral(absl::string_view text) {
  if (text.size() < 2 || text.front() != '"' || text.back() != '"') {
    return Mismatch(absl::StrCat(text, " is not a quoted string literal"));
  }
  absl::string_view in = text.substr(1, text.size() - 2);
  std::string out;
  out.reserve(in.size());
  while (!in.empty()) {
    if (in[0] == '\\') {
      absl::StatusOr<Escape> escape = TakeEscape(in);
      if (!escape.ok()) {
        return Prefixed(escape.status(), absl::StrCat("string ", text, ": "));
      }
      if (escape->is_byte) {
        out.push_back(static_cast<char>(escape->value));
      } else {
        AppendUtf8(escape->value, out);
      }
    } else if (in[0] == '"') {
      return Mismatch(absl::StrCat("string ", text,
                                   ": a quote inside the string needs \\\""));
    } else {
      out.push_back(in[0]);
      in.remove_prefix(1);
    }
  }
  return out;
}

namespace {

// The items of a brace initializer "{a, {b, c}, "d,e"}": split at the
// commas outside nested braces, parentheses and quotes; a trailing comma is
// allowed. TYPE_MISMATCH if `text` is not in braces or does not balance.
absl::StatusOr<std::vector<std::string>> SplitInitializer(
    absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  if (text.size() < 2 || text.front() != '{' || text.back() != '}') {
    return Mismatch(absl::StrCat(text, " is not an initializer in braces "
                                       "such as {1, 2} or {.x = 1}"));
  }
  const absl::string_view inside = text.substr(1, text.size() - 2);
  std::vector<std::string> items;
  int depth = 0;
  char quote = 0;
  size_t start = 0;
  for (size_t i = 0; i < inside.size(); ++i) {
    const char c = inside[i];
    if (quote != 0) {
      if (c == '\\') {
        ++i;
      } else if (c == quote) {
        quote = 0;
      }
      continue;
    }
    if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '{' || c == '(') {
      ++depth;
    } else if (c == '}' || c == ')') {
      if (--depth < 0) return Mismatch(absl::StrCat(text, ": unbalanced '", std::string(1, c), "'"));
    } else if (c == ',' && depth == 0) {
      items.emplace_back(absl::StripAsciiWhitespace(inside.substr(start, i - start)));
      start = i + 1;
    }
  }
  if (quote != 0 || depth != 0) {
    return Mismatch(absl::StrCat(text, ": unbalanced braces or quotes"));
  }
  std::string last(absl::StripAsciiWhitespace(inside.substr(start)));
  if (!last.empty()) {
    items.push_back(std::move(last));
  } else if (!items.empty()) {
    // "{1, 2,}": C allows one trailing comma, not an empty item.
  }
  for (const std::string& item : items) {
    if (item.empty()) {
      return Mismatch(absl::StrCat(text, ": an empty initializer item"));
    }
  }
  return items;
}

absl::StatusOr<v1::Value> ParseRecordInitializer(
    absl::string_view text, const v1::TypeDescriptor& type) {
  absl::StatusOr<std::vector<std::string>> split = SplitInitializer(text);
  if (!split.ok()) return split.status();
  const std::vector<std::string>& items = *split;
  const v1::RecordType& record = type.record();
  const bool is_union = record.kind() == v1::RECORD_KIND_UNION;
  const std::string name = TypeName(type);
  std::vector<const v1::Field*> named;
  for (const v1::Field& field : record.fields()) {
    if (!field.name().empty()) named.push_back(&field);
  }
  v1::Value value;
  auto* fields = value.mutable_record_value()->mutable_fields();
  size_t next = 0;
  for (const std::string& item : items) {
    const v1::Field* field = nullptr;
    absl::string_view initializer = item;
    if (!item.empty() && item.front() == '.') {
      const size_t equals = item.find('=');
      if (equals == std::string::npos) {
        return Mismatch(absl::StrCat("'", item, "': a designator needs '= value'"));
      }
      const std::string member(absl::StripAsciiWhitespace(
          absl::string_view(item).substr(1, equals - 1)));
      for (size_t i = 0; i < named.size(); ++i) {
        if (named[i]->name() == member) {
          field = named[i];
          next = i + 1;
        }
      }
      if (field == nullptr) {
        std::vector<std::string> names;
        for (const v1::Field* f : named) names.push_back(f->name());
        return Mismatch(absl::StrCat("'", name, "' has no member '", member,
                                     "' (its members: ",
                                     absl::StrJoin(names, ", "), ")"));
      }
      initializer = absl::StripAsciiWhitespace(
          absl::string_view(item).substr(equals + 1));
    } else {
      if (next >= named.size() || (is_union && next >= 1)) {
        return Mismatch(absl::StrCat(
            "too many initializers for '", name, "': ", items.size(),
            " given, ", is_union ? "a union takes 1" :
            absl::StrCat("it has ", named.size(), " member",
                         named.size() == 1 ? "" : "s")));
      }
      field = named[next++];
    }
    absl::StatusOr<v1::Value> member = ParseLiteral(initializer, field->type());
    if (!member.ok()) {
      return Prefixed(member.status(),
                      absl::StrCat("member '", field->name(), "': "));
    }
    (*fields)[field->name()] = *std::move(member);
  }
  if (is_union && fields->size() > 1) {
    return Mismatch(absl::StrCat("a value of '", name,
                                 "' sets exactly one member, got ",
                                 fields->size()));
  }
  return value;
}

absl::StatusOr<v1::Value> ParseArrayInitializer(
    absl::string_view text, const v1::TypeDescriptor& type) {
  const v1::TypeDescriptor& element = type.array().element();
  text = absl::StripAsciiWhitespace(text);
  v1::Value value;
  if (!text.empty() && text.front() == '"' && element.has_scalar() &&
      (element.scalar() == v1::SCALAR_KIND_CHAR ||
       element.scalar() == v1::SCALAR_KIND_SIGNED_CHAR ||
       element.scalar() == v1::SCALAR_KIND_UNSIGNED_CHAR)) {
    absl::StatusOr<std::string> parsed = ParseStringLiteral(text);
    if (!parsed.ok()) return parsed.status();
    std::string bytes = *std::move(parsed);
    if (bytes.size() > type.array().length()) {
      return Mismatch(absl::StrCat("too many initializers for '",
                                   TypeName(type), "': the string has ",
                                   bytes.size(), " bytes"));
    }
    bytes.resize(type.array().length(), '\0');
    value.set_bytes_value(std::move(bytes));
    return value;
  }
  absl::StatusOr<std::vector<std::string>> split = SplitInitializer(text);
  if (!split.ok()) return split.status();
  const std::vector<std::string>& items = *split;
  if (items.size() > type.array().length()) {
    return Mismatch(absl::StrCat("too many initializers for '",
                                 TypeName(type), "': ", items.size(),
                                 " given"));
  }
  for (size_t i = 0; i < type.array().length(); ++i) {
    absl::StatusOr<v1::Value> item =
        i < items.size() ? ParseLiteral(items[i], element)
                         : ParseLiteral("0", element);
    if (!item.ok()) {
      return Prefixed(item.status(), absl::StrCat("element ", i, ": "));
    }
    *value.mutable_array_value()->add_elements() = *std::move(item);
  }
  return value;
}

// A number on its way through C conversions: an integer or a floating
// value, or (for pointer casts) an address.
struct Number {
  bool is_floating = false;
  __int128 integer = 0;
  long double floating = 0;
};

// sizeof of an integer kind on this platform (ffictl runs where the daemon
// does when it prints native widths; the daemon checks ranges again).
int IntegerBits(v1::ScalarKind kind) {
  switch (kind) {
    case v1::SCALAR_KIND_BOOL:
      return 1;
    case v1::SCALAR_KIND_CHAR:
    case v1::SCALAR_KIND_SIGNED_CHAR:
    case v1::SCALAR_KIND_UNSIGNED_CHAR:
    case v1::SCALAR_KIND_INT8:
    case v1::SCALAR_KIND_UINT8:
      return 8;
    case v1::SCALAR_KIND_SHORT:
    case v1::SCALAR_KIND_UNSIGNED_SHORT:
    case v1::SCALAR_KIND_INT16:
    case v1::SCALAR_KIND_UINT16:
    case v1::SCALAR_KIND_CHAR16_T:
      return 16;
    case v1::SCALAR_KIND_INT:
    case v1::SCALAR_KIND_UNSIGNED_INT:
    case v1::SCALAR_KIND_INT32:
    case v1::SCALAR_KIND_UINT32:
    case v1::SCALAR_KIND_CHAR32_T:
      return 32;
    case v1::SCALAR_KIND_WCHAR_T:
      return static_cast<int>(sizeof(wchar_t) * 8);
    case v1::SCALAR_KIND_LONG:
    case v1::SCALAR_KIND_UNSIGNED_LONG:
      return static_cast<int>(sizeof(long) * 8);  // NOLINT(runtime/int)
    default:
      return 64;
  }
}

absl::StatusOr<Number> ToNumber(const v1::Value& value) {
  Number number;
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      number.integer = value.bool_value() ? 1 : 0;
      return number;
    case v1::Value::kIntValue:
      number.integer = value.int_value();
      return number;
    case v1::Value::kUintValue:
      number.integer = value.uint_value();
      return number;
    case v1::Value::kDoubleValue:
      number.is_floating = true;
      number.floating = value.double_value();
      return number;
    case v1::Value::kLongDoubleValue:
      number.is_floating = true;
      std::memcpy(&number.floating, value.long_double_value().data(),
                  std::min(value.long_double_value().size(),
                           sizeof(long double)));
      return number;
    case v1::Value::kNullValue:
      return number;
    case v1::Value::kPointerValue:
      if (value.pointer_value().handle().empty()) {
        number.integer = value.pointer_value().address();
        return number;
      }
      break;
    default:
      break;
  }
  return Mismatch("the cast gives no number");
}

// Converts `number` to scalar `kind` as C's conversions do: integers wrap
// to the type's width, floating values truncate toward zero (refused when
// the result cannot be represented, which C leaves undefined), floating
// types round.
absl::StatusOr<Number> ConvertNumber(Number number, v1::ScalarKind kind,
                                     absl::string_view text) {
  if (kind == v1::SCALAR_KIND_FLOAT || kind == v1::SCALAR_KIND_DOUBLE ||
      kind == v1::SCALAR_KIND_LONG_DOUBLE) {
    long double f = number.is_floating
                        ? number.floating
                        : static_cast<long double>(number.integer);
    if (kind == v1::SCALAR_KIND_FLOAT) f = static_cast<float>(f);
    if (kind == v1::SCALAR_KIND_DOUBLE) f = static_cast<double>(f);
    Number result;
    result.is_floating = true;
    result.floating = f;
    return result;
  }
  if (!IsIntegerKind(kind) && kind != v1::SCALAR_KIND_BOOL) {
    return Unsupported(absl::StrCat("ffictl cannot convert ", text, " to ",
                                    v1::ScalarKind_Name(kind)));
  }
  if (kind == v1::SCALAR_KIND_BOOL) {
    Number result;
    result.integer = number.is_floating ? number.floating != 0
                                        : number.integer != 0;
    return result;
  }
  const int bits = IntegerBits(kind);
  const bool is_unsigned = IsUnsignedKind(kind);
  __int128 value = number.integer;
  if (number.is_floating) {
    const long double truncated = std::trunc(number.floating);
    const long double limit = std::ldexp(1.0L, is_unsigned ? bits : bits - 1);
    if (!std::isfinite(truncated) || truncated >= limit ||
        truncated < (is_unsigned ? 0.0L : -limit)) {
      return OutOfRange(absl::StrCat(text, " does not fit in ",
                                     TypeName([&] {
                                       v1::TypeDescriptor t;
                                       t.set_scalar(kind);
                                       return t;
                                     }())));
    }
    value = static_cast<__int128>(truncated);
  }
  // Modulo 2^bits, then the signed reading when the type is signed.
  const unsigned __int128 mask = (static_cast<unsigned __int128>(1) << bits) - 1;
  unsigned __int128 wrapped = static_cast<unsigned __int128>(value) & mask;
  __int128 result_value = static_cast<__int128>(wrapped);
  if (!is_unsigned && (wrapped >> (bits - 1)) != 0) {
    result_value -= static_cast<__int128>(1) << bits;
  }
  Number result;
  result.integer = result_value;
  return result;
}

v1::Value NumberValue(const Number& number, v1::ScalarKind kind) {
  v1::Value value;
  if (kind == v1::SCALAR_KIND_LONG_DOUBLE) {
    char bytes[16] = {};
    std::memcpy(bytes, &number.floating,
                std::numeric_limits<long double>::digits == 64
                    ? 10
                    : sizeof(long double));
    value.set_long_double_value(std::string(bytes, sizeof(bytes)));
  } else if (number.is_floating) {
    value.set_double_value(static_cast<double>(number.floating));
  } else if (kind == v1::SCALAR_KIND_BOOL) {
    value.set_bool_value(number.integer != 0);
  } else if (number.integer < 0) {
    value.set_int_value(static_cast<int64_t>(number.integer));
  } else {
    value.set_uint_value(static_cast<uint64_t>(number.integer));
  }
  return value;
}

// A literal preceded by a cast, `(float)1.5` or `(unsigned char)300`, for a
// parameter of `type`: the literal is converted to the cast's type and then
// to the parameter's, as C converts. nullopt when `text` is no cast.
absl::StatusOr<std::optional<v1::Value>> ParseCast(
    absl::string_view text, const v1::TypeDescriptor& type) {
  if (text.empty() || text.front() != '(') return std::nullopt;
  const size_t close = text.find(')');
  if (close == absl::string_view::npos) return std::nullopt;
  std::optional<v1::TypeDescriptor> cast = CastType(text.substr(1, close - 1));
  if (!cast.has_value()) return std::nullopt;
  const absl::string_view rest =
      absl::StripAsciiWhitespace(text.substr(close + 1));
  const bool cast_is_pointer = cast->has_pointer() || cast->has_string();
  const bool target_is_pointer = type.has_pointer() || type.has_string();
  // The literal has its own C type first: an integer (or character), else
  // a floating constant (double; float with f, long double with l).
  absl::StatusOr<v1::Value> cast_value = ParseLiteral(rest, *cast);
  if (!cast_is_pointer && !target_is_pointer &&
      !ParseIntegerLiteral(rest).ok()) {
    v1::TypeDescriptor own;
    const char suffix = rest.empty() ? '\0' : rest.back();
    own.set_scalar(suffix == 'f' || suffix == 'F' ? v1::SCALAR_KIND_FLOAT
                   : suffix == 'l' || suffix == 'L'
                       ? v1::SCALAR_KIND_LONG_DOUBLE
                       : v1::SCALAR_KIND_DOUBLE);
    cast_value = ParseLiteral(rest, own);
  }
  if (!cast_value.ok()) return cast_value.status();
  if (cast_is_pointer || target_is_pointer) {
    if (cast_is_pointer && target_is_pointer) return *cast_value;
    if (target_is_pointer && IsIntegerKind(cast->scalar())) {
      // An integer cast for a pointer: an address, as C allows with a cast.
      return ParseLiteral(rest, type);
    }
    return Mismatch(absl::StrCat("cannot convert ", text, " to '",
                                 TypeName(type), "'"));
  }
  absl::StatusOr<Number> number = ToNumber(*cast_value);
  if (number.ok()) number = ConvertNumber(*number, cast->scalar(), text);
  if (!number.ok()) return number.status();
  v1::ScalarKind target;
  if (type.has_scalar()) {
    target = type.scalar();
  } else if (type.has_enum_type()) {
    target = type.enum_type().underlying() == v1::SCALAR_KIND_UNSPECIFIED
                 ? v1::SCALAR_KIND_INT
                 : type.enum_type().underlying();
  } else {
    return Mismatch(absl::StrCat("cannot convert ", text, " to '",
                                 TypeName(type), "'"));
  }
  number = ConvertNumber(*number, target, text);
  if (!number.ok()) return number.status();
  return NumberValue(*number, target);
}

}  // namespace

absl::StatusOr<v1::Value> ParseLiteral(absl::string_view text,
                                       const v1::TypeDescriptor& type) {
  v1::Value value;
  if (!type.has_record() && !type.has_array()) {
    absl::StatusOr<std::optional<v1::Value>> cast = ParseCast(text, type);
    if (!cast.ok()) return cast.status();
    if (cast->has_value()) return **std::move(cast);
  }
  switch (type.kind_case()) {
    case v1::TypeDescriptor::kScalar:
      return ParseScalar(text, type.scalar());
    case v1::TypeDescriptor::kString:
      if (IsNullWord(text)) {
        value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
      } else if (!text.empty() && text.front() == '"') {
        absl::StatusOr<std::string> string = ParseStringLiteral(text);
        if (!string.ok()) return string.status();
        SetStringOrBytes(*std::move(string), value);
      } else {
        SetStringOrBytes(std::string(text), value);
      }
      return value;
    case v1::TypeDescriptor::kPointer: {
      if (IsNullWord(text)) {
        value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
        return value;
      }
      if (absl::StartsWith(text, "mem_")) {
        // A memory handle, optionally "+offset".
        absl::string_view handle = text;
        uint64_t offset = 0;
        const size_t plus = text.find('+');
        if (plus != absl::string_view::npos) {
          handle = text.substr(0, plus);
          absl::StatusOr<IntegerLiteral> literal =
              ParseIntegerLiteral(text.substr(plus + 1));
          if (!literal.ok() || literal->negative) {
            return Mismatch(absl::StrCat(text, ": the offset after '+' is not "
                                               "a non-negative integer"));
          }
          offset = literal->magnitude;
        }
        value.mutable_pointer_value()->set_handle(std::string(handle));
        value.mutable_pointer_value()->set_offset(offset);
        return value;
      }
      absl::StatusOr<IntegerLiteral> literal = ParseIntegerLiteral(text);
      if (!literal.ok() || literal->negative) {
        return Mismatch(absl::StrCat(
            text, " is not a pointer (NULL, 0, an address such as 0x7f00, or "
                  "a memory handle)"));
      }
      if (literal->magnitude == 0) {
        value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
      } else {
        value.mutable_pointer_value()->set_address(literal->magnitude);
      }
      return value;
    }
    case v1::TypeDescriptor::kFunctionPointer: {
      absl::StatusOr<IntegerLiteral> literal = ParseIntegerLiteral(text);
      if (IsNullWord(text) || (literal.ok() && literal->magnitude == 0)) {
        value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
        return value;
      }
      return Unsupported("ffictl can pass only NULL as a function pointer");
    }
    case v1::TypeDescriptor::kEnumType: {
      absl::StatusOr<IntegerLiteral> literal = ParseIntegerLiteral(text);
      if (literal.ok()) {
        return IntegerValue(*literal, IsUnsignedKind(type.enum_type().underlying()),
                            text);
      }
      value.set_enum_value(std::string(text));
      return value;
    }
    case v1::TypeDescriptor::kArray:
      return ParseArrayInitializer(text, type);
    case v1::TypeDescriptor::kRecord:
      return ParseRecordInitializer(text, type);
    case v1::TypeDescriptor::kNamed:
      return Unsupported(absl::StrCat("ffictl cannot pass a value of the "
                                      "incomplete type '", TypeName(type),
                                      "'"));
    case v1::TypeDescriptor::KIND_NOT_SET:
      break;
  }
  return Mismatch("the parameter's type is empty");
}

absl::StatusOr<ConvertedArguments> ConvertArguments(
    absl::string_view function_name, const v1::FunctionType& type,
    const std::vector<std::string>& arguments) {
  const size_t fixed = static_cast<size_t>(type.parameters_size());
  if (arguments.size() < fixed ||
      (!type.variadic() && arguments.size() > fixed)) {
    std::vector<std::string> names;
    for (const v1::Parameter& parameter : type.parameters()) {
      names.push_back(TypeName(parameter.type()));
    }
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument, "ARGUMENT_COUNT",
        absl::StrCat("'", function_name, "' takes ",
                     type.variadic() ? "at least " : "", fixed,
                     fixed == 1 ? " argument" : " arguments", " (",
                     absl::StrJoin(names, ", "), type.variadic() ? ", ..." : "",
                     ") but ", arguments.size(),
                     arguments.size() == 1 ? " was" : " were", " given"));
  }
  ConvertedArguments converted;
  for (size_t i = 0; i < arguments.size(); ++i) {
    if (i < fixed) {
      const v1::Parameter& parameter = type.parameters(static_cast<int>(i));
      absl::StatusOr<v1::Value> value =
          ParseLiteral(arguments[i], parameter.type());
      if (!value.ok()) {
        return Prefixed(
            value.status(),
            absl::StrCat("parameter ", i + 1,
                         parameter.name().empty()
                             ? ""
                             : absl::StrCat(" '", parameter.name(), "'"),
                         " of '", function_name, "' (",
                         TypeName(parameter.type()), "): "));
      }
      converted.values.push_back(*std::move(value));
    } else {
      auto inferred = InferVariadic(arguments[i]);
      if (!inferred.ok()) {
        return Prefixed(inferred.status(),
                        absl::StrCat("argument ", i + 1, " of '",
                                     function_name, "' (variadic): "));
      }
      converted.variadic_types.push_back(std::move(inferred->first));
      converted.values.push_back(std::move(inferred->second));
    }
  }
  return converted;
}

std::string TypeName(const v1::TypeDescriptor& type) {
  std::string prefix = type.is_const() ? "const " : "";
  switch (type.kind_case()) {
    case v1::TypeDescriptor::kScalar: {
      static constexpr const char* kNames[] = {
          "?",        "void",          "bool",          "char",
          "signed char", "unsigned char", "short",       "unsigned short",
          "int",      "unsigned int",  "long",          "unsigned long",
          "long long", "unsigned long long", "int8_t",   "uint8_t",
          "int16_t",  "uint16_t",      "int32_t",       "uint32_t",
          "int64_t",  "uint64_t",      "size_t",        "ssize_t",
          "intptr_t", "uintptr_t",     "ptrdiff_t",     "float",
          "double",   "long double",   "wchar_t",       "char16_t",
          "char32_t", "float _Complex", "double _Complex"};
      const int kind = type.scalar();
      if (kind < 0 || kind >= static_cast<int>(std::size(kNames))) {
        return absl::StrCat(prefix, "?");
      }
      return absl::StrCat(prefix, kNames[kind]);
    }
    case v1::TypeDescriptor::kPointer: {
      const v1::PointerType& pointer = type.pointer();
      std::string pointee =
          pointer.has_pointee() ? TypeName(pointer.pointee()) : "void";
      return absl::StrCat(pointee, " *", type.is_const() ? " const" : "");
    }
    case v1::TypeDescriptor::kString: {
      const v1::StringType& string = type.string();
      const char* unit = "char";
      switch (string.encoding()) {
        case v1::STRING_ENCODING_UTF16: unit = "char16_t"; break;
        case v1::STRING_ENCODING_UTF32: unit = "char32_t"; break;
        case v1::STRING_ENCODING_WCHAR: unit = "wchar_t"; break;
        default: break;
      }
      return absl::StrCat(string.is_const() ? "const " : "", unit, " *");
    }
    case v1::TypeDescriptor::kArray:
      return absl::StrCat(TypeName(type.array().element()), "[",
                          type.array().length(), "]");
    case v1::TypeDescriptor::kRecord:
      return absl::StrCat(
          prefix,
          type.record().kind() == v1::RECORD_KIND_UNION ? "union" : "struct",
          type.record().name().empty() ? "" : " ", type.record().name());
    case v1::TypeDescriptor::kEnumType:
      return absl::StrCat(prefix, "enum",
                          type.enum_type().name().empty() ? "" : " ",
                          type.enum_type().name());
    case v1::TypeDescriptor::kFunctionPointer: {
      const v1::FunctionType& function = type.function_pointer();
      std::vector<std::string> parameters;
      for (const v1::Parameter& parameter : function.parameters()) {
        parameters.push_back(TypeName(parameter.type()));
      }
      if (function.variadic()) parameters.push_back("...");
      if (parameters.empty()) parameters.push_back("void");
      return absl::StrCat(function.has_return_type()
                              ? TypeName(function.return_type())
                              : "void",
                          " (*)(", absl::StrJoin(parameters, ", "), ")");
    }
    case v1::TypeDescriptor::kNamed:
      return absl::StrCat(prefix, type.named());
    case v1::TypeDescriptor::KIND_NOT_SET:
      break;
  }
  return "?";
}

}  // namespace ffid::ffictl
