// FfiService: the gRPC service ffid.v1.Ffi.
//
// The daemon itself does the parts that need no native code: sessions,
// library resolution and the allowlist (LoadLibrary), C declaration parsing
// (ParseDeclarations, and ResolveFunction's `declaration`), request
// validation. Everything else is forwarded to the session's worker. Every
// method returns through ToGrpcStatus (server/status_grpc.h), so every
// failure carries an ErrorInfo reason.
//
// Connect streams carry pipelined requests (StreamCall): each is sent to
// the worker at once (WorkerProcess::ExecuteAsync) and its StreamResult is
// queued for the stream's writer thread when the worker answers, so many
// can be in flight without a thread each. Callback invocations from the
// worker reach the client through the same writer (Session routes them);
// the client's CallbackResults go back through Session::AnswerInvocation.
//
// CallStream streams carry one synchronous call at a time each: the RPC's
// thread reads a call, runs it as the Call RPC does (DoCall) and writes the
// answer itself, so a call costs the stream's two messages and no thread
// hand-off. Each open stream holds a server thread, so at most
// kMaxCallStreams are open at once.
//
// Synchronous gRPC API: it is the simplest to get right, gRPC runs each
// in-flight RPC on its own thread, and a forwarded request blocks that
// thread on the worker anyway (the worker runs one request at a time). The
// callback API would only pay off with many thousands of concurrent idle
// RPCs, which a per-session worker cannot serve in parallel either.
//
// The gRPC deadline of each call is the worker deadline: a native call that
// outlives it gets its worker killed (see WorkerProcess). The service
// borrows the SessionManager, which must outlive it. Thread-safe.
#ifndef FFID_SERVER_SERVICE_H_
#define FFID_SERVER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ffid/v1/ffid.grpc.pb.h"
#include "server/arena_broker.h"
#include "server/bulk_bytes.h"
#include "server/access.h"
#include "server/library_resolver.h"
#include "server/session.h"
#include "server/worker/channel.h"

namespace ffid::server {

// CallStream streams open at once, at most (each holds a server thread
// while it is open, idle or not).
inline constexpr int kMaxCallStreams = 256;

struct ServiceOptions {
  // Globs a library's real path must match.
  std::vector<std::string> allow_library;
  // Where bare sonames are searched; empty means LibrarySearchDirectories()
  // at each LoadLibrary (tests point this at a temporary directory).
  std::vector<std::string> library_search_dirs;
  // Limits, sandbox layers and network permission for sessions
  // (session_policy.h). Its allow_library is filled from the field above
  // when empty.
  PolicyOptions policy;
  // The size of a session's shared-memory arena, made on first use; 0
  // turns arenas off (OpenArena and placement ARENA fail with UNSUPPORTED).
  uint64_t arena_bytes = uint64_t{256} << 20;
  // Hands arena memfds to local clients (borrowed; must outlive the
  // service). Null: OpenArena answers without a socket (TCP-only daemons).
  ArenaBroker* arena_broker = nullptr;
  // Principals, ownership, per-principal policy and the audit log
  // (server/access.h); null: every request is one anonymous principal ""
  // that may do everything the options above allow (in-process tests).
  std::shared_ptr<AccessControl> access;
};

// One end of a streaming RPC on gRPC's raw buffers, as the WriteStream and
// ReadStream handlers use it: gRPC's stream in the daemon, anything else in
// tests and fuzzers. Used by one thread at a time.
class BytesStream {
 public:
  virtual ~BytesStream() = default;
  // The client's next message; false once it has sent its last or is gone.
  virtual bool Read(grpc::ByteBuffer* message) = 0;
  // Sends one message to the client; false once the client is gone.
  virtual bool Write(const grpc::ByteBuffer& message) = 0;
};

class FfiService final : public v1::Ffi::Service {
 public:
  FfiService(SessionManager& sessions, ServiceOptions options);

  grpc::Status GetServerInfo(grpc::ServerContext* context,
                             const v1::GetServerInfoRequest* request,
                             v1::GetServerInfoResponse* response) override;
  grpc::Status CreateSession(grpc::ServerContext* context,
                             const v1::CreateSessionRequest* request,
                             v1::CreateSessionResponse* response) override;
  grpc::Status GetSession(grpc::ServerContext* context,
                          const v1::GetSessionRequest* request,
                          v1::GetSessionResponse* response) override;
  grpc::Status DeleteSession(grpc::ServerContext* context,
                             const v1::DeleteSessionRequest* request,
                             v1::DeleteSessionResponse* response) override;
  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>*
          stream) override;
  grpc::Status LoadLibrary(grpc::ServerContext* context,
                           const v1::LoadLibraryRequest* request,
                           v1::LoadLibraryResponse* response) override;
  grpc::Status UnloadLibrary(grpc::ServerContext* context,
                             const v1::UnloadLibraryRequest* request,
                             v1::UnloadLibraryResponse* response) override;
  grpc::Status ParseDeclarations(grpc::ServerContext* context,
                                 const v1::ParseDeclarationsRequest* request,
                                 v1::ParseDeclarationsResponse* response)
      override;
  grpc::Status ResolveFunction(grpc::ServerContext* context,
                               const v1::ResolveFunctionRequest* request,
                               v1::ResolveFunctionResponse* response) override;
  grpc::Status Call(grpc::ServerContext* context,
                    const v1::CallRequest* request,
                    v1::CallResponse* response) override;
  grpc::Status Allocate(grpc::ServerContext* context,
                        const v1::AllocateRequest* request,
                        v1::AllocateResponse* response) override;
  // Read and Write are not overridden: the constructor gives them handlers
  // of gRPC's raw buffers (ServeBytes below), which do this with the
  // request's serialized bytes; `response` gets the serialized answer.
  // Public for callers in this process that have no gRPC stream (the
  // service fuzzer, tests/fuzz).
  grpc::Status ReadBytes(grpc::ServerContext* context,
                         grpc::ByteBuffer request, grpc::ByteBuffer* response);
  grpc::Status WriteBytes(grpc::ServerContext* context,
                          grpc::ByteBuffer request,
                          grpc::ByteBuffer* response);
  // WriteStream and ReadStream are not overridden either: the constructor
  // gives them handlers of gRPC's raw buffers, which serve the RPC on
  // `stream` with these (public for the same callers as ReadBytes).
  grpc::Status WriteStreamBytes(grpc::ServerContext* context,
                                BytesStream& stream);
  grpc::Status ReadStreamBytes(grpc::ServerContext* context,
                               BytesStream& stream);
  grpc::Status Free(grpc::ServerContext* context,
                    const v1::FreeRequest* request,
                    v1::FreeResponse* response) override;
  grpc::Status RegisterCallback(grpc::ServerContext* context,
                                const v1::RegisterCallbackRequest* request,
                                v1::RegisterCallbackResponse* response)
      override;
  grpc::Status ReleaseCallback(grpc::ServerContext* context,
                               const v1::ReleaseCallbackRequest* request,
                               v1::ReleaseCallbackResponse* response) override;
  grpc::Status Adopt(grpc::ServerContext* context,
                     const v1::AdoptRequest* request,
                     v1::AdoptResponse* response) override;
  grpc::Status ResolveVariable(grpc::ServerContext* context,
                               const v1::ResolveVariableRequest* request,
                               v1::ResolveVariableResponse* response) override;
  grpc::Status Batch(grpc::ServerContext* context,
                     const v1::BatchRequest* request,
                     v1::BatchResponse* response) override;
  grpc::Status OpenArena(grpc::ServerContext* context,
                         const v1::OpenArenaRequest* request,
                         v1::OpenArenaResponse* response) override;
  grpc::Status CallStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::CallStreamResponse, v1::CallStreamRequest>*
          stream) override ABSL_LOCKS_EXCLUDED(call_streams_mu_);

  // The daemon is draining: CallStream streams waiting for their next call
  // end now (they run nothing, and would otherwise hold the drain until
  // gRPC cancels them after the grace); a stream running a call ends after
  // answering it, and new streams are refused. Calls sent on Connect
  // streams from now on are answered UNAVAILABLE "ffid is shutting down".
  void BeginDrain() ABSL_LOCKS_EXCLUDED(call_streams_mu_);

 private:
  // Identifies the caller (access control) and, when `rate_limited`,
  // counts the request against its rate.
  absl::StatusOr<Caller> Admit(grpc::ServerContext& context,
                               bool rate_limited = true);
  // Admits the caller and leases session `id` if the caller owns it; another
  // principal's session is NOT_FOUND exactly as an unknown id.
  absl::StatusOr<SessionLease> UseSession(grpc::ServerContext& context,
                                          absl::string_view id,
                                          Caller* caller = nullptr);
  // The caller's session `id` without leasing it.
  absl::StatusOr<std::shared_ptr<Session>> GetOwned(const Caller& caller,
                                                    absl::string_view id);
  // One audit line when access control is on (and, for calls, when call
  // auditing is).
  void Audit(grpc::ServerContext& context, absl::string_view action,
             absl::string_view target, const absl::Status& result);

  [[nodiscard]] absl::Status DoCreateSession(grpc::ServerContext& context,
                                             const v1::CreateSessionRequest& request,
                                             v1::CreateSessionResponse* response);
  [[nodiscard]] absl::Status DoDeleteSession(grpc::ServerContext& context,
                                             const v1::DeleteSessionRequest& request);
  [[nodiscard]] absl::Status DoConnect(
      grpc::ServerContext& context,
      grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>*
          stream);
  [[nodiscard]] absl::Status DoLoadLibrary(grpc::ServerContext& context,
                             const v1::LoadLibraryRequest& request,
                             v1::LoadLibraryResponse* response);
  [[nodiscard]] absl::Status DoUnloadLibrary(grpc::ServerContext& context,
                               const v1::UnloadLibraryRequest& request);
  [[nodiscard]] absl::Status DoParseDeclarations(grpc::ServerContext& context,
                                   const v1::ParseDeclarationsRequest& request,
                                   v1::ParseDeclarationsResponse* response);
  [[nodiscard]] absl::Status DoResolveFunction(grpc::ServerContext& context,
                                 const v1::ResolveFunctionRequest& request,
                                 v1::ResolveFunctionResponse* response);
  // `deadline` caps the RPC's own deadline (CallStream's per-call timeout).
  [[nodiscard]] absl::Status DoCall(
      grpc::ServerContext& context, const v1::CallRequest& request,
      v1::CallResponse* response,
      absl::Time deadline = absl::InfiniteFuture());
  [[nodiscard]] absl::Status DoOpenArena(grpc::ServerContext& context,
                                         const v1::OpenArenaRequest& request,
                                         v1::OpenArenaResponse* response);
  [[nodiscard]] absl::Status DoBatch(grpc::ServerContext& context,
                                     const v1::BatchRequest& request,
                                     v1::BatchResponse* response);
  [[nodiscard]] absl::Status DoAllocate(grpc::ServerContext& context,
                          const v1::AllocateRequest& request,
                          v1::AllocateResponse* response);
  // Read and Write on gRPC's raw buffers (server/bulk_bytes.h): the bytes
  // of an arena block go between it and gRPC's buffers with one copy,
  // instead of through a parsed or serialized message's string.
  // Serves the Read or Write RPC (`rpc`, for messages) on its one
  // request's bytes with `handler` (ReadBytes, WriteBytes).
  using BytesHandler = grpc::Status (FfiService::*)(grpc::ServerContext*,
                                                    grpc::ByteBuffer,
                                                    grpc::ByteBuffer*);
  grpc::Status ServeBytes(
      grpc::ServerContext* context,
      grpc::ServerUnaryStreamer<grpc::ByteBuffer, grpc::ByteBuffer>* stream,
      const char* rpc, BytesHandler handler);
  [[nodiscard]] absl::Status DoRead(grpc::ServerContext& context,
                                    const v1::ReadRequest& request,
                                    grpc::ByteBuffer* response);
  [[nodiscard]] absl::Status DoWrite(grpc::ServerContext& context,
                                     const WriteRequestView& request);
  // The streams: `*done` gets the bytes written or sent.
  [[nodiscard]] absl::Status DoWriteStream(grpc::ServerContext& context,
                                           BytesStream& stream,
                                           uint64_t* done);
  [[nodiscard]] absl::Status DoReadStream(grpc::ServerContext& context,
                                          BytesStream& stream);
  // Whether a stream of `session`, begun on `worker`, may go on: an error
  // once the session was deleted or that worker died (crash, restart).
  [[nodiscard]] absl::Status StillServing(Session& session,
                                          const WorkerProcess* worker);
  [[nodiscard]] absl::Status DoFree(grpc::ServerContext& context,
                      const v1::FreeRequest& request);
  [[nodiscard]] absl::Status DoRegisterCallback(
      grpc::ServerContext& context, const v1::RegisterCallbackRequest& request,
      v1::RegisterCallbackResponse* response);
  [[nodiscard]] absl::Status DoReleaseCallback(
      grpc::ServerContext& context, const v1::ReleaseCallbackRequest& request);
  // Sends a StreamCall to the worker without waiting; its StreamResult is
  // pushed to `writer` when the worker answers. With `batch`, the request
  // is held back in it (worker::HoldSends) until the caller flushes it.
  void StartStreamCall(const Caller& caller,
                       const std::shared_ptr<Session>& session,
                       uint64_t stream_id,
                       const std::shared_ptr<StreamSink>& writer,
                       const v1::StreamCall& call,
                       worker::SendBatch* batch = nullptr);
  [[nodiscard]] absl::Status DoAdopt(grpc::ServerContext& context,
                                     const v1::AdoptRequest& request,
                                     v1::AdoptResponse* response);
  [[nodiscard]] absl::Status DoResolveVariable(
      grpc::ServerContext& context, const v1::ResolveVariableRequest& request,
      v1::ResolveVariableResponse* response);

  SessionManager& sessions_;
  ServiceOptions options_;  // Set in the constructor, then read-only.
  const Allowlist allowlist_;
  absl::Mutex call_streams_mu_;
  // The CallStream streams open now (at most kMaxCallStreams), each with
  // whether it is running a call.
  absl::flat_hash_map<grpc::ServerContext*, bool> call_streams_
      ABSL_GUARDED_BY(call_streams_mu_);
  // Set by BeginDrain under call_streams_mu_ (a CallStream reads it there,
  // with its own bookkeeping); the Connect path reads it without the lock.
  std::atomic<bool> draining_{false};
};

}  // namespace ffid::server

#endif  // FFID_SERVER_SERVICE_H_
