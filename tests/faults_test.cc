// Every fault kind of tests/fixtures/faults_fixture.c against a real daemon
// and sandboxed workers: each ends in a specific error (WORKER_CRASHED with
// a crash report, SANDBOX_VIOLATION naming the system call, RESOURCE_LIMIT
// naming the limit, DEADLINE_EXCEEDED), the worker is gone, and the daemon
// and other sessions keep serving. Also: what GetServerInfo and the session
// say about the sandbox, and what the sandbox hides.
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/status.pb.h"
#include "absl/strings/str_join.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeInt;
using client::MakeString;
using client::MakeUint;
using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

class FaultsTest : public FfidTest {
 protected:
  // A fresh session (so every fault kills only its own worker) with the
  // fixture loaded.
  struct Victim {
    std::unique_ptr<client::Session> session;
    client::Library fixture;
  };

  Victim NewVictim(const client::SessionOptions& options = {}) {
    Victim victim;
    victim.session = NewSession(options);
    if (victim.session == nullptr) return victim;
    absl::StatusOr<client::Library> library =
        victim.session->LoadLibrary(FixturePath());
    EXPECT_TRUE(library.ok()) << library.status();
    if (library.ok()) victim.fixture = *library;
    return victim;
  }

  absl::StatusOr<v1::CallResponse> CallIn(
      Victim& victim, const std::string& declaration,
      std::vector<v1::Value> arguments = {},
      const client::CallOptions& options = {}) {
    if (victim.session == nullptr) return absl::InternalError("no session");
    absl::StatusOr<client::Function> function =
        victim.session->ResolveFunction(victim.fixture, declaration);
    if (!function.ok()) return function.status();
    return victim.session->Call(*function, std::move(arguments), options);
  }

  // After a fatal fault: the worker is gone, the daemon and the test's own
  // session still serve.
  void ExpectContained(Victim& victim) {
    EXPECT_TRUE(WaitForProcessGone(victim.session->worker_pid(),
                                   absl::Seconds(10)))
        << "worker " << victim.session->worker_pid() << " is still there";
    EXPECT_TRUE(daemon().IsRunning());
    // When the client's own deadline ended the call, the daemon may still
    // be killing the worker: the session turns CRASHED soon after.
    absl::StatusOr<v1::Session> state;
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    do {
      state = victim.session->Get();
      ASSERT_TRUE(state.ok()) << state.status();
      if (state->state() == v1::SESSION_STATE_CRASHED) break;
      absl::SleepFor(absl::Milliseconds(10));
    } while (absl::Now() < give_up);
    EXPECT_EQ(state->state(), v1::SESSION_STATE_CRASHED);
    EXPECT_THAT(CallOk("int fx_add(int a, int b)", {MakeInt(2), MakeInt(3)}),
                IsInteger(5));
  }

  v1::GetServerInfoResponse ServerInfo() {
    grpc::ClientContext context;
    v1::GetServerInfoResponse info;
    grpc::Status status =
        client_->stub().GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return info;
  }

  static std::string Frames(const v1::CrashReport& report) {
    return absl::StrJoin(report.frames(), "\n");
  }
};

TEST_F(FaultsTest, NullDereferenceReportsAddressFramesAndFunction) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "void ff_null_deref(void)");
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(response), HasSubstr("SIGSEGV"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value()) << response.status();
  EXPECT_EQ(report->signal(), SIGSEGV);
  EXPECT_EQ(report->fault_address(), 0u);
  EXPECT_EQ(report->function(), "ff_null_deref");
  EXPECT_EQ(report->signal_code(), SEGV_MAPERR);
  EXPECT_THAT(Frames(*report), HasSubstr("ff_null_deref"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, CrashFramesNameTheSourceFileAndLine) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "void ff_null_deref(void)");
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value()) << response.status();
  // The fixture is built with -g: the faulting frame says where in its
  // source the store through NULL is, "... at /path/faults_fixture.c:N".
  std::string located;
  for (const std::string& frame : report->frames()) {
    if (absl::StrContains(frame, "(ff_null_deref+") &&
        absl::StrContains(frame, " at ")) {
      located = frame;
    }
  }
  ASSERT_FALSE(located.empty()) << Frames(*report);
  const std::string where = located.substr(located.rfind(" at ") + 4);
  const size_t colon = where.rfind(':');
  ASSERT_NE(colon, std::string::npos) << located;
  EXPECT_TRUE(absl::EndsWith(where.substr(0, colon), "faults_fixture.c"))
      << located;
  int line = 0;
  ASSERT_TRUE(absl::SimpleAtoi(where.substr(colon + 1), &line)) << located;
  // That line of the fixture's source is the faulting statement. (Read from
  // this tree, not the path in the debug information: a compiler cache may
  // have built the object in another checkout.)
  std::ifstream source(FFID_FAULTS_FIXTURE_SOURCE);
  ASSERT_TRUE(source.good()) << "cannot read " << FFID_FAULTS_FIXTURE_SOURCE;
  std::string text;
  for (int i = 0; i < line && std::getline(source, text); ++i) {
  }
  EXPECT_THAT(text, HasSubstr("*p = 1;")) << located;
  // Frames without debug information keep dladdr's text (libc's abort is
  // not in this crash; the worker's own frames are).
  EXPECT_THAT(Frames(*report), HasSubstr("ffid-worker"));
}

TEST_F(FaultsTest, AbortIsReportedAsSigabrtWithFrames) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "void ff_abort(void)");
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  // Also when the worker is PID 1 of its namespace, where a re-raised
  // SIGABRT is ignored: the handler's record names the signal.
  EXPECT_EQ(report->signal(), SIGABRT);
  EXPECT_EQ(report->signal_name(), "SIGABRT");
  // abort() never returns, so the return address in ff_abort lies past its
  // end and dladdr names no symbol for it; the library and abort do show.
  EXPECT_THAT(Frames(*report), HasSubstr("(abort+"));
  EXPECT_THAT(Frames(*report), HasSubstr("libffid_fixture.so"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, ExitIsReportedWithItsStatus) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "void ff_exit(int status)", {MakeInt(7)});
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(response), HasSubstr("exited with status 7"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), 0);
  EXPECT_EQ(report->exit_code(), 7);
  EXPECT_EQ(report->function(), "ff_exit");
  ExpectContained(victim);
}

TEST_F(FaultsTest, StackOverflowIsReportedFromTheAlternateStack) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_stack_overflow(int depth)", {MakeInt(0)});
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), SIGSEGV);
  EXPECT_NE(report->fault_address(), 0u);
  EXPECT_THAT(Frames(*report), HasSubstr("ff_stack_overflow"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, EndlessLoopIsKilledAtTheCallDeadline) {
  Victim victim = NewVictim();
  client::CallOptions options;
  options.timeout = absl::Milliseconds(500);
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "void ff_endless_loop(void)", {}, options);
  // The client's own deadline and the daemon's answer race: either way the
  // code is DEADLINE_EXCEEDED, and the daemon kills the worker.
  EXPECT_THAT(response, HasCode(absl::StatusCode::kDeadlineExceeded));
  ExpectContained(victim);
}

TEST_F(FaultsTest, EndlessLoopIsKilledAtTheSessionsMaximumCallDuration) {
  client::SessionOptions session_options;
  session_options.limits.mutable_max_call_duration()->set_nanos(300000000);
  Victim victim = NewVictim(session_options);
  // No client deadline: the session's maximum applies.
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "void ff_endless_loop(void)");
  EXPECT_THAT(response, HasReason("DEADLINE_EXCEEDED"));
  EXPECT_THAT(MessageOf(response), HasSubstr("ff_endless_loop"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, CpuLimitIsReportedAsResourceLimit) {
  client::SessionOptions session_options;
  session_options.limits.set_cpu_seconds(1);
  Victim victim = NewVictim(session_options);
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_burn_cpu(int seconds)", {MakeInt(30)});
  EXPECT_THAT(response, HasReason("RESOURCE_LIMIT"));
  EXPECT_THAT(MessageOf(response), HasSubstr("CPU time limit of 1 s"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->limit(), "cpu_seconds");
  EXPECT_EQ(report->signal(), SIGXCPU);
  ExpectContained(victim);
}

TEST_F(FaultsTest, AllocationBeyondTheAddressSpaceLimitIsResourceLimit) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    FFID_TEST_ASAN
  GTEST_SKIP() << "RLIMIT_AS is not applied to sanitized workers";
#endif
  client::SessionOptions session_options;
  session_options.limits.set_address_space_bytes(uint64_t{512} << 20);
  Victim victim = NewVictim(session_options);
  // Within the limit: fine.
  absl::StatusOr<v1::CallResponse> small =
      CallIn(victim, "int ff_alloc_touch(uint64_t bytes)",
             {MakeUint(uint64_t{16} << 20)});
  ASSERT_TRUE(small.ok()) << small.status();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_alloc_touch(uint64_t bytes)",
             {MakeUint(uint64_t{2} << 30)});
  EXPECT_THAT(response, HasReason("RESOURCE_LIMIT"));
  EXPECT_THAT(MessageOf(response), HasSubstr("address-space limit of 512 MiB"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->limit(), "address_space_bytes");
  ExpectContained(victim);
}

TEST_F(FaultsTest, FileSizeLimitIsReportedAsResourceLimit) {
  client::SessionOptions session_options;
  session_options.limits.set_file_size_bytes(uint64_t{1} << 20);
  Victim victim = NewVictim(session_options);
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_write_file(const char* path, uint64_t bytes)",
             {MakeString("/tmp/ffid-faults-big"), MakeUint(uint64_t{4} << 20)});
  EXPECT_THAT(response, HasReason("RESOURCE_LIMIT"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->limit(), "file_size_bytes");
  EXPECT_EQ(report->signal(), SIGXFSZ);
  ExpectContained(victim);
}

TEST_F(FaultsTest, AFailedAllocationTheLibrarySurvivesIsResourceLimit) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    FFID_TEST_ASAN
  GTEST_SKIP() << "RLIMIT_AS is not applied to sanitized workers";
#endif
  client::SessionOptions session_options;
  session_options.limits.set_address_space_bytes(uint64_t{512} << 20);
  Victim victim = NewVictim(session_options);
  absl::StatusOr<v1::CallResponse> small =
      CallIn(victim, "int ff_alloc_or_null(uint64_t bytes)",
             {MakeUint(uint64_t{16} << 20)});
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_THAT(small->result(), IsInteger(1));
  // malloc returns NULL inside the function, which returns normally.
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_alloc_or_null(uint64_t bytes)",
             {MakeUint(uint64_t{2} << 30)});
  EXPECT_THAT(response, HasReason("RESOURCE_LIMIT"));
  EXPECT_THAT(response, HasCode(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(client::LimitOf(response.status()), "address_space_bytes");
  EXPECT_THAT(MessageOf(response), HasSubstr("address-space limit of 512 MiB"));
  EXPECT_THAT(MessageOf(response), HasSubstr("ENOMEM"));
  EXPECT_THAT(MessageOf(response), HasSubstr("ff_alloc_or_null"));
  EXPECT_FALSE(client::CrashReportOf(response.status()).has_value());
  // What the function returned travels with the error.
  std::optional<v1::CallResponse> returned =
      client::LimitedCallOf(response.status());
  ASSERT_TRUE(returned.has_value());
  EXPECT_THAT(returned->result(), IsInteger(0));
  EXPECT_EQ(returned->errno_value(), ENOMEM);
  // The worker lives on.
  absl::StatusOr<v1::CallResponse> again =
      CallIn(victim, "int ff_alloc_or_null(uint64_t bytes)",
             {MakeUint(uint64_t{16} << 20)});
  ASSERT_TRUE(again.ok()) << again.status();
  absl::StatusOr<v1::Session> state = victim.session->Get();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->state(), v1::SESSION_STATE_ACTIVE);
}

TEST_F(FaultsTest, OpenFilesLimitReachedIsResourceLimitAndTheWorkerLivesOn) {
  client::SessionOptions session_options;
  session_options.limits.set_open_files(32);
  Victim victim = NewVictim(session_options);
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_open_many(int n)", {MakeInt(200)});
  EXPECT_THAT(response, HasReason("RESOURCE_LIMIT"));
  EXPECT_EQ(client::LimitOf(response.status()), "open_files");
  EXPECT_THAT(MessageOf(response), HasSubstr("open-files limit of 32"));
  EXPECT_THAT(MessageOf(response), HasSubstr("EMFILE"));
  std::optional<v1::CallResponse> returned =
      client::LimitedCallOf(response.status());
  ASSERT_TRUE(returned.has_value());
  std::optional<Integer> opened = IntegerOf(returned->result());
  ASSERT_TRUE(opened.has_value());
  EXPECT_GT(*opened, 0);
  EXPECT_LT(*opened, 32);
  EXPECT_EQ(returned->errno_value(), EMFILE);
  // Under the limit: an ordinary answer from the same worker.
  absl::StatusOr<v1::CallResponse> few =
      CallIn(victim, "int ff_open_many(int n)", {MakeInt(4)});
  ASSERT_TRUE(few.ok()) << few.status();
  EXPECT_THAT(few->result(), IsInteger(4));
  absl::StatusOr<v1::Session> state = victim.session->Get();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->limits().open_files(), 32u);
  EXPECT_EQ(state->state(), v1::SESSION_STATE_ACTIVE);
}

TEST_F(FaultsTest, ACallAskingForErrnoGetsItsResultAtTheOpenFilesLimit) {
  client::SessionOptions session_options;
  session_options.limits.set_open_files(32);
  Victim victim = NewVictim(session_options);
  absl::StatusOr<client::Function> function =
      victim.session->ResolveFunction(victim.fixture, "int ff_open_many(int n)");
  ASSERT_TRUE(function.ok()) << function.status();
  client::CallOptions options;
  options.capture_errno = true;
  absl::StatusOr<v1::CallResponse> response =
      victim.session->Call(*function, {MakeInt(200)}, options);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->errno_value(), EMFILE);
  std::optional<Integer> opened = IntegerOf(response->result());
  ASSERT_TRUE(opened.has_value());
  EXPECT_LT(*opened, 32);
}

TEST_F(FaultsTest, FilesOutsideTheViewCannotBeOpened) {
  // A file the daemon's user can read, outside every allowed directory.
  const std::string secret = daemon().temp_dir() + "/secret.txt";
  std::ofstream(secret) << "not for workers";
  ASSERT_EQ(access(secret.c_str(), R_OK), 0);
  Victim victim = NewVictim();
  for (const std::string& path : {secret, std::string("/etc/passwd"),
                                  std::string("/root")}) {
    absl::StatusOr<v1::CallResponse> response =
        CallIn(victim, "int ff_open_file(const char* path)", {MakeString(path)});
    ASSERT_TRUE(response.ok()) << response.status();
    std::optional<Integer> result = IntegerOf(response->result());
    ASSERT_TRUE(result.has_value());
    EXPECT_LT(*result, 0) << path << " could be opened in the worker";
  }
  // What the view does hold: the fixture and /dev/null.
  for (const std::string& path : {FixturePath(), std::string("/dev/null")}) {
    absl::StatusOr<v1::CallResponse> response =
        CallIn(victim, "int ff_open_file(const char* path)", {MakeString(path)});
    ASSERT_TRUE(response.ok()) << response.status();
    std::optional<Integer> result = IntegerOf(response->result());
    ASSERT_TRUE(result.has_value());
    EXPECT_GE(*result, 0) << path << " cannot be opened in the worker";
  }
}

TEST_F(FaultsTest, OpeningASocketIsASandboxViolationNamingTheCall) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_open_socket(void)");
  EXPECT_THAT(response, HasReason("SANDBOX_VIOLATION"));
  EXPECT_THAT(response, HasCode(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(MessageOf(response), HasSubstr("'socket'"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->syscall_name(), "socket");
  EXPECT_EQ(report->function(), "ff_open_socket");
  EXPECT_THAT(Frames(*report), HasSubstr("ff_open_socket"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, NetworkAccessNeedsTheServersPermission) {
  client::SessionOptions session_options;
  session_options.sandbox.set_allow_network(true);
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      client_->CreateSession(session_options);
  EXPECT_THAT(session, HasReason("SANDBOX_VIOLATION"));
  EXPECT_THAT(MessageOf(session), HasSubstr("--allow-network"));
}

TEST_F(FaultsTest, ForkBombIsASandboxViolation) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_fork_bomb(void)");
  EXPECT_THAT(response, HasReason("SANDBOX_VIOLATION"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(response.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_THAT(report->syscall_name(), AnyOf("clone", "fork", "vfork"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, ClosingTheChannelEndsTheWorker) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_close_fd(int fd)", {MakeInt(3)});
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, GarbageOnTheChannelGetsTheWorkerKilled) {
  Victim victim = NewVictim();
  absl::StatusOr<v1::CallResponse> response =
      CallIn(victim, "int ff_write_garbage(int fd)", {MakeInt(3)});
  EXPECT_THAT(response, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(response), HasSubstr("channel"));
  ExpectContained(victim);
}

TEST_F(FaultsTest, ServerInfoAndSessionReportTheSandbox) {
  v1::GetServerInfoResponse info = ServerInfo();
  EXPECT_TRUE(info.sandbox().rlimits());
  EXPECT_FALSE(info.network_allowed());
  // Whatever is off on this kernel is named, never silently missing.
  const v1::SandboxStatus& sandbox = info.sandbox();
  const int off = !sandbox.user_namespace() + !sandbox.network_namespace() +
                  !sandbox.mount_namespace() + !sandbox.pid_namespace() +
                  !sandbox.ipc_namespace() + !sandbox.uts_namespace() +
                  !sandbox.seccomp() + (sandbox.landlock_abi() == 0);
  EXPECT_LE(off, sandbox.disabled_size())
      << absl::StrJoin(sandbox.disabled(), "; ");
  EXPECT_GT(info.max_limits().open_files(), 0u);
  absl::StatusOr<v1::Session> state = session_->Get();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->sandbox_status().seccomp(), sandbox.seccomp());
  EXPECT_EQ(state->sandbox_status().pid_namespace(),
            sandbox.pid_namespace() && sandbox.mount_namespace());
  EXPECT_EQ(state->restart_policy(), v1::RESTART_POLICY_NEVER);
  EXPECT_EQ(state->limits().open_files(), info.max_limits().open_files());
}

TEST_F(FaultsTest, WorkerSeesItsOwnPidAndUtsNamespaces) {
  v1::GetServerInfoResponse info = ServerInfo();
  if (!info.sandbox().pid_namespace() || !info.sandbox().mount_namespace()) {
    GTEST_SKIP() << "no PID namespace here: "
                 << absl::StrJoin(info.sandbox().disabled(), "; ");
  }
  EXPECT_THAT(CallOk("int ff_getpid(void)"), IsInteger(1));
}

TEST_F(FaultsTest, LimitsAboveTheMaximumAreRefused) {
  v1::GetServerInfoResponse info = ServerInfo();
  ASSERT_GT(info.max_limits().open_files(), 0u);
  client::SessionOptions session_options;
  session_options.limits.set_open_files(info.max_limits().open_files() + 1);
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      client_->CreateSession(session_options);
  EXPECT_THAT(session, HasReason("RESOURCE_LIMIT"));
  EXPECT_THAT(MessageOf(session), HasSubstr("open_files"));
}

// ------------------------------------------ crashes among pipelined calls

// The status a StreamResult carries (OK when it has none).
absl::Status StreamResultStatus(const v1::StreamResult& result) {
  if (result.error_status().empty()) return absl::OkStatus();
  google::rpc::Status status;
  if (!status.ParseFromString(result.error_status())) {
    return absl::InternalError("unparsable error_status");
  }
  return client::StatusFromRpcStatus(status);
}

// Calls pipelined on the stream in one ConnectRequest.calls: the worker
// runs them in order, so every call before the crashing one is answered
// with its result, and the crashing one and those behind it fail with the
// crash, which names the call that caused it.
TEST_F(FaultsTest, ACrashInsideAPackOfCallsLosesNoEarlierAnswer) {
  Victim victim = NewVictim();
  absl::StatusOr<client::Function> crash = victim.session->ResolveFunction(
      victim.fixture, "void ff_null_deref(void)");
  absl::StatusOr<client::Function> add = victim.session->ResolveFunction(
      victim.fixture, "int fx_add(int a, int b)");
  ASSERT_TRUE(crash.ok() && add.ok());
  grpc::ClientContext context;
  auto stream = client_->stub().Connect(&context);
  v1::ConnectRequest request;
  request.mutable_attach()->set_session(victim.session->id());
  request.mutable_attach()->set_packed_results(true);
  ASSERT_TRUE(stream->Write(request));
  v1::ConnectResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_TRUE(response.has_attached());

  // Tags 1..20 add, 21 crashes, 22..40 add.
  constexpr uint64_t kCrashTag = 21;
  constexpr uint64_t kLastTag = 40;
  request.Clear();
  for (uint64_t tag = 1; tag <= kLastTag; ++tag) {
    v1::StreamCall& call = *request.mutable_calls()->add_calls();
    call.set_tag(tag);
    call.mutable_call()->set_function(tag == kCrashTag ? crash->handle
                                                       : add->handle);
    if (tag != kCrashTag) {
      *call.mutable_call()->add_arguments() = MakeInt(static_cast<int>(tag));
      *call.mutable_call()->add_arguments() = MakeInt(100);
    }
  }
  ASSERT_TRUE(stream->Write(request));
  std::map<uint64_t, v1::StreamResult> results;
  while (results.size() < kLastTag && stream->Read(&response)) {
    if (response.has_result()) {
      results[response.result().tag()] = response.result();
    } else if (response.has_results()) {
      for (const v1::StreamResult& result : response.results().results()) {
        results[result.tag()] = result;
      }
    }
  }
  ASSERT_EQ(results.size(), kLastTag);
  for (uint64_t tag = 1; tag < kCrashTag; ++tag) {
    ASSERT_TRUE(results[tag].error_status().empty())
        << tag << ": " << StreamResultStatus(results[tag]);
    EXPECT_THAT(results[tag].call().result(),
                IsInteger(static_cast<int>(tag) + 100));
  }
  const absl::Status crashed = StreamResultStatus(results[kCrashTag]);
  EXPECT_THAT(crashed, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(crashed), HasSubstr("SIGSEGV"));
  EXPECT_THAT(MessageOf(crashed), HasSubstr("ff_null_deref"));
  for (uint64_t tag = kCrashTag + 1; tag <= kLastTag; ++tag) {
    // Sent before the crash (failed with it) or after (the worker died
    // earlier): a crash either way, never a result.
    EXPECT_THAT(StreamResultStatus(results[tag]), HasReason("WORKER_CRASHED"))
        << tag;
  }
  stream->WritesDone();
  context.TryCancel();
  (void)stream->Finish();
  ExpectContained(victim);
}

// The same through the C++ client, whose writer packs the calls queued by
// CallAsync: each future gets its own call's answer, in any order of
// get(), and the calls after the crashing one fail with the crash.
TEST_F(FaultsTest, PipelinedCallsThroughTheClientAroundACrash) {
  Victim victim = NewVictim();
  absl::StatusOr<client::Function> crash = victim.session->ResolveFunction(
      victim.fixture, "void ff_null_deref(void)");
  absl::StatusOr<client::Function> add = victim.session->ResolveFunction(
      victim.fixture, "int fx_add(int a, int b)");
  ASSERT_TRUE(crash.ok() && add.ok());
  std::vector<std::future<absl::StatusOr<v1::CallResponse>>> before;
  std::vector<std::future<absl::StatusOr<v1::CallResponse>>> after;
  for (int i = 0; i < 300; ++i) {
    before.push_back(victim.session->CallAsync(*add, {MakeInt(i), MakeInt(7)}));
  }
  std::future<absl::StatusOr<v1::CallResponse>> crashing =
      victim.session->CallAsync(*crash, {});
  for (int i = 0; i < 50; ++i) {
    after.push_back(victim.session->CallAsync(*add, {MakeInt(i), MakeInt(7)}));
  }
  // Collected last first: delivery does not depend on the order of get().
  for (auto& future : after) {
    EXPECT_THAT(future.get(), HasReason("WORKER_CRASHED"));
  }
  absl::StatusOr<v1::CallResponse> crashed = crashing.get();
  EXPECT_THAT(crashed, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(crashed), HasSubstr("ff_null_deref"));
  for (int i = static_cast<int>(before.size()) - 1; i >= 0; --i) {
    absl::StatusOr<v1::CallResponse> sum = before[i].get();
    ASSERT_TRUE(sum.ok()) << i << ": " << sum.status();
    EXPECT_THAT(sum->result(), IsInteger(i + 7));
  }
  ExpectContained(victim);
}

// ---------------------------------------------------------------- restarts

class RestartTest : public FaultsTest {
 protected:
  client::SessionOptions Restarting() {
    client::SessionOptions options;
    options.restart_policy = v1::RESTART_POLICY_RESTART;
    return options;
  }
};

TEST_F(RestartTest, CrashRestartsTheWorkerAndKeepsLibraryAndFunctionHandles) {
  Victim victim = NewVictim(Restarting());
  absl::StatusOr<client::Function> add = victim.session->ResolveFunction(
      victim.fixture, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok()) << add.status();
  absl::StatusOr<client::Memory> memory = victim.session->Allocate(16);
  ASSERT_TRUE(memory.ok()) << memory.status();
  const pid_t first_pid = victim.session->worker_pid();

  absl::StatusOr<v1::CallResponse> crashed =
      CallIn(victim, "void ff_null_deref(void)");
  EXPECT_THAT(crashed, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(MessageOf(crashed), HasSubstr("was restarted"));
  std::optional<v1::CrashReport> report =
      client::CrashReportOf(crashed.status());
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal(), SIGSEGV);

  absl::StatusOr<v1::Session> state = victim.session->Get();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(state->restarts(), 1);
  EXPECT_NE(state->worker_pid(), first_pid);
  EXPECT_TRUE(WaitForProcessGone(first_pid, absl::Seconds(10)));

  // The function handle from before the crash works in the new worker.
  absl::StatusOr<v1::CallResponse> sum =
      victim.session->Call(*add, {MakeInt(40), MakeInt(2)});
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_THAT(sum->result(), IsInteger(42));
  // Memory did not survive, and says so.
  absl::StatusOr<std::string> read =
      victim.session->Read(memory->handle, 0, 16);
  EXPECT_THAT(read, HasReason("HANDLE_INVALID"));
  EXPECT_THAT(MessageOf(read), HasSubstr("restart"));
}

TEST_F(RestartTest, DeadlineKillRestartsTheWorker) {
  client::SessionOptions options = Restarting();
  options.limits.mutable_max_call_duration()->set_nanos(300000000);
  Victim victim = NewVictim(options);
  absl::StatusOr<v1::CallResponse> looped =
      CallIn(victim, "void ff_endless_loop(void)");
  EXPECT_THAT(looped, HasReason("DEADLINE_EXCEEDED"));
  EXPECT_THAT(MessageOf(looped), HasSubstr("was restarted"));
  absl::StatusOr<v1::CallResponse> sum =
      CallIn(victim, "int fx_add(int a, int b)", {MakeInt(1), MakeInt(2)});
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_THAT(sum->result(), IsInteger(3));
}

TEST_F(RestartTest, WorkerKilledFromOutsideIsReplacedOnTheNextRequest) {
  Victim victim = NewVictim(Restarting());
  absl::StatusOr<client::Function> add = victim.session->ResolveFunction(
      victim.fixture, "int fx_add(int a, int b)");
  ASSERT_TRUE(add.ok());
  const pid_t pid = victim.session->worker_pid();
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  ASSERT_TRUE(WaitForProcessGone(pid, absl::Seconds(10)));
  // The death may not have been noticed yet; the first request after it
  // either restarts the worker or fails saying it did.
  absl::StatusOr<v1::CallResponse> sum =
      victim.session->Call(*add, {MakeInt(2), MakeInt(2)});
  if (!sum.ok()) {
    EXPECT_THAT(MessageOf(sum), HasSubstr("restarted"));
    sum = victim.session->Call(*add, {MakeInt(2), MakeInt(2)});
  }
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_THAT(sum->result(), IsInteger(4));
  absl::StatusOr<v1::Session> state = victim.session->Get();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->restarts(), 1);
}

// A raw Connect stream attached to a victim's session, to see what the
// server sends on it.
class AttachedStream {
 public:
  AttachedStream(v1::Ffi::Stub& stub, const std::string& session)
      : stream_(stub.Connect(&context_)) {
    v1::ConnectRequest attach;
    attach.mutable_attach()->set_session(session);
    EXPECT_TRUE(stream_->Write(attach));
    v1::ConnectResponse attached;
    EXPECT_TRUE(stream_->Read(&attached));
    EXPECT_TRUE(attached.has_attached());
  }
  ~AttachedStream() {
    stream_->WritesDone();
    context_.TryCancel();
    (void)stream_->Finish();
  }

  bool Call(uint64_t tag, const std::string& function,
            std::vector<v1::Value> arguments = {}) {
    v1::ConnectRequest request;
    request.mutable_call()->set_tag(tag);
    request.mutable_call()->mutable_call()->set_function(function);
    for (v1::Value& argument : arguments) {
      *request.mutable_call()->mutable_call()->add_arguments() =
          std::move(argument);
    }
    return stream_->Write(request);
  }

  // Reads until a message of `kind` arrives (others are kept).
  std::optional<v1::ConnectResponse> ReadUntil(
      v1::ConnectResponse::KindCase kind) {
    v1::ConnectResponse message;
    while (stream_->Read(&message)) {
      seen_.push_back(message);
      if (message.kind_case() == kind) return message;
    }
    return std::nullopt;
  }
  const std::vector<v1::ConnectResponse>& seen() const { return seen_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ConnectRequest,
                                           v1::ConnectResponse>>
      stream_;
  std::vector<v1::ConnectResponse> seen_;
};

TEST_F(RestartTest, APipelinedCrashRestartsTheWorkerAndTheStreamIsTold) {
  Victim victim = NewVictim(Restarting());
  absl::StatusOr<client::Function> crash = victim.session->ResolveFunction(
      victim.fixture, "void ff_null_deref(void)");
  absl::StatusOr<client::Function> add = victim.session->ResolveFunction(
      victim.fixture, "int fx_add(int a, int b)");
  ASSERT_TRUE(crash.ok() && add.ok());
  const pid_t first_pid = victim.session->worker_pid();
  AttachedStream stream(client_->stub(), victim.session->id());

  ASSERT_TRUE(stream.Call(1, crash->handle));
  std::optional<v1::ConnectResponse> restarted =
      stream.ReadUntil(v1::ConnectResponse::kRestarted);
  ASSERT_TRUE(restarted.has_value());
  EXPECT_EQ(restarted->restarted().session().restarts(), 1);
  EXPECT_NE(restarted->restarted().session().worker_pid(), first_pid);
  EXPECT_EQ(restarted->restarted().previous_crash().signal(), SIGSEGV);
  EXPECT_EQ(restarted->restarted().previous_crash().function(), "ff_null_deref");
  EXPECT_THAT(restarted->restarted().message(), HasSubstr("was restarted"));
  // The crashed call itself was answered with the crash.
  bool answered = false;
  for (const v1::ConnectResponse& message : stream.seen()) {
    if (message.has_result() && message.result().tag() == 1) {
      answered = true;
      google::rpc::Status status;
      ASSERT_TRUE(status.ParseFromString(message.result().error_status()));
      EXPECT_THAT(status.message(), HasSubstr("SIGSEGV"));
    }
  }
  if (!answered) {
    std::optional<v1::ConnectResponse> result =
        stream.ReadUntil(v1::ConnectResponse::kResult);
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(result->result().tag(), 1u);
    EXPECT_FALSE(result->result().error_status().empty());
  }
  // The next pipelined call runs in the new worker, under the old handle.
  ASSERT_TRUE(stream.Call(2, add->handle, {MakeInt(40), MakeInt(2)}));
  std::optional<v1::ConnectResponse> sum =
      stream.ReadUntil(v1::ConnectResponse::kResult);
  ASSERT_TRUE(sum.has_value());
  EXPECT_EQ(sum->result().tag(), 2u);
  EXPECT_TRUE(sum->result().error_status().empty());
  EXPECT_THAT(sum->result().call().result(), IsInteger(42));
}

TEST_F(RestartTest, AWorkerKilledFromOutsideIsRestartedAtOnceAndStreamsAreTold) {
  Victim victim = NewVictim(Restarting());
  const pid_t first_pid = victim.session->worker_pid();
  AttachedStream stream(client_->stub(), victim.session->id());
  ASSERT_EQ(kill(first_pid, SIGKILL), 0);
  // No request needed: the death alone restarts the worker.
  std::optional<v1::ConnectResponse> restarted =
      stream.ReadUntil(v1::ConnectResponse::kRestarted);
  ASSERT_TRUE(restarted.has_value());
  EXPECT_EQ(restarted->restarted().session().restarts(), 1);
  EXPECT_EQ(restarted->restarted().previous_crash().signal(), SIGKILL);
  absl::StatusOr<v1::Session> state = victim.session->Get();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(state->restarts(), 1);
}

TEST_F(RestartTest, ACrashLoopIsBoundedAndThenTheSessionStaysDead) {
  Victim victim = NewVictim(Restarting());
  std::string last_message;
  int attempts = 0;
  for (; attempts < 20; ++attempts) {
    absl::StatusOr<v1::CallResponse> crashed =
        CallIn(victim, "void ff_abort(void)");
    ASSERT_FALSE(crashed.ok());
    last_message = MessageOf(crashed);
    if (last_message.find("gave up") != std::string::npos) break;
  }
  EXPECT_LT(attempts, 20) << last_message;
  EXPECT_THAT(last_message, HasSubstr("gave up restarting"));
  absl::StatusOr<v1::CallResponse> after =
      CallIn(victim, "int fx_add(int a, int b)", {MakeInt(1), MakeInt(1)});
  EXPECT_THAT(after, HasReason("WORKER_CRASHED"));
  absl::StatusOr<v1::Session> state = victim.session->Get();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->state(), v1::SESSION_STATE_CRASHED);
  EXPECT_TRUE(daemon().IsRunning());
}

}  // namespace
}  // namespace ffid::testing
