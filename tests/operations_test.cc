// Operations against a real daemon: Prometheus metrics on --metrics-listen,
// JSON log lines carrying the client's tracing ids, gRPC health, and the
// SIGTERM drain (a call in flight finishes; past the grace period a hung
// call is cancelled and its worker killed; no worker outlives the daemon).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/health.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/daemon.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::CallbackContext;
using client::MakeInt;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(30);

// The port from the daemon's "metrics on http://127.0.0.1:PORT/metrics".
int MetricsPort(const std::string& log) {
  const std::string marker = "metrics on http://127.0.0.1:";
  size_t at = log.find(marker);
  if (at == std::string::npos) return 0;
  int port = 0;
  size_t end = log.find('/', at + marker.size());
  if (!absl::SimpleAtoi(log.substr(at + marker.size(),
                                   end - at - marker.size()),
                        &port)) {
    return 0;
  }
  return port;
}

// GET /metrics over plain HTTP/1.0; the body, or "" on failure.
std::string Scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
      0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[65536];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
        response.append(buffer, static_cast<size_t>(n));
      }
    }
  }
  close(fd);
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of the series `name_and_labels` (exactly as exposed, e.g.
// `ffid_calls_total{reason="OK",via="unary"}`), if present.
std::optional<double> Sample(const std::string& exposition,
                             const std::string& name_and_labels) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (absl::StartsWith(line, name_and_labels + " ")) {
      double value = 0;
      if (absl::SimpleAtod(line.substr(name_and_labels.size() + 1), &value)) {
        return value;
      }
    }
  }
  return std::nullopt;
}

// The daemon's stderr lines that are JSON objects.
std::vector<nlohmann::json> JsonLines(const std::string& log) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (line.empty() || line[0] != '{') continue;
    lines.push_back(nlohmann::json::parse(line, nullptr, false));
  }
  return lines;
}

// The CPU time, in clock ticks, that process `pid` has used (user plus
// system), or -1 when it cannot be read.
int64_t CpuTicks(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return -1;
  // After the command name: state, ppid, ... utime is the 12th field from
  // the state, stime the 13th (proc(5)).
  std::vector<std::string> fields =
      absl::StrSplit(stat.substr(paren + 2), ' ');
  int64_t user = 0;
  int64_t system = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &user) ||
      !absl::SimpleAtoi(fields[12], &system)) {
    return -1;
  }
  return user + system;
}

// Waits until worker `pid` has burnt a tenth of a second of CPU more than
// `baseline` ticks: proof that the native call is running. (A scheduler
// state of 'R' is not: on a loaded machine a worker that just answered the
// previous request is runnable before it blocks again, and a SIGTERM sent
// then races the call's arrival instead of interrupting it.)
bool WaitUntilBurning(pid_t pid, int64_t baseline) {
  const int64_t enough = baseline + sysconf(_SC_CLK_TCK) / 10;
  const absl::Time deadline = absl::Now() + kWait;
  while (absl::Now() < deadline) {
    if (CpuTicks(pid) >= enough) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return false;
}

class OperationsTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> flags) {
    DaemonOptions options;
    options.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    absl::StatusOr<std::unique_ptr<client::Client>> client =
        client::Client::Connect(daemon_->address(), absl::Seconds(10));
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  std::unique_ptr<client::Session> NewSession(
      const client::SessionOptions& options = {}) {
    absl::StatusOr<std::unique_ptr<client::Session>> session =
        client_->CreateSession(options);
    EXPECT_TRUE(session.ok()) << session.status();
    if (!session.ok()) return nullptr;
    absl::StatusOr<client::Library> library =
        (*session)->LoadLibrary(FixturePath());
    EXPECT_TRUE(library.ok()) << library.status();
    if (library.ok()) library_ = *library;
    return std::move(*session);
  }

  absl::StatusOr<client::Function> Resolve(client::Session& session,
                                           const std::string& declaration) {
    return session.ResolveFunction(library_, declaration);
  }

  // A daemon started with `flags` and a session holding the fixture's
  // ff_burn_cpu and fx_add; `idle_ticks` is its worker's CPU time before
  // any call (negative, or a null session, when something failed: the
  // failure has been reported).
  struct BurnAndAdd {
    std::unique_ptr<client::Session> session;
    client::Function burn;
    client::Function add;
    pid_t worker = 0;
    int64_t idle_ticks = -1;
  };
  BurnAndAdd StartWithBurnAndAdd(std::vector<std::string> flags) {
    BurnAndAdd made;
    StartDaemon(std::move(flags));
    if (client_ == nullptr) return made;
    made.session = NewSession();
    if (made.session == nullptr) return made;
    absl::StatusOr<client::Function> burn =
        Resolve(*made.session, "int ff_burn_cpu(int seconds)");
    absl::StatusOr<client::Function> add =
        Resolve(*made.session, "int fx_add(int, int)");
    EXPECT_TRUE(burn.ok()) << burn.status();
    EXPECT_TRUE(add.ok()) << add.status();
    if (!burn.ok() || !add.ok()) return made;
    made.burn = *burn;
    made.add = *add;
    made.worker = made.session->worker_pid();
    made.idle_ticks = CpuTicks(made.worker);
    return made;
  }

  // Waits until the daemon's log says the drain began; false if it never
  // did within kWait.
  bool WaitUntilDraining() {
    for (absl::Time deadline = absl::Now() + kWait; absl::Now() < deadline;
         absl::SleepFor(absl::Milliseconds(5))) {
      if (absl::StrContains(daemon_->Log(), "draining")) return true;
    }
    return false;
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<client::Client> client_;
  client::Library library_;
};

TEST_F(OperationsTest, MetricsCountCallsCrashesSessionsAndBytes) {
  StartDaemon({"--metrics-listen=127.0.0.1:0"});
  const int port = MetricsPort(daemon_->Log());
  ASSERT_NE(port, 0) << daemon_->Log();

  std::unique_ptr<client::Session> session = NewSession();
  ASSERT_NE(session, nullptr);
  absl::StatusOr<client::Function> add =
      Resolve(*session, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  // Calls without a timeout go on a CallStream, with one the unary RPC.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(session->Call(*add, {MakeInt(i), MakeInt(1)}).ok());
  }
  client::CallOptions unary;
  unary.timeout = absl::Seconds(30);
  ASSERT_TRUE(session->Call(*add, {MakeInt(7), MakeInt(1)}, unary).ok());
  absl::StatusOr<client::Memory> memory = session->Allocate(64);
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_TRUE(session->Write(memory->handle, 0, std::string(40, 'x')).ok());
  ASSERT_TRUE(session->Read(memory->handle, 0, 24).ok());

  std::unique_ptr<client::Session> victim = NewSession();
  ASSERT_NE(victim, nullptr);
  absl::StatusOr<client::Function> crash =
      Resolve(*victim, "void fx_crash_null(void)");
  ASSERT_TRUE(crash.ok()) << crash.status();
  const pid_t victim_pid = victim->worker_pid();
  absl::StatusOr<v1::CallResponse> crashed = victim->Call(*crash, {}, unary);
  EXPECT_THAT(crashed, HasReason("WORKER_CRASHED"));
  ASSERT_TRUE(WaitForProcessGone(victim_pid, kWait));

  const std::string metrics = Scrape(port);
  ASSERT_FALSE(metrics.empty());
  EXPECT_EQ(
      Sample(metrics, R"(ffid_calls_total{reason="OK",via="call_stream"})"),
      3);
  EXPECT_EQ(Sample(metrics, R"(ffid_calls_total{reason="OK",via="unary"})"),
            1);
  EXPECT_EQ(Sample(metrics,
                   R"(ffid_calls_total{reason="WORKER_CRASHED",via="unary"})"),
            1)
      << metrics;
  EXPECT_EQ(
      Sample(metrics,
             R"(ffid_rpcs_total{code="UNAVAILABLE",method="ffid.v1.Ffi/Call",reason="WORKER_CRASHED"})"),
      1);
  EXPECT_EQ(Sample(metrics, R"(ffid_call_duration_seconds_count{via="unary"})"),
            2);
  EXPECT_EQ(Sample(metrics,
                   R"(ffid_call_duration_seconds_count{via="call_stream"})"),
            3);
  EXPECT_EQ(Sample(metrics, R"(ffid_worker_crashes_total{signal="SIGSEGV"})"),
            1);
  EXPECT_EQ(Sample(metrics, "ffid_sessions"), 2);
  EXPECT_EQ(Sample(metrics, "ffid_sessions_created_total"), 2);
  // The crashed session's worker is gone; the other one is alive.
  EXPECT_EQ(Sample(metrics, "ffid_workers"), 1);
  EXPECT_EQ(Sample(metrics, R"(ffid_memory_bytes_total{direction="write"})"),
            40);
  EXPECT_EQ(Sample(metrics, R"(ffid_memory_bytes_total{direction="read"})"),
            24);
  EXPECT_EQ(Sample(metrics, "ffid_draining"), 0);
  EXPECT_THAT(metrics, HasSubstr("# TYPE ffid_rpc_duration_seconds histogram"));

  victim.reset();
  session.reset();
  const std::string after = Scrape(port);
  EXPECT_EQ(Sample(after, "ffid_sessions"), 0) << after;
  EXPECT_EQ(Sample(after, "ffid_workers"), 0) << after;
}

TEST_F(OperationsTest, JsonLogsCarryTheClientsTraceIds) {
  StartDaemon({"--log-format=json", "--log-level=debug"});
  std::unique_ptr<client::Session> session = NewSession();
  ASSERT_NE(session, nullptr);
  absl::StatusOr<client::Function> add =
      Resolve(*session, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  absl::StatusOr<client::Function> crash =
      Resolve(*session, "void fx_crash_null(void)");
  ASSERT_TRUE(crash.ok()) << crash.status();

  {  // W3C traceparent on a successful call: a debug line.
    grpc::ClientContext context;
    context.AddMetadata(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    v1::CallRequest request;
    request.set_session(session->id());
    request.set_function(add->handle);
    *request.add_arguments() = MakeInt(2);
    *request.add_arguments() = MakeInt(3);
    v1::CallResponse response;
    ASSERT_TRUE(client_->stub().Call(&context, request, &response).ok());
  }
  {  // x-request-id on a crashing call: a warning line.
    grpc::ClientContext context;
    context.AddMetadata("x-request-id", "req-42");
    v1::CallRequest request;
    request.set_session(session->id());
    request.set_function(crash->handle);
    v1::CallResponse response;
    EXPECT_FALSE(client_->stub().Call(&context, request, &response).ok());
  }
  session.reset();
  client_.reset();
  ASSERT_TRUE(daemon_->Stop().ok()) << daemon_->Log();

  bool traced_ok = false;
  bool traced_crash = false;
  bool listening = false;
  for (const nlohmann::json& line : JsonLines(daemon_->Log())) {
    ASSERT_TRUE(line.is_object()) << daemon_->Log();
    ASSERT_TRUE(line.contains("ts") && line.contains("level") &&
                line.contains("msg"))
        << line.dump();
    const std::string message = line["msg"];
    if (absl::StartsWith(message, "listening on ")) listening = true;
    if (line.value("method", "") == "ffid.v1.Ffi/Call" &&
        line.value("trace_id", "") == "0af7651916cd43dd8448eb211c80319c") {
      EXPECT_EQ(line["level"], "debug");
      EXPECT_EQ(line["code"], "OK");
      EXPECT_EQ(line["span_id"], "b7ad6b7169203331");
      traced_ok = true;
    }
    if (line.value("method", "") == "ffid.v1.Ffi/Call" &&
        line.value("trace_id", "") == "req-42") {
      EXPECT_EQ(line["level"], "warning");
      EXPECT_EQ(line["code"], "UNAVAILABLE");
      EXPECT_EQ(line["reason"], "WORKER_CRASHED");
      traced_crash = true;
    }
  }
  EXPECT_TRUE(listening) << daemon_->Log();
  EXPECT_TRUE(traced_ok) << daemon_->Log();
  EXPECT_TRUE(traced_crash) << daemon_->Log();
  // The worker's death is a warning line of its own, naming the session.
  EXPECT_THAT(daemon_->Log(), HasSubstr(R"("reason":"WORKER_CRASHED")"));
}

TEST_F(OperationsTest, HealthIsServingUntilDrainAndACallInFlightFinishes) {
  StartDaemon({"--metrics-listen=127.0.0.1:0", "--shutdown-grace=120s"});
  const int port = MetricsPort(daemon_->Log());
  ASSERT_NE(port, 0);
  EXPECT_EQ(client::CheckHealth(client_->channel(), "", absl::Seconds(10))
                .value_or(client::ServingStatus::kUnknown),
            client::ServingStatus::kServing);
  EXPECT_EQ(client::CheckHealth(client_->channel(), "ffid.v1.Ffi",
                                absl::Seconds(10))
                .value_or(client::ServingStatus::kUnknown),
            client::ServingStatus::kServing);
  absl::StatusOr<client::ServingStatus> unknown =
      client::CheckHealth(client_->channel(), "no.such.Service",
                          absl::Seconds(10));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);

  std::unique_ptr<client::Session> session = NewSession();
  ASSERT_NE(session, nullptr);
  absl::StatusOr<client::Function> burn =
      Resolve(*session, "int ff_burn_cpu(int seconds)");
  ASSERT_TRUE(burn.ok()) << burn.status();
  const pid_t worker = session->worker_pid();
  const int64_t idle_ticks = CpuTicks(worker);
  ASSERT_GE(idle_ticks, 0);

  absl::StatusOr<v1::CallResponse> result;
  std::thread call([&] { result = session->Call(*burn, {MakeInt(1)}); });
  const bool burning = WaitUntilBurning(worker, idle_ticks);
  EXPECT_TRUE(burning);

  // SIGTERM while the native call runs. From here on nothing returns early:
  // both threads must be joined whatever happens.
  absl::Status stopped;
  std::thread stop([&] { stopped = daemon_->Stop(absl::Seconds(300)); });
  // The drain shows in the metrics, which stay up until the daemon exits.
  bool draining = false;
  for (absl::Time deadline = absl::Now() + kWait;
       !draining && absl::Now() < deadline;
       absl::SleepFor(absl::Milliseconds(10))) {
    draining = Sample(Scrape(port), "ffid_draining") == 1;
  }
  EXPECT_TRUE(draining) << daemon_->Log();
  // A new client is not served any more.
  absl::StatusOr<std::unique_ptr<client::Client>> late =
      client::Client::Connect(daemon_->address(), absl::Seconds(2));
  if (late.ok()) {
    absl::StatusOr<client::ServingStatus> health = client::CheckHealth(
        (*late)->channel(), "", absl::Seconds(5));
    EXPECT_FALSE(health.ok() && *health == client::ServingStatus::kServing);
  }

  call.join();
  EXPECT_TRUE(result.ok()) << result.status() << "\n" << daemon_->Log();
  // The session, idle now, is ended by the daemon: the drain ends before
  // the grace with the client still connected.
  stop.join();
  EXPECT_TRUE(stopped.ok()) << stopped << "\n" << daemon_->Log();
  EXPECT_TRUE(WaitForProcessGone(worker, kWait));
  EXPECT_THAT(daemon_->Log(), HasSubstr("SIGTERM received, draining"));
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("grace period over")));
}

// Idle clients do not hold the drain: a session whose Connect stream waits
// for nothing, one with only an idle CallStream (no thread of that client
// in gRPC to answer the daemon's GOAWAY), and a bare connection. The daemon
// ends the sessions and closes the connections once nothing is running,
// well inside even a short grace.
TEST_F(OperationsTest, IdleClientsDoNotHoldUpTheDrain) {
  StartDaemon({"--shutdown-grace=5s"});
  std::unique_ptr<client::Session> attached = NewSession();
  ASSERT_NE(attached, nullptr);
  client::SessionOptions options;
  options.attach_stream = false;
  std::unique_ptr<client::Session> detached = NewSession(options);
  ASSERT_NE(detached, nullptr);
  absl::StatusOr<client::Function> add =
      Resolve(*detached, "int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<v1::CallResponse> sum =
        detached->Call(*add, {MakeInt(i), MakeInt(1)});
    ASSERT_TRUE(sum.ok()) << sum.status();
  }
  absl::StatusOr<std::unique_ptr<client::Client>> bare =
      client::Client::Connect(daemon_->address(), absl::Seconds(10));
  ASSERT_TRUE(bare.ok()) << bare.status();
  const pid_t attached_worker = attached->worker_pid();
  const pid_t detached_worker = detached->worker_pid();
  const absl::Status stopped = daemon_->Stop(absl::Seconds(60));
  EXPECT_TRUE(stopped.ok()) << stopped << "\n" << daemon_->Log();
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("grace period over")));
  EXPECT_TRUE(WaitForProcessGone(attached_worker, kWait));
  EXPECT_TRUE(WaitForProcessGone(detached_worker, kWait));
  // The sessions' next calls say why they cannot be made.
  absl::StatusOr<v1::CallResponse> late =
      detached->Call(*add, {MakeInt(1), MakeInt(1)});
  EXPECT_THAT(late, HasCode(absl::StatusCode::kUnavailable));
}

// While a call on a session's Connect stream runs, the drain leaves the
// session alone: that call finishes, and a call sent on the stream after
// the drain began is refused as a new RPC would be.
TEST_F(OperationsTest, DuringTheDrainARunningStreamCallFinishesAndNewOnesAreRefused) {
  BurnAndAdd made = StartWithBurnAndAdd({"--shutdown-grace=120s"});
  ASSERT_GE(made.idle_ticks, 0);
  client::Session* session = made.session.get();
  const client::Function* burn = &made.burn;
  const client::Function* add = &made.add;
  const pid_t worker = made.worker;
  const int64_t idle_ticks = made.idle_ticks;
  // Long enough for the drain to begin and the refused call to be sent.
  std::future<absl::StatusOr<v1::CallResponse>> running =
      session->CallAsync(*burn, {MakeInt(3)});
  EXPECT_TRUE(WaitUntilBurning(worker, idle_ticks));

  // From here on nothing returns early: the stopping thread must be joined.
  absl::Status stopped;
  std::thread stop([&] { stopped = daemon_->Stop(absl::Seconds(300)); });
  EXPECT_TRUE(WaitUntilDraining()) << daemon_->Log();
  absl::StatusOr<v1::CallResponse> refused =
      session->CallAsync(*add, {MakeInt(1), MakeInt(2)}).get();
  EXPECT_THAT(refused, HasCode(absl::StatusCode::kUnavailable));
  EXPECT_THAT(refused.status().message(), HasSubstr("ffid is shutting down"));
  absl::StatusOr<v1::CallResponse> finished = running.get();
  EXPECT_TRUE(finished.ok()) << finished.status() << "\n" << daemon_->Log();
  stop.join();
  EXPECT_TRUE(stopped.ok()) << stopped << "\n" << daemon_->Log();
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("grace period over")));
  EXPECT_TRUE(WaitForProcessGone(worker, kWait));
}

// Calls sent on a Connect stream before the drain are all answered, those
// whose results the worker produces after it began included: the session
// ends only once every answer has been handed to gRPC.
TEST_F(OperationsTest, DuringTheDrainQueuedStreamCallsAreAllAnswered) {
  BurnAndAdd made = StartWithBurnAndAdd({"--shutdown-grace=120s"});
  ASSERT_GE(made.idle_ticks, 0);
  client::Session* session = made.session.get();
  const client::Function* burn = &made.burn;
  const client::Function* add = &made.add;
  const pid_t worker = made.worker;
  const int64_t idle_ticks = made.idle_ticks;
  // The worker runs them in order: the sums wait behind the burn.
  std::future<absl::StatusOr<v1::CallResponse>> running =
      session->CallAsync(*burn, {MakeInt(1)});
  std::vector<std::future<absl::StatusOr<v1::CallResponse>>> queued;
  for (int i = 0; i < 200; ++i) {
    queued.push_back(session->CallAsync(*add, {MakeInt(i), MakeInt(1)}));
  }
  EXPECT_TRUE(WaitUntilBurning(worker, idle_ticks));
  const absl::Status stopped = daemon_->Stop(absl::Seconds(300));
  EXPECT_TRUE(stopped.ok()) << stopped << "\n" << daemon_->Log();
  absl::StatusOr<v1::CallResponse> burnt = running.get();
  EXPECT_TRUE(burnt.ok()) << burnt.status();
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<v1::CallResponse> sum = queued[i].get();
    ASSERT_TRUE(sum.ok()) << i << ": " << sum.status();
    EXPECT_EQ(sum->result().int_value(), i + 1);
  }
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("grace period over")));
}

// A callback's request back into the daemon belongs to the call that is
// running, so a drain lets it through (it refuses only new calls).
TEST_F(OperationsTest, DuringTheDrainACallbacksNestedCallsAreServed) {
  StartDaemon({"--shutdown-grace=120s"});
  std::unique_ptr<client::Session> session = NewSession();
  ASSERT_NE(session, nullptr);
  absl::StatusOr<client::Function> add =
      Resolve(*session, "int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  absl::StatusOr<client::Library> callbacks =
      session->LoadLibrary(CallbacksFixturePath());
  ASSERT_TRUE(callbacks.ok()) << callbacks.status();
  absl::StatusOr<client::Function> call_once = session->ResolveFunction(
      *callbacks, "int fxc_call_once(int (*f)(int), int x)");
  ASSERT_TRUE(call_once.ok()) << call_once.status();
  absl::Notification in_callback;
  absl::Notification draining;
  absl::StatusOr<client::Callback> callback = session->RegisterCallback(
      "int f(int)",
      [&](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        in_callback.Notify();
        draining.WaitForNotificationWithTimeout(kWait);
        absl::StatusOr<v1::CallResponse> inner = context.Call(
            *add, {MakeInt(context.arguments()[0].int_value()), MakeInt(1)});
        if (!inner.ok()) return inner.status();
        return MakeInt(inner->result().int_value() * 10);
      });
  ASSERT_TRUE(callback.ok()) << callback.status();
  std::future<absl::StatusOr<v1::CallResponse>> running =
      session->CallAsync(*call_once, {callback->value(), MakeInt(4)});
  EXPECT_TRUE(in_callback.WaitForNotificationWithTimeout(kWait));

  // From here on nothing returns early: the stopping thread must be joined.
  absl::Status stopped;
  std::thread stop([&] { stopped = daemon_->Stop(absl::Seconds(300)); });
  EXPECT_TRUE(WaitUntilDraining()) << daemon_->Log();
  draining.Notify();
  absl::StatusOr<v1::CallResponse> result = running.get();
  EXPECT_TRUE(result.ok()) << result.status() << "\n" << daemon_->Log();
  if (result.ok()) {
    EXPECT_EQ(result->result().int_value(), 50);
  }
  stop.join();
  EXPECT_TRUE(stopped.ok()) << stopped << "\n" << daemon_->Log();
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("grace period over")));
}

TEST_F(OperationsTest, PastTheGracePeriodAHungCallEndsAndNoWorkerIsLeft) {
  StartDaemon({"--shutdown-grace=1s"});
  std::unique_ptr<client::Session> session = NewSession();
  ASSERT_NE(session, nullptr);
  absl::StatusOr<client::Function> loop =
      Resolve(*session, "void ff_endless_loop(void)");
  ASSERT_TRUE(loop.ok()) << loop.status();
  std::unique_ptr<client::Session> idle = NewSession();
  ASSERT_NE(idle, nullptr);
  const pid_t worker = session->worker_pid();
  const pid_t idle_worker = idle->worker_pid();
  const int64_t idle_ticks = CpuTicks(worker);
  ASSERT_GE(idle_ticks, 0);

  absl::StatusOr<v1::CallResponse> result;
  std::thread call([&] { result = session->Call(*loop, {}); });
  EXPECT_TRUE(WaitUntilBurning(worker, idle_ticks));
  absl::Status stopped = daemon_->Stop(absl::Seconds(300));
  call.join();
  EXPECT_TRUE(stopped.ok()) << stopped << "\n" << daemon_->Log();
  // Answered by ffid, not cut off by gRPC: the client learns why.
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable)
      << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("ffid is shutting down"));
  EXPECT_TRUE(WaitForProcessGone(worker, kWait));
  EXPECT_TRUE(WaitForProcessGone(idle_worker, kWait));
  EXPECT_THAT(daemon_->Log(), HasSubstr("grace period over"));
}

}  // namespace
}  // namespace ffid::testing
