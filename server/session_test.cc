// Runs real ffid-worker processes (FFID_WORKER_PATH).
#include "server/session.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "ffi/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::server {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

SessionManagerOptions Fast(absl::Duration idle_timeout = absl::Seconds(300)) {
  SessionManagerOptions options;
  options.worker_path = FFID_WORKER_PATH;
  options.default_idle_timeout = idle_timeout;
  options.reap_interval = absl::Milliseconds(20);
  return options;
}

// Whether `pid` is gone (reaped, so kill() finds nothing).
bool Gone(pid_t pid) { return kill(pid, 0) != 0; }

// Polls `condition` for up to 10 s.
template <typename F>
bool Eventually(F condition) {
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!condition()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

TEST(NewSessionIdTest, ThirtyTwoRandomHexCharacters) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    std::string id = NewSessionId();
    EXPECT_THAT(id, MatchesRegex("[0-9a-f]{32}"));
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 100u);
}

TEST(SessionManagerTest, CreateGetDelete) {
  SessionManager sessions(Fast());
  auto created = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(created.ok()) << created.status();
  std::shared_ptr<Session> session = *created;
  EXPECT_THAT(session->id(), MatchesRegex("[0-9a-f]{32}"));
  EXPECT_EQ(session->tag(), session->id().substr(0, 8));
  EXPECT_EQ(session->idle_timeout(), absl::Seconds(300));
  EXPECT_EQ(sessions.size(), 1u);

  v1::Session proto = session->ToProto();
  EXPECT_EQ(proto.id(), session->id());
  EXPECT_EQ(proto.state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(proto.worker_pid(), session->worker().pid());
  EXPECT_EQ(proto.idle_timeout().seconds(), 300);
  EXPECT_FALSE(proto.has_crash());

  auto found = sessions.Get(session->id());
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, session);

  pid_t pid = session->worker().pid();
  ASSERT_TRUE(sessions.Delete(session->id()).ok());
  EXPECT_TRUE(Gone(pid));
  EXPECT_EQ(sessions.size(), 0u);
  auto missing = sessions.Get(session->id());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetErrorReason(missing.status()),
            v1::ERROR_REASON_SESSION_NOT_FOUND);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("deleted by DeleteSession"));
  EXPECT_EQ(GetErrorReason(sessions.Delete(session->id())),
            v1::ERROR_REASON_SESSION_NOT_FOUND);
}

TEST(SessionManagerTest, UnknownAndEmptyIds) {
  SessionManager sessions(Fast());
  auto unknown = sessions.Get("0123456789abcdef0123456789abcdef");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetErrorReason(unknown.status()),
            v1::ERROR_REASON_SESSION_NOT_FOUND);
  EXPECT_THAT(unknown.status().message(),
              HasSubstr("session '0123456789abcdef0123456789abcdef' does not "
                        "exist (it may have been deleted or timed out)"));
  auto empty = sessions.Use("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(empty.status()), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(empty.status().message(),
              HasSubstr("field 'session' is required"));
}

TEST(SessionManagerTest, RequestedIdleTimeoutWins) {
  SessionManager sessions(Fast());
  auto session = sessions.Create(absl::Milliseconds(1500));
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ((*session)->idle_timeout(), absl::Milliseconds(1500));
  EXPECT_EQ((*session)->ToProto().idle_timeout().seconds(), 1);
  EXPECT_EQ((*session)->ToProto().idle_timeout().nanos(), 500000000);
}

TEST(SessionManagerTest, IdleSessionsAreReaped) {
  SessionManager sessions(Fast(absl::Milliseconds(150)));
  auto session = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(session.ok()) << session.status();
  std::string id = (*session)->id();
  pid_t pid = (*session)->worker().pid();
  session->reset();
  ASSERT_TRUE(Eventually([&] { return sessions.size() == 0; }));
  EXPECT_TRUE(Eventually([&] { return Gone(pid); }));
  auto missing = sessions.Get(id);
  EXPECT_THAT(missing.status().message(), HasSubstr("idle timeout"));
}

TEST(SessionManagerTest, RequestsInFlightAndUseKeepASessionAlive) {
  SessionManager sessions(Fast(absl::Milliseconds(200)));
  auto session = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(session.ok()) << session.status();
  std::string id = (*session)->id();
  {
    auto lease = sessions.Use(id);
    ASSERT_TRUE(lease.ok()) << lease.status();
    absl::SleepFor(absl::Milliseconds(600));  // Three idle timeouts.
    EXPECT_EQ(sessions.size(), 1u);
  }
  // Each use restarts the idle clock.
  for (int i = 0; i < 6; ++i) {
    absl::SleepFor(absl::Milliseconds(80));
    ASSERT_TRUE(sessions.Use(id).ok()) << i;
  }
  EXPECT_TRUE(Eventually([&] { return sessions.size() == 0; }));
}

TEST(SessionManagerTest, AttachedStreamsKeepASessionUntilTheLastDetaches) {
  SessionManager sessions(Fast(absl::Milliseconds(100)));
  auto created = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(created.ok()) << created.status();
  std::string id = (*created)->id();
  pid_t pid = (*created)->worker().pid();
  auto first = sessions.Attach(id);
  auto second = sessions.Attach(id);
  ASSERT_TRUE(first.ok() && second.ok());
  absl::SleepFor(absl::Milliseconds(400));
  EXPECT_EQ(sessions.size(), 1u);  // Attached: never idle.

  sessions.Detach(*first);
  EXPECT_EQ(sessions.size(), 1u);
  sessions.Detach(*second);
  EXPECT_EQ(sessions.size(), 0u);  // Immediately, not after the timeout.
  EXPECT_TRUE(Gone(pid));
  EXPECT_THAT(sessions.Get(id).status().message(),
              HasSubstr("its last Connect stream closed"));
  EXPECT_EQ(GetErrorReason(sessions.Attach(id).status()),
            v1::ERROR_REASON_SESSION_NOT_FOUND);
}

TEST(SessionManagerTest, DetachAfterDeleteIsHarmless) {
  SessionManager sessions(Fast());
  auto created = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(created.ok());
  auto attached = sessions.Attach((*created)->id());
  ASSERT_TRUE(attached.ok());
  ASSERT_TRUE(sessions.Delete((*created)->id()).ok());
  sessions.Detach(*attached);
  EXPECT_EQ(sessions.size(), 0u);
}

TEST(SessionManagerTest, ACrashAffectsOnlyItsSession) {
  SessionManager sessions(Fast());
  auto crashing = sessions.Create(absl::ZeroDuration());
  auto healthy = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(crashing.ok() && healthy.ok());
  EXPECT_NE((*crashing)->id(), (*healthy)->id());
  kill((*crashing)->worker().pid(), SIGKILL);
  ASSERT_TRUE(Eventually(
      [&] { return (*crashing)->state() == v1::SESSION_STATE_CRASHED; }));
  v1::Session proto = (*crashing)->ToProto();
  EXPECT_EQ(proto.state(), v1::SESSION_STATE_CRASHED);
  EXPECT_EQ(proto.crash().signal(), SIGKILL);
  EXPECT_EQ(proto.crash().signal_name(), "SIGKILL");
  EXPECT_EQ((*healthy)->state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_TRUE((*healthy)->worker().alive());
  // A crashed session stays until deleted, saying what happened.
  EXPECT_TRUE(sessions.Get((*crashing)->id()).ok());
  EXPECT_EQ(sessions.size(), 2u);
}

TEST(SessionManagerTest, FunctionSymbols) {
  SessionManager sessions(Fast());
  auto session = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(session.ok());
  (*session)->RememberFunction("fn_1", "cos", "lib_m");
  (*session)->RememberFunction("fn_2", "strlen", "lib_c");
  EXPECT_EQ((*session)->FunctionSymbol("fn_1"), "cos");
  EXPECT_EQ((*session)->FunctionSymbol("fn_3"), "");
  (*session)->ForgetLibrary("lib_m");
  EXPECT_EQ((*session)->FunctionSymbol("fn_1"), "");
  EXPECT_EQ((*session)->FunctionSymbol("fn_2"), "strlen");
}

TEST(SessionManagerTest, EndListenersRunWhenTheSessionIsDeleted) {
  SessionManager sessions(Fast());
  auto session = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(session.ok());
  int ended = 0;
  int removed = 0;
  (*session)->AddEndListener([&ended] { ++ended; });
  int token = (*session)->AddEndListener([&removed] { ++removed; });
  (*session)->RemoveEndListener(token);
  ASSERT_TRUE(sessions.Delete((*session)->id()).ok());
  EXPECT_EQ(ended, 1);
  EXPECT_EQ(removed, 0);
  // Too late to listen: called at once.
  (*session)->AddEndListener([&ended] { ++ended; });
  EXPECT_EQ(ended, 2);
}

TEST(SessionManagerTest, ShutdownStopsEveryWorker) {
  SessionManager sessions(Fast());
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) {
    auto session = sessions.Create(absl::ZeroDuration());
    ASSERT_TRUE(session.ok());
    pids.push_back((*session)->worker().pid());
  }
  sessions.Shutdown();
  for (pid_t pid : pids) EXPECT_TRUE(Gone(pid)) << pid;
  EXPECT_EQ(sessions.size(), 0u);
  auto late = sessions.Create(absl::ZeroDuration());
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
  sessions.Shutdown();  // Idempotent.
}

// A drain ends the sessions with nothing in flight (attached streams do
// not count) and keeps a session a request holds until it lets go.
TEST(SessionManagerTest, EndQuietSessionsLeavesBusySessionsAlone) {
  SessionManager sessions(Fast());
  auto busy = sessions.Create(absl::ZeroDuration());
  auto attached = sessions.Create(absl::ZeroDuration());
  ASSERT_TRUE(busy.ok() && attached.ok());
  const pid_t busy_pid = (*busy)->worker().pid();
  const pid_t attached_pid = (*attached)->worker().pid();
  ASSERT_TRUE(sessions.Attach((*attached)->id()).ok());
  {
    auto lease = sessions.Use((*busy)->id());
    ASSERT_TRUE(lease.ok()) << lease.status();
    EXPECT_EQ(sessions.EndQuietSessions(), 1u);
    EXPECT_TRUE(Gone(attached_pid));
    EXPECT_FALSE(Gone(busy_pid));
    EXPECT_THAT(sessions.Get((*attached)->id()).status().message(),
                HasSubstr("ffid shut down"));
  }
  EXPECT_EQ(sessions.EndQuietSessions(), 0u);
  EXPECT_TRUE(Gone(busy_pid));
  EXPECT_EQ(sessions.EndQuietSessions(), 0u);  // Nothing left: harmless.
}

TEST(SessionManagerTest, MissingWorkerFailsCreate) {
  SessionManagerOptions options = Fast();
  options.worker_path = "/nonexistent/ffid-worker";
  SessionManager sessions(options);
  auto session = sessions.Create(absl::ZeroDuration());
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(GetErrorReason(session.status()),
            v1::ERROR_REASON_WORKER_START_FAILED);
  EXPECT_EQ(sessions.size(), 0u);
}

TEST(SessionManagerTest, ConcurrentCreateAndDelete) {
  SessionManager sessions(Fast());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto session = sessions.Create(absl::ZeroDuration());
        if (!session.ok() || !sessions.Use((*session)->id()).ok() ||
            !sessions.Delete((*session)->id()).ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(sessions.size(), 0u);
}

}  // namespace
}  // namespace ffid::server
