#include "clients/cpp/ffictl/format.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace ffid::ffictl {
namespace {

v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor type;
  type.set_scalar(kind);
  return type;
}

v1::Value Double(double value) {
  v1::Value result;
  result.set_double_value(value);
  return result;
}

TEST(FormatDoubleTest, ShortestRoundTrip) {
  EXPECT_EQ(FormatDouble(std::cos(0.5)), "0.8775825618903728");
  EXPECT_EQ(FormatDouble(0.1), "0.1");
  EXPECT_EQ(FormatDouble(5.0), "5");
  EXPECT_EQ(FormatDouble(-0.0), "-0");
  EXPECT_EQ(FormatDouble(1e300), "1e+300");
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(FormatDouble(-std::numeric_limits<double>::infinity()), "-inf");
  EXPECT_EQ(FormatDouble(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(FormatFloat(0.1f), "0.1");
}

TEST(FormatValueTextTest, Scalars) {
  v1::Value value;
  value.set_int_value(-9000000000);
  EXPECT_EQ(FormatValueText(value, Scalar(v1::SCALAR_KIND_LONG)),
            "-9000000000");
  value.set_uint_value(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(FormatValueText(value, Scalar(v1::SCALAR_KIND_UINT64)),
            "18446744073709551615");
  value.set_bool_value(true);
  EXPECT_EQ(FormatValueText(value, Scalar(v1::SCALAR_KIND_BOOL)), "true");
  // A float prints as the float it is, not as the double that carried it.
  EXPECT_EQ(FormatValueText(Double(static_cast<double>(0.1f)),
                            Scalar(v1::SCALAR_KIND_FLOAT)),
            "0.1");
  EXPECT_EQ(FormatValueText(Double(static_cast<double>(0.1f)),
                            Scalar(v1::SCALAR_KIND_DOUBLE)),
            "0.10000000149011612");
}

TEST(FormatValueTextTest, StringsPointersAndNull) {
  v1::Value value;
  value.set_string_value("h\xc3\xa9llo\tw");
  EXPECT_EQ(FormatValueText(value, v1::TypeDescriptor()), "h\xc3\xa9llo\tw");
  value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
  EXPECT_EQ(FormatValueText(value, v1::TypeDescriptor()), "NULL");
  value.mutable_pointer_value()->set_address(0x7f00beef);
  value.mutable_pointer_value()->set_handle("mem_ab_cd");
  EXPECT_EQ(FormatValueText(value, v1::TypeDescriptor()),
            "0x7f00beef (mem_ab_cd)");
}

TEST(FormatValueTextTest, LongDouble) {
  v1::Value value;
  char bytes[16] = {};
  long double x = 0.1L;
  std::memcpy(bytes, &x, 10);
  value.set_long_double_value(std::string(bytes, 16));
  EXPECT_EQ(FormatValueText(value, Scalar(v1::SCALAR_KIND_LONG_DOUBLE)),
            "0.1");
}

TEST(JsonQuoteTest, Escapes) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(JsonQuote("\n\t\r\x01"), "\"\\n\\t\\r\\u0001\"");
  EXPECT_EQ(JsonQuote("h\xc3\xa9 \xe2\x9c\x93"), "\"h\xc3\xa9 \xe2\x9c\x93\"");
  EXPECT_EQ(JsonQuote("bad\xff"), "\"bad\\u00ff\"");
  EXPECT_EQ(JsonQuote(std::string("a\0b", 3)), "\"a\\u0000b\"");
}

TEST(FormatValueJsonTest, Numbers) {
  EXPECT_EQ(FormatValueJson(Double(0.5), Scalar(v1::SCALAR_KIND_DOUBLE)),
            "0.5");
  EXPECT_EQ(FormatValueJson(Double(std::nan("")),
                            Scalar(v1::SCALAR_KIND_DOUBLE)),
            "\"nan\"");
  EXPECT_EQ(FormatValueJson(Double(-std::nan("")),
                            Scalar(v1::SCALAR_KIND_DOUBLE)),
            "\"nan\"");
  EXPECT_EQ(FormatValueJson(Double(HUGE_VAL), Scalar(v1::SCALAR_KIND_DOUBLE)),
            "\"inf\"");
  EXPECT_EQ(FormatValueJson(Double(-HUGE_VAL), Scalar(v1::SCALAR_KIND_FLOAT)),
            "\"-inf\"");
  v1::Value value;
  value.set_int_value(-5);
  EXPECT_EQ(FormatValueJson(value, Scalar(v1::SCALAR_KIND_INT)), "-5");
}

TEST(FormatValueJsonTest, Compound) {
  v1::TypeDescriptor type;
  v1::Field* x = type.mutable_record()->add_fields();
  x->set_name("y");
  x->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  v1::Field* y = type.mutable_record()->add_fields();
  y->set_name("x");
  y->mutable_type()->set_scalar(v1::SCALAR_KIND_FLOAT);
  v1::Value value;
  (*value.mutable_record_value()->mutable_fields())["x"].set_double_value(1.5);
  (*value.mutable_record_value()->mutable_fields())["y"].set_int_value(2);
  EXPECT_EQ(FormatValueJson(value, type), "{\"y\": 2, \"x\": 1.5}");
  v1::Value array;
  array.mutable_array_value()->add_elements()->set_int_value(1);
  array.mutable_array_value()->add_elements()->set_string_value("s");
  EXPECT_EQ(FormatValueJson(array, v1::TypeDescriptor()), "[1, \"s\"]");
}

TEST(FormatCallTest, TextAndJson) {
  v1::CallResponse response;
  response.mutable_result()->set_double_value(std::cos(0.5));
  EXPECT_EQ(FormatCallText(response, Scalar(v1::SCALAR_KIND_DOUBLE), false),
            "0.8775825618903728\n");
  EXPECT_EQ(FormatCallJson(response, Scalar(v1::SCALAR_KIND_DOUBLE), false),
            "{\"result\": 0.8775825618903728}\n");
  response.set_errno_value(2);
  EXPECT_EQ(FormatCallJson(response, Scalar(v1::SCALAR_KIND_DOUBLE), true),
            "{\"result\": 0.8775825618903728, \"errno\": 2}\n");
  EXPECT_EQ(FormatCallText(response, Scalar(v1::SCALAR_KIND_DOUBLE), true),
            "0.8775825618903728\nerrno: 2 (ENOENT: No such file or "
            "directory)\n");
}

TEST(FormatCallTest, Void) {
  v1::CallResponse response;
  EXPECT_EQ(FormatCallText(response, Scalar(v1::SCALAR_KIND_VOID), false), "");
  EXPECT_EQ(FormatCallJson(response, Scalar(v1::SCALAR_KIND_VOID), false),
            "{\"result\": null}\n");
  EXPECT_EQ(FormatCallText(response, Scalar(v1::SCALAR_KIND_VOID), true),
            "errno: 0\n");
}

}  // namespace
}  // namespace ffid::ffictl
