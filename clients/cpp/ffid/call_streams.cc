#include "clients/cpp/ffid/call_streams.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "clients/cpp/ffid/client.h"

namespace ffid::client {
namespace {

// The first wait after a refused stream, and the longest.
constexpr absl::Duration kFirstBackoff = absl::Seconds(1);
constexpr absl::Duration kLongestBackoff = absl::Seconds(64);

}  // namespace

struct CallStreams::Stream {
  grpc::ClientContext context;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::CallStreamRequest, v1::CallStreamResponse>>
      rpc;
  // Whether the daemon has answered a call on it (then it was not refused).
  bool answered = false;
};

CallStreams::CallStreams(std::shared_ptr<v1::Ffi::Stub> stub)
    : stub_(std::move(stub)) {}

CallStreams::~CallStreams() { Close(); }

void CallStreams::Close() {
  std::vector<std::unique_ptr<Stream>> idle;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    idle.swap(idle_);
    open_ -= static_cast<int>(idle.size());
  }
  for (std::unique_ptr<Stream>& stream : idle) {
    // No call is in flight on an idle stream, so ending it at once costs
    // the daemon nothing (a cancelled stream kills a worker only while a
    // call of its own runs), and waits for nobody.
    stream->context.TryCancel();
    (void)stream->rpc->Finish();
  }
}

std::unique_ptr<CallStreams::Stream> CallStreams::Take() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return nullptr;
    if (!idle_.empty()) {
      std::unique_ptr<Stream> stream = std::move(idle_.back());
      idle_.pop_back();
      return stream;
    }
    if (unsupported_ || open_ >= kStreamsPerSession ||
        absl::Now() < refused_until_) {
      return nullptr;
    }
    ++open_;
  }
  auto stream = std::make_unique<Stream>();
  stream->rpc = stub_->CallStream(&stream->context);
  return stream;
}

void CallStreams::Return(std::unique_ptr<Stream> stream) {
  {
    absl::MutexLock lock(&mu_);
    backoff_ = absl::ZeroDuration();
    if (!closed_) {
      idle_.push_back(std::move(stream));
      return;
    }
    --open_;
  }
  // Closed while the call ran.
  stream->context.TryCancel();
  (void)stream->rpc->Finish();
}

grpc::Status CallStreams::End(std::unique_ptr<Stream> stream, bool* refused) {
  // The stream has ended (a failed Write or Read says so): Finish gives
  // the daemon's status at once. Cancelling would replace it.
  grpc::Status status = stream->rpc->Finish();
  // A refusal comes before anything is read: an older daemon's
  // UNIMPLEMENTED, or ffid's limit of open streams (RESOURCE_EXHAUSTED
  // with reason RESOURCE_LIMIT; gRPC's own RESOURCE_EXHAUSTED, a message
  // too big for instance, is the call's failure).
  *refused =
      !stream->answered &&
      (status.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
       (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
        ErrorReason(StatusFromGrpc(status)) == "RESOURCE_LIMIT"));
  absl::MutexLock lock(&mu_);
  --open_;
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && *refused) {
    unsupported_ = true;
  } else if (*refused) {
    backoff_ = std::min(std::max(2 * backoff_, kFirstBackoff), kLongestBackoff);
    refused_until_ = absl::Now() + backoff_;
  }
  return status;
}

std::optional<absl::StatusOr<v1::CallResponse>> CallStreams::Call(
    const v1::CallStreamRequest& request) {
  // A stream that ended while idle (the daemon restarted, the connection
  // dropped) usually fails the write, and the request has not left: try a
  // fresh stream once before giving the call to the unary RPC.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<Stream> stream = Take();
    if (stream == nullptr) return std::nullopt;
    bool refused = false;
    if (!stream->rpc->Write(request)) {
      (void)End(std::move(stream), &refused);
      if (refused) return std::nullopt;
      continue;
    }
    // A fresh message per call: a reused one would keep the capacity of
    // the biggest answer for as long as the stream stays open.
    v1::CallStreamResponse response;
    if (!stream->rpc->Read(&response)) {
      const grpc::Status ended = End(std::move(stream), &refused);
      // Refused before the daemon read anything: the call did not run.
      if (refused) return std::nullopt;
      absl::Status status = StatusFromGrpc(ended);
      if (status.ok()) {
        status = absl::UnavailableError(
            "the daemon ended the CallStream before answering the call");
      }
      return absl::StatusOr<v1::CallResponse>(std::move(status));
    }
    stream->answered = true;
    Return(std::move(stream));
    absl::Status error =
        StatusFromErrorStatus(response.error_status(), "the CallStream");
    if (!error.ok()) return absl::StatusOr<v1::CallResponse>(std::move(error));
    return absl::StatusOr<v1::CallResponse>(
        std::move(*response.mutable_call()));
  }
  return std::nullopt;
}

}  // namespace ffid::client
