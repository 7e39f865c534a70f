// Callbacks through the real daemon and worker: native code in the
// callbacks fixture (and libc's qsort) calls std::functions of the C++
// client, from the calling thread, from threads the library starts, and
// re-entrantly; every failure mode ends the native wait with the default
// result and a CALLBACK_FAILED call. Also: calls pipelined on the stream.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::CallbackContext;
using client::MakeDouble;
using client::MakeInt;
using client::MakePointer;
using client::MakeUint;
using ::testing::HasSubstr;

constexpr char kSortDeclaration[] =
    "int fxc_sort(void *base, size_t count, size_t size, "
    "int (*compare)(const void *, const void *))";

class CallbacksTest : public FfidTest {
 protected:
  void SetUp() override {
    FfidTest::SetUp();
    if (HasFatalFailure()) return;
    absl::StatusOr<client::Library> library =
        session_->LoadLibrary(CallbacksFixturePath());
    ASSERT_TRUE(library.ok()) << library.status();
    callbacks_ = *library;
  }

  client::Function ResolveIn(const client::Library& library,
                             const std::string& declaration) {
    absl::StatusOr<client::Function> function =
        session_->ResolveFunction(library, declaration);
    EXPECT_TRUE(function.ok()) << declaration << ": " << function.status();
    return function.ok() ? *function : client::Function();
  }

  client::Callback Register(const std::string& declaration,
                            client::CallbackFunction function,
                            const client::CallbackOptions& options = {}) {
    absl::StatusOr<client::Callback> callback =
        session_->RegisterCallback(declaration, std::move(function), options);
    EXPECT_TRUE(callback.ok()) << declaration << ": " << callback.status();
    return callback.ok() ? *callback : client::Callback();
  }

  // A comparator of ints that reads both through the callback context.
  client::Callback IntComparator(std::atomic<int>* calls) {
    return Register(
        "int compare(const void *a, const void *b)",
        [calls](CallbackContext& context) -> absl::StatusOr<v1::Value> {
          ++*calls;
          int values[2];
          for (int i = 0; i < 2; ++i) {
            absl::StatusOr<std::string> bytes =
                context.Read(context.arguments()[i].pointer_value(), 4);
            if (!bytes.ok()) return bytes.status();
            std::memcpy(&values[i], bytes->data(), 4);
          }
          return MakeInt(values[0] < values[1]   ? -1
                         : values[0] > values[1] ? 1
                                                 : 0);
        });
  }

  std::string IntBytes(const std::vector<int>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()),
                       values.size() * sizeof(int));
  }

  client::Library callbacks_;
};

TEST_F(CallbacksTest, SortsWithAComparatorThatReadsTheElements) {
  const std::vector<int> unsorted = {5, -3, 9, 0, 42, -17, 8, 1};
  absl::StatusOr<client::Memory> memory =
      session_->Allocate(unsorted.size() * 4, IntBytes(unsorted));
  ASSERT_TRUE(memory.ok()) << memory.status();
  std::atomic<int> calls{0};
  client::Callback compare = IntComparator(&calls);
  absl::StatusOr<v1::CallResponse> sorted = session_->Call(
      ResolveIn(callbacks_, kSortDeclaration),
      {MakePointer(memory->handle), MakeUint(unsorted.size()), MakeUint(4),
       compare.value()});
  ASSERT_TRUE(sorted.ok()) << sorted.status();
  EXPECT_THAT(sorted->result(), IsInteger(calls.load()));
  EXPECT_GT(calls.load(), 0);
  absl::StatusOr<std::string> bytes = session_->Read(memory->handle, 0, 0);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, IntBytes({-17, -3, 0, 1, 5, 8, 9, 42}));
}

TEST_F(CallbacksTest, LibcQsortCallsTheComparator) {
  const std::vector<int> unsorted = {3, 1, 2, 7, 5, 4, 6, 0};
  absl::StatusOr<client::Memory> memory =
      session_->Allocate(unsorted.size() * 4, IntBytes(unsorted));
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::StatusOr<client::Library> libc = session_->LoadLibrary("libc.so.6");
  ASSERT_TRUE(libc.ok()) << libc.status();
  std::atomic<int> calls{0};
  client::Callback compare = IntComparator(&calls);
  absl::StatusOr<v1::CallResponse> sorted = session_->Call(
      ResolveIn(*libc,
                "void qsort(void *base, size_t nmemb, size_t size, "
                "int (*compar)(const void *, const void *))"),
      {MakePointer(memory->handle), MakeUint(unsorted.size()), MakeUint(4),
       compare.value()});
  ASSERT_TRUE(sorted.ok()) << sorted.status();
  EXPECT_GT(calls.load(), 0);
  EXPECT_EQ(*session_->Read(memory->handle, 0, 0),
            IntBytes({0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST_F(CallbacksTest, ACallbackWritesThroughItsPointerArgument) {
  client::Callback fill = Register(
      "void fill(int *out, int value)",
      [](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        const int value =
            static_cast<int>(context.arguments()[1].int_value()) * 3;
        absl::Status written = context.Write(
            context.arguments()[0].pointer_value(),
            std::string(reinterpret_cast<const char*>(&value), sizeof(value)));
        if (!written.ok()) return written;
        return v1::Value();  // void
      });
  absl::StatusOr<v1::CallResponse> result = session_->Call(
      ResolveIn(callbacks_,
                "int fxc_fill(void (*fill)(int *out, int value), int value)"),
      {fill.value(), MakeInt(14)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->result(), IsInteger(42));
}

TEST_F(CallbacksTest, StructByValueAndFloats) {
  absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
      session_->ParseDeclarations(
          "struct fxc_vec { float x; float y; double weight; };"
          "double scale(struct fxc_vec v, float factor, double offset);"
          "double fxc_apply_vec(double (*f)(struct fxc_vec, float, double), "
          "float x, float y, double weight);");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->functions_size(), 2);
  std::atomic<int> calls{0};
  absl::StatusOr<client::Callback> scale = session_->RegisterCallback(
      parsed->functions(0).type(),
      [&calls](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        ++calls;
        const auto& v = context.arguments()[0].record_value().fields();
        return MakeDouble(v.at("x").double_value() *
                              context.arguments()[1].double_value() +
                          v.at("y").double_value() +
                          v.at("weight").double_value() +
                          context.arguments()[2].double_value());
      });
  ASSERT_TRUE(scale.ok()) << scale.status();
  absl::StatusOr<client::Function> apply = session_->ResolveFunction(
      callbacks_, "fxc_apply_vec", parsed->functions(1).type());
  ASSERT_TRUE(apply.ok()) << apply.status();
  absl::StatusOr<v1::CallResponse> result = session_->Call(
      *apply,
      {scale->value(), MakeDouble(1.5), MakeDouble(2.25), MakeDouble(0.125)});
  ASSERT_TRUE(result.ok()) << result.status();
  // 1.5 * 2 + 2.25 + 0.125 + 0.5, exact in binary floating point.
  EXPECT_EQ(result->result().double_value(), 5.875);
  EXPECT_EQ(calls.load(), 1);

  // The struct is now declared in the session: a declaration string that
  // names it registers the same callback.
  absl::StatusOr<client::Callback> by_name = session_->RegisterCallback(
      "double scale2(struct fxc_vec v, float factor, double offset)",
      [&calls](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        ++calls;
        return MakeDouble(
            context.arguments()[0].record_value().fields().at("weight")
                .double_value());
      });
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  result = session_->Call(*apply, {by_name->value(), MakeDouble(1),
                                   MakeDouble(2), MakeDouble(0.25)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result().double_value(), 0.25);
}

TEST_F(CallbacksTest, FourLibraryThreadsCallAThousandTimesEach) {
  absl::Mutex mu;
  std::set<int64_t> native_threads;
  std::atomic<int> calls{0};
  client::Callback callback = Register(
      "int work(int thread, int i)",
      [&](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        ++calls;
        {
          absl::MutexLock lock(&mu);
          native_threads.insert(context.invocation().native_thread_id);
        }
        return MakeInt(context.arguments()[0].int_value() * 1000 +
                       context.arguments()[1].int_value());
      });
  absl::StatusOr<v1::CallResponse> result = session_->Call(
      ResolveIn(callbacks_,
                "long fxc_threads_call(int (*f)(int, int), int threads, "
                "int per_thread)"),
      {callback.value(), MakeInt(4), MakeInt(1000)});
  ASSERT_TRUE(result.ok()) << result.status();
  // Sum over t < 4, i < 1000 of t * 1000 + i.
  EXPECT_THAT(result->result(), IsInteger(6 * 1000 * 1000 + 4 * 499500));
  EXPECT_EQ(calls.load(), 4000);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(native_threads.size(), 4u);
}

TEST_F(CallbacksTest, NestsThreeLevelsOnTheWaitingThread) {
  const client::Function nest =
      ResolveIn(callbacks_, "int fxc_nest(int (*f)(int), int depth)");
  absl::Mutex mu;
  std::vector<int64_t> threads;
  std::vector<int64_t> depths;
  auto callback = std::make_shared<client::Callback>();
  *callback = Register(
      "int level(int depth)",
      [&, callback](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        const int64_t depth = context.arguments()[0].int_value();
        {
          absl::MutexLock lock(&mu);
          threads.push_back(context.invocation().native_thread_id);
          depths.push_back(depth);
        }
        if (depth >= 3) return MakeInt(100);
        // Back into the library from inside the callback.
        absl::StatusOr<v1::CallResponse> inner =
            context.Call(nest, {callback->value(), MakeInt(depth + 1)});
        if (!inner.ok()) return inner.status();
        return MakeInt(inner->result().int_value() * 10);
      });
  absl::StatusOr<v1::CallResponse> result =
      session_->Call(nest, {callback->value(), MakeInt(1)});
  ASSERT_TRUE(result.ok()) << result.status();
  // level(3) = 100; nest -> 101; level(2) = 1010; nest -> 1011;
  // level(1) = 10110; nest -> 10111.
  EXPECT_THAT(result->result(), IsInteger(10111));
  absl::MutexLock lock(&mu);
  EXPECT_THAT(depths, ::testing::ElementsAre(1, 2, 3));
  ASSERT_EQ(threads.size(), 3u);
  // Every level ran on the one native thread that waited for the first.
  EXPECT_EQ(threads[0], threads[1]);
  EXPECT_EQ(threads[1], threads[2]);
}

TEST_F(CallbacksTest, StoredCallbackIsCalledInALaterCall) {
  client::Callback twice = Register(
      "int twice(int)", [](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        return MakeInt(context.arguments()[0].int_value() * 2);
      });
  const client::Function store =
      ResolveIn(callbacks_, "void fxc_store(int (*f)(int))");
  const client::Function call_stored =
      ResolveIn(callbacks_, "int fxc_call_stored(int x)");
  ASSERT_TRUE(session_->Call(store, {twice.value()}).ok());
  absl::StatusOr<v1::CallResponse> first =
      session_->Call(call_stored, {MakeInt(21)});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(first->result(), IsInteger(42));
  absl::StatusOr<v1::CallResponse> second =
      session_->Call(call_stored, {MakeInt(-4)});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(second->result(), IsInteger(-8));
}

TEST_F(CallbacksTest, CallingAReleasedCallbackIsReported) {
  client::Callback one = Register(
      "int one(int)",
      [](CallbackContext&) -> absl::StatusOr<v1::Value> { return MakeInt(1); });
  const client::Function store =
      ResolveIn(callbacks_, "void fxc_store(int (*f)(int))");
  const client::Function call_stored =
      ResolveIn(callbacks_, "int fxc_call_stored(int x)");
  ASSERT_TRUE(session_->Call(store, {one.value()}).ok());
  ASSERT_TRUE(session_->ReleaseCallback(one).ok());
  absl::StatusOr<v1::CallResponse> called =
      session_->Call(call_stored, {MakeInt(5)});
  EXPECT_THAT(called, HasReason("CALLBACK_FAILED"));
  EXPECT_THAT(MessageOf(called), HasSubstr("after the client released it"));
  // The native caller got the default (zero), and the worker lives on.
  absl::StatusOr<v1::CallResponse> last =
      session_->Call(ResolveIn(callbacks_, "int fxc_last_result(void)"), {});
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_THAT(last->result(), IsInteger(0));
  // Passing the released handle again is refused before native code runs.
  EXPECT_THAT(session_->Call(store, {one.value()}), HasReason("HANDLE_INVALID"));
  EXPECT_THAT(session_->ReleaseCallback(one), HasReason("HANDLE_INVALID"));
}

TEST_F(CallbacksTest, ACallbackOfTheWrongSignatureIsRefused) {
  client::Callback one = Register(
      "int one(int)",
      [](CallbackContext&) -> absl::StatusOr<v1::Value> { return MakeInt(1); });
  absl::StatusOr<v1::CallResponse> called =
      session_->Call(ResolveIn(callbacks_, kSortDeclaration),
                     {client::MakeNull(), MakeUint(0), MakeUint(4),
                      one.value()});
  EXPECT_THAT(called, HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(MessageOf(called), HasSubstr("has the signature 'int (int)'"));
}

TEST_F(CallbacksTest, AnErrorFromTheCallbackGivesTheDefaultResult) {
  client::CallbackOptions options;
  options.default_result = MakeInt(-7);
  client::Callback failing = Register(
      "int lookup(int key)",
      [](CallbackContext&) -> absl::StatusOr<v1::Value> {
        return absl::NotFoundError("no such key in the client's table");
      },
      options);
  absl::StatusOr<v1::CallResponse> called = session_->Call(
      ResolveIn(callbacks_, "int fxc_call_remember(int (*f)(int), int x)"),
      {failing.value(), MakeInt(3)});
  EXPECT_THAT(called, HasReason("CALLBACK_FAILED"));
  EXPECT_THAT(MessageOf(called),
              HasSubstr("no such key in the client's table"));
  absl::StatusOr<v1::CallResponse> last =
      session_->Call(ResolveIn(callbacks_, "int fxc_last_result(void)"), {});
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_THAT(last->result(), IsInteger(-7));
}

TEST_F(CallbacksTest, ACallbackPastItsTimeoutGivesTheDefaultResult) {
  client::CallbackOptions options;
  options.default_result = MakeInt(-9);
  options.timeout = absl::Milliseconds(200);
  auto answered_late = std::make_shared<absl::Notification>();
  auto release = std::make_shared<absl::Notification>();
  client::Callback slow = Register(
      "int slow(int)",
      [answered_late, release](CallbackContext&) -> absl::StatusOr<v1::Value> {
        // Answers only after the native caller gave up.
        release->WaitForNotification();
        answered_late->Notify();
        return MakeInt(1);
      },
      options);
  absl::StatusOr<v1::CallResponse> called = session_->Call(
      ResolveIn(callbacks_, "int fxc_call_remember(int (*f)(int), int x)"),
      {slow.value(), MakeInt(3)});
  release->Notify();
  EXPECT_THAT(called, HasReason("CALLBACK_FAILED"));
  EXPECT_THAT(MessageOf(called), HasSubstr("did not answer within"));
  answered_late->WaitForNotification();
  // The late answer is dropped; the session goes on.
  absl::StatusOr<v1::CallResponse> last =
      session_->Call(ResolveIn(callbacks_, "int fxc_last_result(void)"), {});
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_THAT(last->result(), IsInteger(-9));
}

TEST_F(CallbacksTest, TerminatePolicyEndsTheWorker) {
  client::CallbackOptions options;
  options.failure_policy = v1::CALLBACK_FAILURE_POLICY_TERMINATE_WORKER;
  client::Callback fatal = Register(
      "int fatal(int)",
      [](CallbackContext&) -> absl::StatusOr<v1::Value> {
        return absl::InternalError("the client cannot go on");
      },
      options);
  const client::Function last_result =
      ResolveIn(callbacks_, "int fxc_last_result(void)");
  absl::StatusOr<v1::CallResponse> called = session_->Call(
      ResolveIn(callbacks_, "int fxc_call_remember(int (*f)(int), int x)"),
      {fatal.value(), MakeInt(3)});
  EXPECT_THAT(called, HasReason("CALLBACK_FAILED"));
  EXPECT_THAT(MessageOf(called), HasSubstr("the client cannot go on"));
  EXPECT_THAT(MessageOf(called), HasSubstr("terminated"));
  EXPECT_THAT(session_->Call(last_result, {}), HasReason("WORKER_CRASHED"));
}

// Two raw Connect streams on one session: the invocation of a unary call
// goes to the older stream; closing it (the client "disconnects") ends the
// native wait while the younger stream keeps the session alive.
TEST_F(CallbacksTest, AClientThatDisconnectsGivesTheDefaultResult) {
  v1::Ffi::Stub& stub = client_->stub();
  v1::CreateSessionRequest create;
  v1::CreateSessionResponse created;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub.CreateSession(&context, create, &created).ok());
  }
  const std::string session = created.session().id();
  auto attach = [&](grpc::ClientContext* context) {
    auto stream = stub.Connect(context);
    v1::ConnectRequest request;
    request.mutable_attach()->set_session(session);
    v1::ConnectResponse response;
    EXPECT_TRUE(stream->Write(request));
    EXPECT_TRUE(stream->Read(&response));
    EXPECT_TRUE(response.has_attached());
    return stream;
  };
  grpc::ClientContext older_context;
  auto older = attach(&older_context);
  grpc::ClientContext younger_context;
  auto younger = attach(&younger_context);

  auto unary = [&](auto method, const auto& request, auto* response) {
    grpc::ClientContext context;
    return client::StatusFromGrpc((stub.*method)(&context, request, response));
  };
  v1::LoadLibraryRequest load;
  load.set_session(session);
  load.set_name(CallbacksFixturePath());
  v1::LoadLibraryResponse loaded;
  ASSERT_TRUE(unary(&v1::Ffi::Stub::LoadLibrary, load, &loaded).ok());
  v1::ResolveFunctionRequest resolve;
  resolve.set_session(session);
  resolve.set_library(loaded.library());
  resolve.set_declaration("int fxc_call_remember(int (*f)(int), int x)");
  v1::ResolveFunctionResponse resolved;
  ASSERT_TRUE(unary(&v1::Ffi::Stub::ResolveFunction, resolve, &resolved).ok());
  v1::RegisterCallbackRequest registration;
  registration.set_session(session);
  registration.set_declaration("int f(int)");
  *registration.mutable_default_result() = MakeInt(-11);
  v1::RegisterCallbackResponse registered;
  ASSERT_TRUE(
      unary(&v1::Ffi::Stub::RegisterCallback, registration, &registered).ok());

  v1::CallRequest call;
  call.set_session(session);
  call.set_function(resolved.function());
  call.add_arguments()->set_callback_handle(registered.callback());
  *call.add_arguments() = MakeInt(3);
  std::future<absl::Status> outer = std::async(std::launch::async, [&] {
    v1::CallResponse response;
    return unary(&v1::Ffi::Stub::Call, call, &response);
  });
  v1::ConnectResponse invocation;
  ASSERT_TRUE(older->Read(&invocation));
  ASSERT_TRUE(invocation.has_invocation());
  EXPECT_EQ(invocation.invocation().callback(), registered.callback());
  // Gone without answering.
  older_context.TryCancel();
  (void)older->Finish();

  absl::Status status = outer.get();
  EXPECT_THAT(status, HasReason("CALLBACK_FAILED"));
  EXPECT_THAT(MessageOf(status), HasSubstr("disconnected"));
  resolve.set_declaration("int fxc_last_result(void)");
  ASSERT_TRUE(unary(&v1::Ffi::Stub::ResolveFunction, resolve, &resolved).ok());
  call.set_function(resolved.function());
  call.clear_arguments();
  v1::CallResponse last;
  ASSERT_TRUE(unary(&v1::Ffi::Stub::Call, call, &last).ok());
  EXPECT_THAT(last.result(), IsInteger(-11));
  younger->WritesDone();
  younger_context.TryCancel();
  (void)younger->Finish();
}

TEST_F(CallbacksTest, CallsPipelineOnTheStream) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  std::vector<std::future<absl::StatusOr<v1::CallResponse>>> results;
  for (int i = 0; i < 200; ++i) {
    results.push_back(session_->CallAsync(*add, {MakeInt(i), MakeInt(1000)}));
  }
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<v1::CallResponse> result = results[i].get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_THAT(result->result(), IsInteger(i + 1000));
  }
}

// The client reads its Connect stream only while something can arrive on
// it (client.h); every use of the stream still works around those pauses:
// a CallAsync between plain calls, and a callback registered after them.
TEST_F(CallbacksTest, TheStreamIsReadWheneverSomethingCanArrive) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<v1::CallResponse> plain =
        session_->Call(*add, {MakeInt(i), MakeInt(1)});
    ASSERT_TRUE(plain.ok()) << plain.status();
    EXPECT_THAT(plain->result(), IsInteger(i + 1));
    absl::StatusOr<v1::CallResponse> async =
        session_->CallAsync(*add, {MakeInt(i), MakeInt(2)}).get();
    ASSERT_TRUE(async.ok()) << async.status();
    EXPECT_THAT(async->result(), IsInteger(i + 2));
  }
  client::Callback twice = Register(
      "int twice(int)", [](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        return MakeInt(context.arguments()[0].int_value() * 2);
      });
  const client::Function call_once =
      ResolveIn(callbacks_, "int fxc_call_once(int (*f)(int), int x)");
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<v1::CallResponse> called =
        session_->Call(call_once, {twice.value(), MakeInt(i)});
    ASSERT_TRUE(called.ok()) << called.status();
    EXPECT_THAT(called->result(), IsInteger(2 * i));
  }
}

// A stream the daemon ended while the client was not reading it (the
// session was deleted by another client) fails the next stream call at
// once instead of leaving it waiting.
TEST_F(CallbacksTest, AStreamThatEndedUnreadFailsTheNextStreamCall) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  ASSERT_TRUE(session_->Call(*add, {MakeInt(1), MakeInt(2)}).ok());
  v1::DeleteSessionRequest request;
  request.set_session(session_->id());
  v1::DeleteSessionResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(client_->stub().DeleteSession(&context, request, &response).ok());
  std::future<absl::StatusOr<v1::CallResponse>> result =
      session_->CallAsync(*add, {MakeInt(1), MakeInt(2)});
  // A guard against a hang, not a timing: the answer comes at once.
  ASSERT_EQ(result.wait_for(std::chrono::seconds(60)),
            std::future_status::ready);
  absl::StatusOr<v1::CallResponse> failed = result.get();
  EXPECT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().code(),
              ::testing::AnyOf(absl::StatusCode::kUnavailable,
                             absl::StatusCode::kNotFound,
                             absl::StatusCode::kFailedPrecondition))
      << failed.status();
}

TEST_F(CallbacksTest, PipelinedCallsGetCallbacksToo) {
  client::Callback twice = Register(
      "int twice(int)", [](CallbackContext& context) -> absl::StatusOr<v1::Value> {
        return MakeInt(context.arguments()[0].int_value() * 2);
      });
  const client::Function call_remember =
      ResolveIn(callbacks_, "int fxc_call_remember(int (*f)(int), int x)");
  std::vector<std::future<absl::StatusOr<v1::CallResponse>>> results;
  for (int i = 0; i < 20; ++i) {
    results.push_back(
        session_->CallAsync(call_remember, {twice.value(), MakeInt(i)}));
  }
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<v1::CallResponse> result = results[i].get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_THAT(result->result(), IsInteger(2 * i));
  }
}

// The raw protocol: results carry their StreamCall's tag, errors a
// serialized google.rpc.Status.
TEST_F(CallbacksTest, StreamResultsCarryTheirTagsAndErrors) {
  grpc::ClientContext context;
  auto stream = client_->stub().Connect(&context);
  v1::ConnectRequest request;
  request.mutable_attach()->set_session(session_->id());
  ASSERT_TRUE(stream->Write(request));
  v1::ConnectResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_TRUE(response.has_attached());

  // No request at all.
  request.mutable_call()->set_tag(7);
  ASSERT_TRUE(stream->Write(request));
  // A call from inside an invocation that is not waiting.
  request.mutable_call()->set_tag(8);
  request.mutable_call()->set_invocation(424242);
  request.mutable_call()->mutable_read()->mutable_pointer()->set_address(1);
  request.mutable_call()->mutable_read()->set_length(1);
  ASSERT_TRUE(stream->Write(request));
  std::map<uint64_t, absl::Status> errors;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_TRUE(response.has_result()) << response.ShortDebugString();
    google::rpc::Status status;
    ASSERT_TRUE(status.ParseFromString(response.result().error_status()));
    errors[response.result().tag()] = client::StatusFromRpcStatus(status);
  }
  EXPECT_THAT(errors[7], HasReason("INVALID_REQUEST"));
  EXPECT_THAT(errors[8], HasCode(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(MessageOf(errors[8]), HasSubstr("not waiting"));

  // Registering and releasing on the stream.
  request.mutable_call()->Clear();
  request.mutable_call()->set_tag(9);
  request.mutable_call()->mutable_register_callback()->set_declaration(
      "int f(int)");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.result().tag(), 9u);
  ASSERT_TRUE(response.result().error_status().empty());
  const std::string handle =
      response.result().register_callback().callback();
  EXPECT_EQ(handle.substr(0, 3), "cb_");
  request.mutable_call()->Clear();
  request.mutable_call()->set_tag(10);
  request.mutable_call()->mutable_release_callback()->set_callback(handle);
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.result().tag(), 10u);
  EXPECT_TRUE(response.result().has_release_callback());
  EXPECT_TRUE(response.result().error_status().empty());
  stream->WritesDone();
  context.TryCancel();
  (void)stream->Finish();
}

// Opens a raw Connect stream on `session`, attached with or without
// packed results.
std::unique_ptr<grpc::ClientReaderWriter<v1::ConnectRequest,
                                         v1::ConnectResponse>>
AttachRaw(v1::Ffi::Stub& stub, grpc::ClientContext& context,
          const std::string& session, bool packed_results) {
  auto stream = stub.Connect(&context);
  v1::ConnectRequest request;
  request.mutable_attach()->set_session(session);
  request.mutable_attach()->set_packed_results(packed_results);
  v1::ConnectResponse response;
  if (!stream->Write(request) || !stream->Read(&response) ||
      !response.has_attached()) {
    ADD_FAILURE() << "the stream did not attach";
  }
  // Clients pack calls only when the daemon says it takes packs.
  EXPECT_TRUE(response.attached().packed_calls());
  return stream;
}

// A pack of calls (ConnectRequest.calls) is handled as its calls one by
// one: every call answered under its tag, a bad one failing alone, and the
// worker's answers in the order the calls were sent. A client that asked
// for packed results may get them in ConnectResponse.results.
TEST_F(CallbacksTest, APackOfStreamCallsIsAnsweredCallByCall) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  grpc::ClientContext context;
  auto stream = AttachRaw(client_->stub(), context, session_->id(),
                          /*packed_results=*/true);
  constexpr uint64_t kCalls = 500;
  constexpr uint64_t kBadTag = 250;
  v1::ConnectRequest request;
  for (uint64_t tag = 1; tag <= kCalls; ++tag) {
    v1::StreamCall& call = *request.mutable_calls()->add_calls();
    call.set_tag(tag);
    if (tag == kBadTag) continue;  // Names no request.
    call.mutable_call()->set_function(add->handle);
    *call.mutable_call()->add_arguments() = MakeInt(static_cast<int>(tag));
    *call.mutable_call()->add_arguments() = MakeInt(-1);
  }
  ASSERT_TRUE(stream->Write(request));
  std::vector<v1::StreamResult> results;
  v1::ConnectResponse response;
  while (results.size() < kCalls && stream->Read(&response)) {
    if (response.has_result()) results.push_back(response.result());
    for (const v1::StreamResult& result : response.results().results()) {
      results.push_back(result);
    }
  }
  ASSERT_EQ(results.size(), kCalls);
  std::set<uint64_t> tags;
  uint64_t previous_answered = 0;
  for (const v1::StreamResult& result : results) {
    EXPECT_TRUE(tags.insert(result.tag()).second) << "twice: " << result.tag();
    if (result.tag() == kBadTag) {
      google::rpc::Status status;
      ASSERT_TRUE(status.ParseFromString(result.error_status()));
      EXPECT_THAT(client::StatusFromRpcStatus(status),
                  HasReason("INVALID_REQUEST"));
      continue;
    }
    ASSERT_TRUE(result.error_status().empty()) << result.tag();
    EXPECT_THAT(result.call().result(),
                IsInteger(static_cast<int>(result.tag()) - 1));
    EXPECT_GT(result.tag(), previous_answered) << "answered out of order";
    previous_answered = result.tag();
  }
  EXPECT_EQ(tags.size(), kCalls);
  stream->WritesDone();
  context.TryCancel();
  (void)stream->Finish();
}

// A request someone waits for is never held back behind a pack: the first
// arena allocation in a pack attaches the session's arena to the worker
// (a request the daemon waits for, sent between the pack's held-back
// calls), and every call before and after it is answered.
TEST_F(CallbacksTest, APackWithTheFirstArenaAllocationInTheMiddle) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  grpc::ClientContext context;
  auto stream = AttachRaw(client_->stub(), context, session_->id(),
                          /*packed_results=*/true);
  constexpr uint64_t kCalls = 200;
  constexpr uint64_t kAllocateTag = 100;
  v1::ConnectRequest request;
  for (uint64_t tag = 1; tag <= kCalls; ++tag) {
    v1::StreamCall& call = *request.mutable_calls()->add_calls();
    call.set_tag(tag);
    if (tag == kAllocateTag) {
      call.mutable_allocate()->set_size(64);
      call.mutable_allocate()->set_placement(v1::ALLOCATION_PLACEMENT_ARENA);
      continue;
    }
    call.mutable_call()->set_function(add->handle);
    *call.mutable_call()->add_arguments() = MakeInt(static_cast<int>(tag));
    *call.mutable_call()->add_arguments() = MakeInt(1);
  }
  ASSERT_TRUE(stream->Write(request));
  std::map<uint64_t, v1::StreamResult> results;
  v1::ConnectResponse response;
  while (results.size() < kCalls && stream->Read(&response)) {
    if (response.has_result()) {
      results[response.result().tag()] = response.result();
    }
    for (const v1::StreamResult& result : response.results().results()) {
      results[result.tag()] = result;
    }
  }
  ASSERT_EQ(results.size(), kCalls);
  for (auto& [tag, result] : results) {
    ASSERT_TRUE(result.error_status().empty()) << tag;
    if (tag == kAllocateTag) {
      EXPECT_TRUE(result.allocate().in_arena());
      EXPECT_EQ(result.allocate().size(), 64u);
    } else {
      EXPECT_THAT(result.call().result(),
                  IsInteger(static_cast<int>(tag) + 1));
    }
  }
  stream->WritesDone();
  context.TryCancel();
  (void)stream->Finish();
}

// A client that did not ask for packed results (every client before them)
// gets each result in a message of its own, even for a pack of calls.
TEST_F(CallbacksTest, ResultsComeOneByOneUnlessTheClientTakesPacks) {
  absl::StatusOr<client::Function> add = Resolve("int fx_add(int, int)");
  ASSERT_TRUE(add.ok()) << add.status();
  grpc::ClientContext context;
  auto stream = AttachRaw(client_->stub(), context, session_->id(),
                          /*packed_results=*/false);
  constexpr int kCalls = 300;
  v1::ConnectRequest request;
  for (int i = 0; i < kCalls; ++i) {
    v1::StreamCall& call = *request.mutable_calls()->add_calls();
    call.set_tag(static_cast<uint64_t>(i) + 1);
    call.mutable_call()->set_function(add->handle);
    *call.mutable_call()->add_arguments() = MakeInt(i);
    *call.mutable_call()->add_arguments() = MakeInt(i);
  }
  ASSERT_TRUE(stream->Write(request));
  std::set<uint64_t> tags;
  v1::ConnectResponse response;
  while (tags.size() < kCalls && stream->Read(&response)) {
    ASSERT_TRUE(response.has_result()) << response.kind_case();
    ASSERT_TRUE(response.result().error_status().empty());
    EXPECT_THAT(response.result().call().result(),
                IsInteger(2 * (static_cast<int>(response.result().tag()) - 1)));
    tags.insert(response.result().tag());
  }
  EXPECT_EQ(tags.size(), static_cast<size_t>(kCalls));
  stream->WritesDone();
  context.TryCancel();
  (void)stream->Finish();
}

TEST_F(CallbacksTest, RegisteringNeedsAStream) {
  client::SessionOptions options;
  options.attach_stream = false;
  std::unique_ptr<client::Session> streamless = NewSession(options);
  ASSERT_NE(streamless, nullptr);
  EXPECT_THAT(streamless->RegisterCallback(
                  "int f(int)",
                  [](CallbackContext&) -> absl::StatusOr<v1::Value> {
                    return MakeInt(0);
                  }),
              HasCode(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace ffid::testing
