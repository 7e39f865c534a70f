#include "clients/cpp/ffictl/format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "clients/cpp/ffid/values.h"

namespace ffid::ffictl {
namespace {

template <typename T>
std::string ShortestForm(T value) {
  char buffer[64];
  std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

bool IsFloat(const v1::TypeDescriptor& type) {
  return type.has_scalar() && type.scalar() == v1::SCALAR_KIND_FLOAT;
}

// The long double stored in a Value's 16 bytes.
long double DecodeLongDouble(const std::string& bytes) {
  long double value = 0;
  std::memcpy(&value, bytes.data(), std::min(bytes.size(), sizeof(value)));
  return value;
}

std::string FormatPointerText(const v1::PointerValue& pointer) {
  std::string text = absl::StrFormat("0x%x", pointer.address());
  if (!pointer.handle().empty()) {
    absl::StrAppend(&text, " (", pointer.handle(), ")");
  }
  return text;
}

// A finite number as JSON, or a non-finite one as a string.
template <typename T>
std::string JsonNumber(T value) {
  if (std::isnan(value)) return "\"nan\"";
  if (std::isinf(value)) return value > 0 ? "\"inf\"" : "\"-inf\"";
  return ShortestForm(value);
}

// The length of the valid UTF-8 sequence at the start of `in`, or 0.
size_t ValidUtf8Length(absl::string_view in) {
  const auto lead = static_cast<unsigned char>(in[0]);
  size_t length;
  uint32_t code_point;
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (in.size() < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    const auto byte = static_cast<unsigned char>(in[i]);
    if ((byte & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (byte & 0x3F);
  }
  // Reject overlong forms, surrogates and values beyond Unicode.
  static constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kMinimum[length] || code_point > 0x10FFFF ||
      (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

}  // namespace

std::string FormatDouble(double value) { return ShortestForm(value); }

std::string FormatFloat(float value) { return ShortestForm(value); }

std::string JsonQuote(absl::string_view value) {
  std::string out = "\"";
  out.reserve(value.size() + 2);
  while (!value.empty()) {
    const auto c = static_cast<unsigned char>(value[0]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else if (c >= 0x80) {
          const size_t length = ValidUtf8Length(value);
          if (length == 0) {
            absl::StrAppendFormat(&out, "\\u%04x", c);
          } else {
            out.append(value.data(), length);
            value.remove_prefix(length);
            continue;
          }
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    value.remove_prefix(1);
  }
  out.push_back('"');
  return out;
}

std::string FormatValueText(const v1::Value& value,
                            const v1::TypeDescriptor& type) {
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case v1::Value::kIntValue:
      return absl::StrCat(value.int_value());
    case v1::Value::kUintValue:
      return absl::StrCat(value.uint_value());
    case v1::Value::kDoubleValue:
      return IsFloat(type) ? FormatFloat(static_cast<float>(value.double_value()))
                           : FormatDouble(value.double_value());
    case v1::Value::kStringValue:
      return value.string_value();
    case v1::Value::kBytesValue:
      return value.bytes_value();
    case v1::Value::kPointerValue:
      return FormatPointerText(value.pointer_value());
    case v1::Value::kNullValue:
      return "NULL";
    case v1::Value::kEnumValue:
      return value.enum_value();
    case v1::Value::kLongDoubleValue:
      return ShortestForm(DecodeLongDouble(value.long_double_value()));
    case v1::Value::kLongDouble:
      // Every digit the 64-bit mantissa needs to read back the same.
      return ShortestForm(client::LongDoubleOf(value).value_or(0));
    case v1::Value::kCallbackHandle:
      return value.callback_handle();
    case v1::Value::kRecordValue:
    case v1::Value::kArrayValue:
      return FormatInitializer(value, type);
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return "";
}

std::string FormatInitializer(const v1::Value& value,
                              const v1::TypeDescriptor& type) {
  switch (value.kind_case()) {
    case v1::Value::kRecordValue: {
      // Members in declaration order, with designators.
      std::vector<std::string> parts;
      const auto& fields = value.record_value().fields();
      std::vector<std::pair<std::string, v1::TypeDescriptor>> order;
      if (type.has_record()) {
        for (const v1::Field& field : type.record().fields()) {
          if (fields.count(field.name()) > 0) {
            order.emplace_back(field.name(), field.type());
          }
        }
      }
      if (order.size() != fields.size()) {
        order.clear();
        std::vector<std::string> names;
        for (const auto& [name, unused] : fields) names.push_back(name);
        std::sort(names.begin(), names.end());
        for (const std::string& name : names) {
          order.emplace_back(name, v1::TypeDescriptor());
        }
      }
      for (const auto& [name, member_type] : order) {
        parts.push_back(absl::StrCat(
            ".", name, " = ", FormatInitializer(fields.at(name), member_type)));
      }
      return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
    }
    case v1::Value::kArrayValue: {
      std::vector<std::string> parts;
      const v1::TypeDescriptor element =
          type.has_array() ? type.array().element() : v1::TypeDescriptor();
      for (const v1::Value& item : value.array_value().elements()) {
        parts.push_back(FormatInitializer(item, element));
      }
      return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
    }
    case v1::Value::kStringValue:
    case v1::Value::kBytesValue:
      // Inside an initializer a string is a C string literal.
      return JsonQuote(value.has_string_value() ? value.string_value()
                                                : value.bytes_value());
    default:
      return FormatValueText(value, type);
  }
}

std::string FormatValueJson(const v1::Value& value,
                            const v1::TypeDescriptor& type) {
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case v1::Value::kIntValue:
      return absl::StrCat(value.int_value());
    case v1::Value::kUintValue:
      return absl::StrCat(value.uint_value());
    case v1::Value::kDoubleValue:
      return IsFloat(type) ? JsonNumber(static_cast<float>(value.double_value()))
                           : JsonNumber(value.double_value());
    case v1::Value::kStringValue:
      return JsonQuote(value.string_value());
    case v1::Value::kBytesValue:
      return JsonQuote(value.bytes_value());
    case v1::Value::kPointerValue: {
      const v1::PointerValue& pointer = value.pointer_value();
      std::string json =
          absl::StrFormat("{\"address\": \"0x%x\"", pointer.address());
      if (!pointer.handle().empty()) {
        absl::StrAppend(&json, ", \"handle\": ", JsonQuote(pointer.handle()));
      }
      if (pointer.offset() != 0) {
        absl::StrAppend(&json, ", \"offset\": ", pointer.offset());
      }
      json += "}";
      return json;
    }
    case v1::Value::kNullValue:
      return "null";
    case v1::Value::kEnumValue:
      return JsonQuote(value.enum_value());
    case v1::Value::kLongDoubleValue:
      return JsonNumber(DecodeLongDouble(value.long_double_value()));
    case v1::Value::kLongDouble:
      return JsonNumber(client::LongDoubleOf(value).value_or(0));
    case v1::Value::kCallbackHandle:
      return JsonQuote(value.callback_handle());
    case v1::Value::kRecordValue: {
      std::vector<std::string> members;
      // Declaration order when the type is known, so output is stable.
      std::vector<std::string> names;
      if (type.has_record()) {
        for (const v1::Field& field : type.record().fields()) {
          if (value.record_value().fields().count(field.name()) > 0) {
            names.push_back(field.name());
          }
        }
      }
      if (names.size() != value.record_value().fields().size()) {
        names.clear();
        for (const auto& [name, member] : value.record_value().fields()) {
          names.push_back(name);
        }
        std::sort(names.begin(), names.end());
      }
      for (const std::string& name : names) {
        v1::TypeDescriptor member_type;
        if (type.has_record()) {
          for (const v1::Field& field : type.record().fields()) {
            if (field.name() == name) member_type = field.type();
          }
        }
        members.push_back(absl::StrCat(
            JsonQuote(name), ": ",
            FormatValueJson(value.record_value().fields().at(name),
                            member_type)));
      }
      if (!value.record_value().union_bytes().empty()) {
        // A union: its bytes too, in hex in memory order, under a key no C
        // member can have (only the caller knows which member is set).
        members.push_back(absl::StrCat(
            "\"#bytes\": \"",
            absl::BytesToHexString(value.record_value().union_bytes()), "\""));
      }
      return absl::StrCat("{", absl::StrJoin(members, ", "), "}");
    }
    case v1::Value::kArrayValue: {
      const v1::TypeDescriptor element =
          type.has_array() ? type.array().element() : v1::TypeDescriptor();
      std::vector<std::string> elements;
      for (const v1::Value& item : value.array_value().elements()) {
        elements.push_back(FormatValueJson(item, element));
      }
      return absl::StrCat("[", absl::StrJoin(elements, ", "), "]");
    }
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return "null";
}

std::string FormatCallText(const v1::CallResponse& response,
                           const v1::TypeDescriptor& return_type,
                           bool with_errno) {
  std::string out;
  if (response.has_result() &&
      response.result().kind_case() != v1::Value::KIND_NOT_SET) {
    absl::StrAppend(&out, FormatValueText(response.result(), return_type),
                    "\n");
  }
  if (with_errno) {
    const int number = response.errno_value();
    const char* name = number == 0 ? "0" : strerrorname_np(number);
    absl::StrAppend(&out, "errno: ", number);
    if (number != 0) {
      absl::StrAppend(&out, " (", name != nullptr ? name : "?", ": ",
                      strerror(number), ")");
    }
    out += "\n";
  }
  return out;
}

std::string FormatCallJson(const v1::CallResponse& response,
                           const v1::TypeDescriptor& return_type,
                           bool with_errno) {
  std::string out = absl::StrCat(
      "{\"result\": ",
      response.has_result() ? FormatValueJson(response.result(), return_type)
                            : "null");
  if (with_errno) absl::StrAppend(&out, ", \"errno\": ", response.errno_value());
  out += "}\n";
  return out;
}

}  // namespace ffid::ffictl
