// Shorthands for building ffid.v1.Value and TypeDescriptor messages.
//
// Every function returns a new message by value; all are thread-safe.
#ifndef FFID_CLIENTS_CPP_FFID_VALUES_H_
#define FFID_CLIENTS_CPP_FFID_VALUES_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "ffid/v1/types.pb.h"

namespace ffid::client {

inline v1::Value MakeBool(bool value) {
  v1::Value result;
  result.set_bool_value(value);
  return result;
}

inline v1::Value MakeInt(int64_t value) {
  v1::Value result;
  result.set_int_value(value);
  return result;
}

inline v1::Value MakeUint(uint64_t value) {
  v1::Value result;
  result.set_uint_value(value);
  return result;
}

inline v1::Value MakeDouble(double value) {
  v1::Value result;
  result.set_double_value(value);
  return result;
}

// A `long double` with its full precision (its bytes; the daemon runs on
// this platform's ABI).
inline v1::Value MakeLongDouble(long double value) {
  v1::Value result;
  std::string bytes(sizeof(long double), '\0');
  std::memcpy(bytes.data(), &value, sizeof(long double));
  result.mutable_long_double()->set_bytes(std::move(bytes));
  return result;
}

// The number a value holds as a `long double`: a long double result at full
// precision (from its bytes, else its decimal), or a double or integer;
// nullopt for any other kind.
inline std::optional<long double> LongDoubleOf(const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kLongDouble: {
      const v1::LongDoubleValue& full = value.long_double();
      if (full.bytes().size() == sizeof(long double)) {
        long double result;
        std::memcpy(&result, full.bytes().data(), sizeof(long double));
        return result;
      }
      if (!full.decimal().empty()) {
        return std::strtold(full.decimal().c_str(), nullptr);
      }
      return static_cast<long double>(full.approximate());
    }
    case v1::Value::kLongDoubleValue:
      if (value.long_double_value().size() == sizeof(long double)) {
        long double result;
        std::memcpy(&result, value.long_double_value().data(),
                    sizeof(long double));
        return result;
      }
      return std::nullopt;
    case v1::Value::kDoubleValue:
      return static_cast<long double>(value.double_value());
    case v1::Value::kIntValue:
      return static_cast<long double>(value.int_value());
    case v1::Value::kUintValue:
      return static_cast<long double>(value.uint_value());
    default:
      return std::nullopt;
  }
}

inline v1::Value MakeString(absl::string_view value) {
  v1::Value result;
  result.set_string_value(std::string(value));
  return result;
}

inline v1::Value MakeNull() {
  v1::Value result;
  result.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
  return result;
}

// A pointer to `offset` bytes into the memory named by `handle`.
inline v1::Value MakePointer(absl::string_view handle, uint64_t offset = 0) {
  v1::Value result;
  result.mutable_pointer_value()->set_handle(std::string(handle));
  result.mutable_pointer_value()->set_offset(offset);
  return result;
}

// A raw address, as an earlier call returned it.
inline v1::Value MakeAddress(uint64_t address) {
  v1::Value result;
  result.mutable_pointer_value()->set_address(address);
  return result;
}

inline v1::TypeDescriptor ScalarType(v1::ScalarKind kind) {
  v1::TypeDescriptor type;
  type.set_scalar(kind);
  return type;
}

// A type by its C name over the session's declarations: "struct point",
// "point_t", "int[16]", "unsigned long".
inline v1::TypeDescriptor NamedType(absl::string_view name) {
  v1::TypeDescriptor type;
  type.set_named(std::string(name));
  return type;
}

// `const char *` (UTF-8).
inline v1::TypeDescriptor CStringType() {
  v1::TypeDescriptor type;
  type.mutable_string()->set_is_const(true);
  return type;
}

// `void *`.
inline v1::TypeDescriptor VoidPointerType() {
  v1::TypeDescriptor type;
  type.mutable_pointer();
  return type;
}

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_VALUES_H_
