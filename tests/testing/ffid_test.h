// A GoogleTest base for tests against a real daemon, plus matchers.
//
// FfidTest starts one daemon per test suite (each ctest invocation runs one
// test, so in practice one per test process), and gives each test a client,
// a session and the fixture library loaded in it. Used from the test thread.
#ifndef FFID_TESTS_TESTING_FFID_TEST_H_
#define FFID_TESTS_TESTING_FFID_TEST_H_

#include <map>
#include <optional>
#include <type_traits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/daemon.h"

namespace ffid::testing {

// Matches an absl::Status (or StatusOr) whose ErrorInfo reason is `reason`.
MATCHER_P(HasReason, reason,
          absl::StrCat("fails with reason ", std::string(reason))) {
  const absl::Status status = [&]() {
    if constexpr (std::is_same_v<std::decay_t<arg_type>, absl::Status>) {
      return arg;
    } else {
      return arg.status();
    }
  }();
  *result_listener << "status is " << status << " (reason '"
                   << client::ErrorReason(status) << "')";
  return !status.ok() && client::ErrorReason(status) == std::string(reason);
}

// Matches an OK absl::Status or StatusOr.
MATCHER(IsOk, "is OK") {
  const absl::Status status = [&]() {
    if constexpr (std::is_same_v<std::decay_t<arg_type>, absl::Status>) {
      return arg;
    } else {
      return arg.status();
    }
  }();
  *result_listener << "status is " << status;
  return status.ok();
}

// Matches a status with code `code`.
MATCHER_P(HasCode, code, "") {
  const absl::Status status = [&]() {
    if constexpr (std::is_same_v<std::decay_t<arg_type>, absl::Status>) {
      return arg;
    } else {
      return arg.status();
    }
  }();
  *result_listener << "status is " << status;
  return status.code() == code;
}

// The message of a status or StatusOr.
template <typename T>
std::string MessageOf(const T& value) {
  if constexpr (std::is_same_v<T, absl::Status>) {
    return std::string(value.message());
  } else {
    return std::string(value.status().message());
  }
}

// An integer carried as int_value or uint_value, widened so that every
// 64-bit value of either signedness fits.
using Integer = __int128;

inline std::optional<Integer> IntegerOf(const v1::Value& value) {
  if (value.has_int_value()) return Integer{value.int_value()};
  if (value.has_uint_value()) return Integer{value.uint_value()};
  return std::nullopt;
}

inline std::string IntegerToString(Integer value) {
  if (value == 0) return "0";
  const bool negative = value < 0;
  unsigned __int128 magnitude = negative ? -static_cast<unsigned __int128>(value)
                                         : static_cast<unsigned __int128>(value);
  std::string digits;
  while (magnitude > 0) {
    digits.insert(digits.begin(), static_cast<char>('0' + magnitude % 10));
    magnitude /= 10;
  }
  return negative ? "-" + digits : digits;
}

// Matches a Value holding the integer `expected` (as int_value or
// uint_value).
MATCHER_P(IsInteger, expected,
          absl::StrCat("is the integer ", IntegerToString(expected))) {
  std::optional<Integer> actual = IntegerOf(arg);
  if (!actual.has_value()) {
    *result_listener << "holds no integer: " << arg.ShortDebugString();
    return false;
  }
  *result_listener << "holds " << IntegerToString(*actual);
  return *actual == static_cast<Integer>(expected);
}

class FfidTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon).release();
  }

  static void TearDownTestSuite() {
    if (daemon_ == nullptr) return;
    absl::Status stopped = daemon_->Stop();
    EXPECT_TRUE(stopped.ok()) << "the daemon did not shut down cleanly: "
                              << stopped;
    delete daemon_;
    daemon_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(daemon_, nullptr) << "the daemon did not start";
    client_ = Connect();
    ASSERT_NE(client_, nullptr);
    session_ = NewSession();
    ASSERT_NE(session_, nullptr);
    absl::StatusOr<client::Library> library =
        session_->LoadLibrary(FixturePath());
    ASSERT_TRUE(library.ok()) << library.status();
    fixture_ = *library;
  }

  void TearDown() override {
    functions_.clear();
    session_.reset();
    client_.reset();
  }

  static Daemon& daemon() { return *daemon_; }

  std::unique_ptr<client::Client> Connect() {
    absl::StatusOr<std::unique_ptr<client::Client>> client =
        client::Client::Connect(daemon_->address(), absl::Seconds(10));
    EXPECT_TRUE(client.ok())
        << client.status() << "; the daemon is "
        << (daemon_->IsRunning() ? "running" : "not running")
        << "; its stderr so far:\n" << daemon_->Log();
    return client.ok() ? std::move(*client) : nullptr;
  }

  std::unique_ptr<client::Session> NewSession(
      const client::SessionOptions& options = {}) {
    absl::StatusOr<std::unique_ptr<client::Session>> session =
        client_->CreateSession(options);
    EXPECT_TRUE(session.ok()) << session.status();
    return session.ok() ? std::move(*session) : nullptr;
  }

  // Resolves `declaration` in the fixture (cached per declaration).
  absl::StatusOr<client::Function> Resolve(const std::string& declaration) {
    auto it = functions_.find(declaration);
    if (it != functions_.end()) return it->second;
    absl::StatusOr<client::Function> function =
        session_->ResolveFunction(fixture_, declaration);
    if (function.ok()) functions_[declaration] = *function;
    return function;
  }

  // Resolves `declaration` in the fixture and calls it.
  absl::StatusOr<v1::CallResponse> Call(
      const std::string& declaration, std::vector<v1::Value> arguments = {},
      const client::CallOptions& options = {}) {
    absl::StatusOr<client::Function> function = Resolve(declaration);
    if (!function.ok()) return function.status();
    return session_->Call(*function, std::move(arguments), options);
  }

  // As Call, returning just the result value; fails the test on error.
  v1::Value CallOk(const std::string& declaration,
                   std::vector<v1::Value> arguments = {}) {
    absl::StatusOr<v1::CallResponse> response =
        Call(declaration, std::move(arguments));
    EXPECT_TRUE(response.ok()) << declaration << ": " << response.status();
    return response.ok() ? response->result() : v1::Value();
  }

  static inline Daemon* daemon_ = nullptr;
  std::unique_ptr<client::Client> client_;
  std::unique_ptr<client::Session> session_;
  client::Library fixture_;
  std::map<std::string, client::Function> functions_;
};

}  // namespace ffid::testing

#endif  // FFID_TESTS_TESTING_FFID_TEST_H_
