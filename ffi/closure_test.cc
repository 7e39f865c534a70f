#include "ffi/closure.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ffi/declaration_parser.h"
#include "ffi/errors.h"
#include "ffi/internal/map_resolver.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::ffi {
namespace {

using ::testing::HasSubstr;

v1::FunctionType Signature(const std::string& declaration) {
  absl::StatusOr<v1::FunctionDeclaration> parsed =
      ParseFunctionDeclaration(declaration);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? parsed->type() : v1::FunctionType();
}

// Runs `body` for every call: it gets the decoded arguments and returns the
// result value to encode.
class LambdaHandler : public ClosureHandler {
 public:
  explicit LambdaHandler(
      std::function<v1::Value(const std::vector<v1::Value>&)> body)
      : body_(std::move(body)) {}

  void OnCall(const Closure& closure, void* result,
              void** arguments) override {
    calls++;
    internal::MapResolver resolver;
    absl::StatusOr<std::vector<v1::Value>> values =
        closure.DecodeArguments(arguments, resolver);
    ASSERT_TRUE(values.ok()) << values.status();
    std::string bytes;
    ASSERT_TRUE(closure.EncodeResult(body_(*values), resolver, &bytes).ok());
    closure.WriteResultBytes(bytes, result);
  }

  std::atomic<int> calls{0};

 private:
  std::function<v1::Value(const std::vector<v1::Value>&)> body_;
};

v1::Value Int(int64_t v) {
  v1::Value value;
  value.set_int_value(v);
  return value;
}

TEST(ClosureTest, AddsTwoInts) {
  LambdaHandler handler([](const std::vector<v1::Value>& args) {
    return Int(args[0].int_value() + args[1].int_value());
  });
  absl::StatusOr<std::unique_ptr<Closure>> closure =
      Closure::Create("add", Signature("int add(int, int)"), handler, 7);
  ASSERT_TRUE(closure.ok()) << closure.status();
  EXPECT_EQ((*closure)->tag(), 7u);
  auto add = reinterpret_cast<int (*)(int, int)>((*closure)->code());
  EXPECT_EQ(add(2, 40), 42);
  EXPECT_EQ(add(-5, 3), -2);
  EXPECT_EQ(handler.calls.load(), 2);
}

TEST(ClosureTest, NarrowSignedResultIsSignExtended) {
  LambdaHandler handler(
      [](const std::vector<v1::Value>&) { return Int(-1); });
  absl::StatusOr<std::unique_ptr<Closure>> closure =
      Closure::Create("m1", Signature("signed char m1(void)"), handler);
  ASSERT_TRUE(closure.ok()) << closure.status();
  auto m1 = reinterpret_cast<signed char (*)()>((*closure)->code());
  EXPECT_EQ(m1(), -1);
}

struct Point {
  float x;
  float y;
  double weight;
};

TEST(ClosureTest, StructByValueAndFloats) {
  LambdaHandler handler([](const std::vector<v1::Value>& args) {
    const auto& fields = args[0].record_value().fields();
    v1::Value value;
    value.set_double_value(fields.at("x").double_value() *
                               args[1].double_value() +
                           fields.at("y").double_value() +
                           fields.at("weight").double_value());
    return value;
  });
  absl::StatusOr<Declarations> declarations = ParseDeclarations(
      "struct point { float x; float y; double weight; };"
      "float scale(struct point p, float factor);");
  ASSERT_TRUE(declarations.ok()) << declarations.status();
  absl::StatusOr<std::unique_ptr<Closure>> closure = Closure::Create(
      "scale", declarations->functions[0].type(), handler);
  ASSERT_TRUE(closure.ok()) << closure.status();
  auto scale = reinterpret_cast<float (*)(Point, float)>((*closure)->code());
  EXPECT_FLOAT_EQ(scale(Point{1.5f, 2.0f, 0.25}, 2.0f), 5.25f);
}

TEST(ClosureTest, VoidCallbackGetsPointerArgument) {
  std::atomic<uint64_t> seen{0};
  LambdaHandler handler([&seen](const std::vector<v1::Value>& args) {
    seen = args[0].pointer_value().address();
    return v1::Value();
  });
  absl::StatusOr<std::unique_ptr<Closure>> closure =
      Closure::Create("note", Signature("void note(void *p)"), handler);
  ASSERT_TRUE(closure.ok()) << closure.status();
  int target = 0;
  reinterpret_cast<void (*)(void*)>((*closure)->code())(&target);
  EXPECT_EQ(seen.load(), reinterpret_cast<uintptr_t>(&target));
}

TEST(ClosureTest, CalledFromManyThreadsAtOnce) {
  LambdaHandler handler([](const std::vector<v1::Value>& args) {
    return Int(args[0].int_value() * 2);
  });
  absl::StatusOr<std::unique_ptr<Closure>> closure =
      Closure::Create("twice", Signature("long twice(long)"), handler);
  ASSERT_TRUE(closure.ok()) << closure.status();
  auto twice = reinterpret_cast<long (*)(long)>((*closure)->code());
  std::atomic<long> sum{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (long i = 0; i < 250; ++i) sum += twice(i);
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(sum.load(), 4 * 2 * (249 * 250 / 2));
  EXPECT_EQ(handler.calls.load(), 1000);
}

TEST(ClosureTest, DefaultResultBytesAreZeroWhenEmpty) {
  class Defaulting : public ClosureHandler {
    void OnCall(const Closure& closure, void* result, void**) override {
      closure.WriteResultBytes("", result);
    }
  } handler;
  absl::StatusOr<std::unique_ptr<Closure>> closure =
      Closure::Create("z", Signature("double z(int)"), handler);
  ASSERT_TRUE(closure.ok()) << closure.status();
  EXPECT_EQ(reinterpret_cast<double (*)(int)>((*closure)->code())(3), 0.0);
}

TEST(ClosureTest, EncodeResultRejectsWrongKind) {
  LambdaHandler handler([](const std::vector<v1::Value>&) { return Int(0); });
  absl::StatusOr<std::unique_ptr<Closure>> closure =
      Closure::Create("f", Signature("int f(void)"), handler);
  ASSERT_TRUE(closure.ok());
  internal::MapResolver resolver;
  v1::Value text;
  text.set_string_value("nope");
  std::string bytes;
  absl::Status status = (*closure)->EncodeResult(text, resolver, &bytes);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_THAT(status.message(), HasSubstr("the result of callback 'f'"));
}

TEST(ClosureTest, RefusesVariadicAndStringResults) {
  LambdaHandler handler([](const std::vector<v1::Value>&) { return Int(0); });
  absl::StatusOr<std::unique_ptr<Closure>> variadic =
      Closure::Create("v", Signature("int v(int, ...)"), handler);
  EXPECT_EQ(GetErrorReason(variadic.status()), v1::ERROR_REASON_UNSUPPORTED);
  absl::StatusOr<std::unique_ptr<Closure>> text =
      Closure::Create("s", Signature("const char *s(void)"), handler);
  EXPECT_EQ(GetErrorReason(text.status()), v1::ERROR_REASON_UNSUPPORTED);
  EXPECT_THAT(text.status().message(), HasSubstr("string"));
}

}  // namespace
}  // namespace ffid::ffi
