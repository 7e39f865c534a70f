// FfiService over an in-process gRPC channel, with real workers
// (FFID_WORKER_PATH) calling into libc and libm.
#include "server/service.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ffi/errors.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/status_grpc.h"

namespace ffid::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Message(const grpc::Status& status) {
  return status.error_message();
}

v1::ErrorReason Reason(const grpc::Status& status) {
  return GetErrorReason(FromGrpcStatus(status));
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ffid_service_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    temp_dir_ = dir;
    SessionManagerOptions session_options;
    session_options.worker_path = FFID_WORKER_PATH;
    sessions_ = std::make_unique<SessionManager>(session_options);
    ServiceOptions options;
    options.allow_library = {"/lib/*", "/usr/lib/*"};
    service_ = std::make_unique<FfiService>(*sessions_, options);
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Ffi::NewStub(
        server_->InProcessChannel(grpc::ChannelArguments()));
  }

  void TearDown() override {
    sessions_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now());
    std::string command = absl::StrCat("rm -rf '", temp_dir_, "'");
    ASSERT_EQ(system(command.c_str()), 0);
  }

  std::string CreateSession() {
    grpc::ClientContext context;
    v1::CreateSessionRequest request;
    v1::CreateSessionResponse response;
    grpc::Status status = stub_->CreateSession(&context, request, &response);
    EXPECT_TRUE(status.ok()) << Message(status);
    return response.session().id();
  }

  grpc::Status GetSession(const std::string& id, v1::Session* session) {
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session(id);
    v1::GetSessionResponse response;
    grpc::Status status = stub_->GetSession(&context, request, &response);
    *session = response.session();
    return status;
  }

  grpc::Status LoadLibrary(const std::string& session, const std::string& name,
                           v1::LoadLibraryResponse* response) {
    grpc::ClientContext context;
    v1::LoadLibraryRequest request;
    request.set_session(session);
    request.set_name(name);
    return stub_->LoadLibrary(&context, request, response);
  }

  grpc::Status Resolve(const std::string& session, const std::string& library,
                       const std::string& declaration,
                       v1::ResolveFunctionResponse* response) {
    grpc::ClientContext context;
    v1::ResolveFunctionRequest request;
    request.set_session(session);
    request.set_library(library);
    request.set_declaration(declaration);
    return stub_->ResolveFunction(&context, request, response);
  }

  // Loads `library` and resolves `declaration`; returns the function handle.
  std::string Prepare(const std::string& session, const std::string& library,
                      const std::string& declaration) {
    v1::LoadLibraryResponse loaded;
    grpc::Status status = LoadLibrary(session, library, &loaded);
    EXPECT_TRUE(status.ok()) << Message(status);
    v1::ResolveFunctionResponse resolved;
    status = Resolve(session, loaded.library(), declaration, &resolved);
    EXPECT_TRUE(status.ok()) << Message(status);
    return resolved.function();
  }

  grpc::Status Call(const std::string& session, const std::string& function,
                    std::vector<v1::Value> arguments,
                    v1::CallResponse* response,
                    absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::CallRequest request;
    request.set_session(session);
    request.set_function(function);
    for (auto& argument : arguments) *request.add_arguments() = argument;
    return stub_->Call(&context, request, response);
  }

  static v1::Value Double(double value) {
    v1::Value v;
    v.set_double_value(value);
    return v;
  }

  std::string temp_dir_;
  std::unique_ptr<SessionManager> sessions_;
  std::unique_ptr<FfiService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Ffi::Stub> stub_;
};

TEST_F(ServiceTest, SessionLifecycle) {
  std::string id = CreateSession();
  EXPECT_EQ(id.size(), 32u);
  v1::Session session;
  ASSERT_TRUE(GetSession(id, &session).ok());
  EXPECT_EQ(session.state(), v1::SESSION_STATE_ACTIVE);
  EXPECT_GT(session.worker_pid(), 0);
  EXPECT_EQ(session.idle_timeout().seconds(), 300);

  grpc::ClientContext context;
  v1::DeleteSessionRequest request;
  request.set_session(id);
  v1::DeleteSessionResponse response;
  ASSERT_TRUE(stub_->DeleteSession(&context, request, &response).ok());

  grpc::Status status = GetSession(id, &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_SESSION_NOT_FOUND);
  EXPECT_THAT(Message(status), HasSubstr(id));
}

TEST_F(ServiceTest, CreateSessionValidatesTheIdleTimeout) {
  grpc::ClientContext context;
  v1::CreateSessionRequest request;
  request.mutable_idle_timeout()->set_seconds(-5);
  v1::CreateSessionResponse response;
  grpc::Status status = stub_->CreateSession(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(Message(status), HasSubstr("'idle_timeout'"));

  grpc::ClientContext context2;
  request.mutable_idle_timeout()->set_seconds(42);
  ASSERT_TRUE(stub_->CreateSession(&context2, request, &response).ok());
  EXPECT_EQ(response.session().idle_timeout().seconds(), 42);
}

TEST_F(ServiceTest, MissingFieldsAreInvalidRequests) {
  v1::LoadLibraryResponse loaded;
  grpc::Status status = LoadLibrary("", "libm.so.6", &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(Message(status), StartsWith("field 'session' is required"));

  std::string session = CreateSession();
  status = LoadLibrary(session, "", &loaded);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(Message(status), StartsWith("field 'name' is required"));

  v1::ResolveFunctionResponse resolved;
  grpc::ClientContext context;
  v1::ResolveFunctionRequest resolve;
  resolve.set_session(session);
  resolve.set_library("lib_x");
  status = stub_->ResolveFunction(&context, resolve, &resolved);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(Message(status), HasSubstr("'declaration'"));

  v1::CallResponse called;
  status = Call(session, "", {}, &called);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(Message(status), StartsWith("field 'function' is required"));
}

TEST_F(ServiceTest, CallsCosThroughADeclaration) {
  std::string session = CreateSession();
  v1::LoadLibraryResponse loaded;
  grpc::Status status = LoadLibrary(session, "libm.so.6", &loaded);
  ASSERT_TRUE(status.ok()) << Message(status);
  char real[PATH_MAX];
  ASSERT_NE(realpath(loaded.path().c_str(), real), nullptr);
  EXPECT_EQ(loaded.path(), real);

  v1::ResolveFunctionResponse resolved;
  status = Resolve(session, loaded.library(), "double cos(double)", &resolved);
  ASSERT_TRUE(status.ok()) << Message(status);
  EXPECT_EQ(resolved.symbol(), "cos");

  v1::CallResponse called;
  status = Call(session, resolved.function(), {Double(0.5)}, &called);
  ASSERT_TRUE(status.ok()) << Message(status);
  EXPECT_EQ(called.result().double_value(), std::cos(0.5));
}

TEST_F(ServiceTest, SymbolOverridesTheDeclaredName) {
  std::string session = CreateSession();
  v1::LoadLibraryResponse loaded;
  ASSERT_TRUE(LoadLibrary(session, "libm.so.6", &loaded).ok());
  grpc::ClientContext context;
  v1::ResolveFunctionRequest request;
  request.set_session(session);
  request.set_library(loaded.library());
  request.set_symbol("sin");
  request.set_declaration("double f(double x)");
  v1::ResolveFunctionResponse resolved;
  grpc::Status status = stub_->ResolveFunction(&context, request, &resolved);
  ASSERT_TRUE(status.ok()) << Message(status);
  EXPECT_EQ(resolved.symbol(), "sin");
  v1::CallResponse called;
  ASSERT_TRUE(Call(session, resolved.function(), {Double(0.5)}, &called).ok());
  EXPECT_EQ(called.result().double_value(), std::sin(0.5));
}

TEST_F(ServiceTest, LibraryErrors) {
  std::string session = CreateSession();
  v1::LoadLibraryResponse loaded;
  grpc::Status status = LoadLibrary(session, "libnope.so.9", &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_LIBRARY_NOT_FOUND);
  EXPECT_THAT(Message(status), HasSubstr("library 'libnope.so.9' not found"));

  std::string outside = absl::StrCat(temp_dir_, "/libm.so.6");
  absl::StatusOr<std::string> libm = ResolveLibrary("libm.so.6");
  ASSERT_TRUE(libm.ok()) << libm.status();
  ASSERT_EQ(symlink(libm->c_str(), outside.c_str()), 0);
  std::string copy = absl::StrCat(temp_dir_, "/libcopy.so");
  std::ofstream(copy) << "not a library";
  status = LoadLibrary(session, copy, &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_LIBRARY_NOT_ALLOWED);
  EXPECT_THAT(Message(status), HasSubstr("--allow-library"));
  // A symlink from outside into an allowed directory is fine: the real
  // path is what counts.
  status = LoadLibrary(session, outside, &loaded);
  EXPECT_TRUE(status.ok()) << Message(status);
}

TEST_F(ServiceTest, DeclarationErrorsNameTheDeclaration) {
  std::string session = CreateSession();
  v1::LoadLibraryResponse loaded;
  ASSERT_TRUE(LoadLibrary(session, "libm.so.6", &loaded).ok());
  v1::ResolveFunctionResponse resolved;
  grpc::Status status =
      Resolve(session, loaded.library(), "double cos(double", &resolved);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_DECLARATION_INVALID);
  EXPECT_THAT(Message(status), StartsWith("declaration 'double cos(double': "));
  EXPECT_THAT(Message(status), HasSubstr("column"));

  status = Resolve(session, loaded.library(), "double no_such_fn(double)",
                   &resolved);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_SYMBOL_NOT_FOUND);
  EXPECT_THAT(Message(status), HasSubstr("no_such_fn"));
}

TEST_F(ServiceTest, ParseDeclarationsNeedsNoSession) {
  grpc::ClientContext context;
  v1::ParseDeclarationsRequest request;
  request.set_source("double cos(double); size_t strlen(const char *s);");
  v1::ParseDeclarationsResponse response;
  grpc::Status status = stub_->ParseDeclarations(&context, request, &response);
  ASSERT_TRUE(status.ok()) << Message(status);
  ASSERT_EQ(response.functions_size(), 2);
  EXPECT_EQ(response.functions(0).name(), "cos");
  EXPECT_EQ(response.functions(1).name(), "strlen");

  grpc::ClientContext context2;
  request.set_session("feedfeedfeedfeedfeedfeedfeedfeed");
  status = stub_->ParseDeclarations(&context2, request, &response);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_SESSION_NOT_FOUND);
}

TEST_F(ServiceTest, ACrashIsReportedAndOtherSessionsCarryOn) {
  std::string doomed = CreateSession();
  std::string healthy = CreateSession();
  std::string abort_fn = Prepare(doomed, "libc.so.6", "void abort(void)");
  std::string cos_fn = Prepare(healthy, "libm.so.6", "double cos(double)");

  v1::CallResponse called;
  grpc::Status status = Call(doomed, abort_fn, {}, &called);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_THAT(Message(status),
              HasSubstr("was killed by SIGABRT (Aborted) while calling "
                        "'abort'"));
  auto report = GetCrashReport(FromGrpcStatus(status));
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->signal_name(), "SIGABRT");
  EXPECT_EQ(report->function(), "abort");

  v1::Session session;
  ASSERT_TRUE(GetSession(doomed, &session).ok());
  EXPECT_EQ(session.state(), v1::SESSION_STATE_CRASHED);
  EXPECT_EQ(session.crash().signal_name(), "SIGABRT");

  status = Call(doomed, abort_fn, {}, &called);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_WORKER_CRASHED);
  EXPECT_THAT(Message(status), StartsWith("the session's worker died earlier"));

  status = Call(healthy, cos_fn, {Double(0.0)}, &called);
  ASSERT_TRUE(status.ok()) << Message(status);
  EXPECT_EQ(called.result().double_value(), 1.0);
}

TEST_F(ServiceTest, TheCallDeadlineKillsAStuckWorker) {
  std::string session = CreateSession();
  std::string sleep_fn =
      Prepare(session, "libc.so.6", "unsigned int sleep(unsigned int)");
  v1::Value thirty;
  thirty.set_uint_value(30);
  v1::CallResponse called;
  absl::Time start = absl::Now();
  grpc::Status status =
      Call(session, sleep_fn, {thirty}, &called, absl::Milliseconds(300));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The server kills the worker when the deadline passes.
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  v1::Session state;
  do {
    absl::SleepFor(absl::Milliseconds(20));
    ASSERT_TRUE(GetSession(session, &state).ok());
  } while (state.state() != v1::SESSION_STATE_CRASHED && absl::Now() < give_up);
  EXPECT_EQ(state.state(), v1::SESSION_STATE_CRASHED);
  EXPECT_EQ(state.crash().signal_name(), "SIGKILL");
}

TEST_F(ServiceTest, MemoryRoundTrip) {
  std::string session = CreateSession();
  grpc::ClientContext allocate_context;
  v1::AllocateRequest allocate;
  allocate.set_session(session);
  allocate.set_size(8);
  allocate.set_initial_bytes("abc");
  v1::AllocateResponse allocated;
  grpc::Status status =
      stub_->Allocate(&allocate_context, allocate, &allocated);
  ASSERT_TRUE(status.ok()) << Message(status);
  EXPECT_EQ(allocated.size(), 8u);

  grpc::ClientContext write_context;
  v1::WriteRequest write;
  write.set_session(session);
  write.mutable_pointer()->set_handle(allocated.memory());
  write.mutable_pointer()->set_offset(4);
  write.set_data("wxyz");
  v1::WriteResponse written;
  status = stub_->Write(&write_context, write, &written);
  ASSERT_TRUE(status.ok()) << Message(status);

  grpc::ClientContext read_context;
  v1::ReadRequest read;
  read.set_session(session);
  read.mutable_pointer()->set_handle(allocated.memory());
  v1::ReadResponse data;
  status = stub_->Read(&read_context, read, &data);
  ASSERT_TRUE(status.ok()) << Message(status);
  EXPECT_EQ(data.data(), std::string("abc\0wxyz", 8));

  grpc::ClientContext free_context;
  v1::FreeRequest free_request;
  free_request.set_session(session);
  free_request.set_memory(allocated.memory());
  v1::FreeResponse freed;
  ASSERT_TRUE(stub_->Free(&free_context, free_request, &freed).ok());

  grpc::ClientContext again;
  status = stub_->Read(&again, read, &data);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_HANDLE_INVALID);

  grpc::ClientContext no_pointer;
  read.clear_pointer();
  status = stub_->Read(&no_pointer, read, &data);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_INVALID_REQUEST);
}

TEST_F(ServiceTest, ConnectKeepsTheSessionUntilTheStreamCloses) {
  std::string id = CreateSession();
  grpc::ClientContext context;
  auto stream = stub_->Connect(&context);
  v1::ConnectRequest attach;
  attach.mutable_attach()->set_session(id);
  ASSERT_TRUE(stream->Write(attach));
  v1::ConnectResponse reply;
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.attached().session().id(), id);
  v1::Session session;
  EXPECT_TRUE(GetSession(id, &session).ok());

  stream->WritesDone();
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << Message(status);
  status = GetSession(id, &session);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_SESSION_NOT_FOUND);
  EXPECT_THAT(Message(status), HasSubstr("last Connect stream closed"));
}

TEST_F(ServiceTest, DeletingTheSessionEndsItsConnectStream) {
  std::string id = CreateSession();
  grpc::ClientContext context;
  auto stream = stub_->Connect(&context);
  v1::ConnectRequest attach;
  attach.mutable_attach()->set_session(id);
  ASSERT_TRUE(stream->Write(attach));
  v1::ConnectResponse reply;
  ASSERT_TRUE(stream->Read(&reply));

  grpc::ClientContext delete_context;
  v1::DeleteSessionRequest request;
  request.set_session(id);
  v1::DeleteSessionResponse response;
  ASSERT_TRUE(stub_->DeleteSession(&delete_context, request, &response).ok());

  EXPECT_FALSE(stream->Read(&reply));  // Ends rather than hanging.
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ServiceTest, ConnectMustStartWithAttach) {
  grpc::ClientContext context;
  auto stream = stub_->Connect(&context);
  ASSERT_TRUE(stream->Write(v1::ConnectRequest()));
  stream->WritesDone();
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(Message(status), HasSubstr("must be 'attach'"));

  grpc::ClientContext context2;
  auto stream2 = stub_->Connect(&context2);
  v1::ConnectRequest attach;
  attach.mutable_attach()->set_session("feedfeedfeedfeedfeedfeedfeedfeed");
  ASSERT_TRUE(stream2->Write(attach));
  stream2->WritesDone();
  status = stream2->Finish();
  EXPECT_EQ(Reason(status), v1::ERROR_REASON_SESSION_NOT_FOUND);
}

}  // namespace
}  // namespace ffid::server
