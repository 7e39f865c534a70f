#include "ffi/function.h"

#include <dlfcn.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ffi/declaration_parser.h"
#include "ffi/errors.h"
#include "ffi/internal/map_resolver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

// Native functions to call, with C linkage as a library's would have.
extern "C" {

std::atomic<int> ffid_test_calls{0};

int8_t ffid_test_i8(int8_t v) { return v; }
uint8_t ffid_test_u8(uint8_t v) { return v; }
int16_t ffid_test_i16(int16_t v) { return v; }
uint16_t ffid_test_u16(uint16_t v) { return v; }
int32_t ffid_test_i32(int32_t v) { return v; }
uint32_t ffid_test_u32(uint32_t v) { return v; }
int64_t ffid_test_i64(int64_t v) { return v; }
uint64_t ffid_test_u64(uint64_t v) { return v; }
char ffid_test_char(char v) { return v; }
signed char ffid_test_schar(signed char v) { return v; }
unsigned char ffid_test_uchar(unsigned char v) { return v; }
short ffid_test_short(short v) { return v; }
unsigned short ffid_test_ushort(unsigned short v) { return v; }
int ffid_test_int(int v) { return v; }
unsigned int ffid_test_uint(unsigned int v) { return v; }
long ffid_test_long(long v) { return v; }
unsigned long ffid_test_ulong(unsigned long v) { return v; }
long long ffid_test_llong(long long v) { return v; }
unsigned long long ffid_test_ullong(unsigned long long v) { return v; }
size_t ffid_test_size(size_t v) { return v; }
ssize_t ffid_test_ssize(ssize_t v) { return v; }
intptr_t ffid_test_intptr(intptr_t v) { return v; }
uintptr_t ffid_test_uintptr(uintptr_t v) { return v; }
ptrdiff_t ffid_test_ptrdiff(ptrdiff_t v) { return v; }

// Negation checks that the callee really saw the value (and sign-extends).
int8_t ffid_test_neg_i8(int8_t v) { return static_cast<int8_t>(-v); }
int16_t ffid_test_neg_i16(int16_t v) { return static_cast<int16_t>(-v); }
uint8_t ffid_test_not_u8(uint8_t v) { return static_cast<uint8_t>(~v); }
uint16_t ffid_test_not_u16(uint16_t v) { return static_cast<uint16_t>(~v); }
uint32_t ffid_test_not_u32(uint32_t v) { return ~v; }

// Many mixed arguments: registers run out and the rest go on the stack.
double ffid_test_mixed(int8_t a, uint16_t b, int32_t c, int64_t d, float e,
                       double f, uint8_t g, int64_t h, float i, double j,
                       int k, double l, double m, double n, double o,
                       double p) {
  return a + b + c + static_cast<double>(d) + e + f + g +
         static_cast<double>(h) + i + j + k + l + m + n + o + p;
}

bool ffid_test_not(bool b) { return !b; }
float ffid_test_float(float f) { return f; }
double ffid_test_double(double d) { return d; }
float ffid_test_add_floats(float a, float b) { return a + b; }
long double ffid_test_ld_half(long double x) { return x / 2; }

size_t ffid_test_strlen(const char* s) { return std::strlen(s); }
const char* ffid_test_echo(const char* s) { return s; }
const char* ffid_test_greeting(void) {
  return "gr\xC3\xBC\xC3\x9F dich \xF0\x9F\x98\x80";
}
const char* ffid_test_null_string(void) { return nullptr; }
const char* ffid_test_binary(void) { return "\xff\xfe"; }
int ffid_test_is_null(const void* p) { return p == nullptr; }
void* ffid_test_null_pointer(void) { return nullptr; }
void* ffid_test_identity_pointer(void* p) { return p; }
int ffid_test_read_int(const int* p) { return *p; }
void ffid_test_write_int(int* out) { *out = 42; }
void ffid_test_increment(int* io) { ++*io; }
void ffid_test_divmod(int a, int b, int* quotient, int* remainder) {
  *quotient = a / b;
  *remainder = a % b;
}
size_t ffid_test_wcslen(const wchar_t* s) { return std::wcslen(s); }

void ffid_test_count(void) { ++ffid_test_calls; }
int ffid_test_count_int(int v) {
  ++ffid_test_calls;
  return v;
}

int ffid_test_sum_ints(int count, ...) {
  va_list args;
  va_start(args, count);
  int sum = 0;
  for (int i = 0; i < count; ++i) sum += va_arg(args, int);
  va_end(args);
  return sum;
}
double ffid_test_sum_doubles(int count, ...) {
  va_list args;
  va_start(args, count);
  double sum = 0;
  for (int i = 0; i < count; ++i) sum += va_arg(args, double);
  va_end(args);
  return sum;
}

int ffid_test_set_errno(int value) {
  errno = value;
  return -1;
}

int ffid_test_apply(int (*fn)(int), int v) { return fn != nullptr ? fn(v) : -1; }
int ffid_test_twice(int v) { return 2 * v; }

int ffid_test_sum_array(const int a[4]) { return a[0] + a[1] + a[2] + a[3]; }

struct ffid_test_point {
  int x;
  int y;
};
struct ffid_test_point ffid_test_make_point(int x, int y) { return {x, y}; }
int ffid_test_point_sum(struct ffid_test_point p) { return p.x + p.y; }

struct ffid_test_big {
  double a;
  char name[16];
  long long b;
};
struct ffid_test_big ffid_test_make_big(double a, long long b) {
  struct ffid_test_big big = {a, "big", b};
  return big;
}
double ffid_test_big_total(struct ffid_test_big big) {
  return big.a + static_cast<double>(big.b) + std::strlen(big.name);
}

union ffid_test_int_or_float {
  int i;
  float f;
};
float ffid_test_union_float(union ffid_test_int_or_float u) { return u.f; }
union ffid_test_doubles {
  double d;
  float f[2];
};
double ffid_test_union_double(union ffid_test_doubles u) { return u.d; }

}  // extern "C"

namespace ffid::ffi {
namespace {

using ::testing::HasSubstr;

using internal::MapResolver;

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
v1::Value Null() {
  v1::Value value;
  value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
  return value;
}
v1::Value Address(const void* p) {
  v1::Value value;
  value.mutable_pointer_value()->set_address(reinterpret_cast<uintptr_t>(p));
  return value;
}
v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor d;
  d.set_scalar(kind);
  return d;
}

template <typename F>
void (*Fn(F* f))() {
  return reinterpret_cast<void (*)()>(f);
}

class FunctionTest : public ::testing::Test {
 protected:
  // Prepares `declaration` (parsed as C, with `types` in scope) at `address`.
  std::unique_ptr<PreparedFunction> Prepare(
      absl::string_view declaration, void (*address)(),
      const std::vector<v1::TypeDeclaration>& types = {}) {
    absl::StatusOr<v1::FunctionDeclaration> parsed =
        ParseFunctionDeclaration(declaration, types);
    EXPECT_TRUE(parsed.ok()) << declaration << ": " << parsed.status();
    if (!parsed.ok()) return nullptr;
    auto function =
        PreparedFunction::Create(parsed->name(), parsed->type(), address);
    EXPECT_TRUE(function.ok()) << declaration << ": " << function.status();
    if (!function.ok()) return nullptr;
    return std::move(*function);
  }

  absl::StatusOr<CallResult> Call(const PreparedFunction& function,
                                  std::vector<v1::Value> arguments,
                                  std::vector<v1::TypeDescriptor> variadic = {},
                                  CallOptions options = {}) {
    return function.Call(arguments, variadic, resolver_, options);
  }

  // Calls a one-argument function and returns its result.
  v1::Value CallOne(absl::string_view declaration, void (*address)(),
                    const v1::Value& argument) {
    auto function = Prepare(declaration, address);
    if (function == nullptr) return v1::Value();
    absl::StatusOr<CallResult> result = Call(*function, {argument});
    EXPECT_TRUE(result.ok()) << declaration << ": " << result.status();
    if (!result.ok()) return v1::Value();
    EXPECT_TRUE(result->has_result);
    return result->result;
  }

  MapResolver resolver_;
};

void (*Libc(const char* symbol))() {
  void* address = dlsym(RTLD_DEFAULT, symbol);
  EXPECT_NE(address, nullptr) << symbol << ": " << dlerror();
  return reinterpret_cast<void (*)()>(address);
}

TEST_F(FunctionTest, TheIssueExamples) {
  v1::Value cos = CallOne("double cos(double)", Libc("cos"), Double(0.5));
  EXPECT_EQ(cos.double_value(), std::cos(0.5));
  v1::Value strlen =
      CallOne("size_t strlen(const char *s)", Libc("strlen"), String("hello"));
  EXPECT_EQ(strlen.uint_value(), 5u);
  v1::Value labs =
      CallOne("long labs(long)", Libc("labs"), Int(-9000000000));
  EXPECT_EQ(labs.int_value(), 9000000000);
}

struct IntegerCase {
  const char* declaration;
  void (*address)();
  int64_t min;
  uint64_t max;
  bool is_signed;
};

template <typename T>
IntegerCase Identity(const char* declaration, T (*f)(T)) {
  return IntegerCase{declaration, Fn(f),
                     static_cast<int64_t>(std::numeric_limits<T>::min()),
                     static_cast<uint64_t>(std::numeric_limits<T>::max()),
                     std::is_signed_v<T>};
}

TEST_F(FunctionTest, EveryIntegerWidthAtItsExtremes) {
  const IntegerCase cases[] = {
      Identity("int8_t f(int8_t)", ffid_test_i8),
      Identity("uint8_t f(uint8_t)", ffid_test_u8),
      Identity("int16_t f(int16_t)", ffid_test_i16),
      Identity("uint16_t f(uint16_t)", ffid_test_u16),
      Identity("int32_t f(int32_t)", ffid_test_i32),
      Identity("uint32_t f(uint32_t)", ffid_test_u32),
      Identity("int64_t f(int64_t)", ffid_test_i64),
      Identity("uint64_t f(uint64_t)", ffid_test_u64),
      Identity("char f(char)", ffid_test_char),
      Identity("signed char f(signed char)", ffid_test_schar),
      Identity("unsigned char f(unsigned char)", ffid_test_uchar),
      Identity("short f(short)", ffid_test_short),
      Identity("unsigned short f(unsigned short)", ffid_test_ushort),
      Identity("int f(int)", ffid_test_int),
      Identity("unsigned int f(unsigned int)", ffid_test_uint),
      Identity("long f(long)", ffid_test_long),
      Identity("unsigned long f(unsigned long)", ffid_test_ulong),
      Identity("long long f(long long)", ffid_test_llong),
      Identity("unsigned long long f(unsigned long long)", ffid_test_ullong),
      Identity("size_t f(size_t)", ffid_test_size),
      Identity("ssize_t f(ssize_t)", ffid_test_ssize),
      Identity("intptr_t f(intptr_t)", ffid_test_intptr),
      Identity("uintptr_t f(uintptr_t)", ffid_test_uintptr),
      Identity("ptrdiff_t f(ptrdiff_t)", ffid_test_ptrdiff),
  };
  for (const IntegerCase& c : cases) {
    auto function = Prepare(c.declaration, c.address);
    ASSERT_NE(function, nullptr);
    std::vector<v1::Value> values = {Uint(c.max), Uint(0), Int(1)};
    if (c.is_signed) values.push_back(Int(c.min));
    if (c.is_signed) values.push_back(Int(-1));
    for (const v1::Value& value : values) {
      absl::StatusOr<CallResult> result = Call(*function, {value});
      ASSERT_TRUE(result.ok()) << c.declaration << ": " << result.status();
      if (c.is_signed) {
        const int64_t expected = value.has_int_value()
                                     ? value.int_value()
                                     : static_cast<int64_t>(value.uint_value());
        EXPECT_EQ(result->result.int_value(), expected) << c.declaration;
      } else {
        EXPECT_EQ(result->result.uint_value(), value.uint_value() +
                                                   static_cast<uint64_t>(
                                                       value.int_value()))
            << c.declaration;
      }
    }
    // One beyond the range never reaches the function.
    if (c.max < UINT64_MAX) {
      absl::StatusOr<CallResult> result = Call(*function, {Uint(c.max + 1)});
      EXPECT_EQ(GetErrorReason(result.status()),
                v1::ERROR_REASON_VALUE_OUT_OF_RANGE)
          << c.declaration;
    }
  }
}

TEST_F(FunctionTest, NarrowReturnsAreSignOrZeroExtendedCorrectly) {
  EXPECT_EQ(CallOne("int8_t f(int8_t)", Fn(ffid_test_neg_i8), Int(5))
                .int_value(),
            -5);
  EXPECT_EQ(CallOne("int8_t f(int8_t)", Fn(ffid_test_neg_i8), Int(-127))
                .int_value(),
            127);
  EXPECT_EQ(CallOne("int16_t f(int16_t)", Fn(ffid_test_neg_i16), Int(300))
                .int_value(),
            -300);
  EXPECT_EQ(CallOne("uint8_t f(uint8_t)", Fn(ffid_test_not_u8), Int(0))
                .uint_value(),
            255u);
  EXPECT_EQ(CallOne("uint16_t f(uint16_t)", Fn(ffid_test_not_u16), Int(1))
                .uint_value(),
            65534u);
  EXPECT_EQ(CallOne("uint32_t f(uint32_t)", Fn(ffid_test_not_u32), Int(0))
                .uint_value(),
            4294967295u);
}

TEST_F(FunctionTest, ManyMixedArgumentsSpillToTheStack) {
  auto function = Prepare(
      "double f(int8_t, uint16_t, int32_t, int64_t, float, double, uint8_t, "
      "int64_t, float, double, int, double, double, double, double, double)",
      Fn(ffid_test_mixed));
  ASSERT_NE(function, nullptr);
  std::vector<v1::Value> arguments = {
      Int(-1),  Int(2),   Int(-3),   Int(4),   Double(0.5), Double(0.25),
      Int(7),   Int(-8),  Double(1), Double(2), Int(3),      Double(4),
      Double(5), Double(6), Double(7), Double(8)};
  absl::StatusOr<CallResult> result = Call(*function, arguments);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.double_value(),
            ffid_test_mixed(-1, 2, -3, 4, 0.5f, 0.25, 7, -8, 1, 2, 3, 4, 5, 6,
                            7, 8));
}

// CallColumns: every call in one loop, narrow results sign- or
// zero-extended, stack-spilled arguments, single-value columns.
TEST_F(FunctionTest, CallColumnsMatchOneCallAtATime) {
  auto negate = Prepare("int8_t f(int8_t)", Fn(ffid_test_neg_i8));
  ASSERT_NE(negate, nullptr);
  v1::ValueColumn column;
  for (int v : {5, -127, 0, 127}) column.add_int_values(v);
  v1::ValueColumn results;
  uint32_t failed = 0;
  const v1::ValueColumn* columns[] = {&column};
  ASSERT_TRUE(negate->CallColumns(columns, 4, results, failed).ok());
  EXPECT_THAT(results.int_values(), ::testing::ElementsAre(-5, 127, 0, -127));
  EXPECT_EQ(failed, 4u);

  auto invert = Prepare("uint16_t f(uint16_t)", Fn(ffid_test_not_u16));
  ASSERT_NE(invert, nullptr);
  v1::ValueColumn ones;
  ones.add_uint_values(1);
  const v1::ValueColumn* one_column[] = {&ones};
  v1::ValueColumn inverted;
  ASSERT_TRUE(invert->CallColumns(one_column, 3, inverted, failed).ok());
  EXPECT_THAT(inverted.uint_values(),
              ::testing::ElementsAre(65534u, 65534u, 65534u));

  auto mixed = Prepare(
      "double f(int8_t, uint16_t, int32_t, int64_t, float, double, uint8_t, "
      "int64_t, float, double, int, double, double, double, double, double)",
      Fn(ffid_test_mixed));
  ASSERT_NE(mixed, nullptr);
  std::vector<v1::ValueColumn> arguments(16);
  const bool floating[16] = {false, false, false, false, true,  true,
                             false, false, true,  true,  false, true,
                             true,  true,  true,  true};
  for (int i = 0; i < 16; ++i) {
    for (int call = 0; call < 2; ++call) {
      if (floating[i]) {
        arguments[i].add_double_values(0.5 * (i + call));
      } else {
        arguments[i].add_int_values(i + call);
      }
    }
  }
  std::vector<const v1::ValueColumn*> pointers;
  for (const v1::ValueColumn& argument : arguments) {
    pointers.push_back(&argument);
  }
  v1::ValueColumn sums;
  ASSERT_TRUE(mixed->CallColumns(pointers, 2, sums, failed).ok());
  ASSERT_EQ(sums.double_values_size(), 2);
  for (int call = 0; call < 2; ++call) {
    EXPECT_EQ(sums.double_values(call),
              ffid_test_mixed(call, 1 + call, 2 + call, 3 + call,
                              0.5f * (4 + call), 0.5 * (5 + call), 6 + call,
                              7 + call, 0.5f * (8 + call), 0.5 * (9 + call),
                              10 + call, 0.5 * (11 + call), 0.5 * (12 + call),
                              0.5 * (13 + call), 0.5 * (14 + call),
                              0.5 * (15 + call)));
  }
}

TEST_F(FunctionTest, CallColumnsStopAtAValueOutOfRange) {
  ffid_test_calls = 0;
  auto counted = Prepare("int f(int)", Fn(ffid_test_count_int));
  ASSERT_NE(counted, nullptr);
  v1::ValueColumn column;
  for (int64_t v : {int64_t{1}, int64_t{2}, int64_t{1} << 40, int64_t{4}}) {
    column.add_int_values(v);
  }
  const v1::ValueColumn* columns[] = {&column};
  v1::ValueColumn results;
  uint32_t failed = 0;
  absl::Status status = counted->CallColumns(columns, 4, results, failed);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_EQ(failed, 2u);
  EXPECT_EQ(ffid_test_calls.load(), 2);
  EXPECT_EQ(results.int_values_size(), 2);

  auto strlen_fn = Prepare("size_t f(const char *s)", Fn(ffid_test_strlen));
  ASSERT_NE(strlen_fn, nullptr);
  EXPECT_EQ(GetErrorReason(strlen_fn->ColumnsSupported()),
            v1::ERROR_REASON_UNSUPPORTED);
}

TEST_F(FunctionTest, BoolAndFloatingPoint) {
  EXPECT_FALSE(CallOne("bool f(bool)", Fn(ffid_test_not), [] {
                 v1::Value v;
                 v.set_bool_value(true);
                 return v;
               }()).bool_value());
  EXPECT_TRUE(CallOne("_Bool f(_Bool)", Fn(ffid_test_not), Int(0)).bool_value());

  for (double v : {1.5, -0.0, std::numeric_limits<double>::infinity(),
                   -std::numeric_limits<double>::infinity(), 1e-310}) {
    double got = CallOne("double f(double)", Fn(ffid_test_double), Double(v))
                     .double_value();
    EXPECT_EQ(std::memcmp(&got, &v, sizeof(v)), 0) << v;
  }
  EXPECT_TRUE(std::isnan(
      CallOne("double f(double)", Fn(ffid_test_double), Double(std::nan("")))
          .double_value()));

  for (double v : {1.5, -0.0, 3.4028234663852886e38,
                   -std::numeric_limits<double>::infinity()}) {
    double got = CallOne("float f(float)", Fn(ffid_test_float), Double(v))
                     .double_value();
    EXPECT_EQ(got, v);
    EXPECT_EQ(std::signbit(got), std::signbit(v));
  }
  EXPECT_TRUE(std::isnan(
      CallOne("float f(float)", Fn(ffid_test_float), Double(std::nan("")))
          .double_value()));
  auto add = Prepare("float f(float, float)", Fn(ffid_test_add_floats));
  absl::StatusOr<CallResult> sum = Call(*add, {Double(0.25), Int(2)});
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(sum->result.double_value(), 2.25);
  absl::StatusOr<CallResult> too_big = Call(*add, {Double(1e39), Int(0)});
  EXPECT_EQ(GetErrorReason(too_big.status()),
            v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_THAT(std::string(too_big.status().message()),
              HasSubstr("parameter 1 of 'f': value 1e+39 does not fit in float "
                        "(range -3.40282347e+38..3.40282347e+38)"));

  EXPECT_EQ(CallOne("long double f(long double)", Fn(ffid_test_ld_half),
                    Double(5))
                .long_double()
                .approximate(),
            2.5);
}

TEST_F(FunctionTest, StringsInAndOut) {
  const std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xF0\x9F\x98\x80";
  EXPECT_EQ(CallOne("size_t f(const char *)", Fn(ffid_test_strlen), String(text))
                .uint_value(),
            text.size());
  EXPECT_EQ(CallOne("const char *f(const char *)", Fn(ffid_test_echo),
                    String(text))
                .string_value(),
            text);
  auto greeting = Prepare("const char *f(void)", Fn(ffid_test_greeting));
  absl::StatusOr<CallResult> result = Call(*greeting, {});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->result.string_value(), ffid_test_greeting());

  auto null_string = Prepare("char *f(void)", Fn(ffid_test_null_string));
  result = Call(*null_string, {});
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->result.has_null_value());

  auto binary = Prepare("const char *f(void)", Fn(ffid_test_binary));
  result = Call(*binary, {});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->result.bytes_value(), "\xff\xfe");

  EXPECT_EQ(CallOne("size_t wcslen(const wchar_t *)", Fn(ffid_test_wcslen),
                    String("\xF0\x9F\x98\x80!"))
                .uint_value(),
            2u);
}

TEST_F(FunctionTest, NullAndRawPointers) {
  EXPECT_EQ(CallOne("int f(const void *)", Fn(ffid_test_is_null), Null())
                .int_value(),
            1);
  EXPECT_EQ(CallOne("int f(const char *)", Fn(ffid_test_is_null), Null())
                .int_value(),
            1);
  int value = 1234;
  EXPECT_EQ(CallOne("int f(const int *)", Fn(ffid_test_read_int),
                    Address(&value))
                .int_value(),
            1234);
  resolver_.handles["mem_x"] = &value;
  v1::Value handle;
  handle.mutable_pointer_value()->set_handle("mem_x");
  EXPECT_EQ(CallOne("int f(const int *)", Fn(ffid_test_read_int), handle)
                .int_value(),
            1234);

  auto null_pointer = Prepare("void *f(void)", Fn(ffid_test_null_pointer));
  absl::StatusOr<CallResult> result = Call(*null_pointer, {});
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->result.has_null_value());
  v1::Value wrapped =
      CallOne("void *f(void *)", Fn(ffid_test_identity_pointer), Address(&value));
  EXPECT_EQ(wrapped.pointer_value().address(), reinterpret_cast<uintptr_t>(&value));

  handle.mutable_pointer_value()->set_handle("mem_freed");
  auto read = Prepare("int f(const int *p)", Fn(ffid_test_read_int));
  result = Call(*read, {handle});
  EXPECT_EQ(GetErrorReason(result.status()), v1::ERROR_REASON_HANDLE_INVALID);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("parameter 1 'p' of 'f'"));
}

TEST_F(FunctionTest, OutAndInOutPointers) {
  v1::FunctionType divmod;
  divmod.mutable_return_type()->set_scalar(v1::SCALAR_KIND_VOID);
  for (const char* name : {"a", "b"}) {
    v1::Parameter* parameter = divmod.add_parameters();
    parameter->set_name(name);
    parameter->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  }
  for (const char* name : {"quotient", "remainder"}) {
    v1::Parameter* parameter = divmod.add_parameters();
    parameter->set_name(name);
    v1::PointerType* pointer = parameter->mutable_type()->mutable_pointer();
    pointer->mutable_pointee()->set_scalar(v1::SCALAR_KIND_INT);
    pointer->set_direction(v1::POINTER_DIRECTION_OUT);
  }
  auto function =
      PreparedFunction::Create("divmod", divmod, Fn(ffid_test_divmod));
  ASSERT_TRUE(function.ok()) << function.status();
  absl::StatusOr<CallResult> result =
      Call(**function, {Int(17), Int(5), v1::Value(), v1::Value()});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->has_result);
  ASSERT_EQ(result->out_values.size(), 2u);
  EXPECT_EQ(result->out_values.at(2).int_value(), 3);
  EXPECT_EQ(result->out_values.at(3).int_value(), 2);

  // A caller's own pointer is used as is and reported by nobody.
  int quotient = 0;
  result = Call(**function, {Int(9), Int(2), Address(&quotient), v1::Value()});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(quotient, 4);
  EXPECT_EQ(result->out_values.count(2), 0u);
  EXPECT_EQ(result->out_values.at(3).int_value(), 1);

  v1::FunctionType increment;
  v1::Parameter* io = increment.add_parameters();
  io->mutable_type()->mutable_pointer()->mutable_pointee()->set_scalar(
      v1::SCALAR_KIND_INT);
  io->mutable_type()->mutable_pointer()->set_direction(
      v1::POINTER_DIRECTION_INOUT);
  function = PreparedFunction::Create("increment", increment,
                                      Fn(ffid_test_increment));
  ASSERT_TRUE(function.ok());
  result = Call(**function, {Int(41)});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->out_values.at(0).int_value(), 42);

  // strtol's end pointer as an OUT string: the rest of the input.
  v1::FunctionType strtol;
  strtol.mutable_return_type()->set_scalar(v1::SCALAR_KIND_LONG);
  strtol.add_parameters()->mutable_type()->mutable_string()->set_is_const(true);
  v1::PointerType* end =
      strtol.add_parameters()->mutable_type()->mutable_pointer();
  end->mutable_pointee()->mutable_string();
  end->set_direction(v1::POINTER_DIRECTION_OUT);
  strtol.add_parameters()->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  function = PreparedFunction::Create("strtol", strtol, Libc("strtol"));
  ASSERT_TRUE(function.ok());
  result = Call(**function, {String("123abc"), v1::Value(), Int(10)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.int_value(), 123);
  EXPECT_EQ(result->out_values.at(1).string_value(), "abc");
}

TEST_F(FunctionTest, ArgumentCountIsCheckedFirst) {
  auto cos = Prepare("double cos(double)", Libc("cos"));
  absl::StatusOr<CallResult> result = Call(*cos, {Double(1), Double(2)});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(result.status()), v1::ERROR_REASON_ARGUMENT_COUNT);
  EXPECT_EQ(std::string(result.status().message()),
            "'cos' takes 1 argument, got 2");
  result = Call(*cos, {});
  EXPECT_EQ(std::string(result.status().message()),
            "'cos' takes 1 argument, got 0");
  auto pow = Prepare("double pow(double, double)", Libc("pow"));
  result = Call(*pow, {Double(1)});
  EXPECT_EQ(std::string(result.status().message()),
            "'pow' takes 2 arguments, got 1");
  result = Call(*cos, {Double(1)}, {Scalar(v1::SCALAR_KIND_INT)});
  EXPECT_EQ(GetErrorReason(result.status()), v1::ERROR_REASON_ARGUMENT_COUNT);
  EXPECT_EQ(std::string(result.status().message()),
            "'cos' is not variadic, but 1 variadic argument type was given");
}

TEST_F(FunctionTest, NothingNativeRunsWhenAnArgumentIsWrong) {
  auto function = Prepare("int f(int a, int b)", Fn(ffid_test_sum_ints));
  ffid_test_calls = 0;
  auto counted = Prepare("int count(int x)", Fn(ffid_test_count_int));
  absl::StatusOr<CallResult> result = Call(*counted, {String("seven")});
  EXPECT_EQ(GetErrorReason(result.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(std::string(result.status().message()),
            "parameter 1 'x' of 'count': expected an integer for 'int', got a "
            "string");
  result = Call(*counted, {Int(int64_t{1} << 40)});
  EXPECT_EQ(std::string(result.status().message()),
            "parameter 1 'x' of 'count': value 1099511627776 does not fit in "
            "int (range -2147483648..2147483647)");
  EXPECT_EQ(ffid_test_calls.load(), 0);
  result = Call(*counted, {Int(3)});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(ffid_test_calls.load(), 1);
  EXPECT_NE(function, nullptr);
}

TEST_F(FunctionTest, VoidFunctions) {
  auto function = Prepare("void count(void)", Fn(ffid_test_count));
  ffid_test_calls = 0;
  absl::StatusOr<CallResult> result = Call(*function, {});
  ASSERT_TRUE(result.ok());
  EXPECT_FALSE(result->has_result);
  EXPECT_EQ(ffid_test_calls.load(), 1);
}

TEST_F(FunctionTest, VariadicCallsPromoteTheirArguments) {
  auto sum = Prepare("int sum(int count, ...)", Fn(ffid_test_sum_ints));
  absl::StatusOr<CallResult> result =
      Call(*sum, {Int(3), Int(1), Int(-2), Int(30)},
           {Scalar(v1::SCALAR_KIND_INT), Scalar(v1::SCALAR_KIND_SHORT),
            Scalar(v1::SCALAR_KIND_UINT8)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.int_value(), 29);
  // The original type's range still applies before promotion.
  result = Call(*sum, {Int(1), Int(300)}, {Scalar(v1::SCALAR_KIND_INT8)});
  EXPECT_EQ(GetErrorReason(result.status()),
            v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("argument 2 (variadic) of 'sum'"));

  auto sum_doubles =
      Prepare("double sum_doubles(int count, ...)", Fn(ffid_test_sum_doubles));
  result = Call(*sum_doubles, {Int(2), Double(0.5), Double(0.25)},
                {Scalar(v1::SCALAR_KIND_FLOAT), Scalar(v1::SCALAR_KIND_DOUBLE)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.double_value(), 0.75);

  result = Call(*sum, {Int(2), Int(1)}, {Scalar(v1::SCALAR_KIND_INT),
                                         Scalar(v1::SCALAR_KIND_INT)});
  EXPECT_EQ(GetErrorReason(result.status()), v1::ERROR_REASON_ARGUMENT_COUNT);
  EXPECT_EQ(std::string(result.status().message()),
            "'sum' got 1 variadic argument but 2 variadic argument types; give "
            "at most one type per variadic argument");
  // Without types, each variadic argument's comes from its value: int,
  // double, const char *, as C's default promotions leave them.
  result = Call(*sum_doubles, {Int(2), Double(0.5), Double(0.25)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.double_value(), 0.75);
  result = Call(*sum, {Int(2), Int(40), Int(2)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.int_value(), 42);
  v1::Value record;
  record.mutable_record_value();
  result = Call(*sum, {Int(1), record});
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("cannot be inferred from its value"));
  result = Call(*sum, {});
  EXPECT_EQ(std::string(result.status().message()),
            "'sum' takes at least 1 argument, got 0");
  result = Call(*sum, {Int(1), Int(1)}, {Scalar(v1::SCALAR_KIND_VOID)});
  EXPECT_EQ(GetErrorReason(result.status()), v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST_F(FunctionTest, SnprintfFromLibc) {
  auto snprintf =
      Prepare("int snprintf(char *str, size_t size, const char *format, ...)",
              Libc("snprintf"));
  char buffer[64] = {};
  resolver_.handles["mem_buffer"] = buffer;
  v1::Value destination;
  destination.mutable_pointer_value()->set_handle("mem_buffer");
  v1::TypeDescriptor string;
  string.mutable_string();
  absl::StatusOr<CallResult> result =
      Call(*snprintf,
           {destination, Uint(sizeof(buffer)), String("%s=%d %.2f %c %lld"),
            String("x"), Int(-42), Double(1.5), String("Z"), Int(-(1LL << 40))},
           {string, Scalar(v1::SCALAR_KIND_INT), Scalar(v1::SCALAR_KIND_FLOAT),
            Scalar(v1::SCALAR_KIND_CHAR), Scalar(v1::SCALAR_KIND_LONG_LONG)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_STREQ(buffer, "x=-42 1.50 Z -1099511627776");
  EXPECT_EQ(result->result.int_value(),
            static_cast<int64_t>(std::strlen(buffer)));
}

TEST_F(FunctionTest, ErrnoIsCapturedWhenAsked) {
  auto set_errno = Prepare("int f(int)", Fn(ffid_test_set_errno));
  CallOptions capture;
  capture.capture_errno = true;
  absl::StatusOr<CallResult> result =
      Call(*set_errno, {Int(EDOM)}, {}, capture);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->errno_value, EDOM);
  result = Call(*set_errno, {Int(EDOM)});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->errno_value, 0);

  auto strtol = Prepare("long strtol(const char *, char **, int)",
                        Libc("strtol"));
  result = Call(*strtol, {String("99999999999999999999999"), Null(), Int(10)},
                {}, capture);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->errno_value, ERANGE);
  EXPECT_EQ(result->result.int_value(), LONG_MAX);
  // errno is zeroed first, so a call that does not fail reports 0.
  result = Call(*strtol, {String("12"), Null(), Int(10)}, {}, capture);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->errno_value, 0);
}

TEST_F(FunctionTest, FunctionPointerArguments) {
  auto apply = Prepare("int apply(int (*fn)(int), int v)", Fn(ffid_test_apply));
  absl::StatusOr<CallResult> result =
      Call(*apply, {Address(reinterpret_cast<void*>(ffid_test_twice)), Int(21)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.int_value(), 42);
  result = Call(*apply, {Null(), Int(21)});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->result.int_value(), -1);
  v1::Value callback;
  callback.set_callback_handle("cb_123");
  result = Call(*apply, {callback, Int(1)});
  EXPECT_EQ(GetErrorReason(result.status()), v1::ERROR_REASON_UNSUPPORTED);
}

TEST_F(FunctionTest, ArrayParametersAreTheirElementsAddress) {
  v1::FunctionType sum;
  sum.mutable_return_type()->set_scalar(v1::SCALAR_KIND_INT);
  v1::ArrayType* array = sum.add_parameters()->mutable_type()->mutable_array();
  array->mutable_element()->set_scalar(v1::SCALAR_KIND_INT);
  array->set_length(4);
  auto function =
      PreparedFunction::Create("sum_array", sum, Fn(ffid_test_sum_array));
  ASSERT_TRUE(function.ok()) << function.status();
  EXPECT_TRUE((*function)->type().parameters(0).type().has_pointer());
  int values[4] = {1, 2, 3, 4};
  absl::StatusOr<CallResult> result = Call(**function, {Address(values)});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->result.int_value(), 10);
}

TEST_F(FunctionTest, StructsAndUnionsByValue) {
  absl::StatusOr<Declarations> types = ParseDeclarations(
      "struct point { int x, y; };"
      "struct big { double a; char name[16]; long long b; };"
      "union int_or_float { int i; float f; };"
      "union doubles { double d; float f[2]; };");
  ASSERT_TRUE(types.ok()) << types.status();

  auto make_point = Prepare("struct point make(int, int)",
                            Fn(ffid_test_make_point), types->types);
  absl::StatusOr<CallResult> result = Call(*make_point, {Int(3), Int(-4)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.record_value().fields().at("x").int_value(), 3);
  EXPECT_EQ(result->result.record_value().fields().at("y").int_value(), -4);

  auto point_sum = Prepare("int sum(struct point p)", Fn(ffid_test_point_sum),
                           types->types);
  result = Call(*point_sum, {result->result});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.int_value(), -1);

  auto make_big = Prepare("struct big make(double, long long)",
                          Fn(ffid_test_make_big), types->types);
  result = Call(*make_big, {Double(1.5), Int(10)});
  ASSERT_TRUE(result.ok()) << result.status();
  const auto& big = result->result.record_value().fields();
  EXPECT_EQ(big.at("a").double_value(), 1.5);
  EXPECT_EQ(big.at("b").int_value(), 10);
  EXPECT_EQ(big.at("name").bytes_value().substr(0, 4), std::string("big\0", 4));
  auto big_total = Prepare("double total(struct big)", Fn(ffid_test_big_total),
                           types->types);
  result = Call(*big_total, {result->result});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.double_value(), 14.5);

  v1::Value float_member;
  (*float_member.mutable_record_value()->mutable_fields())["f"] = Double(2.5);
  auto union_float = Prepare("float f(union int_or_float)",
                             Fn(ffid_test_union_float), types->types);
  result = Call(*union_float, {float_member});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.double_value(), 2.5);

  v1::Value double_member;
  (*double_member.mutable_record_value()->mutable_fields())["d"] = Double(-7.25);
  auto union_double = Prepare("double f(union doubles)",
                              Fn(ffid_test_union_double), types->types);
  result = Call(*union_double, {double_member});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result.double_value(), -7.25);
}

TEST_F(FunctionTest, InvalidSignatures) {
  v1::FunctionType with_void;
  with_void.add_parameters()->mutable_type()->set_scalar(v1::SCALAR_KIND_VOID);
  absl::StatusOr<std::unique_ptr<PreparedFunction>> function =
      PreparedFunction::Create("f", with_void, Fn(ffid_test_count));
  EXPECT_EQ(GetErrorReason(function.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_THAT(std::string(function.status().message()),
              HasSubstr("parameter 1 of 'f': a parameter cannot have type void"));

  v1::FunctionType unresolved;
  v1::Parameter* p = unresolved.add_parameters();
  p->set_name("p");
  p->mutable_type()->set_named("point_t");
  function = PreparedFunction::Create("g", unresolved, Fn(ffid_test_count));
  EXPECT_EQ(GetErrorReason(function.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(std::string(function.status().message()),
            "parameter 1 'p' of 'g': unresolved type name 'point_t'");

  v1::FunctionType returns_array;
  returns_array.mutable_return_type()->mutable_array()->set_length(2);
  returns_array.mutable_return_type()
      ->mutable_array()
      ->mutable_element()
      ->set_scalar(v1::SCALAR_KIND_INT);
  function = PreparedFunction::Create("h", returns_array, Fn(ffid_test_count));
  EXPECT_EQ(GetErrorReason(function.status()), v1::ERROR_REASON_TYPE_MISMATCH);

  v1::FunctionType packed;
  v1::RecordType* record =
      packed.add_parameters()->mutable_type()->mutable_record();
  record->set_name("p");
  record->set_packed(true);
  v1::Field* c = record->add_fields();
  c->set_name("c");
  c->mutable_type()->set_scalar(v1::SCALAR_KIND_CHAR);
  v1::Field* i = record->add_fields();
  i->set_name("i");
  i->mutable_type()->set_scalar(v1::SCALAR_KIND_INT);
  // Packed structs pass by value (described to libffi by ABI class).
  function = PreparedFunction::Create("k", packed, Fn(ffid_test_count));
  EXPECT_TRUE(function.ok()) << function.status();

  function = PreparedFunction::Create("null", v1::FunctionType(), nullptr);
  EXPECT_FALSE(function.ok());
}

TEST_F(FunctionTest, CallsFromManyThreadsAtOnce) {
  auto cos = Prepare("double cos(double)", Libc("cos"));
  auto echo = Prepare("const char *echo(const char *)", Fn(ffid_test_echo));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      MapResolver resolver;
      for (int i = 0; i < 500; ++i) {
        std::vector<v1::Value> arguments = {Double(t + i * 0.001)};
        absl::StatusOr<CallResult> result =
            cos->Call(arguments, {}, resolver);
        if (!result.ok() ||
            result->result.double_value() != std::cos(t + i * 0.001)) {
          ++failures;
        }
        std::vector<v1::Value> text = {String(absl::StrCat("t", t, "i", i))};
        result = echo->Call(text, {}, resolver);
        if (!result.ok() ||
            result->result.string_value() != absl::StrCat("t", t, "i", i)) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace ffid::ffi
