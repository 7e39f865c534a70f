// Differential ABI test: every generated function (tests/abi/gen_abi_cases.py)
// is called directly by compiled C (the compiler's caller is the reference)
// and through the real daemon and worker, and the two results are compared
// value for value, which is bit for bit for every member (padding aside).
// The functions hash all of their inputs, so a single argument passed in the
// wrong register, stack slot or layout changes the result.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"
#include "ffi/marshal.h"
#include "ffi/types.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/testing/daemon.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

struct AbiCase {
  const char* symbol;
  // CallRequest text format: the arguments and variadic types.
  const char* call;
  // Calls the function directly, storing its result at the pointer.
  void (*direct)(void*);
  // For a union result: the member the function set, which is compared.
  const char* union_member;
};

#include "abi_cases.inc"

// Decodes the direct call's result: a pointer there is its address (the
// daemon's result also names a borrowed handle, which Unhandled drops). Only
// decoding happens, so nothing is ever resolved.
class NoPointers : public ffi::PointerResolver {
 public:
  absl::StatusOr<void*> Resolve(const v1::PointerValue&,
                                absl::string_view param) override {
    return absl::InternalError(absl::StrCat(param, ": no pointers here"));
  }
  v1::Value Wrap(void* address) override {
    v1::Value value;
    value.mutable_pointer_value()->set_address(
        reinterpret_cast<uintptr_t>(address));
    return value;
  }
};

// `value` without the borrowed handles the worker made for the pointers in
// it: what is compared is their addresses.
void Unhandled(v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kPointerValue:
      value.mutable_pointer_value()->clear_handle();
      break;
    case v1::Value::kRecordValue:
      for (auto& [name, field] :
           *value.mutable_record_value()->mutable_fields()) {
        Unhandled(field);
      }
      break;
    case v1::Value::kArrayValue:
      for (v1::Value& element :
           *value.mutable_array_value()->mutable_elements()) {
        Unhandled(element);
      }
      break;
    default:
      break;
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class AbiDifferentialTest : public FfidTest {};

TEST_F(AbiDifferentialTest, EveryGeneratedSignatureAgreesWithTheCompiler) {
  absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
      session_->ParseDeclarations(ReadFile(FFID_ABI_CASES_HEADER));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  absl::StatusOr<client::Library> library =
      session_->LoadLibrary(FFID_ABI_FIXTURE_PATH);
  ASSERT_TRUE(library.ok()) << library.status();

  const size_t count = sizeof(kAbiCases) / sizeof(kAbiCases[0]);
  size_t checked = 0;
  std::vector<std::string> failures;
  NoPointers no_pointers;
  for (size_t i = 0; i < count; ++i) {
    const AbiCase& c = kAbiCases[i];
    SCOPED_TRACE(c.symbol);
    v1::ResolveFunctionRequest resolve;
    resolve.set_session(session_->id());
    resolve.set_library(library->handle);
    resolve.set_symbol(c.symbol);
    v1::ResolveFunctionResponse resolved;
    {
      grpc::ClientContext context;
      absl::Status status = client::StatusFromGrpc(
          client_->stub().ResolveFunction(&context, resolve, &resolved));
      if (!status.ok()) {
        failures.push_back(absl::StrCat(c.symbol, ": resolve: ",
                                        status.ToString()));
        continue;
      }
    }
    v1::CallRequest call;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(c.call, &call))
        << c.call;
    call.set_session(session_->id());
    call.set_function(resolved.function());
    v1::CallResponse response;
    {
      grpc::ClientContext context;
      absl::Status status = client::StatusFromGrpc(
          client_->stub().Call(&context, call, &response));
      if (!status.ok()) {
        failures.push_back(absl::StrCat(c.symbol, ": call: ",
                                        status.ToString()));
        continue;
      }
    }
    // The direct call's result, decoded by the same rules.
    v1::TypeDescriptor returned = resolved.type().return_type();
    const bool is_void = !resolved.type().has_return_type() ||
                         (returned.has_scalar() &&
                          returned.scalar() == v1::SCALAR_KIND_VOID);
    if (is_void) {
      // The hash went to abi_last_hash; the thunk copied it out.
      returned.Clear();
      returned.set_scalar(v1::SCALAR_KIND_UINT64);
    }
    absl::StatusOr<std::shared_ptr<const ffi::CType>> type =
        ffi::CType::Create(returned);
    ASSERT_TRUE(type.ok()) << type.status();
    std::vector<unsigned char> bytes((*type)->size() + 16, 0);
    void* aligned = bytes.data() + (16 - reinterpret_cast<uintptr_t>(
                                             bytes.data()) % 16) % 16;
    c.direct(aligned);
    absl::StatusOr<v1::Value> expected =
        ffi::DecodeValue(**type, aligned, no_pointers);
    ASSERT_TRUE(expected.ok()) << expected.status();
    v1::Value actual = response.result();
    if (is_void) {
      // Read what the daemon's call stored in the library's global.
      v1::ResolveVariableRequest variable;
      variable.set_session(session_->id());
      variable.set_library(library->handle);
      variable.set_symbol("abi_last_hash");
      variable.mutable_type()->set_scalar(v1::SCALAR_KIND_UINT64);
      v1::ResolveVariableResponse handle;
      grpc::ClientContext context;
      ASSERT_TRUE(client::StatusFromGrpc(client_->stub().ResolveVariable(
                                             &context, variable, &handle))
                      .ok());
      absl::StatusOr<v1::Value> read = [&]() -> absl::StatusOr<v1::Value> {
        v1::ReadRequest request;
        request.set_session(session_->id());
        request.mutable_pointer()->set_handle(handle.memory());
        request.mutable_type()->set_scalar(v1::SCALAR_KIND_UINT64);
        v1::ReadResponse read_response;
        grpc::ClientContext read_context;
        absl::Status status = client::StatusFromGrpc(
            client_->stub().Read(&read_context, request, &read_response));
        if (!status.ok()) return status;
        return read_response.value();
      }();
      ASSERT_TRUE(read.ok()) << read.status();
      actual = *read;
    }
    if (c.union_member[0] != '\0') {
      // Compare the member that was set: decode both sides' bytes as it.
      const ffi::CTypeMember* member = nullptr;
      for (const ffi::CTypeMember& m : (*type)->members()) {
        if (m.name == c.union_member) member = &m;
      }
      ASSERT_NE(member, nullptr) << c.union_member;
      std::vector<unsigned char> theirs(bytes.size(), 0);
      void* theirs_aligned = theirs.data() + (16 - reinterpret_cast<uintptr_t>(
                                                       theirs.data()) % 16) % 16;
      const std::string& union_bytes = actual.record_value().union_bytes();
      ASSERT_EQ(union_bytes.size(), (*type)->size());
      std::memcpy(theirs_aligned, union_bytes.data(), union_bytes.size());
      expected = ffi::DecodeValue(*member->type, aligned, no_pointers);
      ASSERT_TRUE(expected.ok()) << expected.status();
      absl::StatusOr<v1::Value> decoded =
          ffi::DecodeValue(*member->type, theirs_aligned, no_pointers);
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      actual = *decoded;
    }
    Unhandled(actual);
    if (!google::protobuf::util::MessageDifferencer::Equals(*expected,
                                                            actual)) {
      failures.push_back(absl::StrCat(
          c.symbol, ": direct ", expected->ShortDebugString(), "\n  ffid   ",
          actual.ShortDebugString()));
      continue;
    }
    ++checked;
  }
  std::string report;
  for (size_t i = 0; i < failures.size() && i < 20; ++i) {
    report += failures[i] + "\n";
  }
  EXPECT_TRUE(failures.empty())
      << failures.size() << " of " << count << " signatures differ:\n"
      << report;
  EXPECT_EQ(checked, count);
  std::cout << "differential ABI test: " << checked << " of " << count
            << " signatures agree\n";
}

}  // namespace
}  // namespace ffid::testing
