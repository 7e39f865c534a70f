// A worker's death (segfault, abort, exit, an outside kill) fails the calls
// of its session with WORKER_CRASHED and a crash report, marks the session
// dead, and leaves the daemon and every other session serving.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeInt;
using ::testing::AllOf;
using ::testing::HasSubstr;

class CrashTest : public FfidTest {
 protected:
  // A session created before the crash, with the fixture loaded and fx_add
  // resolved, to check that it is unaffected.
  void SetUp() override {
    FfidTest::SetUp();
    if (HasFatalFailure()) return;
    bystander_ = NewSession();
    ASSERT_NE(bystander_, nullptr);
    absl::StatusOr<client::Library> library =
        bystander_->LoadLibrary(FixturePath());
    ASSERT_TRUE(library.ok()) << library.status();
    absl::StatusOr<client::Function> add =
        bystander_->ResolveFunction(*library, "int fx_add(int a, int b)");
    ASSERT_TRUE(add.ok()) << add.status();
    bystander_add_ = *add;
    daemon_pid_ = daemon().pid();
  }

  void TearDown() override {
    bystander_.reset();
    FfidTest::TearDown();
  }

  // Checks everything that must hold after `session_`'s worker died.
  void ExpectOthersUnaffected() {
    EXPECT_TRUE(daemon().IsRunning()) << "the daemon died";
    EXPECT_EQ(daemon().pid(), daemon_pid_);
    // The session that existed before the crash.
    absl::StatusOr<v1::CallResponse> response =
        bystander_->Call(bystander_add_, {MakeInt(20), MakeInt(22)});
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_THAT(response->result(), IsInteger(42));
    // A new session.
    std::unique_ptr<client::Session> fresh = NewSession();
    ASSERT_NE(fresh, nullptr);
    absl::StatusOr<client::Library> library = fresh->LoadLibrary(FixturePath());
    ASSERT_TRUE(library.ok()) << library.status();
    absl::StatusOr<client::Function> add =
        fresh->ResolveFunction(*library, "int fx_add(int a, int b)");
    ASSERT_TRUE(add.ok()) << add.status();
    response = fresh->Call(*add, {MakeInt(1), MakeInt(1)});
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_THAT(response->result(), IsInteger(2));
  }

  // Checks that later uses of the crashed session say it died and how.
  void ExpectSessionDead(absl::string_view how) {
    absl::StatusOr<v1::CallResponse> later =
        Call("int fx_add(int a, int b)", {MakeInt(1), MakeInt(2)});
    EXPECT_THAT(later, HasReason("WORKER_CRASHED"));
    EXPECT_THAT(later, HasCode(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(MessageOf(later),
                AllOf(HasSubstr("died"), HasSubstr(std::string(how))));
    EXPECT_THAT(session_->LoadLibrary("libm.so.6"), HasReason("WORKER_CRASHED"));
    EXPECT_THAT(session_->Allocate(8), HasReason("WORKER_CRASHED"));
    absl::StatusOr<v1::Session> state = session_->Get();
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(state->state(), v1::SESSION_STATE_CRASHED);
    EXPECT_TRUE(state->has_crash());
    EXPECT_TRUE(WaitForProcessGone(session_->worker_pid(), absl::Seconds(10)))
        << "worker " << session_->worker_pid() << " is still there";
  }

  std::unique_ptr<client::Session> bystander_;
  client::Function bystander_add_;
  pid_t daemon_pid_ = 0;
};

TEST_F(CrashTest, NullDereference) {
  absl::StatusOr<v1::CallResponse> response = Call("void fx_crash_null(void)");
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(response, HasCode(absl::StatusCode::kUnavailable));
  EXPECT_THAT(MessageOf(response),
              AllOf(HasSubstr("SIGSEGV"), HasSubstr("fx_crash_null")));
  std::optional<v1::CrashReport> report = client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value()) << "no CrashReport in " << response.status();
  EXPECT_EQ(report->signal(), SIGSEGV);
  EXPECT_EQ(report->signal_name(), "SIGSEGV");
  EXPECT_EQ(report->pid(), session_->worker_pid());
  EXPECT_EQ(report->function(), "fx_crash_null");
  ExpectSessionDead("SIGSEGV");
  ExpectOthersUnaffected();
}

TEST_F(CrashTest, Abort) {
  absl::StatusOr<v1::CallResponse> response = Call("void fx_abort(void)");
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(response), HasSubstr("SIGABRT"));
  std::optional<v1::CrashReport> report = client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), SIGABRT);
  EXPECT_EQ(report->signal_name(), "SIGABRT");
  ExpectSessionDead("SIGABRT");
  ExpectOthersUnaffected();
}

TEST_F(CrashTest, Exit3) {
  absl::StatusOr<v1::CallResponse> response = Call("void fx_exit3(void)");
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(response), AllOf(HasSubstr("exit"), HasSubstr("3")));
  std::optional<v1::CrashReport> report = client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), 0);
  EXPECT_EQ(report->exit_code(), 3);
  EXPECT_EQ(report->function(), "fx_exit3");
  ExpectSessionDead("3");
  ExpectOthersUnaffected();
}

TEST_F(CrashTest, KilledFromOutsideWhileACallIsInFlight) {
  std::atomic<bool> started{false};
  absl::StatusOr<v1::CallResponse> response;
  absl::StatusOr<client::Function> sleep = Resolve("void fx_sleep_ms(int ms)");
  ASSERT_TRUE(sleep.ok()) << sleep.status();
  std::thread caller([&] {
    started = true;
    response = session_->Call(*sleep, {MakeInt(20000)});
  });
  while (!started) absl::SleepFor(absl::Milliseconds(1));
  // Give the call time to reach the worker, as an OOM killer would.
  absl::SleepFor(absl::Milliseconds(300));
  ASSERT_EQ(kill(session_->worker_pid(), SIGKILL), 0);
  caller.join();
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(response, HasCode(absl::StatusCode::kUnavailable));
  EXPECT_THAT(MessageOf(response), AllOf(HasSubstr("SIGKILL"),
                                         HasSubstr("fx_sleep_ms")));
  ExpectSessionDead("SIGKILL");
  ExpectOthersUnaffected();
}

TEST_F(CrashTest, OtherSessionsCallsInFlightAreUnaffected) {
  std::unique_ptr<client::Session> busy = NewSession();
  ASSERT_NE(busy, nullptr);
  absl::StatusOr<client::Library> library = busy->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> sleep =
      busy->ResolveFunction(*library, "void fx_sleep_ms(int ms)");
  ASSERT_TRUE(sleep.ok()) << sleep.status();
  absl::StatusOr<v1::CallResponse> slow;
  std::thread caller([&] { slow = busy->Call(*sleep, {MakeInt(500)}); });
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_THAT(Call("void fx_crash_null(void)"), HasReason("WORKER_CRASHED"));
  caller.join();
  EXPECT_TRUE(slow.ok()) << slow.status();
  ExpectOthersUnaffected();
}

TEST_F(CrashTest, ManyCrashesInARow) {
  for (int i = 0; i < 5; ++i) {
    std::unique_ptr<client::Session> victim = NewSession();
    ASSERT_NE(victim, nullptr);
    absl::StatusOr<client::Library> library =
        victim->LoadLibrary(FixturePath());
    ASSERT_TRUE(library.ok()) << library.status();
    absl::StatusOr<client::Function> crash =
        victim->ResolveFunction(*library, "void fx_crash_null(void)");
    ASSERT_TRUE(crash.ok()) << crash.status();
    EXPECT_THAT(victim->Call(*crash, {}), HasReason("WORKER_CRASHED"));
  }
  ExpectOthersUnaffected();
}

TEST_F(CrashTest, CrashedSessionCanBeDeleted) {
  EXPECT_THAT(Call("void fx_abort(void)"), HasReason("WORKER_CRASHED"));
  EXPECT_TRUE(session_->Delete().ok());
  EXPECT_THAT(session_->Get(), HasReason("SESSION_NOT_FOUND"));
  ExpectOthersUnaffected();
}

}  // namespace
}  // namespace ffid::testing
