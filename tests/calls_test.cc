// Calls through the real daemon and worker into the fixture library: every
// scalar shape at its extremes, floating-point special values, UTF-8 strings
// both ways, NULL, owned and borrowed memory, errno and variadic calls.
#include <cerrno>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeBool;
using client::MakeDouble;
using client::MakeInt;
using client::MakeNull;
using client::MakePointer;
using client::MakeString;
using client::MakeUint;
using ::testing::HasSubstr;

// The greeting fx_greeting returns: "héllo wörld ✓".
constexpr char kGreeting[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93";

class CallsTest : public FfidTest {};

// Makes the Value a client would send for an integer of either sign.
v1::Value IntegerValue(Integer value) {
  if (value < 0) return MakeInt(static_cast<int64_t>(value));
  return value > std::numeric_limits<int64_t>::max()
             ? MakeUint(static_cast<uint64_t>(value))
             : MakeInt(static_cast<int64_t>(value));
}

struct IntegerShape {
  const char* name;   // fx_<name>_...
  const char* type;   // the C type
  Integer min;
  Integer max;
};

const IntegerShape kIntegerShapes[] = {
    {"int8", "int8_t", INT8_MIN, INT8_MAX},
    {"uint8", "uint8_t", 0, UINT8_MAX},
    {"int16", "int16_t", INT16_MIN, INT16_MAX},
    {"uint16", "uint16_t", 0, UINT16_MAX},
    {"int32", "int32_t", INT32_MIN, INT32_MAX},
    {"uint32", "uint32_t", 0, UINT32_MAX},
    {"int64", "int64_t", INT64_MIN, INT64_MAX},
    {"uint64", "uint64_t", 0, UINT64_MAX},
    {"char", "char", CHAR_MIN, CHAR_MAX},
    {"schar", "signed char", SCHAR_MIN, SCHAR_MAX},
    {"uchar", "unsigned char", 0, UCHAR_MAX},
    {"short", "short", SHRT_MIN, SHRT_MAX},
    {"ushort", "unsigned short", 0, USHRT_MAX},
    {"int", "int", INT_MIN, INT_MAX},
    {"uint", "unsigned int", 0, UINT_MAX},
    {"long", "long", LONG_MIN, LONG_MAX},
    {"ulong", "unsigned long", 0, ULONG_MAX},
    {"llong", "long long", LLONG_MIN, LLONG_MAX},
    {"ullong", "unsigned long long", 0, ULLONG_MAX},
    {"size", "size_t", 0, SIZE_MAX},
    {"ssize", "ssize_t", -SSIZE_MAX - 1, SSIZE_MAX},
    {"intptr", "intptr_t", INTPTR_MIN, INTPTR_MAX},
    {"uintptr", "uintptr_t", 0, UINTPTR_MAX},
    {"ptrdiff", "ptrdiff_t", PTRDIFF_MIN, PTRDIFF_MAX},
};

TEST_F(CallsTest, IntegerExtremesComeBack) {
  for (const IntegerShape& shape : kIntegerShapes) {
    SCOPED_TRACE(shape.type);
    const std::string type = shape.type;
    EXPECT_THAT(CallOk(absl::StrCat(type, " fx_", shape.name, "_min(void)")),
                IsInteger(shape.min));
    EXPECT_THAT(CallOk(absl::StrCat(type, " fx_", shape.name, "_max(void)")),
                IsInteger(shape.max));
  }
}

TEST_F(CallsTest, IntegerExtremesGoInAndComeBack) {
  for (const IntegerShape& shape : kIntegerShapes) {
    SCOPED_TRACE(shape.type);
    const std::string type = shape.type;
    const std::string id =
        absl::StrCat(type, " fx_", shape.name, "_id(", type, " x)");
    for (Integer value : {shape.min, shape.max, shape.min + 1, shape.max - 1,
                          Integer{0}, Integer{1}}) {
      EXPECT_THAT(CallOk(id, {IntegerValue(value)}), IsInteger(value))
          << IntegerToString(value);
    }
  }
}

TEST_F(CallsTest, IntegerArithmeticHappensInTheTypesWidth) {
  EXPECT_THAT(CallOk("uint8_t fx_uint8_add(uint8_t, uint8_t)",
                     {MakeUint(200), MakeUint(100)}),
              IsInteger(44));
  EXPECT_THAT(CallOk("int32_t fx_int32_add(int32_t, int32_t)",
                     {MakeInt(-5), MakeInt(3)}),
              IsInteger(-2));
  EXPECT_THAT(CallOk("uint64_t fx_uint64_add(uint64_t, uint64_t)",
                     {MakeUint(UINT64_MAX), MakeUint(2)}),
              IsInteger(1));
  EXPECT_THAT(CallOk("int fx_add(int a, int b)", {MakeInt(2), MakeInt(-7)}),
              IsInteger(-5));
}

TEST_F(CallsTest, NarrowSignedValuesAreSignExtended) {
  EXPECT_THAT(CallOk("int64_t fx_int8_widen(int8_t)", {MakeInt(-1)}),
              IsInteger(-1));
  EXPECT_THAT(CallOk("int64_t fx_int16_widen(int16_t)", {MakeInt(-32768)}),
              IsInteger(-32768));
  EXPECT_THAT(CallOk("int64_t fx_int32_widen(int32_t)", {MakeInt(INT32_MIN)}),
              IsInteger(INT32_MIN));
  EXPECT_THAT(CallOk("uint64_t fx_uint8_widen(uint8_t)", {MakeUint(255)}),
              IsInteger(255));
  EXPECT_THAT(CallOk("uint64_t fx_uint32_widen(uint32_t)",
                     {MakeUint(UINT32_MAX)}),
              IsInteger(UINT32_MAX));
}

TEST_F(CallsTest, ManyMixedArgumentsReachTheirRegistersAndStack) {
  const double expected = -1.0 + 65535 + -100000 + -5000000000.0 + 1.5f +
                          2.25 + 'a' + -7.0 + 0.125 + 1000.0;
  v1::Value result = CallOk(
      "double fx_mixed(int8_t a, uint16_t b, int32_t c, int64_t d, float e, "
      "double f, char g, long h, double i, unsigned long long j)",
      {MakeInt(-1), MakeUint(65535), MakeInt(-100000), MakeInt(-5000000000),
       MakeDouble(1.5), MakeDouble(2.25), MakeInt('a'), MakeInt(-7),
       MakeDouble(0.125), MakeUint(1000)});
  EXPECT_EQ(result.double_value(), expected);
}

TEST_F(CallsTest, Bools) {
  EXPECT_TRUE(CallOk("bool fx_bool_id(bool)", {MakeBool(true)}).bool_value());
  EXPECT_FALSE(
      CallOk("bool fx_bool_id(bool)", {MakeBool(false)}).bool_value());
  v1::Value negated = CallOk("bool fx_bool_not(bool)", {MakeBool(false)});
  EXPECT_TRUE(negated.has_bool_value());
  EXPECT_TRUE(negated.bool_value());
  EXPECT_TRUE(CallOk("bool fx_true(void)").bool_value());
  EXPECT_THAT(CallOk("int fx_bool_to_int(bool)", {MakeBool(true)}),
              IsInteger(1));
  EXPECT_TRUE(CallOk("_Bool fx_bool_id(_Bool)", {MakeBool(true)}).bool_value());
}

TEST_F(CallsTest, DoublesIncludingSpecialValues) {
  const std::string id = "double fx_double_id(double x)";
  for (double value :
       {0.0, 1.0, -1.5, 0.1, DBL_MAX, -DBL_MAX, DBL_MIN,
        std::numeric_limits<double>::denorm_min(), HUGE_VAL, -HUGE_VAL}) {
    v1::Value result = CallOk(id, {MakeDouble(value)});
    ASSERT_TRUE(result.has_double_value()) << result.ShortDebugString();
    EXPECT_EQ(result.double_value(), value);
  }
  v1::Value nan = CallOk(id, {MakeDouble(std::nan(""))});
  EXPECT_TRUE(std::isnan(nan.double_value()));
  v1::Value negative_zero = CallOk(id, {MakeDouble(-0.0)});
  EXPECT_EQ(negative_zero.double_value(), 0.0);
  EXPECT_TRUE(std::signbit(negative_zero.double_value()));

  EXPECT_TRUE(std::isnan(CallOk("double fx_double_nan(void)").double_value()));
  EXPECT_EQ(CallOk("double fx_double_inf(void)").double_value(), HUGE_VAL);
  EXPECT_EQ(CallOk("double fx_double_neg_inf(void)").double_value(),
            -HUGE_VAL);
  EXPECT_TRUE(std::signbit(
      CallOk("double fx_double_neg_zero(void)").double_value()));
  EXPECT_EQ(CallOk("double fx_double_third(void)").double_value(), 1.0 / 3.0);
  // The special values arrive in the native code as themselves.
  EXPECT_THAT(CallOk("int fx_double_is_nan(double)", {MakeDouble(NAN)}),
              IsInteger(1));
  EXPECT_THAT(CallOk("int fx_double_signbit(double)", {MakeDouble(-0.0)}),
              IsInteger(1));
  EXPECT_THAT(CallOk("int fx_double_signbit(double)", {MakeDouble(0.0)}),
              IsInteger(0));
  EXPECT_EQ(CallOk("double fx_double_add(double, double)",
                   {MakeDouble(0.1), MakeDouble(0.2)})
                .double_value(),
            0.1 + 0.2);
}

TEST_F(CallsTest, FloatsIncludingSpecialValues) {
  const std::string id = "float fx_float_id(float x)";
  for (float value : {0.1f, -2.5f, FLT_MAX, FLT_MIN,
                      std::numeric_limits<float>::denorm_min(), HUGE_VALF,
                      -HUGE_VALF}) {
    v1::Value result = CallOk(id, {MakeDouble(static_cast<double>(value))});
    EXPECT_EQ(result.double_value(), static_cast<double>(value));
  }
  EXPECT_TRUE(std::isnan(CallOk(id, {MakeDouble(NAN)}).double_value()));
  EXPECT_TRUE(std::signbit(CallOk(id, {MakeDouble(-0.0)}).double_value()));
  EXPECT_EQ(CallOk("float fx_float_max(void)").double_value(),
            static_cast<double>(FLT_MAX));
  EXPECT_EQ(CallOk("float fx_float_third(void)").double_value(),
            static_cast<double>(1.0f / 3.0f));
  EXPECT_TRUE(std::isnan(CallOk("float fx_float_nan(void)").double_value()));
  EXPECT_TRUE(
      std::signbit(CallOk("float fx_float_neg_zero(void)").double_value()));
  EXPECT_THAT(CallOk("int fx_float_signbit(float)", {MakeDouble(-0.0)}),
              IsInteger(1));
  EXPECT_EQ(CallOk("float fx_float_add(float, float)",
                   {MakeDouble(0.5), MakeDouble(0.25)})
                .double_value(),
            0.75);
}

TEST_F(CallsTest, StringsGoIn) {
  EXPECT_THAT(CallOk("size_t fx_strlen(const char *s)", {MakeString("hello")}),
              IsInteger(5));
  EXPECT_THAT(CallOk("size_t fx_strlen(const char *s)", {MakeString("")}),
              IsInteger(0));
  // Multi-byte UTF-8 arrives byte for byte.
  EXPECT_THAT(CallOk("size_t fx_strlen(const char *s)", {MakeString(kGreeting)}),
              IsInteger(std::strlen(kGreeting)));
  EXPECT_THAT(
      CallOk("size_t fx_utf8_count(const char *s)", {MakeString(kGreeting)}),
      IsInteger(13));
  EXPECT_THAT(CallOk("size_t fx_utf8_count(const char *s)",
                     {MakeString("\xf0\x9f\x98\x80!")}),  // U+1F600 "!"
              IsInteger(2));
  EXPECT_THAT(CallOk("int fx_streq(const char *a, const char *b)",
                     {MakeString(kGreeting), MakeString(kGreeting)}),
              IsInteger(1));
  const std::string long_string(100000, 'x');
  EXPECT_THAT(CallOk("size_t fx_strlen(const char *s)",
                     {MakeString(long_string)}),
              IsInteger(100000));
}

TEST_F(CallsTest, StringsComeBack) {
  v1::Value greeting = CallOk("const char *fx_greeting(void)");
  ASSERT_TRUE(greeting.has_string_value()) << greeting.ShortDebugString();
  EXPECT_EQ(greeting.string_value(), kGreeting);
  EXPECT_EQ(CallOk("const char *fx_empty_string(void)").string_value(), "");
  // A returned pointer into the argument is read before the argument's
  // temporary copy goes away.
  EXPECT_EQ(CallOk("const char *fx_string_id(const char *s)",
                   {MakeString(kGreeting)})
                .string_value(),
            kGreeting);
}

TEST_F(CallsTest, NullStringsAndPointers) {
  EXPECT_TRUE(CallOk("const char *fx_null_string(void)").has_null_value());
  EXPECT_TRUE(CallOk("void *fx_null_ptr(void)").has_null_value());
  EXPECT_THAT(CallOk("int fx_is_null(const void *p)", {MakeNull()}),
              IsInteger(1));
  EXPECT_THAT(CallOk("int fx_string_is_null(const char *s)", {MakeNull()}),
              IsInteger(1));
  EXPECT_THAT(CallOk("int fx_string_is_null(const char *s)", {MakeString("")}),
              IsInteger(0));
}

TEST_F(CallsTest, VoidReturnsNoValue) {
  absl::StatusOr<v1::CallResponse> response = Call("void fx_noop(void)");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->result().kind_case(), v1::Value::KIND_NOT_SET);
}

std::string IntsAsBytes(const std::vector<int>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(int));
}

TEST_F(CallsTest, OwnedMemoryRoundTrip) {
  absl::StatusOr<client::Memory> memory =
      session_->Allocate(16, IntsAsBytes({1, 2, 3, 4}));
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ(memory->size, 16u);
  EXPECT_THAT(memory->handle, ::testing::StartsWith("mem_"));

  absl::StatusOr<std::string> bytes = session_->Read(memory->handle, 0, 16);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, IntsAsBytes({1, 2, 3, 4}));

  const std::string sum = "int fx_sum_ints(const int *values, size_t count)";
  EXPECT_THAT(CallOk(sum, {MakePointer(memory->handle), MakeUint(4)}),
              IsInteger(10));
  // The client's writes are what native code reads.
  ASSERT_TRUE(session_->Write(memory->handle, 4, IntsAsBytes({20, 30})).ok());
  EXPECT_THAT(CallOk(sum, {MakePointer(memory->handle), MakeUint(4)}),
              IsInteger(1 + 20 + 30 + 4));
  // A pointer with an offset points into the block.
  EXPECT_THAT(CallOk(sum, {MakePointer(memory->handle, 8), MakeUint(2)}),
              IsInteger(30 + 4));
  // Native writes are what the client reads.
  EXPECT_THAT(CallOk("void fx_fill(unsigned char *buffer, size_t size, int v)",
                     {MakePointer(memory->handle, 2), MakeUint(12),
                      MakeInt(0xAB)}),
              ::testing::Property(&v1::Value::kind_case,
                                  v1::Value::KIND_NOT_SET));
  bytes = session_->Read(memory->handle, 0, 0);  // 0: to the end
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_EQ(bytes->size(), 16u);
  EXPECT_EQ(bytes->substr(2, 12), std::string(12, '\xAB'));
  EXPECT_EQ(bytes->substr(0, 2), IntsAsBytes({1}).substr(0, 2));
  EXPECT_EQ(bytes->substr(14), IntsAsBytes({4}).substr(2));
  EXPECT_THAT(CallOk("int fx_is_null(const void *p)",
                     {MakePointer(memory->handle)}),
              IsInteger(0));
  EXPECT_TRUE(session_->Free(memory->handle).ok());
}

TEST_F(CallsTest, AllocationIsZeroFilledBeyondInitialBytes) {
  absl::StatusOr<client::Memory> memory = session_->Allocate(8, "ab");
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::StatusOr<std::string> bytes = session_->Read(memory->handle, 0, 8);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, std::string("ab\0\0\0\0\0\0", 8));
}

TEST_F(CallsTest, LargeReadAndWrite) {
  const size_t size = 8 << 20;
  absl::StatusOr<client::Memory> memory = session_->Allocate(size);
  ASSERT_TRUE(memory.ok()) << memory.status();
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(session_->Write(memory->handle, 0, data).ok());
  absl::StatusOr<std::string> bytes = session_->Read(memory->handle, 0, size);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(*bytes == data);
}

// The C++ client sends transfers over 1 MiB in 1 MiB messages on one
// stream: every piece lands at its place, in the arena as on the heap, and
// at an offset that is not a multiple of the piece size.
TEST_F(CallsTest, LargeTransfersInPiecesKeepTheirOrder) {
  const size_t size = (9 << 20) + 123;
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    // Differs between bytes 1 MiB apart, unlike a short period.
    data[i] = static_cast<char>((static_cast<uint32_t>(i) * 2654435761u) >> 24);
  }
  for (const v1::AllocationPlacement placement :
       {v1::ALLOCATION_PLACEMENT_HEAP, v1::ALLOCATION_PLACEMENT_ARENA}) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    absl::StatusOr<client::Memory> memory =
        session_->Allocate(size + 5, "", placement);
    ASSERT_TRUE(memory.ok()) << memory.status();
    ASSERT_TRUE(session_->Write(memory->handle, 5, data).ok());
    absl::StatusOr<std::string> bytes =
        session_->Read(memory->handle, 0, size + 5);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(bytes->substr(0, 5), std::string(5, '\0'));
    EXPECT_TRUE(bytes->substr(5) == data);
    bytes = session_->Read(memory->handle, 5, size);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_TRUE(*bytes == data);
    ASSERT_TRUE(session_->Free(memory->handle).ok());
  }
}

// Big untyped accesses (which the daemon copies straight from and into the
// worker's memory) land where the small ones do: at the offset, seen by
// native code, and a read of length 0 takes the block to its end.
TEST_F(CallsTest, LargeAccessesAtAnOffsetReachNativeCode) {
  const size_t size = 1 << 20;
  absl::StatusOr<client::Memory> memory = session_->Allocate(size);
  ASSERT_TRUE(memory.ok()) << memory.status();
  std::string data(256 << 10, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  const std::string ints = IntsAsBytes({123456});
  data.replace(0, ints.size(), ints);
  ASSERT_TRUE(session_->Write(memory->handle, 4096, data).ok());
  EXPECT_THAT(CallOk("int fx_read_int(const int *p)",
                     {MakePointer(memory->handle, 4096)}),
              IsInteger(123456));
  absl::StatusOr<std::string> whole = session_->Read(memory->handle, 0, 0);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->size(), size);
  EXPECT_EQ(whole->substr(0, 4096), std::string(4096, '\0'));
  EXPECT_TRUE(whole->substr(4096, data.size()) == data);
  EXPECT_EQ(whole->substr(4096 + data.size()),
            std::string(size - 4096 - data.size(), '\0'));
  // A raw address into the block works as the handle does.
  absl::StatusOr<std::string> raw = session_->Read(
      client::MakeAddress(memory->address + 4096).pointer_value(),
      data.size());
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_TRUE(*raw == data);
}

TEST_F(CallsTest, BorrowedPointersCanBeReadAndPassedBack) {
  v1::Value pointer = CallOk("int *fx_static_ints(void)");
  ASSERT_TRUE(pointer.has_pointer_value()) << pointer.ShortDebugString();
  EXPECT_NE(pointer.pointer_value().address(), 0u);
  absl::StatusOr<std::string> bytes =
      session_->Read(pointer.pointer_value(), 4 * sizeof(int));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, IntsAsBytes({10, 20, 30, 40}));
  EXPECT_THAT(CallOk("int fx_read_int(const int *p)", {pointer}),
              IsInteger(10));
  v1::Value moved = CallOk("void *fx_ptr_add(void *p, size_t n)",
                           {pointer, MakeUint(sizeof(int))});
  ASSERT_TRUE(moved.has_pointer_value());
  EXPECT_EQ(moved.pointer_value().address(),
            pointer.pointer_value().address() + sizeof(int));
  EXPECT_THAT(CallOk("int fx_read_int(const int *p)", {moved}),
              IsInteger(20));
  // A raw address works as well as the handle.
  EXPECT_THAT(CallOk("int fx_read_int(const int *p)",
                     {client::MakeAddress(pointer.pointer_value().address() +
                                          2 * sizeof(int))}),
              IsInteger(30));
}

TEST_F(CallsTest, ErrnoIsCaptured) {
  client::CallOptions options;
  options.capture_errno = true;
  absl::StatusOr<v1::CallResponse> response =
      Call("int fx_set_errno(int value)", {MakeInt(ENOENT)}, options);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(-1));
  EXPECT_EQ(response->errno_value(), ENOENT);
  response = Call("int fx_set_errno(int value)", {MakeInt(ERANGE)}, options);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->errno_value(), ERANGE);

  // And from libc itself.
  absl::StatusOr<client::Library> libc = session_->LoadLibrary("libc.so.6");
  ASSERT_TRUE(libc.ok()) << libc.status();
  absl::StatusOr<client::Function> strtol = session_->ResolveFunction(
      *libc, "long strtol(const char *s, char **end, int base)");
  ASSERT_TRUE(strtol.ok()) << strtol.status();
  response = session_->Call(
      *strtol, {MakeString("99999999999999999999999"), MakeNull(), MakeInt(10)},
      options);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(LONG_MAX));
  EXPECT_EQ(response->errno_value(), ERANGE);
}

TEST_F(CallsTest, Variadic) {
  absl::StatusOr<client::Function> function =
      Resolve("int fx_sum_variadic(int n, ...)");
  if (!function.ok() && client::ErrorReason(function.status()) == "UNSUPPORTED") {
    GTEST_SKIP() << function.status();
  }
  ASSERT_TRUE(function.ok()) << function.status();
  EXPECT_TRUE(function->type.variadic());
  client::CallOptions options;
  options.variadic_types.assign(3, client::ScalarType(v1::SCALAR_KIND_INT));
  absl::StatusOr<v1::CallResponse> response = session_->Call(
      *function, {MakeInt(3), MakeInt(1), MakeInt(-20), MakeInt(300)},
      options);
  if (!response.ok() &&
      client::ErrorReason(response.status()) == "UNSUPPORTED") {
    GTEST_SKIP() << response.status();
  }
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(281));

  options.variadic_types.assign(2, client::ScalarType(v1::SCALAR_KIND_DOUBLE));
  response = Call("double fx_sum_variadic_doubles(int n, ...)",
                  {MakeInt(2), MakeDouble(0.5), MakeDouble(0.25)}, options);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->result().double_value(), 0.75);

  // With no variadic arguments at all.
  options.variadic_types.clear();
  response = session_->Call(*function, {MakeInt(0)}, options);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(0));
}

TEST_F(CallsTest, SystemLibraries) {
  absl::StatusOr<client::Library> libm = session_->LoadLibrary("libm.so.6");
  ASSERT_TRUE(libm.ok()) << libm.status();
  EXPECT_THAT(libm->path, HasSubstr("libm"));
  EXPECT_EQ(libm->path[0], '/');
  absl::StatusOr<client::Function> cos =
      session_->ResolveFunction(*libm, "double cos(double)");
  ASSERT_TRUE(cos.ok()) << cos.status();
  EXPECT_EQ(cos->symbol, "cos");
  absl::StatusOr<v1::CallResponse> response =
      session_->Call(*cos, {MakeDouble(0.5)});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->result().double_value(), std::cos(0.5));

  absl::StatusOr<client::Library> libc = session_->LoadLibrary("libc.so.6");
  ASSERT_TRUE(libc.ok()) << libc.status();
  absl::StatusOr<client::Function> labs =
      session_->ResolveFunction(*libc, "long labs(long)");
  ASSERT_TRUE(labs.ok()) << labs.status();
  response = session_->Call(*labs, {MakeInt(-9000000000)});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(9000000000));
}

TEST_F(CallsTest, ResolveWithATypeDescriptor) {
  v1::FunctionType type;
  type.mutable_return_type()->set_scalar(v1::SCALAR_KIND_INT);
  for (int i = 0; i < 2; ++i) {
    type.add_parameters()->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  }
  absl::StatusOr<client::Function> function =
      session_->ResolveFunction(fixture_, "fx_add", type);
  ASSERT_TRUE(function.ok()) << function.status();
  EXPECT_EQ(function->symbol, "fx_add");
  absl::StatusOr<v1::CallResponse> response =
      session_->Call(*function, {MakeInt(40), MakeInt(2)});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(42));
}

TEST_F(CallsTest, ResolvedSignatureIsReturned) {
  absl::StatusOr<client::Function> function =
      Resolve("unsigned long long fx_ullong_id(unsigned long long value)");
  ASSERT_TRUE(function.ok()) << function.status();
  EXPECT_EQ(function->symbol, "fx_ullong_id");
  EXPECT_THAT(function->handle, ::testing::StartsWith("fn_"));
  EXPECT_EQ(function->type.return_type().scalar(),
            v1::SCALAR_KIND_UNSIGNED_LONG_LONG);
  ASSERT_EQ(function->type.parameters_size(), 1);
  EXPECT_EQ(function->type.parameters(0).name(), "value");
  EXPECT_FALSE(function->type.variadic());
}

TEST_F(CallsTest, ParseDeclarations) {
  absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
      session_->ParseDeclarations(
          "double cos(double);\nint fx_add(int a, int b);\n"
          "const char *fx_greeting(void);");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->functions_size(), 3);
  EXPECT_EQ(parsed->functions(0).name(), "cos");
  EXPECT_EQ(parsed->functions(0).type().return_type().scalar(),
            v1::SCALAR_KIND_DOUBLE);
  EXPECT_EQ(parsed->functions(1).name(), "fx_add");
  ASSERT_EQ(parsed->functions(1).type().parameters_size(), 2);
  EXPECT_EQ(parsed->functions(1).type().parameters(1).name(), "b");
  EXPECT_TRUE(parsed->functions(2).type().return_type().has_string());
}

TEST_F(CallsTest, StateLivesInTheSessionsWorker) {
  EXPECT_THAT(CallOk("int fx_counter(void)"), IsInteger(1));
  EXPECT_THAT(CallOk("int fx_counter(void)"), IsInteger(2));
  // Another session has its own worker, hence its own copy of the library.
  std::unique_ptr<client::Session> other = NewSession();
  ASSERT_NE(other, nullptr);
  EXPECT_NE(other->worker_pid(), session_->worker_pid());
  absl::StatusOr<client::Library> library = other->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> counter =
      other->ResolveFunction(*library, "int fx_counter(void)");
  ASSERT_TRUE(counter.ok()) << counter.status();
  absl::StatusOr<v1::CallResponse> response = other->Call(*counter, {});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->result(), IsInteger(1));
  EXPECT_THAT(CallOk("int fx_counter(void)"), IsInteger(3));
}

TEST_F(CallsTest, ConcurrentCallsOnOneSessionAndOnSeveral) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  std::unique_ptr<client::Session> other = NewSession();
  ASSERT_NE(other, nullptr);
  absl::StatusOr<client::Library> library = other->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> other_add =
      other->ResolveFunction(*library, "int fx_add(int a, int b)");
  ASSERT_TRUE(other_add.ok()) << other_add.status();

  constexpr int kThreads = 4;
  constexpr int kCalls = 50;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      client::Session& session = t % 2 == 0 ? *session_ : *other;
      const client::Function& function = t % 2 == 0 ? *add : *other_add;
      for (int i = 0; i < kCalls; ++i) {
        absl::StatusOr<v1::CallResponse> response =
            session.Call(function, {MakeInt(t * 1000), MakeInt(i)});
        if (!response.ok() || !response->result().has_int_value() ||
            response->result().int_value() != t * 1000 + i) {
          ++failures[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << t;
}

TEST_F(CallsTest, GetSessionReportsAnActiveSession) {
  absl::StatusOr<v1::Session> session = session_->Get();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ(session->id(), session_->id());
  EXPECT_EQ(session->state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_GT(session->worker_pid(), 0);
  EXPECT_EQ(session->worker_pid(), session_->worker_pid());
  EXPECT_EQ(session_->id().size(), 32u);
}

TEST_F(CallsTest, UnloadLibrary) {
  absl::StatusOr<client::Library> libm = session_->LoadLibrary("libm.so.6");
  ASSERT_TRUE(libm.ok()) << libm.status();
  absl::StatusOr<client::Function> cos =
      session_->ResolveFunction(*libm, "double cos(double)");
  ASSERT_TRUE(cos.ok()) << cos.status();
  absl::Status unloaded = session_->UnloadLibrary(*libm);
  if (absl::IsUnimplemented(unloaded) ||
      client::ErrorReason(unloaded) == "UNSUPPORTED") {
    GTEST_SKIP() << unloaded;
  }
  ASSERT_TRUE(unloaded.ok()) << unloaded;
  EXPECT_THAT(session_->Call(*cos, {MakeDouble(0.5)}),
              HasReason("HANDLE_INVALID"));
  EXPECT_THAT(session_->ResolveFunction(*libm, "double sin(double)"),
              HasReason("HANDLE_INVALID"));
}

}  // namespace
}  // namespace ffid::testing
