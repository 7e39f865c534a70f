#include "ffi/marshal.h"

#include <cmath>
#include <cstdint>
#include <ostream>
#include <cstring>
#include <limits>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "ffi/internal/map_resolver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::ffi {
namespace {

using ::testing::HasSubstr;

using internal::MapResolver;

v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor d;
  d.set_scalar(kind);
  return d;
}

std::shared_ptr<const CType> Make(const v1::TypeDescriptor& d) {
  auto type = CType::Create(d);
  EXPECT_TRUE(type.ok()) << type.status();
  return *type;
}

std::shared_ptr<const CType> Make(v1::ScalarKind kind) {
  return Make(Scalar(kind));
}

v1::Value Int(int64_t v) {
  v1::Value value;
  value.set_int_value(v);
  return value;
}
v1::Value Uint(uint64_t v) {
  v1::Value value;
  value.set_uint_value(v);
  return value;
}
v1::Value Double(double v) {
  v1::Value value;
  value.set_double_value(v);
  return value;
}
v1::Value String(const std::string& v) {
  v1::Value value;
  value.set_string_value(v);
  return value;
}
v1::Value Bytes(const std::string& v) {
  v1::Value value;
  value.set_bytes_value(v);
  return value;
}
v1::Value Bool(bool v) {
  v1::Value value;
  value.set_bool_value(v);
  return value;
}
v1::Value Null() {
  v1::Value value;
  value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
  return value;
}

class MarshalTest : public ::testing::Test {
 protected:
  // Encodes into a fresh 16-byte-aligned buffer.
  absl::Status Encode(const CType& type, const v1::Value& value,
                      absl::string_view param = "parameter 1 'x'") {
    std::memset(buffer_, 0xAB, sizeof(buffer_));
    return EncodeValue(type, value, buffer_, resolver_, arena_, param);
  }
  absl::StatusOr<v1::Value> Decode(const CType& type) {
    return DecodeValue(type, buffer_, resolver_);
  }
  template <typename T>
  T As() const {
    T v;
    std::memcpy(&v, buffer_, sizeof(T));
    return v;
  }

  alignas(16) unsigned char buffer_[256];
  MapResolver resolver_;
  CallArena arena_;
};

struct IntegerCase {
  v1::ScalarKind kind;
  int64_t min;
  uint64_t max;
  bool is_signed;
};

void PrintTo(const IntegerCase& c, std::ostream* os) {
  std::string name(ScalarKindName(c.kind));
  for (char& ch : name) {
    if (ch == ' ') ch = '_';
  }
  *os << name;
}

class IntegerTest : public MarshalTest,
                    public ::testing::WithParamInterface<IntegerCase> {};

template <typename T>
IntegerCase Case(v1::ScalarKind kind) {
  return IntegerCase{kind, static_cast<int64_t>(std::numeric_limits<T>::min()),
                     static_cast<uint64_t>(std::numeric_limits<T>::max()),
                     std::is_signed_v<T>};
}

TEST_P(IntegerTest, ExtremesRoundTripAndOneBeyondIsRejected) {
  const IntegerCase& c = GetParam();
  auto type = Make(c.kind);
  const std::string name = TypeName(type->descriptor());

  v1::Value min = c.is_signed ? Int(c.min) : Uint(0);
  ASSERT_TRUE(Encode(*type, min).ok()) << name;
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  if (c.is_signed) {
    EXPECT_EQ(decoded->int_value(), c.min) << name;
  } else {
    EXPECT_EQ(decoded->uint_value(), 0u) << name;
  }

  ASSERT_TRUE(Encode(*type, Uint(c.max)).ok()) << name;
  decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  if (c.is_signed) {
    EXPECT_EQ(static_cast<uint64_t>(decoded->int_value()), c.max) << name;
  } else {
    EXPECT_EQ(decoded->uint_value(), c.max) << name;
  }

  // Beyond the maximum (when representable in a Value).
  if (c.max < std::numeric_limits<uint64_t>::max()) {
    absl::Status status = Encode(*type, Uint(c.max + 1));
    EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE)
        << name;
    EXPECT_THAT(status.message(),
                HasSubstr(absl::StrCat("value ", c.max + 1,
                                       " does not fit in ", name, " (range ")));
  } else {
    // Beyond int64 for a signed 64-bit type.
  }
  if (c.is_signed && c.max < uint64_t{INT64_MAX}) {
    EXPECT_FALSE(Encode(*type, Int(c.min - 1)).ok()) << name;
  }
  if (!c.is_signed) {
    absl::Status status = Encode(*type, Int(-1));
    EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE)
        << name;
    EXPECT_THAT(status.message(),
                HasSubstr(absl::StrCat("(range 0..", c.max, ")")));
  }
  if (c.is_signed && c.max == uint64_t{INT64_MAX}) {
    EXPECT_FALSE(Encode(*type, Uint(uint64_t{INT64_MAX} + 1)).ok()) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllWidths, IntegerTest,
    ::testing::Values(
        Case<char>(v1::SCALAR_KIND_CHAR),
        Case<signed char>(v1::SCALAR_KIND_SIGNED_CHAR),
        Case<unsigned char>(v1::SCALAR_KIND_UNSIGNED_CHAR),
        Case<short>(v1::SCALAR_KIND_SHORT),
        Case<unsigned short>(v1::SCALAR_KIND_UNSIGNED_SHORT),
        Case<int>(v1::SCALAR_KIND_INT),
        Case<unsigned int>(v1::SCALAR_KIND_UNSIGNED_INT),
        Case<long>(v1::SCALAR_KIND_LONG),
        Case<unsigned long>(v1::SCALAR_KIND_UNSIGNED_LONG),
        Case<long long>(v1::SCALAR_KIND_LONG_LONG),
        Case<unsigned long long>(v1::SCALAR_KIND_UNSIGNED_LONG_LONG),
        Case<int8_t>(v1::SCALAR_KIND_INT8), Case<uint8_t>(v1::SCALAR_KIND_UINT8),
        Case<int16_t>(v1::SCALAR_KIND_INT16),
        Case<uint16_t>(v1::SCALAR_KIND_UINT16),
        Case<int32_t>(v1::SCALAR_KIND_INT32),
        Case<uint32_t>(v1::SCALAR_KIND_UINT32),
        Case<int64_t>(v1::SCALAR_KIND_INT64),
        Case<uint64_t>(v1::SCALAR_KIND_UINT64),
        Case<size_t>(v1::SCALAR_KIND_SIZE_T),
        Case<ssize_t>(v1::SCALAR_KIND_SSIZE_T),
        Case<intptr_t>(v1::SCALAR_KIND_INTPTR_T),
        Case<uintptr_t>(v1::SCALAR_KIND_UINTPTR_T),
        Case<ptrdiff_t>(v1::SCALAR_KIND_PTRDIFF_T),
        Case<wchar_t>(v1::SCALAR_KIND_WCHAR_T),
        Case<char16_t>(v1::SCALAR_KIND_CHAR16_T),
        Case<char32_t>(v1::SCALAR_KIND_CHAR32_T)));

TEST_F(MarshalTest, OutOfRangeMessageNamesParameterValueAndRange) {
  absl::Status status = Encode(*Make(v1::SCALAR_KIND_INT), Int(3000000000),
                               "parameter 1 'x' of 'abs'");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_EQ(status.message(),
            "parameter 1 'x' of 'abs': value 3000000000 does not fit in int "
            "(range -2147483648..2147483647)");
}

TEST_F(MarshalTest, WrongKindMessage) {
  absl::Status status = Encode(*Make(v1::SCALAR_KIND_INT), String("five"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(status.message(),
            "parameter 1 'x': expected an integer for 'int', got a string");
  status = Encode(*Make(v1::SCALAR_KIND_DOUBLE), v1::Value());
  EXPECT_EQ(status.message(),
            "parameter 1 'x': expected a number for 'double', got no value");
  status = Encode(*Make(v1::SCALAR_KIND_INT), Double(1.0));
  EXPECT_THAT(status.message(), HasSubstr("got a floating-point number"));
  status = Encode(*Make(v1::SCALAR_KIND_VOID), Int(1));
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST_F(MarshalTest, Integers) {
  auto i32 = Make(v1::SCALAR_KIND_INT32);
  ASSERT_TRUE(Encode(*i32, Uint(5)).ok());
  EXPECT_EQ(As<int32_t>(), 5);
  ASSERT_TRUE(Encode(*i32, Int(-5)).ok());
  EXPECT_EQ(As<int32_t>(), -5);
  // Only the type's own bytes are written.
  auto u8 = Make(v1::SCALAR_KIND_UINT8);
  ASSERT_TRUE(Encode(*u8, Int(200)).ok());
  EXPECT_EQ(buffer_[0], 200);
  EXPECT_EQ(buffer_[1], 0xAB);
}

TEST_F(MarshalTest, Bool) {
  auto type = Make(v1::SCALAR_KIND_BOOL);
  ASSERT_TRUE(Encode(*type, Bool(true)).ok());
  EXPECT_TRUE(As<bool>());
  ASSERT_TRUE(Encode(*type, Int(0)).ok());
  EXPECT_FALSE(As<bool>());
  ASSERT_TRUE(Encode(*type, Uint(1)).ok());
  EXPECT_TRUE(As<bool>());
  EXPECT_EQ(GetErrorReason(Encode(*type, Int(2))),
            v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_EQ(Encode(*type, String("true")).message(),
            "parameter 1 'x': expected a boolean for 'bool', got a string");
  buffer_[0] = 1;
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(decoded->has_bool_value());
  EXPECT_TRUE(decoded->bool_value());
}

TEST_F(MarshalTest, CharactersFromOneCharacterStrings) {
  auto c = Make(v1::SCALAR_KIND_CHAR);
  ASSERT_TRUE(Encode(*c, String("A")).ok());
  EXPECT_EQ(As<char>(), 'A');
  absl::Status status = Encode(*c, String("\xC3\xA9"));  // é is U+00E9
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_THAT(status.message(), HasSubstr("character U+00E9 does not fit"));
  EXPECT_EQ(GetErrorReason(Encode(*c, String("AB"))),
            v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(GetErrorReason(Encode(*c, String(""))),
            v1::ERROR_REASON_TYPE_MISMATCH);
  ASSERT_TRUE(Encode(*c, Bytes("\xff")).ok());
  EXPECT_EQ(As<unsigned char>(), 0xFF);

  auto uc = Make(v1::SCALAR_KIND_UNSIGNED_CHAR);
  ASSERT_TRUE(Encode(*uc, String("\xC3\xA9")).ok());
  EXPECT_EQ(As<unsigned char>(), 0xE9);

  auto c32 = Make(v1::SCALAR_KIND_CHAR32_T);
  ASSERT_TRUE(Encode(*c32, String("\xF0\x9F\x98\x80")).ok());  // U+1F600
  EXPECT_EQ(As<char32_t>(), U'\U0001F600');
  auto c16 = Make(v1::SCALAR_KIND_CHAR16_T);
  EXPECT_EQ(GetErrorReason(Encode(*c16, String("\xF0\x9F\x98\x80"))),
            v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  // Plain integers do not take strings.
  EXPECT_EQ(GetErrorReason(Encode(*Make(v1::SCALAR_KIND_INT8), String("A"))),
            v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST_F(MarshalTest, FloatKeepsSpecialValuesExactly) {
  auto type = Make(v1::SCALAR_KIND_FLOAT);
  ASSERT_TRUE(Encode(*type, Double(1.5)).ok());
  EXPECT_EQ(As<float>(), 1.5f);
  ASSERT_TRUE(Encode(*type, Int(-7)).ok());
  EXPECT_EQ(As<float>(), -7.0f);

  ASSERT_TRUE(Encode(*type, Double(-0.0)).ok());
  EXPECT_EQ(As<uint32_t>(), 0x80000000u);
  ASSERT_TRUE(Encode(*type, Double(std::numeric_limits<double>::infinity())).ok());
  EXPECT_TRUE(std::isinf(As<float>()));
  EXPECT_GT(As<float>(), 0);
  ASSERT_TRUE(Encode(*type, Double(-std::numeric_limits<double>::infinity())).ok());
  EXPECT_LT(As<float>(), 0);
  ASSERT_TRUE(Encode(*type, Double(std::nan(""))).ok());
  EXPECT_TRUE(std::isnan(As<float>()));

  // FLT_MAX as a client would print it ("3.4028235e38") still fits.
  ASSERT_TRUE(Encode(*type, Double(3.4028235e38)).ok());
  EXPECT_EQ(As<float>(), std::numeric_limits<float>::max());
  absl::Status status = Encode(*type, Double(1e39));
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_THAT(status.message(), HasSubstr("does not fit in float"));
  EXPECT_FALSE(Encode(*type, Double(-1e39)).ok());

  // Decoding widens exactly, sign of zero included.
  float negative_zero = -0.0f;
  std::memcpy(buffer_, &negative_zero, sizeof(float));
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->double_value(), 0.0);
  EXPECT_TRUE(std::signbit(decoded->double_value()));
}

TEST_F(MarshalTest, DoubleKeepsSpecialValuesExactly) {
  auto type = Make(v1::SCALAR_KIND_DOUBLE);
  for (double v : {0.1, -0.0, 1e308, 5e-324, std::numeric_limits<double>::infinity(),
                   -std::numeric_limits<double>::infinity(), std::nan("")}) {
    ASSERT_TRUE(Encode(*type, Double(v)).ok());
    auto decoded = Decode(*type);
    ASSERT_TRUE(decoded.ok());
    uint64_t in, out;
    std::memcpy(&in, &v, 8);
    double got = decoded->double_value();
    std::memcpy(&out, &got, 8);
    EXPECT_EQ(in, out) << v;
  }
  ASSERT_TRUE(Encode(*type, Uint(uint64_t{1} << 53)).ok());
  EXPECT_EQ(As<double>(), 9007199254740992.0);
}

TEST_F(MarshalTest, LongDouble) {
  auto type = Make(v1::SCALAR_KIND_LONG_DOUBLE);
  ASSERT_TRUE(Encode(*type, Double(2.5)).ok());
  EXPECT_EQ(As<long double>(), 2.5L);
  ASSERT_TRUE(Encode(*type, Int(INT64_MAX)).ok());
  EXPECT_EQ(As<long double>(), static_cast<long double>(INT64_MAX));

  long double third = 1.0L / 3;
  v1::Value raw;
  raw.set_long_double_value(std::string(reinterpret_cast<const char*>(&third),
                                        sizeof(third)));
  ASSERT_TRUE(Encode(*type, raw).ok());
  EXPECT_EQ(As<long double>(), third);
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  // The result keeps every bit: bytes, nearest double, exact decimal.
  ASSERT_TRUE(decoded->has_long_double());
  EXPECT_EQ(decoded->long_double().approximate(), static_cast<double>(third));
  EXPECT_EQ(decoded->long_double().decimal(), "0.33333333333333333334");
  long double back;
  std::memcpy(&back, decoded->long_double().bytes().data(), sizeof(back));
  EXPECT_EQ(back, third);
  EXPECT_EQ(decoded->long_double().bytes().substr(10), std::string(6, '\0'));
  // And passes back unchanged, by its bytes or its decimal.
  v1::Value decimal;
  decimal.mutable_long_double()->set_decimal(decoded->long_double().decimal());
  ASSERT_TRUE(Encode(*type, decimal).ok());
  EXPECT_EQ(As<long double>(), third);
  ASSERT_TRUE(Encode(*type, *decoded).ok());
  EXPECT_EQ(As<long double>(), third);
  v1::Value approximate;
  approximate.mutable_long_double()->set_approximate(0.5);
  ASSERT_TRUE(Encode(*type, approximate).ok());
  EXPECT_EQ(As<long double>(), 0.5L);
  decimal.mutable_long_double()->set_decimal("1.5x");
  EXPECT_EQ(GetErrorReason(Encode(*type, decimal)),
            v1::ERROR_REASON_TYPE_MISMATCH);

  raw.set_long_double_value("abc");
  EXPECT_EQ(GetErrorReason(Encode(*type, raw)), v1::ERROR_REASON_TYPE_MISMATCH);
  // A long double for a double rounds, and must fit.
  ASSERT_TRUE(Encode(*Make(v1::SCALAR_KIND_DOUBLE), *decoded).ok());
  EXPECT_EQ(As<double>(), static_cast<double>(third));
  decimal.mutable_long_double()->set_decimal("1e4000");
  EXPECT_EQ(GetErrorReason(Encode(*Make(v1::SCALAR_KIND_DOUBLE), decimal)),
            v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
}

TEST_F(MarshalTest, ComplexLongDouble) {
  auto type = Make(v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE);
  v1::Value value;
  value.mutable_array_value()->add_elements()->set_double_value(1.5);
  value.mutable_array_value()->add_elements()->mutable_long_double()->set_decimal(
      "0.1");
  ASSERT_TRUE(Encode(*type, value).ok());
  long double parts[2];
  std::memcpy(parts, buffer_, sizeof(parts));
  EXPECT_EQ(parts[0], 1.5L);
  EXPECT_EQ(parts[1], 0.1L);
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  ASSERT_EQ(decoded->array_value().elements_size(), 2);
  EXPECT_EQ(decoded->array_value().elements(1).long_double().decimal(), "0.1");
}

TEST_F(MarshalTest, Complex) {
  auto type = Make(v1::SCALAR_KIND_COMPLEX_DOUBLE);
  v1::Value value;
  value.mutable_array_value()->add_elements()->set_double_value(1.5);
  value.mutable_array_value()->add_elements()->set_int_value(-2);
  ASSERT_TRUE(Encode(*type, value).ok());
  double parts[2];
  std::memcpy(parts, buffer_, sizeof(parts));
  EXPECT_EQ(parts[0], 1.5);
  EXPECT_EQ(parts[1], -2.0);
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  ASSERT_EQ(decoded->array_value().elements_size(), 2);
  EXPECT_EQ(decoded->array_value().elements(1).double_value(), -2.0);
  EXPECT_FALSE(Encode(*type, Double(1)).ok());
}

v1::TypeDescriptor StringType(v1::StringEncoding encoding =
                                  v1::STRING_ENCODING_UTF8) {
  v1::TypeDescriptor d;
  d.mutable_string()->set_encoding(encoding);
  d.mutable_string()->set_is_const(true);
  return d;
}

TEST_F(MarshalTest, Utf8StringsAreCopiedNulTerminated) {
  auto type = Make(StringType());
  const std::string text = "h\xC3\xA9llo \xF0\x9F\x98\x80";
  ASSERT_TRUE(Encode(*type, String(text)).ok());
  const char* copy = As<const char*>();
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(std::string(copy), text);
  EXPECT_NE(static_cast<const void*>(copy), static_cast<const void*>(text.data()));

  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->string_value(), text);

  ASSERT_TRUE(Encode(*type, String("")).ok());
  EXPECT_STREQ(As<const char*>(), "");
}

TEST_F(MarshalTest, EmbeddedNulIsRejectedWithItsOffset) {
  auto type = Make(StringType());
  absl::Status status = Encode(*type, String(std::string("abc\0def", 7)),
                               "parameter 1 's' of 'strlen'");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_THAT(status.message(),
              HasSubstr("parameter 1 's' of 'strlen': the string has a NUL "
                        "byte at offset 3"));
  // Bytes may hold NULs; they are copied and terminated.
  ASSERT_TRUE(Encode(*type, Bytes(std::string("ab\0c", 4))).ok());
  const char* copy = As<const char*>();
  EXPECT_EQ(std::memcmp(copy, "ab\0c\0", 5), 0);
}

TEST_F(MarshalTest, StringNullPointerAndErrors) {
  auto type = Make(StringType());
  ASSERT_TRUE(Encode(*type, Null()).ok());
  EXPECT_EQ(As<void*>(), nullptr);
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(decoded->has_null_value());

  char buffer[] = "in memory";
  resolver_.handles["mem_1"] = buffer;
  v1::Value pointer;
  pointer.mutable_pointer_value()->set_handle("mem_1");
  pointer.mutable_pointer_value()->set_offset(3);
  ASSERT_TRUE(Encode(*type, pointer).ok());
  EXPECT_EQ(As<char*>(), buffer + 3);

  pointer.mutable_pointer_value()->set_handle("mem_gone");
  absl::Status status = Encode(*type, pointer, "parameter 2 'dst'");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_HANDLE_INVALID);
  EXPECT_THAT(status.message(), HasSubstr("parameter 2 'dst'"));

  EXPECT_EQ(Encode(*type, Int(1)).message(),
            "parameter 1 'x': expected a string, bytes, a pointer or null for "
            "'const char *', got an integer");
}

TEST_F(MarshalTest, InvalidUtf8ComesBackAsBytes) {
  auto type = Make(StringType());
  const char* text = "ok\xff\xfe";
  std::memcpy(buffer_, &text, sizeof(text));
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->bytes_value(), "ok\xff\xfe");
  // Overlong encodings and surrogates are not UTF-8 either.
  const char* overlong = "\xC0\xAF";
  std::memcpy(buffer_, &overlong, sizeof(overlong));
  EXPECT_TRUE(Decode(*type)->has_bytes_value());
  const char* surrogate = "\xED\xA0\x80";
  std::memcpy(buffer_, &surrogate, sizeof(surrogate));
  EXPECT_TRUE(Decode(*type)->has_bytes_value());
}

TEST_F(MarshalTest, WideStrings) {
  const std::string text = "h\xC3\xA9 \xF0\x9F\x98\x80";  // "hé 😀"
  auto utf16 = Make(StringType(v1::STRING_ENCODING_UTF16));
  ASSERT_TRUE(Encode(*utf16, String(text)).ok());
  EXPECT_EQ(std::u16string(As<const char16_t*>()), u"h\u00e9 \U0001F600");
  auto decoded = Decode(*utf16);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->string_value(), text);

  auto utf32 = Make(StringType(v1::STRING_ENCODING_UTF32));
  ASSERT_TRUE(Encode(*utf32, String(text)).ok());
  EXPECT_EQ(std::u32string(As<const char32_t*>()), U"h\u00e9 \U0001F600");
  EXPECT_EQ(Decode(*utf32)->string_value(), text);

  auto wide = Make(StringType(v1::STRING_ENCODING_WCHAR));
  ASSERT_TRUE(Encode(*wide, String(text)).ok());
  EXPECT_EQ(std::wstring(As<const wchar_t*>()), L"h\u00e9 \U0001F600");
  EXPECT_EQ(Decode(*wide)->string_value(), text);

  // A lone surrogate is not text: the raw units come back.
  const char16_t lone[] = {u'a', 0xD800, 0};
  const char16_t* lone_pointer = lone;
  std::memcpy(buffer_, &lone_pointer, sizeof(lone_pointer));
  decoded = Decode(*utf16);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->bytes_value().size(), 4u);

  EXPECT_EQ(GetErrorReason(Encode(*utf16, String(std::string("a\0b", 3)))),
            v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST_F(MarshalTest, Latin1) {
  auto type = Make(StringType(v1::STRING_ENCODING_LATIN1));
  ASSERT_TRUE(Encode(*type, String("caf\xC3\xA9")).ok());
  EXPECT_STREQ(As<const char*>(), "caf\xE9");
  EXPECT_EQ(Decode(*type)->string_value(), "caf\xC3\xA9");
  absl::Status status = Encode(*type, String("\xE2\x82\xAC"));  // €
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_THAT(status.message(), HasSubstr("U+20AC at byte offset 0"));
}

TEST_F(MarshalTest, Pointers) {
  v1::TypeDescriptor d;
  d.mutable_pointer();
  auto type = Make(d);
  ASSERT_TRUE(Encode(*type, Null()).ok());
  EXPECT_EQ(As<void*>(), nullptr);
  EXPECT_TRUE(Decode(*type)->has_null_value());

  int target = 0;
  resolver_.handles["mem_a"] = &target;
  v1::Value handle;
  handle.mutable_pointer_value()->set_handle("mem_a");
  ASSERT_TRUE(Encode(*type, handle).ok());
  EXPECT_EQ(As<void*>(), &target);

  v1::Value address;
  address.mutable_pointer_value()->set_address(reinterpret_cast<uintptr_t>(&target));
  ASSERT_TRUE(Encode(*type, address).ok());
  EXPECT_EQ(As<void*>(), &target);
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->pointer_value().handle(), "borrowed");
  EXPECT_EQ(decoded->pointer_value().address(),
            reinterpret_cast<uintptr_t>(&target));

  EXPECT_EQ(Encode(*type, Int(1234)).message(),
            "parameter 1 'x': expected a pointer or null for 'void *', got an "
            "integer");
}

TEST_F(MarshalTest, FunctionPointers) {
  v1::TypeDescriptor d;
  d.mutable_function_pointer();
  auto type = Make(d);
  ASSERT_TRUE(Encode(*type, Null()).ok());
  EXPECT_EQ(As<void*>(), nullptr);
  v1::Value callback;
  callback.set_callback_handle("cb_1");
  absl::Status status = Encode(*type, callback);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_UNSUPPORTED);
  EXPECT_THAT(status.message(), HasSubstr("callbacks are not supported yet"));
}

TEST_F(MarshalTest, InPointerTakesAValueForATemporary) {
  v1::TypeDescriptor d;
  *d.mutable_pointer()->mutable_pointee() = Scalar(v1::SCALAR_KIND_INT);
  d.mutable_pointer()->set_direction(v1::POINTER_DIRECTION_IN);
  auto type = Make(d);
  ASSERT_TRUE(Encode(*type, Int(77)).ok());
  EXPECT_EQ(*As<int*>(), 77);
  EXPECT_EQ(GetErrorReason(Encode(*type, Int(1LL << 40))),
            v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_EQ(GetErrorReason(Encode(*type, v1::Value())),
            v1::ERROR_REASON_TYPE_MISMATCH);
  ASSERT_TRUE(Encode(*type, Null()).ok());
  EXPECT_EQ(As<int*>(), nullptr);
}

v1::TypeDescriptor ColorEnum() {
  v1::TypeDescriptor d;
  v1::EnumType* e = d.mutable_enum_type();
  e->set_name("color");
  for (auto [name, value] : {std::pair<const char*, int>{"RED", 0},
                             {"GREEN", 5}, {"BLUE", -1}}) {
    v1::EnumConstant* constant = e->add_constants();
    constant->set_name(name);
    constant->set_value(value);
  }
  return d;
}

TEST_F(MarshalTest, Enums) {
  auto type = Make(ColorEnum());
  v1::Value green;
  green.set_enum_value("GREEN");
  ASSERT_TRUE(Encode(*type, green).ok());
  EXPECT_EQ(As<int>(), 5);
  ASSERT_TRUE(Encode(*type, Int(-1)).ok());
  EXPECT_EQ(As<int>(), -1);
  // A constant's value comes back by name, any other as a number.
  EXPECT_EQ(Decode(*type)->enum_value(), "BLUE");
  ASSERT_TRUE(Encode(*type, Int(7)).ok());
  EXPECT_EQ(Decode(*type)->int_value(), 7);
  v1::Value purple;
  purple.set_enum_value("PURPLE");
  absl::Status status = Encode(*type, purple);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(status.message(),
            "parameter 1 'x': 'PURPLE' is not a constant of enum color (its "
            "constants: RED, GREEN, BLUE)");
}

v1::TypeDescriptor PointStruct() {
  v1::TypeDescriptor d;
  d.mutable_record()->set_name("point");
  for (const char* name : {"x", "y"}) {
    v1::Field* field = d.mutable_record()->add_fields();
    field->set_name(name);
    field->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  }
  v1::Field* label = d.mutable_record()->add_fields();
  label->set_name("label");
  label->mutable_type()->mutable_string();
  return d;
}

TEST_F(MarshalTest, Records) {
  struct Point {
    int x;
    int y;
    const char* label;
  };
  auto type = Make(PointStruct());
  v1::Value value;
  (*value.mutable_record_value()->mutable_fields())["x"] = Int(3);
  (*value.mutable_record_value()->mutable_fields())["label"] = String("p");
  ASSERT_TRUE(Encode(*type, value).ok());
  Point point = As<Point>();
  EXPECT_EQ(point.x, 3);
  EXPECT_EQ(point.y, 0);  // unset members are zero
  EXPECT_STREQ(point.label, "p");
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->record_value().fields().at("x").int_value(), 3);
  EXPECT_EQ(decoded->record_value().fields().at("label").string_value(), "p");

  (*value.mutable_record_value()->mutable_fields())["z"] = Int(1);
  EXPECT_EQ(Encode(*type, value).message(),
            "parameter 1 'x': 'struct point' has no member 'z'");
  value.mutable_record_value()->mutable_fields()->erase("z");
  (*value.mutable_record_value()->mutable_fields())["y"] = String("no");
  EXPECT_EQ(Encode(*type, value).message(),
            "parameter 1 'x', member 'y': expected an integer for 'int', got "
            "a string");
  EXPECT_EQ(GetErrorReason(Encode(*type, Int(1))),
            v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST_F(MarshalTest, UnionsTakeOneMemberAndDecodeEveryMember) {
  v1::TypeDescriptor d;
  d.mutable_record()->set_name("u");
  d.mutable_record()->set_kind(v1::RECORD_KIND_UNION);
  v1::Field* i = d.mutable_record()->add_fields();
  i->set_name("i");
  i->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  v1::Field* f = d.mutable_record()->add_fields();
  f->set_name("f");
  f->mutable_type()->set_scalar(v1::SCALAR_KIND_FLOAT);
  auto type = Make(d);
  v1::Value value;
  (*value.mutable_record_value()->mutable_fields())["f"] = Double(1.0);
  ASSERT_TRUE(Encode(*type, value).ok());
  EXPECT_EQ(As<float>(), 1.0f);
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->record_value().union_bytes().size(), 4u);
  EXPECT_EQ(decoded->record_value().fields().at("f").double_value(), 1.0);
  EXPECT_EQ(decoded->record_value().fields().at("i").int_value(), 0x3f800000);
  (*value.mutable_record_value()->mutable_fields())["i"] = Int(1);
  EXPECT_THAT(Encode(*type, value).message(),
              HasSubstr("sets exactly one member, got 2"));
  // A decoded union passes back as its bytes.
  std::memset(buffer_, 0, sizeof(buffer_));
  ASSERT_TRUE(Encode(*type, *decoded).ok());
  EXPECT_EQ(As<float>(), 1.0f);
  v1::Value short_bytes;
  short_bytes.mutable_record_value()->set_union_bytes("ab");
  EXPECT_EQ(GetErrorReason(Encode(*type, short_bytes)),
            v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST_F(MarshalTest, Arrays) {
  v1::TypeDescriptor d;
  d.mutable_array()->mutable_element()->set_scalar(v1::SCALAR_KIND_SHORT);
  d.mutable_array()->set_length(3);
  auto type = Make(d);
  v1::Value value;
  for (int v : {1, -2, 3}) {
    value.mutable_array_value()->add_elements()->set_int_value(v);
  }
  ASSERT_TRUE(Encode(*type, value).ok());
  short shorts[3];
  std::memcpy(shorts, buffer_, sizeof(shorts));
  EXPECT_EQ(shorts[1], -2);
  auto decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok());
  ASSERT_EQ(decoded->array_value().elements_size(), 3);
  EXPECT_EQ(decoded->array_value().elements(2).int_value(), 3);

  value.mutable_array_value()->add_elements()->set_int_value(4);
  EXPECT_EQ(Encode(*type, value).message(),
            "parameter 1 'x': 'short [3]' has 3 elements, got 4");
  value.mutable_array_value()->mutable_elements()->RemoveLast();
  value.mutable_array_value()->mutable_elements(1)->set_int_value(1 << 20);
  EXPECT_THAT(Encode(*type, value).message(),
              HasSubstr("parameter 1 'x', element 1: value 1048576"));

  v1::TypeDescriptor chars;
  chars.mutable_array()->mutable_element()->set_scalar(v1::SCALAR_KIND_CHAR);
  chars.mutable_array()->set_length(8);
  auto char_array = Make(chars);
  ASSERT_TRUE(Encode(*char_array, String("hello")).ok());
  EXPECT_EQ(std::memcmp(buffer_, "hello\0\0\0", 8), 0);
  EXPECT_EQ(Decode(*char_array)->bytes_value(), std::string("hello\0\0\0", 8));
  EXPECT_EQ(GetErrorReason(Encode(*char_array, String("too long!"))),
            v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
}

TEST(CallArena, AlignsAndZeroes) {
  CallArena arena;
  for (size_t alignment : {1, 2, 4, 8, 16}) {
    for (size_t size : {0, 1, 3, 17}) {
      unsigned char* p =
          static_cast<unsigned char*>(arena.Allocate(size, alignment));
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u);
      for (size_t i = 0; i < size; ++i) EXPECT_EQ(p[i], 0);
    }
  }
}

}  // namespace
}  // namespace ffid::ffi

namespace ffid::ffi {
namespace {

// The compiler's bitfield layout, to check ffid's against.
struct Bits {
  unsigned a : 3;
  int b : 5;
  unsigned char c : 7;
  long long d : 40;
  bool e : 1;
  short f : 9;
};
struct __attribute__((packed)) PackedBits {
  char x;
  unsigned y : 20;
  long long z : 33;
};

v1::TypeDescriptor BitsType(bool packed) {
  v1::TypeDescriptor d;
  v1::RecordType* record = d.mutable_record();
  record->set_name(packed ? "packed_bits" : "bits");
  record->set_packed(packed);
  auto add = [&](const char* name, v1::ScalarKind kind, uint32_t width) {
    v1::Field* field = record->add_fields();
    field->set_name(name);
    field->mutable_type()->set_scalar(kind);
    field->set_bit_width(width);
  };
  if (packed) {
    add("x", v1::SCALAR_KIND_CHAR, 0);
    add("y", v1::SCALAR_KIND_UNSIGNED_INT, 20);
    add("z", v1::SCALAR_KIND_LONG_LONG, 33);
  } else {
    add("a", v1::SCALAR_KIND_UNSIGNED_INT, 3);
    add("b", v1::SCALAR_KIND_INT, 5);
    add("c", v1::SCALAR_KIND_UNSIGNED_CHAR, 7);
    add("d", v1::SCALAR_KIND_LONG_LONG, 40);
    add("e", v1::SCALAR_KIND_BOOL, 1);
    add("f", v1::SCALAR_KIND_SHORT, 9);
  }
  return d;
}

v1::Value Fields(std::vector<std::pair<std::string, v1::Value>> fields) {
  v1::Value value;
  for (auto& [name, field] : fields) {
    (*value.mutable_record_value()->mutable_fields())[name] = field;
  }
  return value;
}

TEST_F(MarshalTest, BitfieldsMatchTheCompilersLayout) {
  auto type = Make(BitsType(false));
  EXPECT_EQ(type->size(), sizeof(Bits));
  EXPECT_EQ(type->alignment(), alignof(Bits));
  Bits native{};
  native.a = 5;
  native.b = -9;
  native.c = 100;
  native.d = -123456789012LL;
  native.e = 1;
  native.f = -200;
  std::memcpy(buffer_, &native, sizeof(native));
  absl::StatusOr<v1::Value> decoded = Decode(*type);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const auto& fields = decoded->record_value().fields();
  EXPECT_EQ(fields.at("a").uint_value(), 5u);
  EXPECT_EQ(fields.at("b").int_value(), -9);
  EXPECT_EQ(fields.at("c").uint_value(), 100u);
  EXPECT_EQ(fields.at("d").int_value(), -123456789012LL);
  EXPECT_EQ(fields.at("e").bool_value(), true);
  EXPECT_EQ(fields.at("f").int_value(), -200);

  ASSERT_TRUE(Encode(*type, Fields({{"a", Uint(7)}, {"b", Int(15)},
                                    {"c", Uint(1)}, {"d", Int(-1)},
                                    {"e", Bool(false)}, {"f", Int(255)}}))
                  .ok());
  Bits back;
  std::memcpy(&back, buffer_, sizeof(back));
  EXPECT_EQ(back.a, 7u);
  EXPECT_EQ(back.b, 15);
  EXPECT_EQ(back.c, 1u);
  EXPECT_EQ(back.d, -1);
  EXPECT_EQ(back.e, 0);
  EXPECT_EQ(back.f, 255);

  auto packed = Make(BitsType(true));
  EXPECT_EQ(packed->size(), sizeof(PackedBits));
  EXPECT_EQ(packed->alignment(), alignof(PackedBits));
  ASSERT_TRUE(Encode(*packed, Fields({{"x", Int(-3)}, {"y", Uint(0xfffff)},
                                      {"z", Int(-4294967296LL)}}))
                  .ok());
  PackedBits p;
  std::memcpy(&p, buffer_, sizeof(p));
  EXPECT_EQ(p.x, -3);
  EXPECT_EQ(p.y, 0xfffffu);
  EXPECT_EQ(p.z, -4294967296LL);
}

TEST_F(MarshalTest, BitfieldOverflowIsASpecificError) {
  auto type = Make(BitsType(false));
  absl::Status status = Encode(*type, Fields({{"a", Uint(8)}}), "arg");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_EQ(status.message(),
            "arg, member 'a': bitfield 'a' of 'struct bits' is 3 bits wide: 8 "
            "does not fit (range 0..7)");
  status = Encode(*type, Fields({{"b", Int(-17)}}), "arg");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_THAT(status.message(), HasSubstr("range -16..15"));
  status = Encode(*type, Fields({{"nope", Int(1)}}), "arg");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(status.message(), "arg: 'struct bits' has no member 'nope'");
}

}  // namespace
}  // namespace ffid::ffi
