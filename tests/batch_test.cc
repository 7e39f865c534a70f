// Batch through the real daemon and worker: steps run in order in one round
// trip, later steps take arguments from earlier results (promise
// pipelining: the result itself, a field of it, or memory it points to),
// and the first failing step stops the batch and is named.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeInt;
using client::MakePointer;
using client::MakeString;
using ::testing::HasSubstr;

// Appends `values` to a packed column field.
template <typename T>
void Fill(google::protobuf::RepeatedField<T>* field,
          std::initializer_list<std::common_type_t<T>> values) {
  for (const T& value : values) field->Add(value);
}

class BatchTest : public FfidTest {
 protected:
  // A call step of `function` with `arguments`.
  static v1::BatchStep CallStep(const client::Function& function,
                                std::vector<v1::Value> arguments) {
    v1::BatchStep step;
    step.mutable_call()->set_function(function.handle);
    for (v1::Value& argument : arguments) {
      *step.mutable_call()->add_arguments() = std::move(argument);
    }
    return step;
  }

  // Adds a reference: argument `argument` of `step` is the result of step
  // `from`.
  static v1::BatchReference* Refer(v1::BatchStep& step, uint32_t argument,
                                   uint32_t from) {
    v1::BatchReference* reference = step.add_references();
    reference->set_argument(argument);
    reference->set_step(from);
    return reference;
  }

  client::Function ResolveOk(const std::string& declaration) {
    absl::StatusOr<client::Function> function = Resolve(declaration);
    EXPECT_TRUE(function.ok()) << declaration << ": " << function.status();
    return function.ok() ? *function : client::Function{};
  }
};

// p = malloc(64); memset(p, 1, 64); fx_sum_ints(p, 16); free(p): one request.
TEST_F(BatchTest, PromisePipeliningMallocMemsetUseFree) {
  absl::StatusOr<client::Library> libc = session_->LoadLibrary("libc.so.6");
  ASSERT_TRUE(libc.ok()) << libc.status();
  absl::StatusOr<client::Function> malloc_fn =
      session_->ResolveFunction(*libc, "void *malloc(size_t size)");
  absl::StatusOr<client::Function> memset_fn = session_->ResolveFunction(
      *libc, "void *memset(void *s, int c, size_t n)");
  absl::StatusOr<client::Function> free_fn =
      session_->ResolveFunction(*libc, "void free(void *p)");
  ASSERT_TRUE(malloc_fn.ok() && memset_fn.ok() && free_fn.ok());
  const client::Function sum =
      ResolveOk("int fx_sum_ints(const int *values, size_t count)");

  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(*malloc_fn, {MakeInt(64)}));
  steps.push_back(CallStep(*memset_fn, {v1::Value(), MakeInt(1), MakeInt(64)}));
  Refer(steps.back(), 0, 0);
  steps.back().set_discard_result(true);
  steps.push_back(CallStep(sum, {v1::Value(), MakeInt(16)}));
  Refer(steps.back(), 0, 0);
  steps.push_back(CallStep(*free_fn, {v1::Value()}));
  Refer(steps.back(), 0, 0);

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 4);
  EXPECT_TRUE(response->results(0).call().result().has_pointer_value());
  EXPECT_NE(response->results(0).call().result().pointer_value().address(), 0u);
  // discard_result: no response for the memset step.
  EXPECT_FALSE(response->results(1).has_call());
  // Sixteen ints, each of four 0x01 bytes.
  EXPECT_EQ(response->results(2).call().result().int_value(), 16 * 0x01010101);
  EXPECT_TRUE(response->results(3).has_call());
}

// Allocate, write through the allocation, use it, read it back, free it.
TEST_F(BatchTest, MemoryStepsTakeReferencesToAnAllocation) {
  const client::Function sum =
      ResolveOk("int fx_sum_ints(const int *values, size_t count)");
  const int values[4] = {1, 2, 3, 4};
  std::vector<v1::BatchStep> steps(5);
  steps[0].mutable_allocate()->set_size(sizeof(values));
  steps[1].mutable_write()->set_data(
      std::string(reinterpret_cast<const char*>(values), sizeof(values)));
  Refer(steps[1], 0, 0);
  steps[2] = CallStep(sum, {v1::Value(), MakeInt(4)});
  Refer(steps[2], 0, 0);
  steps[3].mutable_read()->set_length(sizeof(int));
  Refer(steps[3], 0, 0)->set_offset(sizeof(int) * 3);
  Refer(steps[4], 0, 0);
  steps[4].mutable_free();

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 5);
  const std::string memory = response->results(0).allocate().memory();
  EXPECT_FALSE(memory.empty());
  EXPECT_EQ(response->results(2).call().result().int_value(), 10);
  int last = 0;
  ASSERT_EQ(response->results(3).read().data().size(), sizeof(last));
  std::memcpy(&last, response->results(3).read().data().data(), sizeof(last));
  EXPECT_EQ(last, 4);
  // The last step freed it.
  EXPECT_THAT(session_->Free(memory), HasReason("HANDLE_INVALID"));
}

// load_type: the argument is the int stored where an earlier result points.
TEST_F(BatchTest, ReferenceLoadsTheValueAPointerPointsTo) {
  const client::Function statics = ResolveOk("int *fx_static_ints(void)");
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(statics, {}));
  steps.push_back(CallStep(add, {v1::Value(), MakeInt(2)}));
  v1::BatchReference* third = Refer(steps.back(), 0, 0);
  third->set_offset(2 * sizeof(int));
  third->mutable_load_type()->set_scalar(v1::SCALAR_KIND_INT);

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  // fx_static_ints() is {10, 20, 30, 40}: 30 + 2.
  EXPECT_EQ(response->results(1).call().result().int_value(), 32);
}

// field_path: an argument taken from a member of a struct result.
TEST_F(BatchTest, ReferenceTakesAFieldOfAStructResult) {
  absl::StatusOr<client::Library> libc = session_->LoadLibrary("libc.so.6");
  ASSERT_TRUE(libc.ok()) << libc.status();
  absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
      session_->ParseDeclarations(
          "typedef struct { int quot; int rem; } div_t;"
          "div_t div(int numerator, int denominator);");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->functions_size(), 1);
  absl::StatusOr<client::Function> div = session_->ResolveFunction(
      *libc, "div", parsed->functions(0).type());
  ASSERT_TRUE(div.ok()) << div.status();
  const client::Function add = ResolveOk("int fx_add(int a, int b)");

  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(*div, {MakeInt(17), MakeInt(5)}));
  steps.push_back(CallStep(add, {v1::Value(), v1::Value()}));
  Refer(steps.back(), 0, 0)->add_field_path("quot");
  Refer(steps.back(), 1, 0)->add_field_path("rem");

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  // 17 / 5 = 3 remainder 2.
  EXPECT_EQ(response->results(1).call().result().int_value(), 5);
}

// A failing step stops the batch: the steps after it do not run.
TEST_F(BatchTest, FailedStepStopsTheBatchAndIsNamed) {
  const client::Function counter = ResolveOk("int fx_counter(void)");
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(counter, {}));
  steps.push_back(CallStep(add, {MakeString("not an int"), MakeInt(1)}));
  steps.push_back(CallStep(counter, {}));

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client::BatchFailedStep(response.status()), 1);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("batch step 1"));
  // Step 0 ran once, step 2 never did.
  EXPECT_EQ(CallOk("int fx_counter(void)").int_value(), 2);
}

TEST_F(BatchTest, ReferenceToALaterStepIsRefused) {
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(add, {v1::Value(), MakeInt(1)}));
  Refer(steps.back(), 0, 0);
  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  EXPECT_THAT(response, HasReason("INVALID_REQUEST"));
  EXPECT_EQ(client::BatchFailedStep(response.status()), 0);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("does not run before"));
}

TEST_F(BatchTest, ReferenceToAVoidResultIsRefused) {
  const client::Function noop = ResolveOk("void fx_noop(void)");
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(noop, {}));
  steps.push_back(CallStep(add, {v1::Value(), MakeInt(1)}));
  Refer(steps.back(), 0, 0);
  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  EXPECT_THAT(response, HasReason("INVALID_REQUEST"));
  EXPECT_EQ(client::BatchFailedStep(response.status()), 1);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("no result"));
}

TEST_F(BatchTest, ManyStepsRunInOrder) {
  const client::Function counter = ResolveOk("int fx_counter(void)");
  std::vector<v1::BatchStep> steps(1000, CallStep(counter, {}));
  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 1000);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(response->results(i).call().result().int_value(), i + 1);
  }
}

// The same batch on the Connect stream (StreamCall.batch), pipelined with
// calls: everything runs in the order sent.
TEST_F(BatchTest, BatchOnTheConnectStreamRunsInOrderWithCalls) {
  const client::Function counter = ResolveOk("int fx_counter(void)");
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  auto first = session_->CallAsync(counter, {});
  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(counter, {}));
  steps.push_back(CallStep(add, {v1::Value(), MakeInt(10)}));
  Refer(steps.back(), 0, 0);
  steps.push_back(CallStep(counter, {}));
  auto batch = session_->BatchAsync(steps);
  auto last = session_->CallAsync(counter, {});

  absl::StatusOr<v1::CallResponse> before = first.get();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->result().int_value(), 1);
  absl::StatusOr<v1::BatchResponse> response = batch.get();
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 3);
  EXPECT_EQ(response->results(0).call().result().int_value(), 2);
  EXPECT_EQ(response->results(1).call().result().int_value(), 12);
  EXPECT_EQ(response->results(2).call().result().int_value(), 3);
  absl::StatusOr<v1::CallResponse> after = last.get();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->result().int_value(), 4);
}

// A failing step on the stream: the stream result carries the step's error
// with its index, and the stream goes on working.
TEST_F(BatchTest, FailedStepOnTheConnectStreamIsNamed) {
  const client::Function counter = ResolveOk("int fx_counter(void)");
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  std::vector<v1::BatchStep> steps;
  steps.push_back(CallStep(counter, {}));
  steps.push_back(CallStep(add, {MakeString("not an int"), MakeInt(1)}));
  steps.push_back(CallStep(counter, {}));
  absl::StatusOr<v1::BatchResponse> response =
      session_->BatchAsync(steps).get();
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client::BatchFailedStep(response.status()), 1);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("batch step 1"));
  absl::StatusOr<v1::CallResponse> next = session_->CallAsync(counter, {}).get();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->result().int_value(), 2);
}

// A call_columns step: fx_add(i, 1) for i in 0..999, the second argument a
// single value every call gets; the results come back as one column.
TEST_F(BatchTest, CallColumnsRunEveryCallInOrder) {
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  const client::Function counter = ResolveOk("int fx_counter(void)");
  std::vector<v1::BatchStep> steps(3);
  steps[0] = CallStep(counter, {});
  v1::CallColumns* columns = steps[1].mutable_call_columns();
  columns->set_function(add.handle);
  columns->set_count(1000);
  v1::ValueColumn* a = columns->add_arguments();
  for (int i = 0; i < 1000; ++i) a->add_int_values(i);
  columns->add_arguments()->add_int_values(1);
  v1::CallColumns* none = steps[2].mutable_call_columns();
  none->set_function(counter.handle);
  none->set_count(3);

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 3);
  EXPECT_EQ(response->results(0).call().result().int_value(), 1);
  const v1::ValueColumn& sums = response->results(1).call_columns().results();
  ASSERT_EQ(sums.int_values_size(), 1000);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sums.int_values(i), i + 1);
  // A function without parameters runs `count` times.
  EXPECT_THAT(response->results(2).call_columns().results().int_values(),
              ::testing::ElementsAre(2, 3, 4));
}

// Every kind a column carries reaches the native code as C passes it, and
// results come back in the column their type takes.
TEST_F(BatchTest, CallColumnsPassEveryScalarKind) {
  std::vector<v1::BatchStep> steps(6);
  auto columns = [&](int step, const std::string& declaration, int count) {
    v1::CallColumns* call = steps[step].mutable_call_columns();
    call->set_function(ResolveOk(declaration).handle);
    call->set_count(count);
    return call;
  };
  v1::CallColumns* int8 = columns(0, "int8_t fx_int8_id(int8_t x)", 3);
  Fill(int8->add_arguments()->mutable_int_values(), {-128, 0, 127});
  v1::CallColumns* uint64 =
      columns(1, "uint64_t fx_uint64_id(uint64_t x)", 2);
  Fill(uint64->add_arguments()->mutable_uint_values(),
       {UINT64_MAX, uint64_t{1} << 63});
  v1::CallColumns* negate = columns(2, "bool fx_bool_not(bool x)", 2);
  Fill(negate->add_arguments()->mutable_int_values(), {0, 1});
  // int8_t, uint16_t, int32_t, int64_t, float, double, char, long, double,
  // unsigned long long.
  v1::CallColumns* mixed = columns(
      3,
      "double fx_mixed(int8_t a, uint16_t b, int32_t c, int64_t d, float e, "
      "double f, char g, long h, double i, unsigned long long j)",
      2);
  Fill(mixed->add_arguments()->mutable_int_values(), {-1, -2});
  Fill(mixed->add_arguments()->mutable_uint_values(), {65535, 2});
  mixed->add_arguments()->add_int_values(-100000);
  mixed->add_arguments()->add_int_values(int64_t{1} << 40);
  Fill(mixed->add_arguments()->mutable_double_values(), {0.5, 0.25});
  mixed->add_arguments()->add_double_values(1.5);
  mixed->add_arguments()->add_int_values(7);
  mixed->add_arguments()->add_int_values(-3);
  mixed->add_arguments()->add_double_values(0.125);
  mixed->add_arguments()->add_uint_values(10);
  v1::CallColumns* pointers =
      columns(4, "void *fx_ptr_add(void *p, size_t n)", 2);
  pointers->add_arguments()->add_uint_values(0x1000);
  Fill(pointers->add_arguments()->mutable_uint_values(), {0, 24});
  v1::CallColumns* doubles =
      columns(5, "double fx_double_add(double a, double b)", 2);
  Fill(doubles->add_arguments()->mutable_double_values(), {1.5, -2.0});
  doubles->add_arguments()->add_double_values(0.25);

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 6);
  auto results = [&](int step) -> const v1::ValueColumn& {
    return response->results(step).call_columns().results();
  };
  EXPECT_THAT(results(0).int_values(), ::testing::ElementsAre(-128, 0, 127));
  EXPECT_THAT(results(1).uint_values(),
              ::testing::ElementsAre(UINT64_MAX, uint64_t{1} << 63));
  EXPECT_THAT(results(2).int_values(), ::testing::ElementsAre(1, 0));
  const double fixed = -100000.0 + static_cast<double>(int64_t{1} << 40) +
                       1.5 + 7 - 3 + 0.125 + 10;
  EXPECT_THAT(results(3).double_values(),
              ::testing::ElementsAre(fixed - 1 + 65535 + 0.5,
                                     fixed - 2 + 2 + 0.25));
  EXPECT_THAT(results(4).uint_values(), ::testing::ElementsAre(0x1000, 0x1018));
  EXPECT_THAT(results(5).double_values(), ::testing::ElementsAre(1.75, -1.75));
}

// A value out of its parameter's range stops the batch before that call:
// the error names the step and the call, and nothing after it runs.
TEST_F(BatchTest, CallColumnsValueOutOfRangeNamesTheCall) {
  const client::Function id = ResolveOk("int8_t fx_int8_id(int8_t x)");
  const client::Function counter = ResolveOk("int fx_counter(void)");
  std::vector<v1::BatchStep> steps(2);
  v1::CallColumns* columns = steps[0].mutable_call_columns();
  columns->set_function(id.handle);
  columns->set_count(3);
  Fill(columns->add_arguments()->mutable_int_values(), {1, 2, 300});
  steps[1] = CallStep(counter, {});

  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  EXPECT_THAT(response, HasReason("VALUE_OUT_OF_RANGE"));
  EXPECT_EQ(client::BatchFailedStep(response.status()), 0);
  EXPECT_EQ(client::BatchFailedCall(response.status()), 2);
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("call 2"));
  EXPECT_EQ(CallOk("int fx_counter(void)").int_value(), 1);
}

// Columns of the wrong length or kind, and functions a column cannot pass,
// are refused before any call is made.
TEST_F(BatchTest, CallColumnsRefuseWhatTheyCannotPass) {
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  auto run = [&](const v1::CallColumns& columns) {
    std::vector<v1::BatchStep> steps(1);
    *steps[0].mutable_call_columns() = columns;
    return session_->Batch(steps);
  };
  v1::CallColumns short_column;
  short_column.set_function(add.handle);
  short_column.set_count(3);
  Fill(short_column.add_arguments()->mutable_int_values(), {1, 2});
  short_column.add_arguments()->add_int_values(1);
  absl::StatusOr<v1::BatchResponse> response = run(short_column);
  EXPECT_THAT(response, HasReason("INVALID_REQUEST"));
  EXPECT_EQ(client::BatchFailedCall(response.status()), -1);

  v1::CallColumns doubles_for_int = short_column;
  doubles_for_int.mutable_arguments(0)->Clear();
  doubles_for_int.mutable_arguments(0)->add_double_values(1.0);
  EXPECT_THAT(run(doubles_for_int), HasReason("TYPE_MISMATCH"));

  v1::CallColumns one_column = short_column;
  one_column.mutable_arguments()->RemoveLast();
  EXPECT_THAT(run(one_column), HasReason("ARGUMENT_COUNT"));

  v1::CallColumns strings;
  strings.set_function(ResolveOk("size_t fx_strlen(const char *s)").handle);
  strings.set_count(1);
  strings.add_arguments()->add_uint_values(0);
  response = run(strings);
  EXPECT_THAT(response, HasReason("UNSUPPORTED"));
  EXPECT_THAT(std::string(response.status().message()),
              HasSubstr("call steps"));
}

// call_columns on the Connect stream (StreamCall.batch).
TEST_F(BatchTest, CallColumnsOnTheConnectStream) {
  const client::Function add = ResolveOk("int fx_add(int a, int b)");
  std::vector<v1::BatchStep> steps(1);
  v1::CallColumns* columns = steps[0].mutable_call_columns();
  columns->set_function(add.handle);
  columns->set_count(2);
  Fill(columns->add_arguments()->mutable_int_values(), {40, -5});
  Fill(columns->add_arguments()->mutable_uint_values(), {2, 5});
  absl::StatusOr<v1::BatchResponse> response =
      session_->BatchAsync(steps).get();
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_THAT(response->results(0).call_columns().results().int_values(),
              ::testing::ElementsAre(42, 0));
}

TEST_F(BatchTest, EmptyBatchSucceeds) {
  absl::StatusOr<v1::BatchResponse> response = session_->Batch({});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->results_size(), 0);
}

TEST_F(BatchTest, UnknownSessionFails) {
  v1::BatchRequest request;
  request.set_session("no-such-session");
  v1::BatchResponse response;
  grpc::ClientContext context;
  const absl::Status status = client::StatusFromGrpc(
      client_->stub().Batch(&context, request, &response));
  EXPECT_THAT(status, HasReason("SESSION_NOT_FOUND"));
}

}  // namespace
}  // namespace ffid::testing
