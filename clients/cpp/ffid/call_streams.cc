#include "clients/cpp/ffid/call_streams.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"
#include "google/rpc/status.pb.h"

namespace ffid::client {

struct CallStreams::Stream {
  grpc::ClientContext context;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::CallStreamRequest, v1::CallStreamResponse>>
      rpc;
  v1::CallStreamResponse response;
};

CallStreams::CallStreams(std::shared_ptr<v1::Ffi::Stub> stub)
    : stub_(std::move(stub)) {}

CallStreams::~CallStreams() {
  std::vector<std::unique_ptr<Stream>> idle;
  {
    absl::MutexLock lock(&mu_);
    idle.swap(idle_);
  }
  for (std::unique_ptr<Stream>& stream : idle) {
    // No call is in flight on an idle stream, so ending it at once costs
    // the daemon nothing (a cancelled stream kills a worker only while a
    // call of its own runs).
    stream->context.TryCancel();
    (void)stream->rpc->Finish();
  }
}

std::unique_ptr<CallStreams::Stream> CallStreams::Take() {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      std::unique_ptr<Stream> stream = std::move(idle_.back());
      idle_.pop_back();
      return stream;
    }
    if (unsupported_ || open_ >= kMaxCallStreams) return nullptr;
    ++open_;
  }
  auto stream = std::make_unique<Stream>();
  stream->rpc = stub_->CallStream(&stream->context);
  return stream;
}

void CallStreams::Return(std::unique_ptr<Stream> stream) {
  absl::MutexLock lock(&mu_);
  idle_.push_back(std::move(stream));
}

grpc::Status CallStreams::End(std::unique_ptr<Stream> stream) {
  // The stream has ended (a failed Write or Read says so): Finish gives
  // the daemon's status at once. Cancelling would replace it.
  grpc::Status status = stream->rpc->Finish();
  absl::MutexLock lock(&mu_);
  --open_;
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    unsupported_ = true;
  }
  return status;
}

std::optional<absl::StatusOr<v1::CallResponse>> CallStreams::Call(
    const v1::CallStreamRequest& request) {
  // A stream that ended while idle (the daemon restarted, the connection
  // dropped) fails the write, and the request has not left: try a fresh
  // stream once before giving the call to the unary RPC.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<Stream> stream = Take();
    if (stream == nullptr) return std::nullopt;
    if (!stream->rpc->Write(request)) {
      (void)End(std::move(stream));
      continue;
    }
    if (!stream->rpc->Read(&stream->response)) {
      const grpc::Status ended = End(std::move(stream));
      // Refused before reading anything (an older daemon, or its limit of
      // open streams): the call did not run.
      if (ended.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
          ended.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        return std::nullopt;
      }
      absl::Status status = StatusFromGrpc(ended);
      if (status.ok()) {
        status = absl::UnavailableError(
            "the daemon ended the CallStream before answering the call");
      }
      return absl::StatusOr<v1::CallResponse>(std::move(status));
    }
    v1::CallStreamResponse& response = stream->response;
    absl::StatusOr<v1::CallResponse> result;
    if (response.error_status().empty()) {
      result = std::move(*response.mutable_call());
    } else {
      google::rpc::Status error;
      if (error.ParseFromString(response.error_status()) && error.code() != 0) {
        result = StatusFromRpcStatus(error);
      } else {
        result = absl::InternalError(
            "the daemon sent an unreadable error status on the CallStream");
      }
    }
    response.Clear();
    Return(std::move(stream));
    return result;
  }
  return std::nullopt;
}

}  // namespace ffid::client
