// libFuzzer target for the daemon's own request checks: every unary RPC of
// ffid.v1.Ffi driven through the real FfiService handlers (server/service.h)
// in-process, with access control on, against one real session whose real
// worker has libm loaded and `double cos(double)` resolved, and the
// WriteStream / ReadStream handlers on a stream of fuzzed messages. gRPC's transport
// is left out (the handlers get a ServerContext of their own); everything
// from the handler on is the daemon's code: Admit and the per-principal
// policy, session ownership, field checks, handle lookups, PrepareCall /
// PrepareRead / PrepareWrite..., arena bounds, Batch step checks, the
// library allowlist, then the worker round trip for what passes.
//
// Input: byte 0 picks the RPC, byte 1 says which fields get the live
// session's ids (bit 0: session, bit 1: function / library handle), the
// rest is the serialized request. CreateSession is validated and then
// refused by the principal's max_sessions (so no input starts a worker);
// DeleteSession and UnloadLibrary never get the live ids. A request that
// kills the worker (a Read or Free of a wild address) ends the session; the
// next input starts a new one.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ffid/v1/ffid.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "server/access.h"
#include "server/log.h"
#include "server/service.h"
#include "server/session.h"

namespace {

using ffid::server::FfiService;
namespace v1 = ffid::v1;

struct World {
  std::unique_ptr<ffid::server::SessionManager> sessions;
  std::unique_ptr<FfiService> service;
  std::string session;
  std::string library;
  std::string function;
};
World* g_world = nullptr;

template <typename Request, typename Response>
grpc::Status Drive(grpc::Status (FfiService::*method)(grpc::ServerContext*,
                                                      const Request*,
                                                      Response*),
                   const Request& request, Response* response) {
  grpc::ServerContext context;
  return (g_world->service.get()->*method)(&context, &request, response);
}

template <typename Request, typename Response>
void Drive(grpc::Status (FfiService::*method)(grpc::ServerContext*,
                                              const Request*, Response*),
           const Request& request) {
  Response response;
  (void)Drive(method, request, &response);
}

// Read and Write take their requests' bytes (the daemon serves them on
// gRPC's raw buffers): `request` serialized, as a client would send it.
template <typename Request, typename Bytes>
void DriveBytes(grpc::Status (FfiService::*method)(grpc::ServerContext*, Bytes,
                                                   grpc::ByteBuffer*),
                const Request& request) {
  grpc::Slice slice(request.SerializeAsString());
  grpc::ByteBuffer bytes(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ServerContext context;
  (void)(g_world->service.get()->*method)(&context, bytes, &response);
}

// WriteStream and ReadStream read and write a stream of buffers: this one
// hands out `messages` (serialized) in turn and drops what it is sent.
class FakeStream : public ffid::server::BytesStream {
 public:
  explicit FakeStream(std::vector<std::string> messages)
      : messages_(std::move(messages)) {}
  bool Read(grpc::ByteBuffer* message) override {
    if (next_ >= messages_.size()) return false;
    grpc::Slice slice(messages_[next_++]);
    *message = grpc::ByteBuffer(&slice, 1);
    return true;
  }
  bool Write(const grpc::ByteBuffer& /*message*/) override { return true; }

 private:
  std::vector<std::string> messages_;
  size_t next_ = 0;
};

void DriveStream(grpc::Status (FfiService::*method)(grpc::ServerContext*,
                                                    ffid::server::BytesStream&),
                 std::vector<std::string> messages) {
  FakeStream stream(std::move(messages));
  grpc::ServerContext context;
  (void)(g_world->service.get()->*method)(&context, stream);
}

// A session with libm and cos, unless the last one is still alive.
bool EnsureSession() {
  World& world = *g_world;
  if (!world.session.empty()) {
    v1::GetSessionRequest get;
    get.set_session(world.session);
    v1::GetSessionResponse got;
    if (Drive(&FfiService::GetSession, get, &got).ok() &&
        got.session().state() == v1::SESSION_STATE_ACTIVE) {
      return true;
    }
    v1::DeleteSessionRequest remove;
    remove.set_session(world.session);
    Drive(&FfiService::DeleteSession, remove);
    world.session.clear();
  }
  v1::CreateSessionResponse created;
  if (!Drive(&FfiService::CreateSession, v1::CreateSessionRequest(), &created)
           .ok()) {
    return false;
  }
  world.session = created.session().id();
  v1::LoadLibraryRequest load;
  load.set_session(world.session);
  load.set_name("libm.so.6");
  v1::LoadLibraryResponse loaded;
  if (!Drive(&FfiService::LoadLibrary, load, &loaded).ok()) return false;
  world.library = loaded.library();
  v1::ResolveFunctionRequest resolve;
  resolve.set_session(world.session);
  resolve.set_library(world.library);
  resolve.set_declaration("double cos(double);");
  v1::ResolveFunctionResponse resolved;
  if (!Drive(&FfiService::ResolveFunction, resolve, &resolved).ok()) {
    return false;
  }
  world.function = resolved.function();
  return true;
}

template <typename Request>
bool Parse(Request& request, const uint8_t* data, size_t size) {
  return request.ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // Only errors; audit lines (LogAlways) still show. Protobuf's complaints
  // about invalid UTF-8 in string fields (a parse failure the fuzzer
  // expects) are dropped.
  ffid::server::SetLogLevel(ffid::server::LogLevel::kError);
  google::protobuf::SetLogHandler(nullptr);
  g_world = new World;
  ffid::server::SessionManagerOptions session_options;
  session_options.worker_path = FFID_WORKER_PATH;
  g_world->sessions =
      std::make_unique<ffid::server::SessionManager>(session_options);

  ffid::server::ServiceOptions options;
  options.allow_library = {"*/libm.so.6"};
  options.arena_bytes = 1 << 20;
  options.policy.sandbox = false;
  // No address-space limit: the fuzz preset's worker runs under ASan, whose
  // shadow memory needs more address space than any sensible limit.
  options.policy.max_limits.set_open_files(64);
  options.policy.max_limits.mutable_max_call_duration()->set_seconds(2);
  ffid::server::AccessSettings settings;
  ffid::config::v1::Policy policy;
  policy.add_principal("anonymous");
  policy.set_max_sessions(1);
  policy.add_allow_symbol("cos");
  policy.add_allow_symbol("sin");
  policy.add_allow_symbol("free");
  settings.policies.push_back(policy);
  options.access = std::make_shared<ffid::server::AccessControl>(
      std::move(settings), nullptr);
  g_world->service =
      std::make_unique<FfiService>(*g_world->sessions, std::move(options));
  if (!EnsureSession()) {
    fprintf(stderr, "service_fuzzer: cannot start a session with %s\n",
            FFID_WORKER_PATH);
    abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || !EnsureSession()) return 0;
  const World& world = *g_world;
  const uint8_t rpc = data[0] % 20;
  const bool live_session = (data[1] & 1) != 0;
  const bool live_handles = (data[1] & 2) != 0;
  data += 2;
  size -= 2;
  auto session = [&](auto& request) {
    if (live_session) request.set_session(world.session);
  };
  switch (rpc) {
    case 0: {
      v1::GetServerInfoRequest request;
      if (Parse(request, data, size)) Drive(&FfiService::GetServerInfo, request);
      break;
    }
    case 1: {
      v1::CreateSessionRequest request;
      if (Parse(request, data, size)) Drive(&FfiService::CreateSession, request);
      break;
    }
    case 2: {
      v1::GetSessionRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      Drive(&FfiService::GetSession, request);
      break;
    }
    case 3: {
      v1::DeleteSessionRequest request;
      if (!Parse(request, data, size) || request.session() == world.session) {
        break;
      }
      Drive(&FfiService::DeleteSession, request);
      break;
    }
    case 4: {
      v1::LoadLibraryRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      Drive(&FfiService::LoadLibrary, request);
      break;
    }
    case 5: {
      v1::UnloadLibraryRequest request;
      if (!Parse(request, data, size) || request.library() == world.library) {
        break;
      }
      session(request);
      Drive(&FfiService::UnloadLibrary, request);
      break;
    }
    case 6: {
      v1::ParseDeclarationsRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      Drive(&FfiService::ParseDeclarations, request);
      break;
    }
    case 7: {
      v1::ResolveFunctionRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      if (live_handles) request.set_library(world.library);
      Drive(&FfiService::ResolveFunction, request);
      break;
    }
    case 8: {
      v1::CallRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      if (live_handles) request.set_function(world.function);
      Drive(&FfiService::Call, request);
      break;
    }
    case 9: {
      v1::BatchRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      if (live_handles) {
        for (v1::BatchStep& step : *request.mutable_steps()) {
          if (step.has_call()) step.mutable_call()->set_function(world.function);
        }
      }
      Drive(&FfiService::Batch, request);
      break;
    }
    case 10: {
      v1::OpenArenaRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      Drive(&FfiService::OpenArena, request);
      break;
    }
    case 11: {
      v1::AllocateRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      Drive(&FfiService::Allocate, request);
      break;
    }
    case 12: {
      v1::ReadRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      DriveBytes(&FfiService::ReadBytes, request);
      break;
    }
    case 13: {
      v1::WriteRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      DriveBytes(&FfiService::WriteBytes, request);
      break;
    }
    case 14: {
      v1::FreeRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      Drive(&FfiService::Free, request);
      break;
    }
    case 15: {
      v1::RegisterCallbackRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      Drive(&FfiService::RegisterCallback, request);
      break;
    }
    case 16: {
      v1::AdoptRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      if (live_handles) request.set_library(world.library);
      Drive(&FfiService::Adopt, request);
      break;
    }
    case 17: {
      v1::ResolveVariableRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      if (live_handles) request.set_library(world.library);
      Drive(&FfiService::ResolveVariable, request);
      break;
    }
    case 18: {
      // The request as the first message, then its data again alone.
      v1::WriteStreamRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      v1::WriteStreamRequest more;
      more.set_data(request.data());
      DriveStream(&FfiService::WriteStreamBytes,
                  {request.SerializeAsString(), more.SerializeAsString()});
      break;
    }
    case 19: {
      v1::ReadStreamRequest request;
      if (!Parse(request, data, size)) break;
      session(request);
      DriveStream(&FfiService::ReadStreamBytes, {request.SerializeAsString()});
      break;
    }
  }
  return 0;
}
