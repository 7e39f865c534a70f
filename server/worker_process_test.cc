// Runs the real ffid-worker (FFID_WORKER_PATH) and calls into libc and libm.
#include "server/worker_process.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "ffi/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/library_resolver.h"

// The sanitizers' own SEGV handlers make a worker built with them exit
// instead of dying of the signal.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FFID_UNDER_SANITIZER 1
#else
#define FFID_UNDER_SANITIZER 0
#endif

namespace ffid::server {
namespace {

// Set before any worker starts the zygote; none of it may reach a worker
// (WorkersGetAMinimalEnvironment).
const bool kEnvironmentSet = [] {
  setenv("LD_LIBRARY_PATH", "/nonexistent/ld/path", 1);
  setenv("FFID_WORKER_PROCESS_TEST", "not for workers", 1);
  setenv("PATH", "/daemon/only/bin:/usr/bin:/bin", 1);
  return true;
}();

using ::ffid::worker::WorkerRequest;
using ::ffid::worker::WorkerResponse;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kTag[] = "0123abcd";

v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor type;
  type.set_scalar(kind);
  return type;
}

v1::TypeDescriptor String() {
  v1::TypeDescriptor type;
  type.mutable_string()->set_encoding(v1::STRING_ENCODING_UTF8);
  type.mutable_string()->set_is_const(true);
  return type;
}

v1::FunctionType Signature(v1::TypeDescriptor result,
                           std::vector<v1::TypeDescriptor> parameters) {
  v1::FunctionType signature;
  *signature.mutable_return_type() = std::move(result);
  for (auto& parameter : parameters) {
    *signature.add_parameters()->mutable_type() = std::move(parameter);
  }
  return signature;
}

absl::Time Soon() { return absl::Now() + absl::Seconds(30); }

class WorkerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto worker = WorkerProcess::Start(FFID_WORKER_PATH, kTag);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = std::move(*worker);
  }

  std::string Load(const std::string& soname) {
    absl::StatusOr<std::string> path = ResolveLibrary(soname);
    EXPECT_TRUE(path.ok()) << path.status();
    WorkerRequest request;
    request.mutable_load_library()->set_name(*path);
    auto response = worker_->Execute(request, Soon(), "loading " + soname);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return "";
    return response->load_library().library();
  }

  absl::StatusOr<std::string> Resolve(const std::string& library,
                                      const std::string& symbol,
                                      v1::FunctionType type) {
    WorkerRequest request;
    request.mutable_resolve_function()->set_library(library);
    request.mutable_resolve_function()->set_symbol(symbol);
    *request.mutable_resolve_function()->mutable_type() = std::move(type);
    ASSIGN_OR_RETURN(WorkerResponse response,
                     worker_->Execute(request, Soon(), "resolving " + symbol));
    return response.resolve_function().function();
  }

  std::string MustResolve(const std::string& library, const std::string& symbol,
                          v1::FunctionType type) {
    auto function = Resolve(library, symbol, std::move(type));
    EXPECT_TRUE(function.ok()) << function.status();
    return function.ok() ? *function : "";
  }

  absl::StatusOr<WorkerResponse> Call(
      const std::string& function, const std::string& symbol,
      std::vector<v1::Value> arguments, absl::Time deadline = Soon(),
      const std::function<bool()>& is_cancelled = nullptr) {
    WorkerRequest request;
    request.mutable_call()->set_function(function);
    for (auto& argument : arguments) {
      *request.mutable_call()->add_arguments() = std::move(argument);
    }
    return worker_->Execute(request, deadline,
                            absl::StrCat("calling '", symbol, "'"), symbol,
                            is_cancelled);
  }

  // A function that blocks in the worker: unsigned sleep(unsigned).
  std::string ResolveSleep() {
    std::string libc = Load("libc.so.6");
    return MustResolve(libc, "sleep",
                       Signature(Scalar(v1::SCALAR_KIND_UNSIGNED_INT),
                                 {Scalar(v1::SCALAR_KIND_UNSIGNED_INT)}));
  }

  static v1::Value Uint(uint64_t value) {
    v1::Value v;
    v.set_uint_value(value);
    return v;
  }
  static v1::Value Int(int64_t value) {
    v1::Value v;
    v.set_int_value(value);
    return v;
  }

  void WaitUntilDead() {
    absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (worker_->alive() && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    ASSERT_FALSE(worker_->alive());
  }

  void ExpectLaterCallsFail(const std::string& how) {
    WorkerRequest request;
    request.mutable_allocate()->set_size(8);
    auto response = worker_->Execute(request, Soon(), "allocating 8 bytes");
    ASSERT_FALSE(response.ok());
    EXPECT_EQ(response.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(GetErrorReason(response.status()),
              v1::ERROR_REASON_WORKER_CRASHED);
    EXPECT_THAT(std::string(response.status().message()),
                StartsWith(absl::StrCat("the session's worker died earlier: "
                                        "worker ",
                                        worker_->pid(), " ")));
    EXPECT_THAT(response.status().message(), HasSubstr(how));
    EXPECT_TRUE(GetCrashReport(response.status()).has_value());
  }

  std::unique_ptr<WorkerProcess> worker_;
};

TEST(WorkerProcessStartTest, MissingExecutableIsWorkerStartFailed) {
  auto worker = WorkerProcess::Start("/nonexistent/ffid-worker", kTag);
  ASSERT_FALSE(worker.ok());
  EXPECT_EQ(worker.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorReason(worker.status()),
            v1::ERROR_REASON_WORKER_START_FAILED);
  EXPECT_THAT(worker.status().message(),
              HasSubstr("cannot start worker '/nonexistent/ffid-worker'"));
  EXPECT_THAT(worker.status().message(), HasSubstr("--worker-path"));
}

// The worker arms PR_SET_PDEATHSIG, which follows the spawning *thread*;
// gRPC retires idle RPC threads, so the spawn must not happen on them.
TEST(WorkerProcessStartTest, OutlivesTheThreadThatStartedIt) {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> worker;
  std::thread([&worker] {
    worker = WorkerProcess::Start(FFID_WORKER_PATH, kTag);
  }).join();
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_TRUE((*worker)->alive());
  WorkerRequest request;
  request.mutable_allocate()->set_size(8);
  auto response = (*worker)->Execute(request, Soon(), "allocating 8 bytes");
  EXPECT_TRUE(response.ok()) << response.status();
}

TEST(SignalNameTest, KnownAndUnknown) {
  EXPECT_EQ(SignalName(SIGSEGV), "SIGSEGV");
  EXPECT_EQ(SignalName(SIGKILL), "SIGKILL");
  EXPECT_EQ(SignalName(SIGABRT), "SIGABRT");
  EXPECT_EQ(SignalName(1000), "signal 1000");
}

TEST_F(WorkerProcessTest, RunsInItsOwnProcessGroup) {
  EXPECT_GT(worker_->pid(), 0);
  EXPECT_EQ(getpgid(worker_->pid()), worker_->pid());
  EXPECT_TRUE(worker_->alive());
  EXPECT_FALSE(worker_->crash_report().has_value());
}

TEST_F(WorkerProcessTest, CallsCos) {
  std::string libm = Load("libm.so.6");
  EXPECT_THAT(libm, StartsWith(absl::StrCat("lib_", kTag, "_")));
  std::string cos = MustResolve(
      libm, "cos",
      Signature(Scalar(v1::SCALAR_KIND_DOUBLE),
                {Scalar(v1::SCALAR_KIND_DOUBLE)}));
  v1::Value half;
  half.set_double_value(0.5);
  auto response = Call(cos, "cos", {half});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->call().result().double_value(), std::cos(0.5));
}

TEST_F(WorkerProcessTest, WorkerErrorsKeepTheirReason) {
  std::string libm = Load("libm.so.6");
  auto function = Resolve(libm, "no_such_function_here",
                          Signature(Scalar(v1::SCALAR_KIND_VOID), {}));
  ASSERT_FALSE(function.ok());
  EXPECT_EQ(GetErrorReason(function.status()),
            v1::ERROR_REASON_SYMBOL_NOT_FOUND);
  EXPECT_THAT(function.status().message(), HasSubstr("no_such_function_here"));
  EXPECT_TRUE(worker_->alive());  // An error is not a crash.
}

TEST_F(WorkerProcessTest, ConcurrentRequestsGetTheirOwnAnswers) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 40;
  absl::Mutex mu;
  std::set<std::string> handles;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        WorkerRequest request;
        uint64_t size = 1 + t * kPerThread + i;
        request.mutable_allocate()->set_size(size);
        auto response = worker_->Execute(request, Soon(), "allocating");
        if (!response.ok() || response->allocate().size() != size) {
          ++failures;
          continue;
        }
        absl::MutexLock lock(&mu);
        handles.insert(response->allocate().memory());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(handles.size(), static_cast<size_t>(kThreads * kPerThread));
}

// Answers nobody waits for (ExecuteAsync) are read by the watcher, or by
// whichever Execute() is reading at the time; either way each reaches its
// own completion, while blocking requests get their own answers.
TEST_F(WorkerProcessTest, AsyncAndBlockingRequestsMixedGetTheirOwnAnswers) {
  constexpr int kThreads = 3;
  constexpr int kPerThread = 30;
  constexpr int kAsync = 300;
  absl::Mutex mu;
  int completed = 0;
  int wrong = 0;
  auto send_async = [&](uint64_t size) {
    WorkerRequest request;
    request.mutable_allocate()->set_size(size);
    worker_->ExecuteAsync(
        request, "allocating", "", Route{},
        [&, size](absl::StatusOr<WorkerResponse> response) {
          absl::MutexLock lock(&mu);
          ++completed;
          if (!response.ok() || response->allocate().size() != size) ++wrong;
        });
  };
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        WorkerRequest request;
        const uint64_t size = 100000 + t * kPerThread + i;
        request.mutable_allocate()->set_size(size);
        auto response = worker_->Execute(request, Soon(), "allocating");
        if (!response.ok() || response->allocate().size() != size) ++failures;
      }
    });
  }
  for (int i = 0; i < kAsync; ++i) {
    send_async(1 + i);
    // Now and then nobody else is reading: only the watcher can.
    if (i % 50 == 0) absl::SleepFor(absl::Milliseconds(2));
  }
  for (auto& thread : threads) thread.join();
  absl::MutexLock lock(&mu);
  auto all_done = [&]() { return completed == kAsync; };
  mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(30));
  EXPECT_EQ(completed, kAsync);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(failures.load(), 0);
}

// A blocking request whose deadline passes while it is the one reading
// hands the channel over: the asynchronous request sent before it still
// gets an answer (the worker's death, since the deadline killed it).
TEST_F(WorkerProcessTest, ADeadlineWhileReadingStillEndsEveryRequest) {
  std::string sleep_fn = ResolveSleep();
  // A promise rather than absl::Notification: ThreadSanitizer sees through
  // libstdc++'s synchronization, not through Debian's uninstrumented abseil
  // (it reported the status handed over as a race).
  std::promise<absl::Status> async_promise;
  std::future<absl::Status> async_future = async_promise.get_future();
  WorkerRequest slow;
  slow.mutable_call()->set_function(sleep_fn);
  *slow.mutable_call()->add_arguments() = Uint(30);
  worker_->ExecuteAsync(slow, "calling 'sleep'", "sleep", Route{},
                        [&](absl::StatusOr<WorkerResponse> response) {
                          async_promise.set_value(response.status());
                        });
  auto blocked = Call(sleep_fn, "sleep", {Uint(30)},
                      absl::Now() + absl::Milliseconds(300));
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_EQ(async_future.wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  const absl::Status async_status = async_future.get();
  EXPECT_EQ(async_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorReason(async_status), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_THAT(async_status.message(), HasSubstr("did not finish within"));
}

// A reader that leaves while a blocking request is still being written
// must not count on that request's thread to read: the worker may be
// blocked writing answers nobody reads, and so never take in the rest of
// that request. Here: a call reads (sleep), asynchronous Reads of 256 KiB
// queue behind it, and a 1 MiB Write is being sent when the call's answer
// comes; the Reads' answers (2 MiB, more than the socket holds) must still
// be read, so that the Write gets through.
TEST_F(WorkerProcessTest, AReaderLeavingWhileABigRequestIsSentHandsOver) {
  std::string sleep_fn = ResolveSleep();
  constexpr uint64_t kBlock = 256 * 1024;
  WorkerRequest allocate;
  allocate.mutable_allocate()->set_size(kBlock);
  auto block = worker_->Execute(allocate, Soon(), "allocating");
  ASSERT_TRUE(block.ok()) << block.status();
  const std::string handle = block->allocate().memory();

  absl::Notification sleep_done;
  std::thread sleeper([&] {
    EXPECT_TRUE(Call(sleep_fn, "sleep", {Uint(1)}).ok());
    sleep_done.Notify();
  });
  // The sleeping call is the reader now (nothing else is pending).
  absl::SleepFor(absl::Milliseconds(200));
  constexpr int kReads = 8;
  absl::Mutex mu;
  int reads_ok = 0;
  for (int i = 0; i < kReads; ++i) {
    WorkerRequest read;
    read.mutable_read()->mutable_pointer()->set_handle(handle);
    read.mutable_read()->set_length(kBlock);
    worker_->ExecuteAsync(read, "reading", "", Route{},
                          [&](absl::StatusOr<WorkerResponse> response) {
                            absl::MutexLock lock(&mu);
                            if (response.ok()) ++reads_ok;
                          });
  }
  absl::Notification write_done;
  absl::Status write_status;
  std::thread writer([&] {
    WorkerRequest write;
    write.mutable_write()->mutable_pointer()->set_handle(handle);
    write.mutable_write()->set_data(std::string(kBlock, 'w'));
    // Four times the block: refused by the worker, but only once it has
    // read all of it.
    write.mutable_write()->mutable_data()->append(3 * kBlock, 'x');
    write_status = worker_->Execute(write, Soon(), "writing").status();
    write_done.Notify();
  });
  ASSERT_TRUE(sleep_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  const bool answered =
      write_done.WaitForNotificationWithTimeout(absl::Seconds(30));
  if (!answered) worker_->Shutdown();  // Unblocks the writer.
  sleeper.join();
  writer.join();
  ASSERT_TRUE(answered) << "the Write was never answered: nobody read";
  EXPECT_EQ(write_status.code(), absl::StatusCode::kOutOfRange)
      << write_status;
  absl::MutexLock lock(&mu);
  auto all_read = [&]() { return reads_ok == kReads; };
  mu.AwaitWithTimeout(absl::Condition(&all_read), absl::Seconds(30));
  EXPECT_EQ(reads_ok, kReads);
}

TEST_F(WorkerProcessTest, NullDereferenceIsReportedAsACrash) {
  std::string libc = Load("libc.so.6");
  std::string strlen_fn = MustResolve(
      libc, "strlen", Signature(Scalar(v1::SCALAR_KIND_SIZE_T), {String()}));
  v1::Value null;
  null.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
  auto response = Call(strlen_fn, "strlen", {null});
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorReason(response.status()), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_THAT(std::string(response.status().message()),
              StartsWith(absl::StrCat("worker ", worker_->pid(), " ")));
  EXPECT_THAT(response.status().message(),
              HasSubstr("while calling 'strlen'"));
  auto report = GetCrashReport(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->function(), "strlen");
  EXPECT_EQ(report->pid(), worker_->pid());
  if (!FFID_UNDER_SANITIZER) {
    EXPECT_THAT(response.status().message(),
                HasSubstr("was killed by SIGSEGV (Segmentation fault)"));
    EXPECT_EQ(report->signal(), SIGSEGV);
    EXPECT_EQ(report->signal_name(), "SIGSEGV");
  }
  ASSERT_TRUE(worker_->crash_report().has_value());
  EXPECT_FALSE(worker_->alive());
  ExpectLaterCallsFail("while calling 'strlen'");
}

TEST_F(WorkerProcessTest, AbortIsReportedWithItsSignal) {
  std::string libc = Load("libc.so.6");
  std::string abort_fn =
      MustResolve(libc, "abort", Signature(Scalar(v1::SCALAR_KIND_VOID), {}));
  auto response = Call(abort_fn, "abort", {});
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(response.status().message(),
            absl::StrCat("worker ", worker_->pid(),
                         " was killed by SIGABRT (Aborted) while calling "
                         "'abort'"));
  auto report = GetCrashReport(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), SIGABRT);
  EXPECT_EQ(report->signal_name(), "SIGABRT");
  ExpectLaterCallsFail("was killed by SIGABRT (Aborted) while calling 'abort'");
}

TEST_F(WorkerProcessTest, ExitIsReportedWithItsStatus) {
  std::string libc = Load("libc.so.6");
  std::string exit_fn = MustResolve(
      libc, "_exit",
      Signature(Scalar(v1::SCALAR_KIND_VOID), {Scalar(v1::SCALAR_KIND_INT)}));
  auto response = Call(exit_fn, "_exit", {Int(3)});
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetErrorReason(response.status()), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_EQ(response.status().message(),
            absl::StrCat("worker ", worker_->pid(),
                         " exited with status 3 while calling '_exit'"));
  auto report = GetCrashReport(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), 0);
  EXPECT_EQ(report->exit_code(), 3);
  EXPECT_EQ(report->function(), "_exit");
  ExpectLaterCallsFail("exited with status 3 while calling '_exit'");
}

TEST_F(WorkerProcessTest, DeadlineKillsTheWorker) {
  std::string sleep_fn = ResolveSleep();
  absl::Time start = absl::Now();
  auto response = Call(sleep_fn, "sleep", {Uint(30)},
                       absl::Now() + absl::Milliseconds(300));
  absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(response.ok());
  EXPECT_LT(took, absl::Seconds(5));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(GetErrorReason(response.status()),
            v1::ERROR_REASON_DEADLINE_EXCEEDED);
  EXPECT_THAT(std::string(response.status().message()),
              StartsWith("calling 'sleep' did not finish within its deadline"));
  EXPECT_THAT(response.status().message(),
              HasSubstr("cannot be interrupted safely"));
  WaitUntilDead();
  ASSERT_TRUE(worker_->crash_report().has_value());
  EXPECT_EQ(worker_->crash_report()->signal(), SIGKILL);
  ExpectLaterCallsFail(
      "was killed by ffid (SIGKILL) because calling 'sleep' did not finish "
      "within its deadline");
}

TEST_F(WorkerProcessTest, AnExpiredDeadlineIsNotSentAndKillsNothing) {
  std::string sleep_fn = ResolveSleep();
  auto response = Call(sleep_fn, "sleep", {Uint(30)},
                       absl::Now() - absl::Milliseconds(1));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(GetErrorReason(response.status()),
            v1::ERROR_REASON_DEADLINE_EXCEEDED);
  EXPECT_THAT(response.status().message(),
              HasSubstr("had passed before it was sent"));
  EXPECT_TRUE(worker_->alive());
}

TEST_F(WorkerProcessTest, CancellationKillsTheWorker) {
  std::string sleep_fn = ResolveSleep();
  absl::Time cancel_at = absl::Now() + absl::Milliseconds(200);
  auto response = Call(sleep_fn, "sleep", {Uint(30)}, Soon(),
                       [cancel_at] { return absl::Now() >= cancel_at; });
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(response.status().message(),
              HasSubstr("the client cancelled calling 'sleep'"));
  WaitUntilDead();
}

// OnCancel::kStopWaiting: a cancelled request that waits behind a running
// call returns CANCELLED at once, the worker is not killed, the call goes
// on, and the cancelled request's answer, when it comes, is dropped (not
// taken for an answer to a request never sent, which would kill the
// worker).
TEST_F(WorkerProcessTest, StoppingTheWaitOnCancelLeavesTheWorkerAlone) {
  std::string sleep_fn = ResolveSleep();
  absl::StatusOr<WorkerResponse> slept;
  std::thread sleeping([&] { slept = Call(sleep_fn, "sleep", {Uint(1)}); });
  absl::SleepFor(absl::Milliseconds(200));
  WorkerRequest request;
  request.mutable_allocate()->set_size(8);
  const absl::Time cancel_at = absl::Now() + absl::Milliseconds(100);
  absl::StatusOr<WorkerResponse> cancelled = worker_->Execute(
      request, Soon(), "allocating 8 bytes", "",
      [cancel_at] { return absl::Now() >= cancel_at; }, Route(),
      /*pass_fd=*/-1, OnCancel::kStopWaiting);
  ASSERT_FALSE(cancelled.ok());
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(cancelled.status().message(),
              HasSubstr("the client cancelled allocating 8 bytes"));
  sleeping.join();
  EXPECT_TRUE(slept.ok()) << slept.status();
  auto after = worker_->Execute(request, Soon(), "allocating 8 bytes");
  EXPECT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(worker_->alive());
}

TEST_F(WorkerProcessTest, ExternalKillFailsTheCallInFlight) {
  std::string sleep_fn = ResolveSleep();
  std::thread killer([this] {
    absl::SleepFor(absl::Milliseconds(200));
    kill(worker_->pid(), SIGKILL);
  });
  auto response = Call(sleep_fn, "sleep", {Uint(30)});
  killer.join();
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().message(),
            absl::StrCat("worker ", worker_->pid(),
                         " was killed by SIGKILL (Killed) while calling "
                         "'sleep'"));
  EXPECT_EQ(GetCrashReport(response.status())->function(), "sleep");
}

TEST_F(WorkerProcessTest, EveryCallInFlightFails) {
  std::string sleep_fn = ResolveSleep();
  std::vector<std::thread> callers;
  std::atomic<int> crashed{0};
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      auto response = Call(sleep_fn, "sleep", {Uint(30)});
      if (!response.ok() &&
          GetErrorReason(response.status()) ==
              v1::ERROR_REASON_WORKER_CRASHED &&
          absl::StrContains(response.status().message(),
                            "while calling 'sleep'")) {
        ++crashed;
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(300));
  kill(worker_->pid(), SIGTERM);
  for (auto& caller : callers) caller.join();
  EXPECT_EQ(crashed.load(), 4);
}

TEST_F(WorkerProcessTest, DeathWhileIdleIsRememberedAndMaskIsClean) {
  // The daemon blocks SIGTERM for its signal thread; the worker must not
  // inherit that mask. Restart the worker with SIGTERM blocked here.
  worker_.reset();
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, &old);
  auto worker = WorkerProcess::Start(FFID_WORKER_PATH, kTag);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(worker.ok()) << worker.status();
  worker_ = std::move(*worker);

  kill(worker_->pid(), SIGTERM);
  WaitUntilDead();
  auto report = worker_->crash_report();
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), SIGTERM);
  EXPECT_EQ(report->function(), "");
  ExpectLaterCallsFail("was killed by SIGTERM (Terminated)");
}

TEST_F(WorkerProcessTest, ShutdownFailsTheCallInFlight) {
  std::string sleep_fn = ResolveSleep();
  std::thread stopper([this] {
    absl::SleepFor(absl::Milliseconds(200));
    worker_->Shutdown();
  });
  absl::Time start = absl::Now();
  auto response = Call(sleep_fn, "sleep", {Uint(30)});
  stopper.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(GetErrorReason(response.status()),
            v1::ERROR_REASON_SESSION_NOT_FOUND);
  EXPECT_EQ(response.status().message(),
            "the session was deleted while calling 'sleep'");
  EXPECT_FALSE(worker_->crash_report().has_value());
  EXPECT_FALSE(worker_->alive());
  // The pid is reaped: nothing left to signal.
  EXPECT_NE(kill(worker_->pid(), 0), 0);
  worker_->Shutdown();  // Idempotent.

  WorkerRequest request;
  request.mutable_allocate()->set_size(8);
  auto later = worker_->Execute(request, Soon(), "allocating 8 bytes");
  EXPECT_EQ(later.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetErrorReason(later.status()), v1::ERROR_REASON_SESSION_NOT_FOUND);
}

TEST_F(WorkerProcessTest, ServerShutdownSaysSo) {
  std::string sleep_fn = ResolveSleep();
  std::thread stopper([this] {
    absl::SleepFor(absl::Milliseconds(200));
    worker_->Shutdown(WorkerProcess::StopCause::kServerShutdown);
  });
  auto response = Call(sleep_fn, "sleep", {Uint(30)});
  stopper.join();
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(response.status().message(),
            "ffid is shutting down: the session ended while calling 'sleep'");
}

TEST_F(WorkerProcessTest, WorkersGetAMinimalEnvironment) {
  // The daemon's environment (kEnvironmentSet) is not the worker's.
  ASSERT_TRUE(kEnvironmentSet);

  std::string libc = Load("libc.so.6");
  std::string getenv_fn =
      MustResolve(libc, "getenv", Signature(String(), {String()}));
  auto get = [&](const std::string& variable) -> std::optional<std::string> {
    v1::Value name;
    name.set_string_value(variable);
    auto response = Call(getenv_fn, "getenv", {name});
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok() || !response->call().result().has_string_value()) {
      return std::nullopt;
    }
    return response->call().result().string_value();
  };
  EXPECT_EQ(get("LD_LIBRARY_PATH"), std::nullopt);
  EXPECT_EQ(get("FFID_WORKER_PROCESS_TEST"), std::nullopt);
  EXPECT_EQ(get("PATH"), "/usr/local/bin:/usr/bin:/bin");
  EXPECT_EQ(get("HOME"), "/tmp");
  EXPECT_EQ(get("TMPDIR"), "/tmp");
}

}  // namespace
}  // namespace ffid::server
