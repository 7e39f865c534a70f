// CallStreams against small in-process gRPC servers that stand for daemons
// the real one cannot play: an older daemon without CallStream, one that
// refuses streams, one whose stream breaks in the middle of a call. The
// real daemon's side is tested in tests/call_stream_test.cc.
#include "clients/cpp/ffid/call_streams.h"

#include <atomic>
#include <memory>
#include <string>

#include "clients/cpp/ffid/client.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace ffid::client {
namespace {

using ::testing::HasSubstr;

using ServerStream =
    grpc::ServerReaderWriter<v1::CallStreamResponse, v1::CallStreamRequest>;

// What the test server's CallStream does.
enum class Behaviour {
  kAnswer,        // answers each call: result = the number of arguments
  kRefuse,        // ffid's refusal: RESOURCE_EXHAUSTED, RESOURCE_LIMIT
  kBreakMidCall,  // reads a call, then ends the stream with UNAVAILABLE
  kExhaustedMidCall,  // reads a call, then RESOURCE_EXHAUSTED (no reason)
};

// ffid's refusal of a stream: RESOURCE_EXHAUSTED with ErrorInfo reason
// RESOURCE_LIMIT in the status details.
grpc::Status Refusal() {
  google::rpc::ErrorInfo info;
  info.set_reason("RESOURCE_LIMIT");
  info.set_domain("ffid.dev");
  google::rpc::Status details;
  details.set_code(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  details.set_message("too many streams");
  details.add_details()->PackFrom(info);
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many streams",
                      details.SerializeAsString());
}

class TestService final : public v1::Ffi::Service {
 public:
  explicit TestService(Behaviour behaviour) : behaviour_(behaviour) {}

  grpc::Status CallStream(grpc::ServerContext*, ServerStream* stream) override {
    ++opened_;
    if (behaviour_ == Behaviour::kRefuse) return Refusal();
    v1::CallStreamRequest request;
    while (stream->Read(&request)) {
      if (behaviour_ == Behaviour::kBreakMidCall) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "going away");
      }
      if (behaviour_ == Behaviour::kExhaustedMidCall) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "message too big");
      }
      v1::CallStreamResponse response;
      if (request.call().function() == "fail") {
        google::rpc::Status error;
        error.set_code(static_cast<int>(grpc::StatusCode::NOT_FOUND));
        error.set_message("no such function");
        response.set_error_status(error.SerializeAsString());
      } else {
        response.mutable_call()->mutable_result()->set_int_value(
            request.call().arguments_size());
      }
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  int opened() const { return opened_.load(); }

 private:
  const Behaviour behaviour_;
  std::atomic<int> opened_{0};
};

// An older daemon: its Ffi service has no CallStream (the generated base
// answers UNIMPLEMENTED).
class OldService final : public v1::Ffi::Service {};

class CallStreamsTest : public ::testing::Test {
 protected:
  void Serve(grpc::Service* service) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Ffi::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                            grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    streams_.reset();
    if (server_ != nullptr) server_->Shutdown();
  }

  static v1::CallStreamRequest Request(const std::string& function,
                                       int arguments) {
    v1::CallStreamRequest request;
    request.mutable_call()->set_function(function);
    for (int i = 0; i < arguments; ++i) {
      request.mutable_call()->add_arguments()->set_int_value(i);
    }
    return request;
  }

  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<v1::Ffi::Stub> stub_;
  std::unique_ptr<CallStreams> streams_;
};

TEST_F(CallStreamsTest, CallsReuseOneStreamAndFailuresKeepIt) {
  TestService service(Behaviour::kAnswer);
  Serve(&service);
  streams_ = std::make_unique<CallStreams>(stub_);
  for (int i = 0; i < 10; ++i) {
    std::optional<absl::StatusOr<v1::CallResponse>> answer =
        streams_->Call(Request("f", i));
    ASSERT_TRUE(answer.has_value());
    ASSERT_TRUE(answer->ok()) << answer->status();
    EXPECT_EQ((*answer)->result().int_value(), i);
  }
  std::optional<absl::StatusOr<v1::CallResponse>> failed =
      streams_->Call(Request("fail", 0));
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(failed->status().message(), "no such function");
  std::optional<absl::StatusOr<v1::CallResponse>> after =
      streams_->Call(Request("f", 3));
  ASSERT_TRUE(after.has_value() && after->ok());
  EXPECT_EQ((*after)->result().int_value(), 3);
  EXPECT_EQ(service.opened(), 1);
}

TEST_F(CallStreamsTest, AnOlderDaemonGetsUnaryCallsForGood) {
  OldService service;
  Serve(&service);
  streams_ = std::make_unique<CallStreams>(stub_);
  EXPECT_FALSE(streams_->Call(Request("f", 1)).has_value());
  EXPECT_FALSE(streams_->Call(Request("f", 1)).has_value());
}

TEST_F(CallStreamsTest, ARefusedStreamLeavesCallsToTheUnaryRpcForAWhile) {
  TestService service(Behaviour::kRefuse);
  Serve(&service);
  streams_ = std::make_unique<CallStreams>(stub_);
  EXPECT_FALSE(streams_->Call(Request("f", 1)).has_value());
  // No new stream is tried at once: a full daemon would refuse it again.
  EXPECT_FALSE(streams_->Call(Request("f", 1)).has_value());
  EXPECT_FALSE(streams_->Call(Request("f", 1)).has_value());
  EXPECT_EQ(service.opened(), 1);
}

TEST_F(CallStreamsTest, ResourceExhaustedAfterTheCallWasReadIsTheCallsFailure) {
  // Not ffid's refusal (no RESOURCE_LIMIT reason), and the daemon had the
  // call: running it again through the unary RPC could run it twice.
  TestService service(Behaviour::kExhaustedMidCall);
  Serve(&service);
  streams_ = std::make_unique<CallStreams>(stub_);
  std::optional<absl::StatusOr<v1::CallResponse>> answer =
      streams_->Call(Request("f", 1));
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(CallStreamsTest, ClosedStreamsTakeNoCalls) {
  TestService service(Behaviour::kAnswer);
  Serve(&service);
  streams_ = std::make_unique<CallStreams>(stub_);
  ASSERT_TRUE(streams_->Call(Request("f", 2)).has_value());
  streams_->Close();
  EXPECT_FALSE(streams_->Call(Request("f", 2)).has_value());
}

TEST_F(CallStreamsTest, AStreamBrokenDuringACallFailsThatCall) {
  TestService service(Behaviour::kBreakMidCall);
  Serve(&service);
  streams_ = std::make_unique<CallStreams>(stub_);
  std::optional<absl::StatusOr<v1::CallResponse>> answer =
      streams_->Call(Request("f", 1));
  ASSERT_TRUE(answer.has_value()) << "a call that may have run was retried";
  EXPECT_EQ(answer->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(answer->status().message()), HasSubstr("going away"));
}

TEST_F(CallStreamsTest, NoDaemonLeavesTheCallToTheUnaryRpc) {
  stub_ = v1::Ffi::NewStub(grpc::CreateChannel(
      "unix:/nonexistent/ffid.sock", grpc::InsecureChannelCredentials()));
  streams_ = std::make_unique<CallStreams>(stub_);
  EXPECT_FALSE(streams_->Call(Request("f", 1)).has_value());
}

}  // namespace
}  // namespace ffid::client
