#include "clients/cpp/ffid/client.h"

#include <sys/stat.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace ffid::client {
namespace {

// How long the destructor waits for DeleteSession: a hung daemon must not
// hang the client's shutdown forever.
constexpr absl::Duration kDeleteTimeout = absl::Seconds(10);

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

}  // namespace

std::string DefaultAddress() {
  const char* address = std::getenv("FFID_ADDRESS");
  if (address != nullptr && *address != '\0') return address;
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  if (runtime_dir != nullptr && *runtime_dir != '\0') {
    return absl::StrCat("unix:", runtime_dir, "/ffid/ffid.sock");
  }
  return absl::StrCat("unix:/tmp/ffid-", getuid(), "/ffid.sock");
}

std::string ErrorReason(const absl::Status& status) {
  auto payload = status.GetPayload(kErrorInfoTypeUrl);
  if (!payload.has_value()) return "";
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) return "";
  return info.reason();
}

std::optional<v1::CrashReport> CrashReportOf(const absl::Status& status) {
  auto payload = status.GetPayload(kCrashReportTypeUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::CrashReport report;
  if (!report.ParseFromString(std::string(*payload))) return std::nullopt;
  return report;
}

absl::Status StatusFromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share their numbering.
  absl::Status result(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
  if (!status.error_details().empty()) {
    google::rpc::Status details;
    if (details.ParseFromString(status.error_details())) {
      for (const google::protobuf::Any& any : details.details()) {
        result.SetPayload(any.type_url(), absl::Cord(any.value()));
      }
    }
  }
  return result;
}

absl::Status ErrorWithReason(absl::StatusCode code, absl::string_view reason,
                             absl::string_view message) {
  absl::Status status(code, message);
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(reason));
  info.set_domain(std::string(kErrorDomain));
  status.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  return status;
}

// ---------------------------------------------------------------- Client

Client::Client(std::string address, std::shared_ptr<grpc::Channel> channel)
    : address_(std::move(address)),
      channel_(std::move(channel)),
      stub_(v1::Ffi::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    std::string address, absl::Duration timeout) {
  if (address.empty()) {
    return absl::InvalidArgumentError("the daemon's address is empty");
  }
  if (absl::StartsWith(address, "unix:")) {
    // No socket file means no daemon: say so now instead of waiting out
    // the connect timeout.
    const std::string path = address.substr(5);
    struct stat info;
    if (stat(path.c_str(), &info) != 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot connect to ffid at ", address, ": ", path,
          " does not exist: is the daemon running? (start it with ffid, or "
          "set --address or FFID_ADDRESS)"));
    }
  }
  grpc::ChannelArguments args;
  // Read and Write move whole buffers in one message.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Each Client owns its connection: gRPC's process-wide subchannel pool
  // would otherwise hand a new Client the broken connection of an earlier
  // one to a daemon that has since restarted.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      address, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout))) {
    return absl::UnavailableError(absl::StrCat(
        "cannot connect to ffid at ", address, " within ",
        absl::FormatDuration(timeout),
        ": is the daemon running? (set --address or FFID_ADDRESS)"));
  }
  return std::unique_ptr<Client>(new Client(std::move(address), channel));
}

absl::StatusOr<std::unique_ptr<Session>> Client::CreateSession(
    const SessionOptions& options) {
  v1::CreateSessionRequest request;
  if (options.idle_timeout > absl::ZeroDuration()) {
    const int64_t nanos = absl::ToInt64Nanoseconds(options.idle_timeout);
    request.mutable_idle_timeout()->set_seconds(nanos / 1000000000);
    request.mutable_idle_timeout()->set_nanos(
        static_cast<int32_t>(nanos % 1000000000));
  }
  v1::CreateSessionResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->CreateSession(&context, request, &response));
  if (!status.ok()) return status;
  std::unique_ptr<Session> session(new Session(stub_, response.session()));
  if (options.attach_stream) {
    status = session->Attach();
    if (!status.ok()) return status;  // ~Session deletes it.
  }
  return session;
}

// ---------------------------------------------------------------- Session

Session::Session(std::shared_ptr<v1::Ffi::Stub> stub,
                 const v1::Session& session)
    : stub_(std::move(stub)),
      id_(session.id()),
      worker_pid_(session.worker_pid()) {}

Session::~Session() {
  {
    absl::MutexLock lock(&mu_);
    if (!deleted_) {
      deleted_ = true;
      v1::DeleteSessionRequest request;
      request.set_session(id_);
      v1::DeleteSessionResponse response;
      grpc::ClientContext context;
      SetDeadline(context, kDeleteTimeout);
      // Nothing to do about a failure here: the stream's closing below makes
      // the daemon delete the session anyway.
      (void)stub_->DeleteSession(&context, request, &response);
    }
  }
  CloseStream();
}

absl::Status Session::Attach() {
  absl::MutexLock lock(&mu_);
  stream_context_ = std::make_unique<grpc::ClientContext>();
  stream_ = stub_->Connect(stream_context_.get());
  v1::ConnectRequest request;
  request.mutable_attach()->set_session(id_);
  v1::ConnectResponse response;
  if (!stream_->Write(request) || !stream_->Read(&response)) {
    absl::Status status = StatusFromGrpc(stream_->Finish());
    stream_.reset();
    stream_context_.reset();
    if (status.ok()) {
      status = absl::UnavailableError(absl::StrCat(
          "the daemon closed the Connect stream of session ", id_,
          " before confirming it"));
    }
    return status;
  }
  if (!response.has_attached()) {
    return absl::InternalError(absl::StrCat(
        "the daemon answered the attachment of session ", id_,
        " with an unexpected message"));
  }
  return absl::OkStatus();
}

void Session::CloseStream() {
  absl::MutexLock lock(&mu_);
  if (stream_ == nullptr) return;
  stream_->WritesDone();
  // The daemon has nothing more to say; cancelling makes Finish return now
  // instead of waiting for the server to end the stream.
  stream_context_->TryCancel();
  (void)stream_->Finish();
  stream_.reset();
  stream_context_.reset();
}

absl::Status Session::Delete() {
  {
    absl::MutexLock lock(&mu_);
    deleted_ = true;
  }
  v1::DeleteSessionRequest request;
  request.set_session(id_);
  v1::DeleteSessionResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->DeleteSession(&context, request, &response));
  CloseStream();
  return status;
}

absl::StatusOr<v1::Session> Session::Get() const {
  v1::GetSessionRequest request;
  request.set_session(id_);
  v1::GetSessionResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->GetSession(&context, request, &response));
  if (!status.ok()) return status;
  return std::move(*response.mutable_session());
}

absl::StatusOr<Library> Session::LoadLibrary(absl::string_view name) const {
  v1::LoadLibraryRequest request;
  request.set_session(id_);
  request.set_name(std::string(name));
  v1::LoadLibraryResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->LoadLibrary(&context, request, &response));
  if (!status.ok()) return status;
  return Library{response.library(), response.path()};
}

absl::Status Session::UnloadLibrary(const Library& library) const {
  v1::UnloadLibraryRequest request;
  request.set_session(id_);
  request.set_library(library.handle);
  v1::UnloadLibraryResponse response;
  grpc::ClientContext context;
  return StatusFromGrpc(stub_->UnloadLibrary(&context, request, &response));
}

absl::StatusOr<v1::ParseDeclarationsResponse> Session::ParseDeclarations(
    absl::string_view source) const {
  v1::ParseDeclarationsRequest request;
  request.set_session(id_);
  request.set_source(std::string(source));
  v1::ParseDeclarationsResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->ParseDeclarations(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

namespace {

absl::StatusOr<Function> Resolve(v1::Ffi::Stub& stub,
                                 const v1::ResolveFunctionRequest& request) {
  v1::ResolveFunctionResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub.ResolveFunction(&context, request, &response));
  if (!status.ok()) return status;
  return Function{response.function(), response.symbol(),
                  std::move(*response.mutable_type())};
}

}  // namespace

absl::StatusOr<Function> Session::ResolveFunction(
    const Library& library, absl::string_view declaration) const {
  v1::ResolveFunctionRequest request;
  request.set_session(id_);
  request.set_library(library.handle);
  request.set_declaration(std::string(declaration));
  return Resolve(*stub_, request);
}

absl::StatusOr<Function> Session::ResolveFunction(
    const Library& library, absl::string_view symbol,
    const v1::FunctionType& type) const {
  v1::ResolveFunctionRequest request;
  request.set_session(id_);
  request.set_library(library.handle);
  request.set_symbol(std::string(symbol));
  *request.mutable_type() = type;
  return Resolve(*stub_, request);
}

absl::StatusOr<v1::CallResponse> Session::Call(
    const Function& function, std::vector<v1::Value> arguments,
    const CallOptions& options) const {
  v1::CallRequest request;
  request.set_session(id_);
  request.set_function(function.handle);
  request.mutable_arguments()->Reserve(static_cast<int>(arguments.size()));
  for (v1::Value& argument : arguments) {
    *request.add_arguments() = std::move(argument);
  }
  for (const v1::TypeDescriptor& type : options.variadic_types) {
    *request.add_variadic_types() = type;
  }
  request.set_capture_errno(options.capture_errno);
  v1::CallResponse response;
  grpc::ClientContext context;
  SetDeadline(context, options.timeout);
  absl::Status status =
      StatusFromGrpc(stub_->Call(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<Memory> Session::Allocate(
    uint64_t size, absl::string_view initial_bytes) const {
  v1::AllocateRequest request;
  request.set_session(id_);
  request.set_size(size);
  request.set_initial_bytes(std::string(initial_bytes));
  v1::AllocateResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->Allocate(&context, request, &response));
  if (!status.ok()) return status;
  return Memory{response.memory(), response.size(), response.address()};
}

absl::StatusOr<std::string> Session::Read(absl::string_view memory,
                                          uint64_t offset,
                                          uint64_t length) const {
  v1::PointerValue pointer;
  pointer.set_handle(std::string(memory));
  pointer.set_offset(offset);
  return Read(pointer, length);
}

absl::StatusOr<std::string> Session::Read(const v1::PointerValue& pointer,
                                          uint64_t length) const {
  v1::ReadRequest request;
  request.set_session(id_);
  *request.mutable_pointer() = pointer;
  request.set_length(length);
  v1::ReadResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->Read(&context, request, &response));
  if (!status.ok()) return status;
  return std::move(*response.mutable_data());
}

absl::Status Session::Write(absl::string_view memory, uint64_t offset,
                            absl::string_view data) const {
  v1::PointerValue pointer;
  pointer.set_handle(std::string(memory));
  pointer.set_offset(offset);
  return Write(pointer, data);
}

absl::Status Session::Write(const v1::PointerValue& pointer,
                            absl::string_view data) const {
  v1::WriteRequest request;
  request.set_session(id_);
  *request.mutable_pointer() = pointer;
  request.set_data(std::string(data));
  v1::WriteResponse response;
  grpc::ClientContext context;
  return StatusFromGrpc(stub_->Write(&context, request, &response));
}

absl::Status Session::Free(absl::string_view memory) const {
  v1::FreeRequest request;
  request.set_session(id_);
  request.set_memory(std::string(memory));
  v1::FreeResponse response;
  grpc::ClientContext context;
  return StatusFromGrpc(stub_->Free(&context, request, &response));
}

}  // namespace ffid::client
