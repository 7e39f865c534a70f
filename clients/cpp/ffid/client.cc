#include "clients/cpp/ffid/client.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "google/rpc/error_details.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "google/rpc/status.pb.h"

namespace ffid::client {
namespace {

// How long the destructor waits for DeleteSession: a hung daemon must not
// hang the client's shutdown forever.
constexpr absl::Duration kDeleteTimeout = absl::Seconds(10);

// A pointer `offset` bytes into the memory handle `memory`.
v1::PointerValue HandlePointer(absl::string_view memory, uint64_t offset) {
  v1::PointerValue pointer;
  pointer.set_handle(std::string(memory));
  pointer.set_offset(offset);
  return pointer;
}

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

void SetDuration(absl::Duration duration, google::protobuf::Duration& out) {
  const int64_t nanos = absl::ToInt64Nanoseconds(duration);
  out.set_seconds(nanos / 1000000000);
  out.set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

}  // namespace

std::string ErrorReason(const absl::Status& status) {
  auto payload = status.GetPayload(kErrorInfoTypeUrl);
  if (!payload.has_value()) return "";
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) return "";
  return info.reason();
}

namespace {

// The ErrorInfo metadata entry `key` of `status` as a number, or -1.
int ErrorInfoIndex(const absl::Status& status, absl::string_view key) {
  auto payload = status.GetPayload(kErrorInfoTypeUrl);
  if (!payload.has_value()) return -1;
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) return -1;
  auto it = info.metadata().find(std::string(key));
  int index = -1;
  if (it == info.metadata().end() || !absl::SimpleAtoi(it->second, &index)) {
    return -1;
  }
  return index;
}

}  // namespace

int BatchFailedStep(const absl::Status& status) {
  return ErrorInfoIndex(status, "batch_step");
}

int BatchFailedCall(const absl::Status& status) {
  return ErrorInfoIndex(status, "batch_call");
}

std::optional<v1::CrashReport> CrashReportOf(const absl::Status& status) {
  auto payload = status.GetPayload(kCrashReportTypeUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::CrashReport report;
  if (!report.ParseFromString(std::string(*payload))) return std::nullopt;
  return report;
}

std::string LimitOf(const absl::Status& status) {
  if (ErrorReason(status) != "RESOURCE_LIMIT") return "";
  auto payload = status.GetPayload(kErrorInfoTypeUrl);
  google::rpc::ErrorInfo info;
  if (payload.has_value() && info.ParseFromString(std::string(*payload))) {
    auto it = info.metadata().find("limit");
    if (it != info.metadata().end()) return it->second;
  }
  std::optional<v1::CrashReport> report = CrashReportOf(status);
  return report.has_value() ? report->limit() : "";
}

std::optional<v1::CallResponse> LimitedCallOf(const absl::Status& status) {
  auto payload = status.GetPayload(kCallResponseTypeUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::CallResponse response;
  if (!response.ParseFromString(std::string(*payload))) return std::nullopt;
  return response;
}

absl::Status StatusFromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  google::rpc::Status details;
  if (status.error_details().empty() ||
      !details.ParseFromString(status.error_details())) {
    details.Clear();
  }
  // grpc::StatusCode and absl::StatusCode share their numbering.
  details.set_code(static_cast<int>(status.error_code()));
  details.set_message(status.error_message());
  return StatusFromRpcStatus(details);
}

absl::Status StatusFromRpcStatus(const google::rpc::Status& status) {
  if (status.code() == 0) return absl::OkStatus();
  absl::Status result(static_cast<absl::StatusCode>(status.code()),
                      status.message());
  for (const google::protobuf::Any& any : status.details()) {
    result.SetPayload(any.type_url(), absl::Cord(any.value()));
  }
  return result;
}

absl::Status StatusFromErrorStatus(absl::string_view serialized,
                                   absl::string_view stream) {
  if (serialized.empty()) return absl::OkStatus();
  google::rpc::Status status;
  if (!status.ParseFromArray(serialized.data(),
                             static_cast<int>(serialized.size())) ||
      status.code() == 0) {
    return absl::InternalError(absl::StrCat(
        "the daemon sent an unreadable error status on ", stream));
  }
  return StatusFromRpcStatus(status);
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
  ConnectOptions options;
  options.address = std::move(address);
  options.timeout = timeout;
  return Connect(options);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const ConnectOptions& options) {
  absl::StatusOr<ResolvedConnection> resolved = ResolveConnectOptions(options);
  if (!resolved.ok()) return resolved.status();
  ResolvedConnection& connection = *resolved;
  if (absl::StartsWith(connection.address, "unix:")) {
    // No socket file means no daemon: say so now instead of waiting out
    // the connect timeout.
    const std::string path = connection.address.substr(5);
    struct stat info;
    if (stat(path.c_str(), &info) != 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot connect to ffid at ", connection.address, ": ", path,
          " does not exist: is the daemon running? (start it with ffid, or "
          "set --address or FFID_ADDRESS)"));
    }
  }
  std::shared_ptr<grpc::Channel> channel = MakeChannel(connection);
  if (!channel->WaitForConnected(
          absl::ToChronoTime(absl::Now() + connection.timeout))) {
    // gRPC's account of the last attempt (a refused connection, a failed
    // TLS handshake): an RPC that does not wait for the connection fails
    // at once with it.
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    v1::GetServerInfoRequest request;
    v1::GetServerInfoResponse response;
    grpc::Status probe =
        v1::Ffi::NewStub(channel)->GetServerInfo(&context, request, &response);
    std::string detail;
    if (probe.error_code() == grpc::StatusCode::UNAVAILABLE) {
      detail = probe.error_message();
    }
    return ConnectFailure(connection, detail);
  }
  return std::unique_ptr<Client>(
      new Client(std::move(connection.address), channel));
}

absl::StatusOr<std::unique_ptr<Session>> Client::CreateSession(
    const SessionOptions& options) {
  v1::CreateSessionRequest request;
  if (options.idle_timeout > absl::ZeroDuration()) {
    SetDuration(options.idle_timeout, *request.mutable_idle_timeout());
  }
  *request.mutable_limits() = options.limits;
  *request.mutable_sandbox() = options.sandbox;
  request.set_restart_policy(options.restart_policy);
  v1::CreateSessionResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->CreateSession(&context, request, &response));
  if (!status.ok()) return status;
  std::unique_ptr<Session> session(
      new Session(stub_, channel_, response.session()));
  if (options.attach_stream) {
    status = session->Attach();
    if (!status.ok()) return status;  // ~Session deletes it.
  }
  return session;
}

// ---------------------------------------------------------------- Session

Session::Session(std::shared_ptr<v1::Ffi::Stub> stub,
                 std::shared_ptr<grpc::Channel> channel,
                 const v1::Session& session)
    : stub_(std::move(stub)),
      call_streams_(std::make_unique<CallStreams>(stub_)),
      channel_(std::move(channel)),
      id_(session.id()),
      worker_pid_(session.worker_pid()),
      // A RESTART session's daemon says on the stream each time it
      // restarts the worker; unread, those notices would fill the stream's
      // window and hold the daemon's writer.
      listening_(session.restart_policy() == v1::RESTART_POLICY_RESTART) {}

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
  // Results that are ready together may come in one message.
  request.mutable_attach()->set_packed_results(true);
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
  {
    absl::MutexLock stream_lock(&stream_mu_);
    stream_ended_ = false;
    closing_ = false;
  }
  {
    absl::MutexLock outbox_lock(&outbox_mu_);
    outbox_closed_ = false;
    pack_calls_ = response.attached().packed_calls();
  }
  reader_ = std::thread([this] { ReadLoop(); });
  writer_ = std::thread([this] { WriteLoop(); });
  return absl::OkStatus();
}

void Session::CloseStream() {
  absl::MutexLock lock(&mu_);
  if (stream_ == nullptr) return;
  {
    // The session is gone (or going): calls still queued are not sent; the
    // reader fails them with the rest when the stream ends below.
    absl::MutexLock outbox_lock(&outbox_mu_);
    outbox_closed_ = true;
    outbox_.clear();
    outbox_ready_.Signal();
  }
  {
    absl::MutexLock write_lock(&write_mu_);
    stream_->WritesDone();
  }
  // The daemon has nothing more to say; cancelling makes Finish return now
  // instead of waiting for the server to end the stream, and ends the
  // reader's Read().
  stream_context_->TryCancel();
  {
    absl::MutexLock stream_lock(&stream_mu_);
    closing_ = true;  // a parked reader reads once, and sees the end
  }
  if (reader_.joinable()) reader_.join();
  if (writer_.joinable()) writer_.join();
  std::vector<std::thread> threads;
  {
    absl::MutexLock stream_lock(&stream_mu_);
    stopping_ = true;
    invocation_ready_.SignalAll();
    threads.swap(callback_threads_);
  }
  for (std::thread& thread : threads) thread.join();
  (void)stream_->Finish();
  stream_.reset();
  stream_context_.reset();
}

bool Session::WriteToStream(const v1::ConnectRequest& request) {
  absl::MutexLock lock(&write_mu_);
  return stream_->Write(request);
}

bool Session::QueueForStream(v1::StreamCall call) {
  absl::MutexLock lock(&outbox_mu_);
  if (outbox_closed_) return false;
  outbox_.push_back(std::move(call));
  if (outbox_.size() == 1) outbox_ready_.Signal();
  return true;
}

namespace {

// The most stream calls, and about the most bytes of them, that the writer
// packs into one ConnectRequest.calls.
constexpr int kMaxPackedCalls = 1024;
constexpr size_t kMaxPackedBytes = 256 * 1024;

}  // namespace

void Session::WriteLoop() {
  absl::MutexLock lock(&outbox_mu_);
  for (;;) {
    while (outbox_.empty() && !outbox_closed_) outbox_ready_.Wait(&outbox_mu_);
    if (outbox_.empty()) return;
    // Everything queued now leaves in one message (up to a limit): one
    // message costs gRPC about as much as one call on each end.
    v1::ConnectRequest request;
    if (outbox_.size() == 1 || !pack_calls_) {
      *request.mutable_call() = std::move(outbox_.front());
      outbox_.pop_front();
    } else {
      v1::StreamCalls& calls = *request.mutable_calls();
      calls.mutable_calls()->Reserve(static_cast<int>(
          std::min<size_t>(outbox_.size(), kMaxPackedCalls)));
      size_t bytes = 0;
      while (!outbox_.empty() && calls.calls_size() < kMaxPackedCalls &&
             bytes < kMaxPackedBytes) {
        bytes += outbox_.front().ByteSizeLong();
        *calls.add_calls() = std::move(outbox_.front());
        outbox_.pop_front();
      }
    }
    // More queued behind it: gRPC may hold this one and send it with the
    // next (the last of a burst flushes them all).
    grpc::WriteOptions options;
    if (!outbox_.empty()) options.set_buffer_hint();
    outbox_mu_.Unlock();
    bool written;
    {
      absl::MutexLock write_lock(&write_mu_);
      written = stream_->Write(request, options);
    }
    outbox_mu_.Lock();
    if (!written) {
      // The stream is broken: its reader fails every call in flight.
      outbox_closed_ = true;
      outbox_.clear();
      return;
    }
  }
}

bool Session::ReaderWantedLocked() const {
  return closing_ || !in_flight_.empty() || listening_;
}

void Session::ReadLoop() {
  v1::ConnectResponse message;
  for (;;) {
    {
      // Parked while nothing can arrive: a thread blocked in Read() is
      // often gRPC's poller, and would then receive every CallStream answer
      // and Call reply of this channel and hand it to the calling thread (a
      // wake-up more per call). Unread messages (a restart notice) wait in
      // gRPC's buffers.
      absl::MutexLock lock(&stream_mu_);
      stream_mu_.Await(absl::Condition(this, &Session::ReaderWantedLocked));
    }
    if (!stream_->Read(&message)) break;
    if (message.has_result()) {
      absl::MutexLock lock(&stream_mu_);
      DeliverLocked(*message.mutable_result());
    } else if (message.has_results()) {
      absl::MutexLock lock(&stream_mu_);
      for (v1::StreamResult& result :
           *message.mutable_results()->mutable_results()) {
        DeliverLocked(result);
      }
    } else if (message.has_invocation()) {
      v1::CallbackInvocation& received = *message.mutable_invocation();
      Invocation invocation;
      invocation.id = received.invocation();
      invocation.callback = received.callback();
      invocation.arguments.assign(
          std::make_move_iterator(received.mutable_arguments()->begin()),
          std::make_move_iterator(received.mutable_arguments()->end()));
      invocation.native_thread_id = received.native_thread_id();
      Dispatch(std::move(invocation));
    }
  }
  absl::MutexLock lock(&stream_mu_);
  stream_ended_ = true;
  for (auto& [tag, done] : in_flight_) {
    done(absl::UnavailableError(absl::StrCat(
        "the Connect stream of session ", id_,
        " closed before the daemon answered")));
  }
  in_flight_.clear();
}

void Session::DeliverLocked(v1::StreamResult& result) {
  auto it = in_flight_.find(result.tag());
  if (it == in_flight_.end()) return;
  StreamCompletion done = std::move(it->second);
  in_flight_.erase(it);
  done(std::move(result));
}

void Session::Dispatch(Invocation invocation) {
  absl::MutexLock lock(&stream_mu_);
  invocations_.push_back(std::move(invocation));
  if (idle_callback_threads_ == 0) {
    // Every callback thread is busy (possibly waiting inside a nested
    // call for this very invocation): start another.
    ++idle_callback_threads_;
    callback_threads_.emplace_back([this] { CallbackThread(); });
  }
  invocation_ready_.Signal();
}

void Session::CallbackThread() {
  absl::MutexLock lock(&stream_mu_);
  for (;;) {
    while (invocations_.empty() && !stopping_) {
      invocation_ready_.Wait(&stream_mu_);
    }
    if (invocations_.empty()) break;
    Invocation invocation = std::move(invocations_.front());
    invocations_.pop_front();
    --idle_callback_threads_;
    stream_mu_.Unlock();
    RunInvocation(std::move(invocation));
    stream_mu_.Lock();
    ++idle_callback_threads_;
  }
  --idle_callback_threads_;
}

void Session::RunInvocation(Invocation invocation) {
  std::shared_ptr<CallbackFunction> function;
  {
    absl::MutexLock lock(&stream_mu_);
    auto it = callbacks_.find(invocation.callback);
    if (it != callbacks_.end()) function = it->second;
  }
  v1::ConnectRequest request;
  v1::CallbackResult* answer = request.mutable_callback_result();
  answer->set_invocation(invocation.id);
  if (function == nullptr) {
    answer->mutable_error()->set_message(absl::StrCat(
        "this client has no function for callback ", invocation.callback,
        " (it was released, or registered by another client)"));
  } else {
    CallbackContext context(*this, std::move(invocation));
    absl::StatusOr<v1::Value> result = (*function)(context);
    if (result.ok()) {
      if (result->kind_case() != v1::Value::KIND_NOT_SET) {
        *answer->mutable_result() = *std::move(result);
      }
    } else {
      answer->mutable_error()->set_message(
          std::string(result.status().message()));
    }
  }
  // A closed stream fails the invocation on the daemon's side anyway.
  (void)WriteToStream(request);
}

void Session::SendStreamCall(v1::StreamCall call, StreamCompletion done) {
  {
    absl::MutexLock lock(&stream_mu_);
    if (!stream_ended_) {
      call.set_tag(next_tag_++);
      in_flight_.emplace(call.tag(), std::move(done));
      done = nullptr;
    }
  }
  if (done != nullptr) {
    done(absl::FailedPreconditionError(absl::StrCat(
        "session ", id_,
        " has no Connect stream (it was created without one, or the stream "
        "closed)")));
    return;
  }
  const uint64_t tag = call.tag();
  if (QueueForStream(std::move(call))) return;
  absl::MutexLock lock(&stream_mu_);
  auto it = in_flight_.find(tag);
  if (it != in_flight_.end()) {
    StreamCompletion failed = std::move(it->second);
    in_flight_.erase(it);
    failed(absl::UnavailableError(absl::StrCat(
        "cannot send on the Connect stream of session ", id_,
        ": it is closed")));
  }
}

std::future<absl::StatusOr<v1::StreamResult>> Session::SendStreamCall(
    v1::StreamCall call) {
  std::promise<absl::StatusOr<v1::StreamResult>> promise;
  std::future<absl::StatusOr<v1::StreamResult>> future = promise.get_future();
  SendStreamCall(std::move(call),
                 [promise = std::move(promise)](
                     absl::StatusOr<v1::StreamResult> result) mutable {
                   promise.set_value(std::move(result));
                 });
  return future;
}

namespace {

// The StreamResult's error, or OK.
absl::Status StreamStatus(const v1::StreamResult& result) {
  return StatusFromErrorStatus(result.error_status(), "the Connect stream");
}

v1::CallRequest MakeCallRequest(const Function& function,
                                std::vector<v1::Value> arguments,
                                const CallOptions& options) {
  v1::CallRequest request;
  request.set_function(function.handle);
  request.mutable_arguments()->Reserve(static_cast<int>(arguments.size()));
  for (v1::Value& argument : arguments) {
    *request.add_arguments() = std::move(argument);
  }
  for (const v1::TypeDescriptor& type : options.variadic_types) {
    *request.add_variadic_types() = type;
  }
  request.set_capture_errno(options.capture_errno);
  request.set_result_ownership(options.result_ownership);
  request.set_result_destructor(options.result_destructor);
  return request;
}

absl::StatusOr<v1::CallResponse> CallResult(
    absl::StatusOr<v1::StreamResult> result) {
  if (!result.ok()) return result.status();
  absl::Status status = StreamStatus(*result);
  if (!status.ok()) return status;
  return std::move(*result->mutable_call());
}

}  // namespace

std::future<absl::StatusOr<v1::CallResponse>> Session::CallAsync(
    const Function& function, std::vector<v1::Value> arguments,
    const CallOptions& options) {
  v1::StreamCall call;
  *call.mutable_call() =
      MakeCallRequest(function, std::move(arguments), options);
  // The reader thread moves the answer out of the result it received (no
  // copy, no shared state besides the promise's).
  std::promise<absl::StatusOr<v1::CallResponse>> promise;
  std::future<absl::StatusOr<v1::CallResponse>> future = promise.get_future();
  SendStreamCall(std::move(call),
                 [promise = std::move(promise)](
                     absl::StatusOr<v1::StreamResult> result) mutable {
                   promise.set_value(CallResult(std::move(result)));
                 });
  return future;
}

std::future<absl::StatusOr<v1::BatchResponse>> Session::BatchAsync(
    std::vector<v1::BatchStep> steps) {
  v1::StreamCall call;
  v1::BatchRequest* batch = call.mutable_batch();
  batch->mutable_steps()->Reserve(static_cast<int>(steps.size()));
  for (v1::BatchStep& step : steps) *batch->add_steps() = std::move(step);
  std::promise<absl::StatusOr<v1::BatchResponse>> promise;
  std::future<absl::StatusOr<v1::BatchResponse>> future = promise.get_future();
  SendStreamCall(
      std::move(call),
      [promise = std::move(promise)](
          absl::StatusOr<v1::StreamResult> result) mutable {
        absl::Status status =
            result.ok() ? StreamStatus(*result) : result.status();
        if (status.ok()) {
          promise.set_value(std::move(*result->mutable_batch()));
        } else {
          promise.set_value(std::move(status));
        }
      });
  return future;
}

absl::StatusOr<Callback> Session::RegisterCallback(
    absl::string_view declaration, CallbackFunction function,
    const CallbackOptions& options) {
  v1::RegisterCallbackRequest request;
  request.set_declaration(std::string(declaration));
  return Register(std::move(request), std::move(function), options);
}

absl::StatusOr<Callback> Session::RegisterCallback(
    const v1::FunctionType& type, CallbackFunction function,
    const CallbackOptions& options) {
  v1::RegisterCallbackRequest request;
  *request.mutable_type() = type;
  return Register(std::move(request), std::move(function), options);
}

absl::StatusOr<Callback> Session::Register(v1::RegisterCallbackRequest request,
                                           CallbackFunction function,
                                           const CallbackOptions& options) {
  {
    absl::MutexLock lock(&stream_mu_);
    if (stream_ended_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", id_,
          " has no Connect stream to receive callback invocations on; "
          "create it with SessionOptions::attach_stream"));
    }
  }
  request.set_session(id_);
  request.set_name(options.name);
  request.set_failure_policy(options.failure_policy);
  if (options.default_result.has_value()) {
    *request.mutable_default_result() = *options.default_result;
  }
  if (options.timeout > absl::ZeroDuration()) {
    SetDuration(options.timeout, *request.mutable_timeout());
  }
  v1::RegisterCallbackResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->RegisterCallback(&context, request, &response));
  if (!status.ok()) return status;
  {
    absl::MutexLock lock(&stream_mu_);
    callbacks_[response.callback()] =
        std::make_shared<CallbackFunction>(std::move(function));
    // From now on an invocation may come at any time (from a thread the
    // library started, too): the reader reads for the rest of the session.
    listening_ = true;
  }
  return Callback{response.callback(), std::move(*response.mutable_type()),
                  response.address()};
}

absl::Status Session::ReleaseCallback(const Callback& callback) {
  v1::ReleaseCallbackRequest request;
  request.set_session(id_);
  request.set_callback(callback.handle);
  v1::ReleaseCallbackResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->ReleaseCallback(&context, request, &response));
  if (status.ok()) {
    absl::MutexLock lock(&stream_mu_);
    callbacks_.erase(callback.handle);
  }
  return status;
}

// ---------------------------------------------------------------- callbacks

absl::StatusOr<v1::CallResponse> CallbackContext::Call(
    const Function& function, std::vector<v1::Value> arguments,
    const CallOptions& options) {
  v1::StreamCall call;
  call.set_invocation(invocation_.id);
  *call.mutable_call() =
      MakeCallRequest(function, std::move(arguments), options);
  return CallResult(session_.SendStreamCall(std::move(call)).get());
}

absl::StatusOr<std::string> CallbackContext::Read(
    const v1::PointerValue& pointer, uint64_t length) {
  v1::StreamCall call;
  call.set_invocation(invocation_.id);
  *call.mutable_read()->mutable_pointer() = pointer;
  call.mutable_read()->set_length(length);
  absl::StatusOr<v1::StreamResult> result =
      session_.SendStreamCall(std::move(call)).get();
  if (!result.ok()) return result.status();
  absl::Status status = StreamStatus(*result);
  if (!status.ok()) return status;
  return std::move(*result->mutable_read()->mutable_data());
}

absl::Status CallbackContext::Write(const v1::PointerValue& pointer,
                                    absl::string_view data) {
  v1::StreamCall call;
  call.set_invocation(invocation_.id);
  *call.mutable_write()->mutable_pointer() = pointer;
  call.mutable_write()->set_data(std::string(data));
  absl::StatusOr<v1::StreamResult> result =
      session_.SendStreamCall(std::move(call)).get();
  if (!result.ok()) return result.status();
  return StreamStatus(*result);
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
  call_streams_->Close();
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
  v1::CallStreamRequest on_stream;
  v1::CallRequest& request = *on_stream.mutable_call();
  request = MakeCallRequest(function, std::move(arguments), options);
  request.set_session(id_);
  // A call with a timeout takes the unary RPC, whose deadline the client
  // enforces too, not only the daemon.
  if (options.timeout == absl::InfiniteDuration()) {
    std::optional<absl::StatusOr<v1::CallResponse>> answered =
        call_streams_->Call(on_stream);
    if (answered.has_value()) return *std::move(answered);
  }
  v1::CallResponse response;
  grpc::ClientContext context;
  SetDeadline(context, options.timeout);
  absl::Status status =
      StatusFromGrpc(stub_->Call(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::BatchResponse> Session::Batch(
    std::vector<v1::BatchStep> steps, absl::Duration timeout) const {
  v1::BatchRequest request;
  request.set_session(id_);
  request.mutable_steps()->Reserve(static_cast<int>(steps.size()));
  for (v1::BatchStep& step : steps) *request.add_steps() = std::move(step);
  v1::BatchResponse response;
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  absl::Status status =
      StatusFromGrpc(stub_->Batch(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<Memory> Session::Allocate(
    uint64_t size, absl::string_view initial_bytes) const {
  return Allocate(size, initial_bytes, v1::ALLOCATION_PLACEMENT_UNSPECIFIED);
}

absl::StatusOr<Memory> Session::Allocate(
    uint64_t size, absl::string_view initial_bytes,
    v1::AllocationPlacement placement) const {
  v1::AllocateRequest request;
  request.set_session(id_);
  request.set_size(size);
  request.set_initial_bytes(std::string(initial_bytes));
  request.set_placement(placement);
  v1::AllocateResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->Allocate(&context, request, &response));
  if (!status.ok()) return status;
  return Memory{response.memory(), response.size(), response.address(),
                response.in_arena(), response.arena_offset()};
}

absl::StatusOr<std::shared_ptr<Arena>> Session::MapArena() {
  {
    absl::MutexLock lock(&mu_);
    if (arena_ != nullptr) return arena_;
  }
  v1::OpenArenaRequest request;
  request.set_session(id_);
  v1::OpenArenaResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->OpenArena(&context, request, &response));
  if (!status.ok()) return status;
  absl::StatusOr<std::shared_ptr<Arena>> arena =
      Arena::Receive(response.socket_path(), response.token(),
                     response.size(), response.worker_address());
  if (!arena.ok()) return arena.status();
  absl::MutexLock lock(&mu_);
  if (arena_ == nullptr) arena_ = *std::move(arena);
  return arena_;
}

absl::StatusOr<std::string> Session::Read(absl::string_view memory,
                                          uint64_t offset,
                                          uint64_t length) const {
  return Read(HandlePointer(memory, offset), length);
}

namespace {

// Reads and writes longer than this go as several RPCs of this size: one
// unary message of many MiB costs gRPC far more per byte than several of
// 1 MiB (each end allocates, page-faults and copies the whole message; see
// docs/performance.md).
constexpr uint64_t kBulkPiece = uint64_t{1} << 20;

// At most this many pieces of one Read or Write are in flight at once: while
// the daemon serves one, the next ones are already on the wire.
constexpr int kPiecesInFlight = 4;

// `pointer` moved `bytes` further.
v1::PointerValue Advanced(const v1::PointerValue& pointer, uint64_t bytes) {
  v1::PointerValue moved = pointer;
  if (!pointer.handle().empty()) {
    moved.set_offset(pointer.offset() + bytes);
  } else {
    moved.set_address(pointer.address() + bytes);
  }
  return moved;
}

// `status` (of the piece at byte `start` of a transfer of `total` bytes)
// with the piece named in front of its message; code and payloads (the
// reason) stay.
absl::Status NamePiece(const absl::Status& status, uint64_t start,
                       uint64_t total) {
  const uint64_t end = std::min(start + kBulkPiece, total);
  absl::Status named(
      status.code(),
      absl::StrCat("piece ", start / kBulkPiece + 1, " of ",
                   (total + kBulkPiece - 1) / kBulkPiece, " (bytes ", start,
                   "..", end - 1, " of ", total, "): ", status.message()));
  status.ForEachPayload(
      [&named](absl::string_view type_url, const absl::Cord& payload) {
        named.SetPayload(type_url, payload);
      });
  return named;
}

// `head` serialized, followed by the tag and length of its bytes field
// `field` holding `size` bytes: the start of a message whose field's bytes
// are sent after it as they are (the wire format lets fields come in any
// order).
std::string WithDataField(const google::protobuf::MessageLite& head, int field,
                          uint64_t size) {
  std::string bytes = head.SerializeAsString();
  google::protobuf::io::StringOutputStream stream(&bytes);
  google::protobuf::io::CodedOutputStream output(&stream);
  output.WriteTag(google::protobuf::internal::WireFormatLite::MakeTag(
      field, google::protobuf::internal::WireFormatLite::
                 WIRETYPE_LENGTH_DELIMITED));
  output.WriteVarint64(size);
  output.Trim();
  return bytes;
}

// Asks the kernel to back the whole 2 MiB pages inside [begin, begin +
// size) with transparent huge pages where it lets a process ask for them
// (transparent_hugepage "madvise"): a fresh buffer of many MiB is then
// faulted in 2 MiB at a time instead of 4 KiB. A refusal changes nothing.
void AskForHugePages(char* begin, uint64_t size) {
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t start =
      (reinterpret_cast<uintptr_t>(begin) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end =
      (reinterpret_cast<uintptr_t>(begin) + size) & ~(kHugePage - 1);
  if (end > start) {
    (void)madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
  }
}

// Where the bytes of a Read go: appended to the string Read returns, or
// copied into the caller's buffer of ReadInto (which must not overflow).
class ReadSink {
 public:
  explicit ReadSink(std::string* grow) : grow_(grow) {}
  explicit ReadSink(absl::Span<char> out) : out_(out) {}

  // Bytes received so far.
  uint64_t size() const { return grow_ != nullptr ? grow_->size() : filled_; }
  // Called once the daemon has checked the whole range: a Read's result is
  // made room for (its size is known to be possible now).
  void Expect(uint64_t length) {
    if (grow_ != nullptr && grow_->capacity() < length) {
      grow_->reserve(length);
      AskForHugePages(grow_->data(), length);
    }
  }
  // False (nothing copied) when the bytes would run past the caller's
  // buffer.
  bool Append(const char* bytes, uint64_t size) {
    if (grow_ != nullptr) {
      grow_->append(bytes, size);
      return true;
    }
    if (size > out_.size() - filled_) return false;
    std::memcpy(out_.data() + filled_, bytes, size);
    filled_ += size;
    return true;
  }

 private:
  std::string* grow_ = nullptr;
  absl::Span<char> out_;
  uint64_t filled_ = 0;
};

// Appends the `data` field of a serialized ReadResponse to `sink`, copied
// straight from gRPC's buffers (no ReadResponse is built); other fields
// are skipped.
absl::Status AppendReadData(grpc::ByteBuffer& response, ReadSink& sink) {
  const size_t total = response.Length();
  grpc::ProtoBufferReader reader(&response);
  google::protobuf::io::CodedInputStream input(&reader);
  using google::protobuf::internal::WireFormatLite;
  const uint32_t data_tag = WireFormatLite::MakeTag(
      v1::ReadResponse::kDataFieldNumber,
      WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  bool seen = false;
  while (const uint32_t tag = input.ReadTag()) {
    if (tag != data_tag || seen) {
      if (!WireFormatLite::SkipField(&input, tag)) break;
      continue;
    }
    seen = true;
    uint64_t left = 0;
    if (!input.ReadVarint64(&left)) break;
    while (left > 0) {
      const void* chunk = nullptr;
      int size = 0;
      if (!input.GetDirectBufferPointer(&chunk, &size) || size <= 0) break;
      const uint64_t take = std::min<uint64_t>(left, size);
      if (!sink.Append(static_cast<const char*>(chunk), take)) {
        return ErrorWithReason(absl::StatusCode::kInternal, "INTERNAL",
                               "the daemon sent more bytes than were asked "
                               "for");
      }
      input.Skip(static_cast<int>(take));
      left -= take;
    }
    if (left > 0) break;
  }
  if (static_cast<size_t>(input.CurrentPosition()) != total) {
    return ErrorWithReason(absl::StatusCode::kInternal, "INTERNAL",
                           "the daemon's answer to a Read does not parse");
  }
  return absl::OkStatus();
}

// Lends bytes to gRPC as slices without copying them, and counts the
// slices gRPC still holds; WaitUntilReturned() blocks until none is left,
// after which the bytes may go. The count lives on the heap, shared with
// every slice, so a slice released late finds it. Thread-safe.
class BorrowedBytes {
 public:
  BorrowedBytes() : state_(std::make_shared<State>()) {}

  // A slice of `bytes`, which must stay valid until WaitUntilReturned().
  grpc::Slice Borrow(absl::string_view bytes) {
    {
      absl::MutexLock lock(&state_->mu);
      ++state_->held;
    }
    return grpc::Slice(const_cast<char*>(bytes.data()), bytes.size(),
                       &Return, new std::shared_ptr<State>(state_));
  }

  void WaitUntilReturned() {
    absl::MutexLock lock(&state_->mu);
    state_->mu.Await(absl::Condition(
        +[](int* held) { return *held == 0; }, &state_->held));
  }

 private:
  struct State {
    absl::Mutex mu;
    int held ABSL_GUARDED_BY(mu) = 0;
  };

  // gRPC's destroy function of a borrowed slice: its last reference is gone.
  static void Return(void* user_data) {
    auto* state = static_cast<std::shared_ptr<State>*>(user_data);
    {
      absl::MutexLock lock(&(*state)->mu);
      --(*state)->held;
    }
    delete state;
  }

  std::shared_ptr<State> state_;
};

// One Read RPC.
absl::StatusOr<std::string> ReadPiece(v1::Ffi::Stub& stub,
                                      const std::string& session,
                                      const v1::PointerValue& pointer,
                                      uint64_t length) {
  v1::ReadRequest request;
  request.set_session(session);
  *request.mutable_pointer() = pointer;
  request.set_length(length);
  v1::ReadResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub.Read(&context, request, &response));
  if (!status.ok()) return status;
  return std::move(*response.mutable_data());
}

// One Write RPC.
absl::Status WritePiece(v1::Ffi::Stub& stub, const std::string& session,
                        const v1::PointerValue& pointer,
                        absl::string_view data) {
  v1::WriteRequest request;
  request.set_session(session);
  *request.mutable_pointer() = pointer;
  request.set_data(std::string(data));
  v1::WriteResponse response;
  grpc::ClientContext context;
  return StatusFromGrpc(stub.Write(&context, request, &response));
}

// Runs the pieces [first, end) of one transfer (piece i covers the bytes
// from i * kBulkPiece) as unary RPCs on a completion queue of its own, up
// to kPiecesInFlight at a time, started in order. `start` starts the RPC
// of one piece; `deliver` receives the answers in piece order. After a
// failure no further piece is started; the pieces in flight are waited for,
// and the failure of the lowest failed piece is returned, naming it.
// Used by one thread; returns once no RPC is left in flight.
template <typename Response>
class PieceRunner {
 public:
  using Start = std::function<
      std::unique_ptr<grpc::ClientAsyncResponseReader<Response>>(
          grpc::ClientContext* context, uint64_t piece,
          grpc::CompletionQueue* queue)>;
  using Deliver = std::function<void(uint64_t piece, Response& response)>;

  PieceRunner(Start start, Deliver deliver)
      : start_(std::move(start)), deliver_(std::move(deliver)) {}

  absl::Status Run(uint64_t first, uint64_t end, uint64_t total_bytes) {
    uint64_t next = first;       // the next piece to start
    uint64_t delivered = first;  // the next piece to deliver
    int in_flight = 0;
    std::optional<uint64_t> failed;  // the lowest failed piece
    absl::Status failure;
    while (true) {
      // Start pieces while there is room, and nothing failed.
      for (Slot& slot : slots_) {
        if (next >= end || failed.has_value()) break;
        if (slot.state != Slot::kFree) continue;
        slot.context.emplace();
        slot.response.Clear();
        slot.piece = next++;
        slot.state = Slot::kInFlight;
        slot.reader = start_(&*slot.context, slot.piece, &queue_);
        slot.reader->Finish(&slot.response, &slot.status, &slot);
        ++in_flight;
      }
      if (in_flight == 0) break;
      void* tag = nullptr;
      bool ok = false;
      if (!queue_.Next(&tag, &ok)) break;  // not before Shutdown
      Slot& done = *static_cast<Slot*>(tag);
      --in_flight;
      done.state = Slot::kAnswered;
      done.reader.reset();
      if (!done.status.ok() &&
          (!failed.has_value() || done.piece < *failed)) {
        failed = done.piece;
        failure = StatusFromGrpc(done.status);
      }
      // Hand over the answers that are next in order.
      bool progress = true;
      while (progress) {
        progress = false;
        for (Slot& slot : slots_) {
          if (slot.state != Slot::kAnswered || slot.piece != delivered) {
            continue;
          }
          if (!failed.has_value() || slot.piece < *failed) {
            deliver_(slot.piece, slot.response);
          }
          slot.state = Slot::kFree;
          ++delivered;
          progress = true;
        }
      }
    }
    queue_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (queue_.Next(&tag, &ok)) {
    }
    if (!failed.has_value()) return absl::OkStatus();
    return NamePiece(failure, *failed * kBulkPiece, total_bytes);
  }

 private:
  // One RPC's state; its address is the RPC's tag.
  struct Slot {
    enum State { kFree, kInFlight, kAnswered };
    State state = kFree;
    uint64_t piece = 0;
    std::optional<grpc::ClientContext> context;
    Response response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader;
  };

  const Start start_;
  const Deliver deliver_;
  grpc::CompletionQueue queue_;
  Slot slots_[kPiecesInFlight];
};

// A daemon older than WriteStream and ReadStream answers them with gRPC's
// own UNIMPLEMENTED, which carries no ffid reason.
bool StreamUnimplemented(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnimplemented &&
         ErrorReason(status).empty();
}

// Writes `data` (more than one piece) at `pointer` on one WriteStream: one
// message per kBulkPiece, each sent from `data` itself (no copy into a
// message).
absl::Status WriteOnStream(grpc::Channel& channel, const std::string& session,
                           const v1::PointerValue& pointer,
                           absl::string_view data) {
  static const grpc::internal::RpcMethod* const kMethod =
      new grpc::internal::RpcMethod(
          "/ffid.v1.Ffi/WriteStream",
          grpc::internal::RpcMethod::CLIENT_STREAMING);
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  BorrowedBytes borrowed;
  absl::Status status;
  {
    std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
        grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
            &channel, *kMethod, &context, &response));
    for (uint64_t at = 0; at < data.size(); at += kBulkPiece) {
      v1::WriteStreamRequest head;
      if (at == 0) {
        head.set_session(session);
        *head.mutable_pointer() = pointer;
        head.set_length(data.size());
      }
      const absl::string_view bytes = data.substr(at, kBulkPiece);
      grpc::Slice slices[2] = {
          grpc::Slice(WithDataField(
              head, v1::WriteStreamRequest::kDataFieldNumber, bytes.size())),
          borrowed.Borrow(bytes)};
      grpc::ByteBuffer message(slices, 2);
      // False once the daemon has ended the stream: Finish() says why.
      if (!writer->Write(message)) break;
    }
    writer->WritesDone();
    status = StatusFromGrpc(writer->Finish());
  }
  // gRPC may hold a piece's bytes until its transport is done with them.
  borrowed.WaitUntilReturned();
  return status;
}

// Reads `length` bytes (more than one piece) at `pointer` on one
// ReadStream into `sink`, each answer's data copied straight from gRPC's
// buffers.
absl::Status ReadOnStream(grpc::Channel& channel, const std::string& session,
                          const v1::PointerValue& pointer, uint64_t length,
                          ReadSink& sink) {
  static const grpc::internal::RpcMethod* const kMethod =
      new grpc::internal::RpcMethod(
          "/ffid.v1.Ffi/ReadStream",
          grpc::internal::RpcMethod::SERVER_STREAMING);
  v1::ReadStreamRequest request;
  request.set_session(session);
  *request.mutable_pointer() = pointer;
  request.set_length(length);
  request.set_piece_bytes(kBulkPiece);
  const std::string request_bytes = request.SerializeAsString();
  grpc::Slice request_slice(request_bytes);
  const grpc::ByteBuffer request_buffer(&request_slice, 1);
  grpc::ClientContext context;
  absl::Status parsed;
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
          &channel, *kMethod, &context, request_buffer));
  grpc::ByteBuffer piece;
  while (reader->Read(&piece)) {
    // The daemon checked the whole range before its first answer.
    sink.Expect(length);
    parsed = AppendReadData(piece, sink);
    if (!parsed.ok() || sink.size() > length) {
      context.TryCancel();
      break;
    }
  }
  absl::Status status = StatusFromGrpc(reader->Finish());
  if (!parsed.ok()) return parsed;
  if (!status.ok() && sink.size() <= length) return status;
  if (sink.size() != length) {
    return ErrorWithReason(
        absl::StatusCode::kInternal, "INTERNAL",
        absl::StrCat("the daemon's ReadStream sent ", sink.size(),
                     " bytes of the ", length, " asked for"));
  }
  return absl::OkStatus();
}

// `length` bytes at `pointer` in one Read RPC, into `sink`; INTERNAL if the
// daemon sends another number of bytes.
absl::Status ReadWhole(v1::Ffi::Stub& stub, const std::string& session,
                       const v1::PointerValue& pointer, uint64_t length,
                       ReadSink& sink) {
  absl::StatusOr<std::string> whole = ReadPiece(stub, session, pointer, length);
  if (!whole.ok()) return whole.status();
  if (whole->size() != length || !sink.Append(whole->data(), length)) {
    return ErrorWithReason(
        absl::StatusCode::kInternal, "INTERNAL",
        absl::StrCat("the daemon's Read sent ", whole->size(),
                     " bytes of the ", length, " asked for"));
  }
  return absl::OkStatus();
}

// More than kBulkPiece is read on one ReadStream; from a daemon without it
// (`pieces_only` is then set for good), in pieces of that size, several in
// flight at once, each answer's data copied straight from gRPC's buffers
// into `sink`, in order; a failure stops it and is returned, naming the
// piece.
absl::Status ReadBulk(const std::shared_ptr<grpc::Channel>& channel,
                      v1::Ffi::Stub& unary_stub, const std::string& session,
                      std::atomic<bool>& pieces_only,
                      const v1::PointerValue& pointer, uint64_t length,
                      ReadSink& sink) {
  if (!pieces_only.load(std::memory_order_relaxed)) {
    absl::Status read = ReadOnStream(*channel, session, pointer, length, sink);
    if (!StreamUnimplemented(read)) return read;
    pieces_only.store(true, std::memory_order_relaxed);
  }
  // A daemon without ReadStream. Beyond 1 GiB it refuses any read: one RPC
  // says so.
  if (length >= (uint64_t{1} << 30)) {
    return ReadWhole(unary_stub, session, pointer, length, sink);
  }
  sink.Expect(length);
  grpc::GenericStub stub(channel);
  const std::string method = absl::StrCat("/", v1::Ffi::service_full_name(),
                                          "/Read");
  absl::Status parsed;
  PieceRunner<grpc::ByteBuffer> runner(
      [&](grpc::ClientContext* context, uint64_t piece,
          grpc::CompletionQueue* queue) {
        v1::ReadRequest request;
        request.set_session(session);
        *request.mutable_pointer() = Advanced(pointer, piece * kBulkPiece);
        request.set_length(std::min(kBulkPiece, length - piece * kBulkPiece));
        const std::string bytes = request.SerializeAsString();
        grpc::Slice slice(bytes);
        grpc::ByteBuffer buffer(&slice, 1);
        std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader =
            stub.PrepareUnaryCall(context, method, buffer, queue);
        reader->StartCall();
        return reader;
      },
      [&](uint64_t piece, grpc::ByteBuffer& response) {
        if (!parsed.ok()) return;
        parsed = AppendReadData(response, sink);
        if (!parsed.ok()) {
          parsed = NamePiece(parsed, piece * kBulkPiece, length);
        }
      });
  const uint64_t pieces = (length + kBulkPiece - 1) / kBulkPiece;
  absl::Status status = runner.Run(0, pieces, length);
  if (!status.ok()) return status;
  if (!parsed.ok()) return parsed;
  if (sink.size() != length) {
    return ErrorWithReason(
        absl::StatusCode::kInternal, "INTERNAL",
        absl::StrCat("read ", sink.size(), " bytes of ", length,
                     ": the daemon answered a piece short"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> Session::Read(const v1::PointerValue& pointer,
                                          uint64_t length) const {
  // Beyond 1 GiB the server refuses any read: one RPC says so.
  if (length <= kBulkPiece) return ReadPiece(*stub_, id_, pointer, length);
  std::string data;
  ReadSink sink(&data);
  absl::Status read =
      ReadBulk(channel_, *stub_, id_, pieces_only_, pointer, length, sink);
  if (!read.ok()) return read;
  return data;
}

absl::Status Session::ReadInto(const v1::PointerValue& pointer,
                               absl::Span<char> out) const {
  if (out.empty()) return absl::OkStatus();
  ReadSink sink(out);
  if (out.size() <= kBulkPiece) {
    return ReadWhole(*stub_, id_, pointer, out.size(), sink);
  }
  return ReadBulk(channel_, *stub_, id_, pieces_only_, pointer, out.size(),
                  sink);
}

absl::Status Session::ReadInto(absl::string_view memory, uint64_t offset,
                               absl::Span<char> out) const {
  return ReadInto(HandlePointer(memory, offset), out);
}

absl::Status Session::Write(absl::string_view memory, uint64_t offset,
                            absl::string_view data) const {
  return Write(HandlePointer(memory, offset), data);
}

// More than kBulkPiece is written on one WriteStream; to a daemon without
// it, in pieces of that size: the last piece first (so a write past the end of owned memory writes nothing), then the
// others, several in flight at once, each sent from `data` itself (no copy
// into a message); a failure stops it (pieces written stay) and is
// returned, naming the piece.
absl::Status Session::Write(const v1::PointerValue& pointer,
                            absl::string_view data) const {
  if (data.size() <= kBulkPiece) return WritePiece(*stub_, id_, pointer, data);
  if (!pieces_only_.load(std::memory_order_relaxed)) {
    absl::Status written = WriteOnStream(*channel_, id_, pointer, data);
    if (!StreamUnimplemented(written)) return written;
    pieces_only_.store(true, std::memory_order_relaxed);
  }
  // A daemon without WriteStream.
  // The last piece first: a write past the end of owned memory then fails
  // before any byte is written, as one Write would.
  const uint64_t pieces = (data.size() + kBulkPiece - 1) / kBulkPiece;
  const uint64_t last = (pieces - 1) * kBulkPiece;
  absl::Status written =
      WritePiece(*stub_, id_, Advanced(pointer, last), data.substr(last));
  if (!written.ok()) return NamePiece(written, last, data.size());
  grpc::GenericStub stub(channel_);
  const std::string method = absl::StrCat("/", v1::Ffi::service_full_name(),
                                          "/Write");
  BorrowedBytes borrowed;
  PieceRunner<grpc::ByteBuffer> runner(
      [&](grpc::ClientContext* context, uint64_t piece,
          grpc::CompletionQueue* queue) {
        v1::WriteRequest head;
        head.set_session(id_);
        *head.mutable_pointer() = Advanced(pointer, piece * kBulkPiece);
        const absl::string_view bytes =
            data.substr(piece * kBulkPiece, kBulkPiece);
        grpc::Slice slices[2] = {
            grpc::Slice(WithDataField(head, v1::WriteRequest::kDataFieldNumber,
                                      bytes.size())),
            borrowed.Borrow(bytes)};
        grpc::ByteBuffer buffer(slices, 2);
        std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader =
            stub.PrepareUnaryCall(context, method, buffer, queue);
        reader->StartCall();
        return reader;
      },
      [](uint64_t, grpc::ByteBuffer&) {});
  absl::Status status = runner.Run(0, pieces - 1, data.size());
  // gRPC may hold a piece's bytes until its transport is done with them.
  borrowed.WaitUntilReturned();
  return status;
}


absl::Status Session::Free(absl::string_view memory) const {
  v1::FreeRequest request;
  request.set_session(id_);
  request.set_memory(std::string(memory));
  v1::FreeResponse response;
  grpc::ClientContext context;
  return StatusFromGrpc(stub_->Free(&context, request, &response));
}

absl::StatusOr<Memory> Session::AllocateValue(
    const v1::TypeDescriptor& type, const TypedAllocation& options) const {
  v1::AllocateRequest request;
  request.set_session(id_);
  *request.mutable_type() = type;
  request.set_size(options.count);
  if (options.initial_value.has_value()) {
    *request.mutable_initial_value() = *options.initial_value;
  }
  request.set_flexible_length(options.flexible_length);
  v1::AllocateResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->Allocate(&context, request, &response));
  if (!status.ok()) return status;
  return Memory{response.memory(), response.size(), response.address()};
}

absl::StatusOr<v1::Value> Session::ReadValue(const v1::PointerValue& pointer,
                                             const v1::TypeDescriptor& type,
                                             uint64_t flexible_length) const {
  v1::ReadRequest request;
  request.set_session(id_);
  *request.mutable_pointer() = pointer;
  *request.mutable_type() = type;
  request.set_flexible_length(flexible_length);
  v1::ReadResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->Read(&context, request, &response));
  if (!status.ok()) return status;
  return std::move(*response.mutable_value());
}

absl::Status Session::WriteValue(const v1::PointerValue& pointer,
                                 const v1::TypeDescriptor& type,
                                 const v1::Value& value,
                                 uint64_t flexible_length) const {
  v1::WriteRequest request;
  request.set_session(id_);
  *request.mutable_pointer() = pointer;
  *request.mutable_type() = type;
  *request.mutable_value() = value;
  request.set_flexible_length(flexible_length);
  v1::WriteResponse response;
  grpc::ClientContext context;
  return StatusFromGrpc(stub_->Write(&context, request, &response));
}

absl::StatusOr<Memory> Session::Adopt(const v1::PointerValue& pointer,
                                      absl::string_view destructor,
                                      const Library* library,
                                      uint64_t size) const {
  v1::AdoptRequest request;
  request.set_session(id_);
  *request.mutable_pointer() = pointer;
  request.set_destructor(std::string(destructor));
  if (library != nullptr) request.set_library(library->handle);
  request.set_size(size);
  v1::AdoptResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub_->Adopt(&context, request, &response));
  if (!status.ok()) return status;
  return Memory{response.memory(), size, response.address()};
}

namespace {

absl::StatusOr<Variable> ResolveVariableRpc(
    v1::Ffi::Stub& stub, const v1::ResolveVariableRequest& request) {
  v1::ResolveVariableResponse response;
  grpc::ClientContext context;
  absl::Status status =
      StatusFromGrpc(stub.ResolveVariable(&context, request, &response));
  if (!status.ok()) return status;
  return Variable{response.memory(), response.symbol(), response.type(),
                  response.address()};
}

}  // namespace

absl::StatusOr<Variable> Session::ResolveVariable(
    const Library& library, absl::string_view symbol_or_declaration) const {
  v1::ResolveVariableRequest request;
  request.set_session(id_);
  request.set_library(library.handle);
  // A C identifier has neither spaces nor punctuation; a declaration has.
  if (symbol_or_declaration.find_first_of(" \t\n;*[") ==
      absl::string_view::npos) {
    request.set_symbol(std::string(symbol_or_declaration));
  } else {
    request.set_declaration(std::string(symbol_or_declaration));
  }
  return ResolveVariableRpc(*stub_, request);
}

absl::StatusOr<Variable> Session::ResolveVariable(
    const Library& library, absl::string_view symbol,
    const v1::TypeDescriptor& type) const {
  v1::ResolveVariableRequest request;
  request.set_session(id_);
  request.set_library(library.handle);
  request.set_symbol(std::string(symbol));
  *request.mutable_type() = type;
  return ResolveVariableRpc(*stub_, request);
}

}  // namespace ffid::client
