// The Dispatcher in this process over a real socketpair, with the test
// playing the daemon: callbacks called from library threads at once, calls
// nested inside callbacks on the waiting thread, timeouts, a daemon that
// goes away while native threads wait. No gRPC, so this runs under tsan.
#include "server/worker/dispatcher.h"

#include <sys/socket.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "gtest/gtest.h"
#include "server/worker/channel.h"
#include "server/worker/executor.h"
#include "server/worker/protocol.pb.h"

#ifndef FFID_CALLBACKS_FIXTURE_PATH
#error "FFID_CALLBACKS_FIXTURE_PATH must name libffid_callbacks_fixture.so"
#endif

namespace ffid::worker {
namespace {

constexpr char kTag[] = "0a1b2c3d";

v1::Value Int(int64_t value) {
  v1::Value result;
  result.set_int_value(value);
  return result;
}

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    daemon_ = std::make_unique<FrameChannel>(fds[0]);
    worker_channel_ = std::make_unique<FrameChannel>(fds[1]);
    executor_ = std::make_unique<Executor>(kTag);
    dispatcher_ = std::make_unique<Dispatcher>(*worker_channel_, *executor_);
    runner_ = std::thread([this] { run_status_ = dispatcher_->Run(); });

    WorkerRequest load;
    load.mutable_load_library()->set_name(FFID_CALLBACKS_FIXTURE_PATH);
    WorkerResponse loaded = Roundtrip(load);
    ASSERT_EQ(loaded.status().code(), 0) << loaded.status().message();
    library_ = loaded.load_library().library();
  }

  void TearDown() override {
    if (daemon_ != nullptr) daemon_->Shutdown();
    if (runner_.joinable()) runner_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_;
    dispatcher_.reset();
    executor_.reset();
  }

  // Sends `request` with a fresh id; returns the id.
  uint64_t Send(WorkerRequest request) {
    request.set_id(next_id_++);
    EXPECT_TRUE(daemon_->Send(request).ok());
    return request.id();
  }

  // Reads frames until the response to `id`, handing every invocation to
  // `on_invocation` and every other response to `on_response`.
  WorkerResponse Await(
      uint64_t id,
      const std::function<void(const v1::CallbackInvocation&)>& on_invocation,
      const std::function<void(const WorkerResponse&)>& on_response = {}) {
    for (;;) {
      WorkerResponse frame;
      absl::Status received = daemon_->Receive(&frame);
      if (!received.ok()) {
        ADD_FAILURE() << received;
        return frame;
      }
      if (frame.has_invocation()) {
        on_invocation(frame.invocation().invocation());
      } else if (frame.id() == id) {
        return frame;
      } else if (on_response) {
        on_response(frame);
      } else {
        ADD_FAILURE() << "unexpected response " << frame.ShortDebugString();
      }
    }
  }

  WorkerResponse Roundtrip(WorkerRequest request) {
    return Await(Send(std::move(request)), [](const v1::CallbackInvocation& i) {
      ADD_FAILURE() << "unexpected invocation " << i.ShortDebugString();
    });
  }

  std::string Resolve(const std::string& declaration) {
    WorkerRequest request;
    request.mutable_resolve_function()->set_library(library_);
    request.mutable_resolve_function()->set_declaration(declaration);
    WorkerResponse response = Roundtrip(request);
    EXPECT_EQ(response.status().code(), 0) << response.status().message();
    return response.resolve_function().function();
  }

  std::string Register(const std::string& declaration,
                       v1::RegisterCallbackRequest options = {}) {
    WorkerRequest request;
    *request.mutable_register_callback() = std::move(options);
    request.mutable_register_callback()->set_declaration(declaration);
    WorkerResponse response = Roundtrip(request);
    EXPECT_EQ(response.status().code(), 0) << response.status().message();
    return response.register_callback().callback();
  }

  void Reply(uint64_t invocation, const v1::Value& result) {
    WorkerRequest reply;
    reply.mutable_callback_reply()->set_invocation(invocation);
    *reply.mutable_callback_reply()->mutable_result() = result;
    ASSERT_TRUE(daemon_->Send(reply).ok());
  }

  WorkerRequest CallRequest(const std::string& function,
                            std::vector<v1::Value> arguments) {
    WorkerRequest request;
    request.mutable_call()->set_function(function);
    for (v1::Value& argument : arguments) {
      *request.mutable_call()->add_arguments() = std::move(argument);
    }
    return request;
  }

  static v1::Value Handle(const std::string& callback) {
    v1::Value value;
    value.set_callback_handle(callback);
    return value;
  }

  std::unique_ptr<FrameChannel> daemon_;
  std::unique_ptr<FrameChannel> worker_channel_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::thread runner_;
  absl::Status run_status_;
  uint64_t next_id_ = 1;
  std::string library_;
};

TEST_F(DispatcherTest, LibraryThreadsInvokeConcurrently) {
  const std::string function =
      Resolve("long fxc_threads_call(int (*f)(int, int), int, int)");
  const std::string callback = Register("int work(int thread, int i)");
  std::set<int64_t> threads;
  int invocations = 0;
  const uint64_t id = Send(
      CallRequest(function, {Handle(callback), Int(4), Int(250)}));
  WorkerResponse response =
      Await(id, [&](const v1::CallbackInvocation& invocation) {
        ++invocations;
        threads.insert(invocation.native_thread_id());
        EXPECT_EQ(invocation.callback(), callback);
        Reply(invocation.invocation(),
              Int(invocation.arguments(0).int_value() * 1000 +
                  invocation.arguments(1).int_value()));
      });
  ASSERT_EQ(response.status().code(), 0) << response.status().message();
  EXPECT_EQ(response.call().result().int_value(),
            6 * 1000 * 250 + 4 * (249 * 250 / 2));
  EXPECT_EQ(invocations, 1000);
  EXPECT_EQ(threads.size(), 4u);
}

TEST_F(DispatcherTest, NestedCallsRunOnTheWaitingThread) {
  const std::string nest = Resolve("int fxc_nest(int (*f)(int), int depth)");
  const std::string callback = Register("int level(int depth)");
  // Nested request id -> the invocation it was made from.
  std::map<uint64_t, uint64_t> nested;
  std::set<int64_t> threads;
  const uint64_t id = Send(CallRequest(nest, {Handle(callback), Int(1)}));
  WorkerResponse response = Await(
      id,
      [&](const v1::CallbackInvocation& invocation) {
        threads.insert(invocation.native_thread_id());
        const int64_t depth = invocation.arguments(0).int_value();
        if (depth >= 3) {
          Reply(invocation.invocation(), Int(100));
          return;
        }
        WorkerRequest inner =
            CallRequest(nest, {Handle(callback), Int(depth + 1)});
        inner.set_invocation(invocation.invocation());
        nested[Send(std::move(inner))] = invocation.invocation();
      },
      [&](const WorkerResponse& inner) {
        ASSERT_EQ(inner.status().code(), 0) << inner.status().message();
        auto it = nested.find(inner.id());
        ASSERT_NE(it, nested.end());
        Reply(it->second, Int(inner.call().result().int_value() * 10));
      });
  ASSERT_EQ(response.status().code(), 0) << response.status().message();
  EXPECT_EQ(response.call().result().int_value(), 10111);
  EXPECT_EQ(threads.size(), 1u);
}

TEST_F(DispatcherTest, TimeoutGivesTheDefaultAndFailsTheCall) {
  const std::string remember =
      Resolve("int fxc_call_remember(int (*f)(int), int x)");
  v1::RegisterCallbackRequest options;
  *options.mutable_default_result() = Int(-3);
  options.mutable_timeout()->set_nanos(50 * 1000 * 1000);
  const std::string callback = Register("int ignored(int)", options);
  uint64_t invocation = 0;
  const uint64_t id = Send(CallRequest(remember, {Handle(callback), Int(1)}));
  WorkerResponse response = Await(id, [&](const v1::CallbackInvocation& i) {
    invocation = i.invocation();  // Never answered in time.
  });
  EXPECT_EQ(GetErrorReason(StatusFromProto(response.status())),
            v1::ERROR_REASON_CALLBACK_FAILED);
  EXPECT_NE(response.status().message().find("did not answer within"),
            std::string::npos)
      << response.status().message();
  // A late reply is dropped; a call from inside it is refused.
  Reply(invocation, Int(5));
  WorkerRequest late = CallRequest(remember, {Handle(callback), Int(1)});
  late.set_invocation(invocation);
  WorkerResponse refused = Roundtrip(late);
  EXPECT_EQ(refused.status().code(),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  WorkerResponse last = Roundtrip(
      CallRequest(Resolve("int fxc_last_result(void)"), {}));
  EXPECT_EQ(last.call().result().int_value(), -3);
}

TEST_F(DispatcherTest, ClientErrorIsTheCallsMessage) {
  const std::string remember =
      Resolve("int fxc_call_remember(int (*f)(int), int x)");
  const std::string callback = Register("int failing(int)");
  const uint64_t id = Send(CallRequest(remember, {Handle(callback), Int(1)}));
  WorkerResponse response = Await(id, [&](const v1::CallbackInvocation& i) {
    WorkerRequest reply;
    reply.mutable_callback_reply()->set_invocation(i.invocation());
    *reply.mutable_callback_reply()->mutable_status() = StatusToProto(
        absl::InvalidArgumentError("the client says no"));
    ASSERT_TRUE(daemon_->Send(reply).ok());
  });
  EXPECT_EQ(GetErrorReason(StatusFromProto(response.status())),
            v1::ERROR_REASON_CALLBACK_FAILED);
  EXPECT_NE(response.status().message().find("the client says no"),
            std::string::npos)
      << response.status().message();
}

TEST_F(DispatcherTest, RegistrationChecksItsOptions) {
  WorkerRequest request;
  v1::RegisterCallbackRequest& registration =
      *request.mutable_register_callback();
  registration.set_declaration("int f(int)");
  registration.mutable_default_result()->set_string_value("not an int");
  WorkerResponse response = Roundtrip(request);
  EXPECT_EQ(GetErrorReason(StatusFromProto(response.status())),
            v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_NE(response.status().message().find("default_result"),
            std::string::npos)
      << response.status().message();

  registration.clear_default_result();
  registration.mutable_timeout()->set_seconds(-1);
  response = Roundtrip(request);
  EXPECT_EQ(GetErrorReason(StatusFromProto(response.status())),
            v1::ERROR_REASON_INVALID_REQUEST);

  registration.clear_timeout();
  registration.set_declaration("int f(int, ...)");
  response = Roundtrip(request);
  EXPECT_EQ(GetErrorReason(StatusFromProto(response.status())),
            v1::ERROR_REASON_UNSUPPORTED);

  WorkerRequest release;
  release.mutable_release_callback()->set_callback("cb_0a1b2c3d_nope");
  response = Roundtrip(release);
  EXPECT_EQ(GetErrorReason(StatusFromProto(response.status())),
            v1::ERROR_REASON_HANDLE_INVALID);
}

TEST_F(DispatcherTest, ADaemonThatGoesAwayReleasesWaitingThreads) {
  const std::string function =
      Resolve("long fxc_threads_call(int (*f)(int, int), int, int)");
  const std::string callback = Register("int work(int thread, int i)");
  Send(CallRequest(function, {Handle(callback), Int(4), Int(1000)}));
  WorkerResponse frame;
  ASSERT_TRUE(daemon_->Receive(&frame).ok());
  ASSERT_TRUE(frame.has_invocation());
  // Nobody answers: closing the channel must end every wait, the native
  // call must finish and Run() must return (TearDown joins it).
  daemon_->Shutdown();
}

}  // namespace
}  // namespace ffid::worker
