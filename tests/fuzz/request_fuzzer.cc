// libFuzzer target for the validation a request goes through before any
// native code runs: C declarations (ParseDeclarations / ResolveFunction's
// `declaration`), type descriptors laid out for libffi (CType::Create),
// argument values checked and encoded against their types (EncodeValue)
// and decoded back (DecodeValue), and CreateSession's limits and sandbox
// policy against the server's maxima (ResolveSessionPolicy).
//
// The first byte picks the stage; the rest is its input (C source text, or
// serialized protobuf messages). Every stage must return a status, never
// crash, hang or touch memory it does not own (run under ASan + UBSan).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ffi/declaration_parser.h"
#include "ffi/marshal.h"
#include "ffi/types.h"
#include "ffid/v1/ffid.pb.h"
#include "server/session_policy.h"

namespace {

// Pointers name no memory here: every non-NULL pointer value is refused, so
// nothing is ever read or written through an address from the input.
class NoPointers : public ffid::ffi::PointerResolver {
 public:
  absl::StatusOr<void*> Resolve(const ffid::v1::PointerValue& pointer,
                                absl::string_view param) override {
    return absl::InvalidArgumentError("no pointers in the fuzzer");
  }
  ffid::v1::Value Wrap(void* address) override { return {}; }
};

// The largest value the fuzzer lays out and encodes.
constexpr size_t kMaxBytes = 1 << 20;

void EncodeAndDecode(const ffid::v1::TypeDescriptor& descriptor,
                     const ffid::v1::Value& value) {
  absl::StatusOr<std::shared_ptr<const ffid::ffi::CType>> type =
      ffid::ffi::CType::Create(descriptor, "fuzz");
  if (!type.ok() || (*type)->is_void() || (*type)->size() > kMaxBytes) return;
  const size_t alignment = std::max<size_t>((*type)->alignment(), 16);
  std::vector<unsigned char> storage((*type)->size() + alignment);
  void* dest = storage.data();
  size_t space = storage.size();
  dest = std::align(alignment, (*type)->size(), dest, space);
  NoPointers resolver;
  ffid::ffi::CallArena arena;
  absl::Status encoded =
      ffid::ffi::EncodeValue(**type, value, dest, resolver, arena, "fuzz");
  if (encoded.ok()) {
    (void)ffid::ffi::DecodeValue(**type, dest, resolver);
  }
}

void Declarations(absl::string_view source) {
  absl::StatusOr<ffid::ffi::Declarations> parsed =
      ffid::ffi::ParseDeclarations(source);
  if (!parsed.ok()) return;
  for (ffid::v1::FunctionDeclaration& function : parsed->functions) {
    if (!ffid::ffi::ResolveNamedTypes(*function.mutable_type(), parsed->types)
             .ok()) {
      continue;
    }
    for (const ffid::v1::Parameter& parameter : function.type().parameters()) {
      EncodeAndDecode(parameter.type(), ffid::v1::Value());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t stage = data[0] % 4;
  const absl::string_view rest(reinterpret_cast<const char*>(data + 1),
                               size - 1);
  switch (stage) {
    case 0:
      Declarations(rest);
      break;
    case 1: {
      absl::StatusOr<ffid::v1::FunctionDeclaration> function =
          ffid::ffi::ParseFunctionDeclaration(rest);
      if (function.ok()) {
        EncodeAndDecode(function->type().return_type(), ffid::v1::Value());
      }
      break;
    }
    case 2: {
      // A TypeDescriptor and a Value, each prefixed by a length byte.
      if (rest.empty()) break;
      const size_t type_size = std::min<size_t>(
          static_cast<unsigned char>(rest[0]), rest.size() - 1);
      ffid::v1::TypeDescriptor descriptor;
      ffid::v1::Value value;
      if (!descriptor.ParseFromArray(rest.data() + 1,
                                     static_cast<int>(type_size))) {
        break;
      }
      const absl::string_view value_bytes = rest.substr(1 + type_size);
      if (!value.ParseFromArray(value_bytes.data(),
                                static_cast<int>(value_bytes.size()))) {
        break;
      }
      EncodeAndDecode(descriptor, value);
      break;
    }
    case 3: {
      ffid::v1::CreateSessionRequest request;
      if (!request.ParseFromArray(rest.data(), static_cast<int>(rest.size()))) {
        break;
      }
      ffid::server::PolicyOptions options;
      options.max_limits.set_address_space_bytes(uint64_t{8} << 30);
      options.max_limits.set_open_files(1024);
      options.allow_library = {"/usr/lib/*"};
      (void)ffid::server::ResolveSessionPolicy(options, request);
      break;
    }
  }
  return 0;
}
