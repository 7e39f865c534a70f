// The CallStream RPC against a real daemon and worker: calls answered one
// by one on a stream kept open, a failed call that leaves the stream
// usable, the per-call timeout, the limit of open streams, and the C++
// client's Session::Call, which uses these streams, from many threads.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeInt;
using ::testing::HasSubstr;

using RawStream =
    grpc::ClientReaderWriter<v1::CallStreamRequest, v1::CallStreamResponse>;

class CallStreamTest : public FfidTest {
 protected:
  void SetUp() override {
    FfidTest::SetUp();
    stub_ = v1::Ffi::NewStub(grpc::CreateChannel(
        daemon().address(), grpc::InsecureChannelCredentials()));
  }

  // A request to call `declaration` (resolved in the fixture) in the test's
  // session.
  v1::CallStreamRequest Request(const std::string& declaration,
                                std::vector<v1::Value> arguments = {}) {
    absl::StatusOr<client::Function> function = Resolve(declaration);
    EXPECT_TRUE(function.ok()) << function.status();
    v1::CallStreamRequest request;
    request.mutable_call()->set_session(session_->id());
    if (function.ok()) request.mutable_call()->set_function(function->handle);
    for (v1::Value& argument : arguments) {
      *request.mutable_call()->add_arguments() = std::move(argument);
    }
    return request;
  }

  // The status an answer carries (OK when it has none).
  static absl::Status ErrorOf(const v1::CallStreamResponse& response) {
    if (response.error_status().empty()) return absl::OkStatus();
    google::rpc::Status status;
    if (!status.ParseFromString(response.error_status())) {
      return absl::DataLossError("unreadable error_status");
    }
    return client::StatusFromRpcStatus(status);
  }

  std::unique_ptr<v1::Ffi::Stub> stub_;
};

TEST_F(CallStreamTest, CallsAreAnsweredInTurnAndAFailureLeavesTheStreamOpen) {
  grpc::ClientContext context;
  std::unique_ptr<RawStream> stream = stub_->CallStream(&context);
  v1::CallStreamResponse response;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(stream->Write(
        Request("int fx_add(int, int)", {MakeInt(i), MakeInt(100)})));
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_THAT(ErrorOf(response), IsOk());
    EXPECT_THAT(response.call().result(), IsInteger(i + 100));
  }

  // A function handle that does not exist, then one argument too few: each
  // fails its own answer with the Call RPC's reason.
  v1::CallStreamRequest unknown = Request("int fx_add(int, int)");
  unknown.mutable_call()->set_function("no-such-function");
  ASSERT_TRUE(stream->Write(unknown));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(ErrorOf(response), HasReason("HANDLE_INVALID"));
  EXPECT_FALSE(response.has_call());
  ASSERT_TRUE(stream->Write(Request("int fx_add(int, int)", {MakeInt(1)})));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(ErrorOf(response), HasCode(absl::StatusCode::kInvalidArgument));

  ASSERT_TRUE(stream->Write(
      Request("int fx_add(int, int)", {MakeInt(2), MakeInt(3)})));
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_THAT(ErrorOf(response), IsOk());
  EXPECT_THAT(response.call().result(), IsInteger(5));

  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CallStreamTest, TheCallsTimeoutEndsItAsACallRpcsDeadlineWould) {
  // Resolved while the worker lives (the deadline kills it).
  v1::CallStreamRequest negative = Request("int fx_add(int, int)",
                                           {MakeInt(1), MakeInt(2)});
  negative.mutable_timeout()->set_seconds(-1);
  grpc::ClientContext context;
  std::unique_ptr<RawStream> stream = stub_->CallStream(&context);
  v1::CallStreamRequest slow =
      Request("void fx_sleep_ms(int)", {MakeInt(10000)});
  slow.mutable_timeout()->set_nanos(200 * 1000 * 1000);
  v1::CallStreamResponse response;
  ASSERT_TRUE(stream->Write(slow));
  ASSERT_TRUE(stream->Read(&response));
  const absl::Status status = ErrorOf(response);
  EXPECT_THAT(status, HasCode(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(status, HasReason("DEADLINE_EXCEEDED"));

  ASSERT_TRUE(stream->Write(negative));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(ErrorOf(response), HasReason("INVALID_REQUEST"));
  EXPECT_THAT(std::string(ErrorOf(response).message()),
              HasSubstr("'timeout' must be a duration of zero or more"));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CallStreamTest, CallsOfOneStreamMayNameDifferentSessions) {
  std::unique_ptr<client::Session> other = NewSession();
  ASSERT_NE(other, nullptr);
  absl::StatusOr<client::Library> library = other->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> add =
      other->ResolveFunction(*library, "int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();

  grpc::ClientContext context;
  std::unique_ptr<RawStream> stream = stub_->CallStream(&context);
  v1::CallStreamResponse response;
  ASSERT_TRUE(stream->Write(
      Request("int fx_add(int, int)", {MakeInt(1), MakeInt(1)})));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(response.call().result(), IsInteger(2));
  v1::CallStreamRequest there;
  there.mutable_call()->set_session(other->id());
  there.mutable_call()->set_function(add->handle);
  *there.mutable_call()->add_arguments() = MakeInt(20);
  *there.mutable_call()->add_arguments() = MakeInt(22);
  ASSERT_TRUE(stream->Write(there));
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_THAT(ErrorOf(response), IsOk());
  EXPECT_THAT(response.call().result(), IsInteger(42));
  there.mutable_call()->set_session("no-such-session");
  ASSERT_TRUE(stream->Write(there));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(ErrorOf(response), HasReason("SESSION_NOT_FOUND"));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CallStreamTest, StreamsPastTheLimitAreRefusedAndCallsStillWork) {
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<RawStream>> streams;
  v1::CallStreamResponse response;
  // Streams are opened until one is refused; each is known to be open on
  // the daemon once it has answered a call.
  absl::Status refusal;
  for (int i = 0; i < 1024 && refusal.ok(); ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub_->CallStream(contexts.back().get()));
    (void)streams.back()->Write(
        Request("int fx_add(int, int)", {MakeInt(i), MakeInt(0)}));
    if (streams.back()->Read(&response)) {
      ASSERT_THAT(response.call().result(), IsInteger(i));
      continue;
    }
    refusal = client::StatusFromGrpc(streams.back()->Finish());
    streams.pop_back();
  }
  ASSERT_FALSE(refusal.ok()) << "1024 streams open and none refused";
  EXPECT_THAT(refusal, HasCode(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(refusal, HasReason("RESOURCE_LIMIT"));
  EXPECT_THAT(std::string(refusal.message()),
              HasSubstr(absl::StrCat("at most ", streams.size(),
                                     " CallStream streams")));
  EXPECT_THAT(std::string(refusal.message()), HasSubstr("use the Call RPC"));
  // The client's own streams are refused too: its calls take the unary RPC.
  EXPECT_THAT(CallOk("int fx_add(int, int)", {MakeInt(40), MakeInt(2)}),
              IsInteger(42));

  for (std::unique_ptr<RawStream>& stream : streams) stream->WritesDone();
  for (std::unique_ptr<RawStream>& stream : streams) {
    EXPECT_TRUE(stream->Finish().ok());
  }
  // Closed streams are counted out: a new one is served.
  grpc::ClientContext context;
  std::unique_ptr<RawStream> stream = stub_->CallStream(&context);
  ASSERT_TRUE(stream->Write(
      Request("int fx_add(int, int)", {MakeInt(3), MakeInt(4)})));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(response.call().result(), IsInteger(7));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(CallStreamTest, ManyThreadsCallingOneSessionGetTheirOwnAnswers) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  // More threads than a session keeps streams: the others take the unary
  // RPC, and every answer must still reach its own caller.
  constexpr int kThreads = 2 * client::kStreamsPerSession;
  constexpr int kCalls = 50;
  std::vector<int> wrong(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        absl::StatusOr<v1::CallResponse> response =
            session_->Call(*add, {MakeInt(t * 1000), MakeInt(i)});
        if (!response.ok() ||
            IntegerOf(response->result()) != Integer{t * 1000 + i}) {
          ++wrong[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(wrong[t], 0) << "thread " << t;
  }
}

TEST_F(CallStreamTest, ACrashOnTheStreamIsReportedAndTheNextCallIsAnswered) {
  // Resolved while the worker lives.
  v1::CallStreamRequest again =
      Request("int fx_add(int, int)", {MakeInt(1), MakeInt(1)});
  grpc::ClientContext context;
  std::unique_ptr<RawStream> stream = stub_->CallStream(&context);
  v1::CallStreamResponse response;
  ASSERT_TRUE(stream->Write(Request("void fx_crash_null(void)")));
  ASSERT_TRUE(stream->Read(&response));
  const absl::Status crashed = ErrorOf(response);
  EXPECT_THAT(crashed, HasReason("WORKER_CRASHED"));
  EXPECT_THAT(std::string(crashed.message()), HasSubstr("SIGSEGV"));
  EXPECT_TRUE(client::CrashReportOf(crashed).has_value());
  // The session is dead (no restart policy): the stream says so, and stays
  // open for calls elsewhere.
  ASSERT_TRUE(stream->Write(again));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(ErrorOf(response), HasReason("WORKER_CRASHED"));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace ffid::testing
