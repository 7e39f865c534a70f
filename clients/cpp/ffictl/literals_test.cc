#include "clients/cpp/ffictl/literals.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "clients/cpp/ffid/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::ffictl {
namespace {

using ::testing::HasSubstr;

v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor type;
  type.set_scalar(kind);
  return type;
}

v1::TypeDescriptor CString() {
  v1::TypeDescriptor type;
  type.mutable_string()->set_is_const(true);
  return type;
}

v1::TypeDescriptor VoidPointer() {
  v1::TypeDescriptor type;
  type.mutable_pointer();
  return type;
}

IntegerLiteral Int(absl::string_view text) {
  absl::StatusOr<IntegerLiteral> literal = ParseIntegerLiteral(text);
  EXPECT_TRUE(literal.ok()) << text << ": " << literal.status();
  return literal.value_or(IntegerLiteral{});
}

std::string Reason(const absl::Status& status) {
  return client::ErrorReason(status);
}

TEST(ParseIntegerLiteralTest, Bases) {
  EXPECT_EQ(Int("42").magnitude, 42u);
  EXPECT_EQ(Int("0x2a").magnitude, 42u);
  EXPECT_EQ(Int("0X2A").magnitude, 42u);
  EXPECT_EQ(Int("052").magnitude, 42u);
  EXPECT_EQ(Int("0b101010").magnitude, 42u);
  EXPECT_EQ(Int("0").magnitude, 0u);
  EXPECT_EQ(Int("0xffffffffffffffff").magnitude,
            std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(Int("18446744073709551615").magnitude,
            std::numeric_limits<uint64_t>::max());
}

TEST(ParseIntegerLiteralTest, Signs) {
  IntegerLiteral minus_seven = Int("-7");
  EXPECT_TRUE(minus_seven.negative);
  EXPECT_EQ(minus_seven.magnitude, 7u);
  EXPECT_FALSE(Int("+7").negative);
  EXPECT_FALSE(Int("-0").negative);
  IntegerLiteral min = Int("-0x8000000000000000");
  EXPECT_TRUE(min.negative);
  EXPECT_EQ(min.magnitude, uint64_t{1} << 63);
}

TEST(ParseIntegerLiteralTest, Suffixes) {
  EXPECT_EQ(Int("10u").magnitude, 10u);
  EXPECT_TRUE(Int("10u").unsigned_suffix);
  EXPECT_EQ(Int("10L").long_suffix, 1);
  EXPECT_EQ(Int("10ll").long_suffix, 2);
  EXPECT_EQ(Int("10ULL").long_suffix, 2);
  EXPECT_TRUE(Int("10llu").unsigned_suffix);
  EXPECT_EQ(Int("0xffUL").magnitude, 255u);
  EXPECT_FALSE(ParseIntegerLiteral("10lL").ok());
  EXPECT_FALSE(ParseIntegerLiteral("10uu").ok());
}

TEST(ParseIntegerLiteralTest, CharacterLiterals) {
  EXPECT_EQ(Int("'a'").magnitude, 97u);
  EXPECT_EQ(Int("'\\n'").magnitude, 10u);
  EXPECT_EQ(Int("'\\0'").magnitude, 0u);
  EXPECT_EQ(Int("'\\x41'").magnitude, 0x41u);
  EXPECT_EQ(Int("'\\101'").magnitude, 0101u);
  EXPECT_EQ(Int("'\\''").magnitude, 39u);
  EXPECT_EQ(Int("'\\u00e9'").magnitude, 0xe9u);
  EXPECT_EQ(Int("'\xc3\xa9'").magnitude, 0xe9u);  // 'é' in UTF-8
  EXPECT_EQ(Int("-'a'").magnitude, 97u);
  EXPECT_FALSE(ParseIntegerLiteral("'ab'").ok());
  EXPECT_FALSE(ParseIntegerLiteral("''").ok());
  EXPECT_FALSE(ParseIntegerLiteral("'a").ok());
}

TEST(ParseIntegerLiteralTest, Rejects) {
  for (const char* text : {"", "-", "abc", "12abc", "0x", "0b", "0b102",
                           "089", "1.5", "1e3", "--1", "0x1g", " 1"}) {
    absl::StatusOr<IntegerLiteral> literal = ParseIntegerLiteral(text);
    EXPECT_FALSE(literal.ok()) << text;
    EXPECT_EQ(Reason(literal.status()), "TYPE_MISMATCH") << text;
  }
}

TEST(ParseIntegerLiteralTest, BeyondSixtyFourBits) {
  absl::StatusOr<IntegerLiteral> literal =
      ParseIntegerLiteral("18446744073709551616");
  ASSERT_FALSE(literal.ok());
  EXPECT_EQ(Reason(literal.status()), "VALUE_OUT_OF_RANGE");
  EXPECT_THAT(literal.status().message(), HasSubstr("18446744073709551616"));
}

TEST(ParseDoubleLiteralTest, Forms) {
  EXPECT_EQ(*ParseDoubleLiteral("0.5"), 0.5);
  EXPECT_EQ(*ParseDoubleLiteral("1e-3"), 1e-3);
  EXPECT_EQ(*ParseDoubleLiteral("1.5f"), 1.5);
  EXPECT_EQ(*ParseDoubleLiteral(".25"), 0.25);
  EXPECT_EQ(*ParseDoubleLiteral("-2.5E+2"), -250.0);
  EXPECT_EQ(*ParseDoubleLiteral("0x1.8p1"), 3.0);
  EXPECT_EQ(*ParseDoubleLiteral("0x10"), 16.0);
  EXPECT_EQ(*ParseDoubleLiteral("010"), 8.0);  // octal, as in C
  EXPECT_EQ(*ParseDoubleLiteral("7"), 7.0);
  EXPECT_EQ(*ParseDoubleLiteral("'a'"), 97.0);
  EXPECT_EQ(*ParseDoubleLiteral("1.7976931348623157e308"),
            std::numeric_limits<double>::max());
  EXPECT_EQ(*ParseDoubleLiteral("4.9e-324"),
            std::numeric_limits<double>::denorm_min());
}

TEST(ParseDoubleLiteralTest, SpecialValues) {
  EXPECT_TRUE(std::isinf(*ParseDoubleLiteral("inf")));
  EXPECT_GT(*ParseDoubleLiteral("INF"), 0);
  EXPECT_LT(*ParseDoubleLiteral("-inf"), 0);
  EXPECT_TRUE(std::isinf(*ParseDoubleLiteral("infinity")));
  EXPECT_TRUE(std::isnan(*ParseDoubleLiteral("nan")));
  EXPECT_TRUE(std::isnan(*ParseDoubleLiteral("NaN")));
  const double negative_zero = *ParseDoubleLiteral("-0.0");
  EXPECT_EQ(negative_zero, 0.0);
  EXPECT_TRUE(std::signbit(negative_zero));
  EXPECT_TRUE(std::signbit(*ParseDoubleLiteral("-0")));
  EXPECT_FALSE(std::signbit(*ParseDoubleLiteral("0.0")));
}

TEST(ParseDoubleLiteralTest, Rejects) {
  for (const char* text : {"", "abc", "1.5.5", "1e", "0x", "--1", "1,5",
                           "nanx", "+-1", "1.5ff"}) {
    absl::StatusOr<double> value = ParseDoubleLiteral(text);
    EXPECT_FALSE(value.ok()) << text;
    EXPECT_EQ(Reason(value.status()), "TYPE_MISMATCH") << text;
  }
  absl::StatusOr<double> huge = ParseDoubleLiteral("1e400");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(Reason(huge.status()), "VALUE_OUT_OF_RANGE");
}

TEST(ParseFloatLiteralTest, RoundsOnceAndChecksRange) {
  EXPECT_EQ(*ParseFloatLiteral("0.1"), 0.1f);
  EXPECT_EQ(*ParseFloatLiteral("3.4028234663852886e38"),
            std::numeric_limits<float>::max());
  absl::StatusOr<float> huge = ParseFloatLiteral("1e39");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(Reason(huge.status()), "VALUE_OUT_OF_RANGE");
  EXPECT_THAT(huge.status().message(), HasSubstr("float"));
  EXPECT_TRUE(std::isinf(*ParseFloatLiteral("-inf")));
}

TEST(ParseStringLiteralTest, Escapes) {
  EXPECT_EQ(*ParseStringLiteral("\"hello\""), "hello");
  EXPECT_EQ(*ParseStringLiteral("\"\""), "");
  EXPECT_EQ(*ParseStringLiteral("\"a\\tb\""), "a\tb");
  EXPECT_EQ(*ParseStringLiteral("\"\\\"q\\\"\""), "\"q\"");
  EXPECT_EQ(*ParseStringLiteral("\"\\\\\""), "\\");
  EXPECT_EQ(*ParseStringLiteral("\"\\x41\\102\""), "AB");
  EXPECT_EQ(*ParseStringLiteral("\"\\u00e9\""), "\xc3\xa9");
  EXPECT_EQ(*ParseStringLiteral("\"\\u2713\""), "\xe2\x9c\x93");
  EXPECT_EQ(*ParseStringLiteral("\"\\U0001F600\""), "\xf0\x9f\x98\x80");
  EXPECT_EQ(*ParseStringLiteral("\"h\xc3\xa9llo\""), "h\xc3\xa9llo");
}

TEST(ParseStringLiteralTest, Rejects) {
  for (const char* text : {"\"abc", "abc\"", "\"a\"b\"", "\"\\q\"",
                           "\"\\u12\"", "\"\\uD800\"", "\"\\x\"",
                           "\"\\x100\"", "\"\\"}) {
    EXPECT_FALSE(ParseStringLiteral(text).ok()) << text;
  }
}

TEST(ParseLiteralTest, SignedIntegers) {
  absl::StatusOr<v1::Value> value =
      ParseLiteral("-9000000000", Scalar(v1::SCALAR_KIND_LONG));
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->int_value(), -9000000000);
  EXPECT_EQ(ParseLiteral("-0x8000000000000000", Scalar(v1::SCALAR_KIND_INT64))
                ->int_value(),
            std::numeric_limits<int64_t>::min());
  EXPECT_EQ(ParseLiteral("0x7fffffffffffffff", Scalar(v1::SCALAR_KIND_INT64))
                ->int_value(),
            std::numeric_limits<int64_t>::max());
  absl::StatusOr<v1::Value> too_big =
      ParseLiteral("0x8000000000000000", Scalar(v1::SCALAR_KIND_INT64));
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(Reason(too_big.status()), "VALUE_OUT_OF_RANGE");
  // Width-dependent ranges are the daemon's to check.
  EXPECT_EQ(ParseLiteral("300", Scalar(v1::SCALAR_KIND_INT8))->int_value(),
            300);
}

TEST(ParseLiteralTest, UnsignedIntegers) {
  EXPECT_EQ(ParseLiteral("0xffffffffffffffff", Scalar(v1::SCALAR_KIND_UINT64))
                ->uint_value(),
            std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(ParseLiteral("5", Scalar(v1::SCALAR_KIND_SIZE_T))->uint_value(),
            5u);
  // A negative value for an unsigned type goes to the daemon, which rejects
  // it with the parameter's range.
  EXPECT_EQ(ParseLiteral("-1", Scalar(v1::SCALAR_KIND_UNSIGNED_INT))
                ->int_value(),
            -1);
}

TEST(ParseLiteralTest, Characters) {
  EXPECT_EQ(ParseLiteral("'A'", Scalar(v1::SCALAR_KIND_CHAR))->int_value(), 65);
  EXPECT_EQ(ParseLiteral("A", Scalar(v1::SCALAR_KIND_CHAR))->int_value(), 65);
  EXPECT_EQ(ParseLiteral("7", Scalar(v1::SCALAR_KIND_CHAR))->int_value(), 7);
  EXPECT_EQ(ParseLiteral("'A'", Scalar(v1::SCALAR_KIND_INT))->int_value(), 65);
  EXPECT_FALSE(ParseLiteral("A", Scalar(v1::SCALAR_KIND_INT)).ok());
}

TEST(ParseLiteralTest, Bools) {
  EXPECT_TRUE(ParseLiteral("true", Scalar(v1::SCALAR_KIND_BOOL))->bool_value());
  EXPECT_FALSE(
      ParseLiteral("false", Scalar(v1::SCALAR_KIND_BOOL))->bool_value());
  EXPECT_TRUE(ParseLiteral("1", Scalar(v1::SCALAR_KIND_BOOL))->bool_value());
  EXPECT_FALSE(ParseLiteral("0", Scalar(v1::SCALAR_KIND_BOOL))->bool_value());
  EXPECT_FALSE(ParseLiteral("2", Scalar(v1::SCALAR_KIND_BOOL)).ok());
  EXPECT_FALSE(ParseLiteral("-1", Scalar(v1::SCALAR_KIND_BOOL)).ok());
  EXPECT_FALSE(ParseLiteral("yes", Scalar(v1::SCALAR_KIND_BOOL)).ok());
}

TEST(ParseLiteralTest, Floating) {
  absl::StatusOr<v1::Value> value =
      ParseLiteral("0.5", Scalar(v1::SCALAR_KIND_DOUBLE));
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(value->double_value(), 0.5);
  EXPECT_EQ(ParseLiteral("0.1", Scalar(v1::SCALAR_KIND_FLOAT))->double_value(),
            static_cast<double>(0.1f));
  absl::StatusOr<v1::Value> bad =
      ParseLiteral("abc", Scalar(v1::SCALAR_KIND_DOUBLE));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(Reason(bad.status()), "TYPE_MISMATCH");
  EXPECT_FALSE(ParseLiteral("1.5", Scalar(v1::SCALAR_KIND_INT)).ok());
}

TEST(ParseLiteralTest, LongDouble) {
  absl::StatusOr<v1::Value> value =
      ParseLiteral("0.1L", Scalar(v1::SCALAR_KIND_LONG_DOUBLE));
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_EQ(value->long_double_value().size(), 16u);
  long double decoded = 0;
  std::memcpy(&decoded, value->long_double_value().data(), sizeof(decoded));
  EXPECT_EQ(decoded, 0.1L);
}

TEST(ParseLiteralTest, Strings) {
  EXPECT_EQ(ParseLiteral("hello", CString())->string_value(), "hello");
  EXPECT_EQ(ParseLiteral("-7", CString())->string_value(), "-7");
  EXPECT_EQ(ParseLiteral("0", CString())->string_value(), "0");
  EXPECT_EQ(ParseLiteral("\"a\\tb\"", CString())->string_value(), "a\tb");
  EXPECT_EQ(ParseLiteral("\"NULL\"", CString())->string_value(), "NULL");
  EXPECT_TRUE(ParseLiteral("NULL", CString())->has_null_value());
  EXPECT_TRUE(ParseLiteral("null", CString())->has_null_value());
  EXPECT_FALSE(ParseLiteral("\"open", CString()).ok());
}

TEST(ParseLiteralTest, Pointers) {
  EXPECT_TRUE(ParseLiteral("NULL", VoidPointer())->has_null_value());
  EXPECT_TRUE(ParseLiteral("null", VoidPointer())->has_null_value());
  EXPECT_TRUE(ParseLiteral("0", VoidPointer())->has_null_value());
  absl::StatusOr<v1::Value> address = ParseLiteral("0x7f00", VoidPointer());
  ASSERT_TRUE(address.ok());
  EXPECT_EQ(address->pointer_value().address(), 0x7f00u);
  absl::StatusOr<v1::Value> handle =
      ParseLiteral("mem_0123abcd_00ff+8", VoidPointer());
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(handle->pointer_value().handle(), "mem_0123abcd_00ff");
  EXPECT_EQ(handle->pointer_value().offset(), 8u);
  absl::StatusOr<v1::Value> bad = ParseLiteral("hello", VoidPointer());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(Reason(bad.status()), "TYPE_MISMATCH");
  EXPECT_FALSE(ParseLiteral("-1", VoidPointer()).ok());
}

TEST(ParseLiteralTest, Initializers) {
  v1::TypeDescriptor record;
  record.mutable_record()->set_name("point");
  for (const char* name : {"x", "y"}) {
    v1::Field* field = record.mutable_record()->add_fields();
    field->set_name(name);
    field->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  }
  absl::StatusOr<v1::Value> value = ParseLiteral("1", record);
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(Reason(value.status()), "TYPE_MISMATCH");
  EXPECT_THAT(value.status().message(), HasSubstr("not an initializer"));

  value = ParseLiteral("{ 1, -2 }", record);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->record_value().fields().at("y").int_value(), -2);
  value = ParseLiteral("{.y = 5}", record);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->record_value().fields().count("x"), 0u);
  value = ParseLiteral("{1, 2, 3}", record);
  EXPECT_EQ(Reason(value.status()), "TYPE_MISMATCH");
  EXPECT_THAT(value.status().message(),
              HasSubstr("too many initializers for 'struct point': 3 given, "
                        "it has 2 members"));
  value = ParseLiteral("{.z = 1}", record);
  EXPECT_THAT(value.status().message(),
              HasSubstr("'struct point' has no member 'z' (its members: x, "
                        "y)"));

  v1::TypeDescriptor array;
  array.mutable_array()->mutable_element()->set_scalar(v1::SCALAR_KIND_SHORT);
  array.mutable_array()->set_length(3);
  value = ParseLiteral("{7, 8}", array);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->array_value().elements_size(), 3);
  EXPECT_EQ(value->array_value().elements(2).int_value(), 0);
  EXPECT_THAT(ParseLiteral("{1, 2, 3, 4}", array).status().message(),
              HasSubstr("too many initializers"));
  v1::TypeDescriptor nested;
  v1::Field* inner = nested.mutable_record()->add_fields();
  inner->set_name("p");
  *inner->mutable_type() = record;
  v1::Field* label = nested.mutable_record()->add_fields();
  label->set_name("label");
  label->mutable_type()->mutable_string();
  value = ParseLiteral("{{1, 2}, \"a, b\"}", nested);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->record_value().fields().at("label").string_value(),
            "a, b");
}

v1::FunctionType Signature(std::vector<std::pair<std::string, v1::TypeDescriptor>>
                               parameters,
                           bool variadic = false) {
  v1::FunctionType type;
  type.mutable_return_type()->set_scalar(v1::SCALAR_KIND_INT);
  for (auto& [name, parameter_type] : parameters) {
    v1::Parameter* parameter = type.add_parameters();
    parameter->set_name(name);
    *parameter->mutable_type() = parameter_type;
  }
  type.set_variadic(variadic);
  return type;
}

TEST(ConvertArgumentsTest, ConvertsEachParameter) {
  v1::FunctionType type =
      Signature({{"x", Scalar(v1::SCALAR_KIND_DOUBLE)}, {"s", CString()}});
  absl::StatusOr<ConvertedArguments> converted =
      ConvertArguments("f", type, {"-7", "-7"});
  ASSERT_TRUE(converted.ok()) << converted.status();
  ASSERT_EQ(converted->values.size(), 2u);
  EXPECT_EQ(converted->values[0].double_value(), -7.0);
  EXPECT_EQ(converted->values[1].string_value(), "-7");
  EXPECT_TRUE(converted->variadic_types.empty());
}

TEST(ConvertArgumentsTest, WrongCountNamesTheSignature) {
  v1::FunctionType type = Signature({{"x", Scalar(v1::SCALAR_KIND_DOUBLE)}});
  absl::StatusOr<ConvertedArguments> converted =
      ConvertArguments("cos", type, {"1", "2"});
  ASSERT_FALSE(converted.ok());
  EXPECT_EQ(Reason(converted.status()), "ARGUMENT_COUNT");
  EXPECT_EQ(converted.status().message(),
            "'cos' takes 1 argument (double) but 2 were given");
  converted = ConvertArguments("cos", type, {});
  ASSERT_FALSE(converted.ok());
  EXPECT_EQ(converted.status().message(),
            "'cos' takes 1 argument (double) but 0 were given");
}

TEST(ConvertArgumentsTest, BadLiteralNamesTheParameter) {
  v1::FunctionType type = Signature(
      {{"", Scalar(v1::SCALAR_KIND_INT)}, {"x", Scalar(v1::SCALAR_KIND_DOUBLE)}});
  absl::StatusOr<ConvertedArguments> converted =
      ConvertArguments("f", type, {"1", "abc"});
  ASSERT_FALSE(converted.ok());
  EXPECT_EQ(Reason(converted.status()), "TYPE_MISMATCH");
  EXPECT_EQ(converted.status().message(),
            "parameter 2 'x' of 'f' (double): abc is not a floating-point "
            "literal");
  converted = ConvertArguments("f", type, {"x", "1"});
  ASSERT_FALSE(converted.ok());
  EXPECT_THAT(converted.status().message(),
              HasSubstr("parameter 1 of 'f' (int): x is not an integer"));
}

TEST(ConvertArgumentsTest, VariadicArgumentsArePromoted) {
  v1::FunctionType type =
      Signature({{"n", Scalar(v1::SCALAR_KIND_INT)}}, /*variadic=*/true);
  absl::StatusOr<ConvertedArguments> converted = ConvertArguments(
      "f", type,
      {"5", "1", "-2", "9000000000", "1.5", "word", "\"q s\"", "NULL", "'a'",
       "3u", "4l", "18446744073709551615"});
  ASSERT_TRUE(converted.ok()) << converted.status();
  ASSERT_EQ(converted->variadic_types.size(), 11u);
  auto kind = [&](int i) {
    return converted->variadic_types[i].scalar();
  };
  EXPECT_EQ(kind(0), v1::SCALAR_KIND_INT);
  EXPECT_EQ(kind(1), v1::SCALAR_KIND_INT);
  EXPECT_EQ(converted->values[2].int_value(), -2);
  EXPECT_EQ(kind(2), v1::SCALAR_KIND_LONG_LONG);
  EXPECT_EQ(kind(3), v1::SCALAR_KIND_DOUBLE);
  EXPECT_TRUE(converted->variadic_types[4].has_string());
  EXPECT_EQ(converted->values[5].string_value(), "word");
  EXPECT_EQ(converted->values[6].string_value(), "q s");
  EXPECT_TRUE(converted->variadic_types[6].has_pointer());
  EXPECT_TRUE(converted->values[7].has_null_value());
  EXPECT_EQ(kind(7), v1::SCALAR_KIND_INT);
  EXPECT_EQ(converted->values[8].int_value(), 97);
  EXPECT_EQ(kind(8), v1::SCALAR_KIND_UNSIGNED_INT);
  EXPECT_EQ(kind(9), v1::SCALAR_KIND_LONG_LONG);
  EXPECT_EQ(kind(10), v1::SCALAR_KIND_UNSIGNED_LONG_LONG);
  EXPECT_EQ(converted->values[11].uint_value(),
            std::numeric_limits<uint64_t>::max());
  absl::StatusOr<ConvertedArguments> too_few = ConvertArguments("f", type, {});
  ASSERT_FALSE(too_few.ok());
  EXPECT_THAT(too_few.status().message(), HasSubstr("at least 1 argument"));
}

TEST(TypeNameTest, Spellings) {
  EXPECT_EQ(TypeName(Scalar(v1::SCALAR_KIND_UNSIGNED_LONG_LONG)),
            "unsigned long long");
  EXPECT_EQ(TypeName(CString()), "const char *");
  EXPECT_EQ(TypeName(VoidPointer()), "void *");
  v1::TypeDescriptor int_pointer;
  int_pointer.mutable_pointer()->mutable_pointee()->set_scalar(
      v1::SCALAR_KIND_INT);
  int_pointer.mutable_pointer()->mutable_pointee()->set_is_const(true);
  EXPECT_EQ(TypeName(int_pointer), "const int *");
  v1::TypeDescriptor callback;
  callback.mutable_function_pointer()->mutable_return_type()->set_scalar(
      v1::SCALAR_KIND_DOUBLE);
  *callback.mutable_function_pointer()->add_parameters()->mutable_type() =
      Scalar(v1::SCALAR_KIND_DOUBLE);
  EXPECT_EQ(TypeName(callback), "double (*)(double)");
}

TEST(ParseLiteralTest, NonUtf8StringsTravelAsBytes) {
  v1::TypeDescriptor type;
  type.mutable_string()->set_is_const(true);
  absl::StatusOr<v1::Value> utf8 = ParseLiteral("h\xc3\xa9llo", type);
  ASSERT_TRUE(utf8.ok()) << utf8.status();
  EXPECT_EQ(utf8->string_value(), "h\xc3\xa9llo");
  absl::StatusOr<v1::Value> raw = ParseLiteral("\"a\\xff\"", type);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->kind_case(), v1::Value::kBytesValue);
  EXPECT_EQ(raw->bytes_value(), "a\xff");
}

}  // namespace
}  // namespace ffid::ffictl
