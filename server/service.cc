#include "server/service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ffi/declaration_parser.h"
#include "ffi/errors.h"
#include "google/protobuf/descriptor.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/rpc_observer.h"
#include "server/status_grpc.h"
#include "server/version.h"
#include "server/worker/protocol.pb.h"

namespace ffid::server {
namespace {

using ::ffid::worker::WorkerRequest;
using ::ffid::worker::WorkerResponse;

absl::Status Required(const std::string& value, absl::string_view field,
                      absl::string_view what) {
  if (!value.empty()) return absl::OkStatus();
  return InvalidArgumentError(
      v1::ERROR_REASON_INVALID_REQUEST,
      absl::StrCat("field '", field, "' is required: ", what));
}

// The worker deadline: the gRPC deadline of the call, if any.
absl::Time DeadlineOf(const grpc::ServerContext& context) {
  std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

// The deadline of a request to the worker: the client's, capped by `cap`
// and by the session's maximum call duration.
absl::Time WorkerDeadline(const grpc::ServerContext& context,
                          const Session& session, absl::Time cap) {
  absl::Time deadline = std::min(DeadlineOf(context), cap);
  const absl::Duration max_call = session.policy().max_call_duration;
  if (max_call != absl::InfiniteDuration()) {
    deadline = std::min(deadline, absl::Now() + max_call);
  }
  return deadline;
}

// Sends one request to the session's worker. Cancellation of the RPC by the
// client kills the worker just like an expired deadline: the native call
// cannot be stopped any other way.
absl::StatusOr<WorkerResponse> Forward(grpc::ServerContext& context,
                                       Session& session,
                                       WorkerRequest request,
                                       std::string description,
                                       std::string function = "",
                                       absl::Time cap =
                                           absl::InfiniteFuture()) {
  return session.Execute(
      std::move(request), WorkerDeadline(context, session, cap),
      std::move(description), std::move(function),
      [&context] { return context.IsCancelled(); });
}

// Sends a request that only copies bytes in the worker (a Read or Write
// piece, locating memory, a range check). It ends soon, so a cancelled RPC
// stops waiting for it instead of killing the worker: a client that
// abandons a transfer keeps its session. Its deadline still applies.
absl::StatusOr<WorkerResponse> ForwardCopy(grpc::ServerContext& context,
                                           Session& session,
                                           WorkerRequest request,
                                           std::string description) {
  return session.Execute(
      std::move(request),
      WorkerDeadline(context, session, absl::InfiniteFuture()),
      std::move(description), /*function=*/"",
      [&context] { return context.IsCancelled(); }, OnCancel::kStopWaiting);
}

// A ReadStream's client cancelled it or went away.
absl::Status ReaderGoneError() {
  return MakeError(absl::StatusCode::kCancelled,
                   v1::ERROR_REASON_INVALID_REQUEST,
                   "the client cancelled the stream or went away");
}

// The worker's result must be the one asked for (or unset, for the empty
// response messages).
absl::Status CheckResult(const WorkerResponse& response,
                         WorkerResponse::ResultCase expected,
                         absl::string_view operation) {
  if (response.result_case() == expected ||
      response.result_case() == WorkerResponse::RESULT_NOT_SET) {
    return absl::OkStatus();
  }
  return MakeError(absl::StatusCode::kInternal, v1::ERROR_REASON_INTERNAL,
                   absl::StrCat("the worker answered ", operation,
                                " with the wrong kind of result (case ",
                                static_cast<int>(response.result_case()),
                                ")"));
}

// The session's arena, made with `size` bytes on first use and attached to
// the session's current worker (again after a restart): the memfd travels
// to the worker with an attach_arena request.
absl::StatusOr<std::shared_ptr<SessionArena>> AttachedArena(
    Session& session, uint64_t size, absl::Time deadline) {
  ASSIGN_OR_RETURN(std::shared_ptr<SessionArena> arena,
                   session.GetOrCreateArena(size));
  WorkerProcess& worker = session.worker();
  if (arena->attached_tag() == worker.session_tag()) return arena;
  WorkerRequest attach;
  attach.mutable_attach_arena()->set_size(arena->size());
  ASSIGN_OR_RETURN(
      WorkerResponse answer,
      worker.Execute(std::move(attach), deadline,
                     "attaching the session's shared-memory arena", "",
                     nullptr, Route{}, arena->fd()));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kAttachArena,
                              "AttachArena"));
  arena->SetAttached(worker.session_tag(), answer.attach_arena().address());
  return arena;
}

// For a Read/Write of raw bytes at a memory handle the daemon knows to be in
// the session's arena (allocated by a unary Allocate of the current
// worker): the arena block and the arena. Nullopt means the worker must
// do the access.
struct ArenaAccess {
  std::shared_ptr<SessionArena> arena;
  SessionArena::Block block;
};
std::optional<ArenaAccess> FindArenaAccess(Session& session,
                                           const v1::PointerValue& pointer) {
  if (pointer.handle().empty()) return std::nullopt;
  std::shared_ptr<SessionArena> arena = session.arena();
  if (arena == nullptr) return std::nullopt;
  const std::string tag = session.worker().session_tag();
  // Only handles of the worker the arena is attached to now: after a
  // restart the old worker's handles must fail as the worker says.
  if (arena->attached_tag() != tag ||
      !absl::StartsWith(pointer.handle(), absl::StrCat("mem_", tag, "_"))) {
    return std::nullopt;
  }
  std::optional<SessionArena::Block> block = arena->Find(pointer.handle());
  if (!block.has_value()) return std::nullopt;
  return ArenaAccess{std::move(arena), *block};
}

// The bounds of an access of `length` bytes at `offset` into an arena block,
// with the worker's messages.
absl::Status CheckArenaBounds(const SessionArena::Block& block,
                              absl::string_view handle, uint64_t offset,
                              uint64_t length, absl::string_view verb) {
  if (offset > block.size) {
    return InvalidArgumentError(
        v1::ERROR_REASON_OUT_OF_BOUNDS,
        absl::StrCat(verb, " at offset ", offset, " is past the end of the ",
                     block.size, "-byte allocation ", handle));
  }
  if (length > block.size - offset) {
    return InvalidArgumentError(
        v1::ERROR_REASON_OUT_OF_BOUNDS,
        absl::StrCat(verb, " of ", length, " bytes at offset ", offset,
                     " exceeds the ", block.size, "-byte allocation ",
                     handle));
  }
  return absl::OkStatus();
}

// Prefixes a status's message, keeping its code and payloads.
absl::Status WithContext(const absl::Status& status, absl::string_view prefix) {
  return WithMessage(status, absl::StrCat(prefix, status.message()));
}

std::string CallDescription(const Session& session,
                            const std::string& function_handle,
                            std::string* symbol) {
  *symbol = session.FunctionSymbol(function_handle);
  if (symbol->empty()) {
    return absl::StrCat("calling function '", function_handle, "'");
  }
  return absl::StrCat("calling '", *symbol, "'");
}

std::string PointerDescription(const v1::PointerValue& pointer) {
  if (!pointer.handle().empty()) {
    return pointer.offset() == 0
               ? absl::StrCat("'", pointer.handle(), "'")
               : absl::StrCat("'", pointer.handle(), "'+", pointer.offset());
  }
  return absl::StrCat("address 0x", absl::Hex(pointer.address()));
}


// A RegisterCallbackRequest with its declaration parsed into `type` (the
// daemon parses, as for ResolveFunction, with the session's declared types
// in scope and named types resolved) and a name.
absl::StatusOr<v1::RegisterCallbackRequest> ParsedRegistration(
    Session& session, const v1::RegisterCallbackRequest& request) {
  v1::RegisterCallbackRequest parsed = request;
  parsed.clear_session();
  switch (request.signature_case()) {
    case v1::RegisterCallbackRequest::kDeclaration: {
      absl::StatusOr<v1::FunctionDeclaration> declaration =
          ffi::ParseFunctionDeclaration(request.declaration(),
                                        session.declarations().types());
      if (!declaration.ok()) {
        return WithContext(declaration.status(),
                           absl::StrCat("declaration '",
                                        request.declaration(), "': "));
      }
      if (parsed.name().empty()) parsed.set_name(declaration->name());
      *parsed.mutable_type() = std::move(*declaration->mutable_type());
      break;
    }
    case v1::RegisterCallbackRequest::kType:
      break;
    case v1::RegisterCallbackRequest::SIGNATURE_NOT_SET:
      return InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          "one of the fields 'declaration' (a C prototype such as 'int "
          "compare(const void *, const void *)') or 'type' is required");
  }
  RETURN_IF_ERROR(session.declarations().Resolve(*parsed.mutable_type()));
  if (parsed.name().empty()) parsed.set_name("callback");
  return parsed;
}

// The most StreamResults, and about the most bytes of them, that the
// writer packs into one ConnectResponse.results.
constexpr int kMaxPackedResults = 1024;
constexpr size_t kMaxPackedBytes = 256 * 1024;

// The sending side of one Connect stream: a queue drained by a writer
// thread, so that whoever produces a message (the worker's reader thread,
// a completion) never waits for the client's flow control. For a client
// that attached with `packed_results`, results queued behind one another
// leave as one `results` message.
class ConnectStreamWriter : public StreamSink {
 public:
  ConnectStreamWriter(
      grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>*
          stream,
      bool packed_results)
      : stream_(stream),
        packed_results_(packed_results),
        thread_([this] { Loop(); }) {}
  ~ConnectStreamWriter() override { Close(); }

  void Push(v1::ConnectResponse message) override {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    queue_.push_back(std::move(message));
    if (queue_.size() == 1) wake_.Signal();
  }

  bool Flushed() const override {
    absl::MutexLock lock(&mu_);
    return closed_ || (queue_.empty() && !writing_);
  }

  // Writes what is queued, then stops; later Push()es are dropped. The
  // stream must not be used by anyone after this returns.
  void Close() {
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      wake_.Signal();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  // Takes the next message to write off the queue: the front one, or, when
  // it and the ones behind it are results and the client takes packs, as
  // many of them as fit in one `results` message.
  v1::ConnectResponse TakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::ConnectResponse message = std::move(queue_.front());
    queue_.pop_front();
    if (!packed_results_ || !message.has_result() || queue_.empty() ||
        !queue_.front().has_result()) {
      return message;
    }
    v1::ConnectResponse packed;
    v1::StreamResults& results = *packed.mutable_results();
    size_t bytes = message.result().ByteSizeLong();
    results.mutable_results()->Reserve(static_cast<int>(
        std::min<size_t>(queue_.size() + 1, kMaxPackedResults)));
    *results.add_results() = std::move(*message.mutable_result());
    while (!queue_.empty() && queue_.front().has_result() &&
           results.results_size() < kMaxPackedResults &&
           bytes < kMaxPackedBytes) {
      bytes += queue_.front().result().ByteSizeLong();
      *results.add_results() = std::move(*queue_.front().mutable_result());
      queue_.pop_front();
    }
    return packed;
  }

  void Loop() {
    absl::MutexLock lock(&mu_);
    for (;;) {
      while (queue_.empty() && !closing_) wake_.Wait(&mu_);
      if (queue_.empty()) break;
      v1::ConnectResponse message = TakeLocked();
      // More queued behind it: let gRPC hold this message and send it
      // with the next in one write (the last of a burst flushes).
      grpc::WriteOptions options;
      if (!queue_.empty()) options.set_buffer_hint();
      writing_ = true;
      mu_.Unlock();
      const bool written = stream_->Write(message, options);
      mu_.Lock();
      writing_ = false;
      if (!written) break;  // The client has gone.
    }
    closed_ = true;
    queue_.clear();
  }

  grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>* const
      stream_;
  const bool packed_results_;
  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  std::deque<v1::ConnectResponse> queue_ ABSL_GUARDED_BY(mu_);
  // A message taken off the queue is being written.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// A StreamCall turned into a worker request.
struct StreamRequest {
  WorkerRequest request;
  std::string description;
  std::string symbol;
};

// Builds the worker request of a Call, Read, Write or Allocate (from a unary
// RPC or a StreamCall): required fields, the session's named types resolved,
// a description for messages.
absl::Status PrepareCall(Session& session, const v1::CallRequest& request,
                         WorkerRequest& forward, std::string* description,
                         std::string* symbol) {
  RETURN_IF_ERROR(Required(request.function(), "function",
                           "the handle returned by ResolveFunction"));
  *description = CallDescription(session, request.function(), symbol);
  *forward.mutable_call() = request;
  forward.mutable_call()->clear_session();
  for (int i = 0; i < forward.call().variadic_types_size(); ++i) {
    absl::Status resolved = session.declarations().Resolve(
        *forward.mutable_call()->mutable_variadic_types(i));
    if (!resolved.ok()) {
      return WithContext(resolved,
                         absl::StrCat("variadic type ", i + 1, ": "));
    }
  }
  return absl::OkStatus();
}

absl::Status PrepareAllocate(Session& session,
                             const v1::AllocateRequest& request,
                             WorkerRequest& forward,
                             std::string* description) {
  *forward.mutable_allocate() = request;
  forward.mutable_allocate()->clear_session();
  if (request.has_type()) {
    RETURN_IF_ERROR(session.declarations().Resolve(
        *forward.mutable_allocate()->mutable_type()));
  }
  *description =
      request.has_type()
          ? absl::StrCat("allocating ", std::max<uint64_t>(request.size(), 1),
                         " typed element(s)")
          : absl::StrCat("allocating ", request.size(), " bytes");
  return absl::OkStatus();
}

// Untyped Reads and Writes of at least this many bytes (and reads of a
// whole block, length 0) of heap or raw memory are copied by the daemon
// itself; smaller ones are cheaper through the worker in one round trip.
constexpr uint64_t kDirectCopyBytes = uint64_t{64} << 10;

// Serves an untyped Read (`write` false: into `*data`, sized as the worker
// says) or Write (from `*data`) by copying the bytes straight between the
// daemon and the worker's memory (WorkerProcess::CopyMemory): the worker
// only checks the access (LocateMemory), and the bytes never cross the
// channel. false when the kernel refuses such copies (the caller goes
// through the worker, and so does every later access).
absl::StatusOr<bool> CopyDirectly(grpc::ServerContext& context,
                                  Session& session,
                                  const v1::PointerValue& pointer,
                                  uint64_t length, bool write,
                                  std::string* data) {
  static std::atomic<bool> refused{false};
  if (refused.load(std::memory_order_relaxed)) return false;
  WorkerProcess* const worker = &session.worker();
  WorkerRequest forward;
  worker::LocateMemory* locate = forward.mutable_locate_memory();
  *locate->mutable_pointer() = pointer;
  locate->set_length(length);
  locate->set_write(write);
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   ForwardCopy(context, session, std::move(forward),
                               absl::StrCat(write ? "writing " : "reading ",
                                            PointerDescription(pointer))));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kLocateMemory,
                              write ? "Write" : "Read"));
  if (&session.worker() != worker) {
    return MakeError(absl::StatusCode::kUnavailable,
                     v1::ERROR_REASON_WORKER_CRASHED,
                     "the worker was restarted while the memory was located; "
                     "its memory is gone");
  }
  if (context.IsCancelled()) {
    // The client has its CANCELLED and may free the memory next; a copy
    // from here on could land in (or read) memory freed meanwhile.
    return MakeError(absl::StatusCode::kCancelled,
                     v1::ERROR_REASON_INVALID_REQUEST,
                     absl::StrCat("the client cancelled ",
                                  write ? "writing " : "reading ",
                                  PointerDescription(pointer)));
  }
  const worker::LocateMemoryResponse& located = answer.locate_memory();
  if (!write) data->resize(located.length());
  ASSIGN_OR_RETURN(const bool copied,
                   worker->CopyMemory(write, data->data(), located.address(),
                                      located.length()));
  if (!copied) {
    refused.store(true, std::memory_order_relaxed);
    if (!write) data->clear();
    Log(LogLevel::kWarning,
        "the kernel does not let the daemon copy a worker's memory "
        "(process_vm_readv/writev); Read and Write go through the worker");
  }
  return copied;
}

absl::Status PrepareRead(Session& session, const v1::ReadRequest& request,
                         WorkerRequest& forward, std::string* description) {
  if (!request.has_pointer()) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "field 'pointer' is required: a memory "
                                "handle (plus offset) or an address");
  }
  *forward.mutable_read() = request;
  forward.mutable_read()->clear_session();
  if (request.has_type()) {
    RETURN_IF_ERROR(session.declarations().Resolve(
        *forward.mutable_read()->mutable_type()));
  }
  *description =
      absl::StrCat("reading ", PointerDescription(request.pointer()));
  return absl::OkStatus();
}

absl::Status PrepareWrite(Session& session, const v1::WriteRequest& request,
                          WorkerRequest& forward, std::string* description) {
  if (!request.has_pointer()) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "field 'pointer' is required: a memory "
                                "handle (plus offset) or an address");
  }
  *forward.mutable_write() = request;
  forward.mutable_write()->clear_session();
  if (request.has_type()) {
    RETURN_IF_ERROR(session.declarations().Resolve(
        *forward.mutable_write()->mutable_type()));
  }
  *description =
      absl::StrCat("writing ", PointerDescription(request.pointer()));
  return absl::OkStatus();
}

// Arena bytes lent to gRPC as a slice: the arena stays mapped until gRPC
// lets go of the slice.
grpc::Slice ArenaSlice(std::shared_ptr<SessionArena> arena, const char* begin,
                       size_t size) {
  return grpc::Slice(
      const_cast<char*>(begin), size,
      [](void* held) {
        delete static_cast<std::shared_ptr<SessionArena>*>(held);
      },
      new std::shared_ptr<SessionArena>(std::move(arena)));
}

// Serves a Read of `session` (a unary one, or one piece of a ReadStream):
// `*response_bytes` gets the serialized ReadResponse. With `lend_arena`,
// arena bytes are lent to gRPC instead of copied (a ReadStream's pieces:
// gRPC reads them while it sends them, before the stream ends).
absl::Status ReadAt(grpc::ServerContext& context, Session& session,
                    const v1::ReadRequest& request,
                    grpc::ByteBuffer* response_bytes,
                    bool lend_arena = false) {
  if (!request.has_type()) {
    if (std::optional<ArenaAccess> access =
            FindArenaAccess(session, request.pointer())) {
      // Straight from the shared arena into gRPC's buffer: no round trip to
      // the worker, one copy.
      const uint64_t offset = request.pointer().offset();
      uint64_t length = request.length();
      if (length == 0 && offset <= access->block.size) {
        length = access->block.size - offset;
      }
      RETURN_IF_ERROR(CheckArenaBounds(access->block, request.pointer().handle(),
                                       offset, length, "read"));
      const char* const begin =
          access->arena->base() + access->block.offset + offset;
      *response_bytes =
          lend_arena
              ? ReadResponseAround(
                    ArenaSlice(std::move(access->arena), begin, length))
              : ReadResponseBuffer(absl::string_view(begin, length));
      return absl::OkStatus();
    }
  }
  v1::ReadResponse response;
  if (!request.has_type() && request.has_pointer() &&
      (request.length() == 0 || request.length() >= kDirectCopyBytes)) {
    ASSIGN_OR_RETURN(const bool copied,
                     CopyDirectly(context, session, request.pointer(),
                                  request.length(), /*write=*/false,
                                  response.mutable_data()));
    if (copied) {
      Metrics::Get().BytesRead(response.data().size());
      *response_bytes = SerializedBuffer(response);
      return absl::OkStatus();
    }
  }
  WorkerRequest forward;
  std::string description;
  RETURN_IF_ERROR(PrepareRead(session, request, forward, &description));
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   ForwardCopy(context, session, std::move(forward),
                               std::move(description)));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kRead, "Read"));
  Metrics::Get().BytesRead(answer.read().data().size());
  *response_bytes = SerializedBuffer(answer.read());
  return absl::OkStatus();
}

// Serves an untyped or typed Write of `session` (a unary one, or one piece
// of a WriteStream): `head` is the request without its `data`, whose bytes
// are `data` (`data_size` in all), wherever they are.
absl::Status WriteAt(grpc::ServerContext& context, Session& session,
                     const v1::WriteRequest& head,
                     absl::Span<const absl::string_view> data,
                     uint64_t data_size) {
  if (!head.has_type() && !head.has_value()) {
    if (std::optional<ArenaAccess> access =
            FindArenaAccess(session, head.pointer())) {
      // Straight from gRPC's buffers into the shared arena: no round trip
      // to the worker, one copy.
      const uint64_t offset = head.pointer().offset();
      RETURN_IF_ERROR(CheckArenaBounds(access->block, head.pointer().handle(),
                                       offset, data_size, "write"));
      char* out = access->arena->base() + access->block.offset + offset;
      for (const absl::string_view chunk : data) {
        std::memcpy(out, chunk.data(), chunk.size());
        out += chunk.size();
      }
      return absl::OkStatus();
    }
  }
  v1::WriteRequest request = head;
  std::string* joined = request.mutable_data();
  joined->reserve(data_size);
  for (const absl::string_view chunk : data) {
    joined->append(chunk.data(), chunk.size());
  }
  if (!request.has_type() && !request.has_value() && request.has_pointer() &&
      request.data().size() >= kDirectCopyBytes) {
    ASSIGN_OR_RETURN(
        const bool copied,
        CopyDirectly(context, session, request.pointer(),
                     request.data().size(), /*write=*/true,
                     request.mutable_data()));
    if (copied) {
      Metrics::Get().BytesWritten(request.data().size());
      return absl::OkStatus();
    }
  }
  WorkerRequest forward;
  std::string description;
  RETURN_IF_ERROR(PrepareWrite(session, request, forward, &description));
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   ForwardCopy(context, session, std::move(forward),
                               std::move(description)));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kWrite, "Write"));
  Metrics::Get().BytesWritten(request.data().size());
  return absl::OkStatus();
}

// The pieces of a ReadStream: at most this many bytes each, unless the
// client asks for fewer; never more than kMaxStreamPiece.
constexpr uint64_t kStreamPiece = uint64_t{1} << 20;
constexpr uint64_t kMaxStreamPiece = uint64_t{4} << 20;

// A ReadStreamResponse is a ReadResponse holding only `data`: the same
// bytes, so a piece is served by ReadAt as it is.
static_assert(static_cast<int>(v1::ReadStreamResponse::kDataFieldNumber) ==
              static_cast<int>(v1::ReadResponse::kDataFieldNumber));

// `pointer` moved `bytes` further.
v1::PointerValue Advanced(const v1::PointerValue& pointer, uint64_t bytes) {
  v1::PointerValue moved = pointer;
  if (!pointer.handle().empty()) {
    moved.set_offset(pointer.offset() + bytes);
  } else {
    moved.set_address(pointer.address() + bytes);
  }
  return moved;
}

// `status`, a failure of stream `rpc` after `done` of its `total` bytes were
// written (`write`) or sent: the message says which, and so does the
// ErrorInfo metadata ("bytes_written" / "bytes_sent").
absl::Status AfterBytes(const absl::Status& status, absl::string_view rpc,
                        uint64_t done, uint64_t total, bool write) {
  if (status.ok()) return status;
  const char* verb = write ? "written" : "sent";
  const std::string what =
      done == 0 ? absl::StrCat("none of its ", total, " bytes was ", verb)
                : absl::StrCat("bytes 0..", done - 1, " of ", total, " were ",
                               verb, ", the rest not");
  return WithMetadata(WithContext(status, absl::StrCat(rpc, " (", what, ")")),
                      write ? "bytes_written" : "bytes_sent",
                      absl::StrCat(done));
}

// Checks a stream's whole range before its first byte moves, as one Read or
// Write of it would (handle, ownership, bounds), and returns its length (a
// read's 0 resolved to the end of owned memory).
absl::StatusOr<uint64_t> CheckWholeRange(grpc::ServerContext& context,
                                         Session& session,
                                         const v1::PointerValue& pointer,
                                         uint64_t length, bool write) {
  const char* verb = write ? "write" : "read";
  if (std::optional<ArenaAccess> access = FindArenaAccess(session, pointer)) {
    const uint64_t offset = pointer.offset();
    if (!write && length == 0 && offset <= access->block.size) {
      length = access->block.size - offset;
    }
    RETURN_IF_ERROR(CheckArenaBounds(access->block, pointer.handle(), offset,
                                     length, verb));
    return length;
  }
  if (write && length == 0) return length;
  // The worker checks it as it checks the direct copies of big Reads and
  // Writes; nothing is copied.
  WorkerRequest forward;
  worker::LocateMemory* locate = forward.mutable_locate_memory();
  *locate->mutable_pointer() = pointer;
  locate->set_length(length);
  locate->set_write(write);
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   ForwardCopy(context, session, std::move(forward),
                               absl::StrCat(write ? "writing " : "reading ",
                                            PointerDescription(pointer))));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kLocateMemory,
                              write ? "WriteStream" : "ReadStream"));
  return answer.locate_memory().length();
}

absl::StatusOr<StreamRequest> PrepareStreamCall(Session& session,
                                                const v1::StreamCall& call,
                                                uint64_t arena_bytes) {
  StreamRequest prepared;
  WorkerRequest& forward = prepared.request;
  forward.set_invocation(call.invocation());
  switch (call.request_case()) {
    case v1::StreamCall::kCall:
      RETURN_IF_ERROR(PrepareCall(session, call.call(), forward,
                                  &prepared.description, &prepared.symbol));
      break;
    case v1::StreamCall::kRead:
      RETURN_IF_ERROR(
          PrepareRead(session, call.read(), forward, &prepared.description));
      break;
    case v1::StreamCall::kWrite:
      RETURN_IF_ERROR(
          PrepareWrite(session, call.write(), forward, &prepared.description));
      break;
    case v1::StreamCall::kAllocate:
      RETURN_IF_ERROR(PrepareAllocate(session, call.allocate(), forward,
                                      &prepared.description));
      if (call.allocate().placement() == v1::ALLOCATION_PLACEMENT_ARENA) {
        RETURN_IF_ERROR(
            AttachedArena(session, arena_bytes, absl::InfiniteFuture())
                .status());
      }
      break;
    case v1::StreamCall::kFree:
      RETURN_IF_ERROR(Required(call.free().memory(), "free.memory",
                               "the handle returned by Allocate"));
      if (std::shared_ptr<SessionArena> arena = session.arena()) {
        arena->Forget(call.free().memory());
      }
      prepared.description =
          absl::StrCat("freeing '", call.free().memory(), "'");
      *forward.mutable_free() = call.free();
      forward.mutable_free()->clear_session();
      break;
    case v1::StreamCall::kRegisterCallback: {
      ASSIGN_OR_RETURN(v1::RegisterCallbackRequest request,
                       ParsedRegistration(session, call.register_callback()));
      prepared.description =
          absl::StrCat("registering callback '", request.name(), "'");
      *forward.mutable_register_callback() = std::move(request);
      break;
    }
    case v1::StreamCall::kReleaseCallback:
      RETURN_IF_ERROR(Required(call.release_callback().callback(),
                               "release_callback.callback",
                               "the handle returned by RegisterCallback"));
      prepared.description = absl::StrCat(
          "releasing callback '", call.release_callback().callback(), "'");
      *forward.mutable_release_callback() = call.release_callback();
      forward.mutable_release_callback()->clear_session();
      break;
    case v1::StreamCall::kBatch:
      for (const v1::BatchStep& step : call.batch().steps()) {
        if (step.has_free()) {
          if (std::shared_ptr<SessionArena> arena = session.arena()) {
            arena->Forget(step.free().memory());
          }
        } else if (step.has_allocate() && step.allocate().placement() ==
                                              v1::ALLOCATION_PLACEMENT_ARENA) {
          RETURN_IF_ERROR(
              AttachedArena(session, arena_bytes, absl::InfiniteFuture())
                  .status());
        }
      }
      prepared.description = absl::StrCat(
          "running a batch of ", call.batch().steps_size(), " steps");
      *forward.mutable_batch() = call.batch();
      forward.mutable_batch()->clear_session();
      break;
    case v1::StreamCall::REQUEST_NOT_SET:
      return InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat("stream call ", call.tag(),
                       " names no request (call, read, write, allocate, "
                       "free, register_callback, release_callback or "
                       "batch)"));
  }
  return prepared;
}

// Moves the worker's answer into the StreamResult field of the same kind.
void FillStreamResult(WorkerResponse& answer, v1::StreamResult& result) {
  switch (answer.result_case()) {
    case WorkerResponse::kCall:
      *result.mutable_call() = std::move(*answer.mutable_call());
      break;
    case WorkerResponse::kRead:
      *result.mutable_read() = std::move(*answer.mutable_read());
      break;
    case WorkerResponse::kWrite:
      *result.mutable_write() = std::move(*answer.mutable_write());
      break;
    case WorkerResponse::kAllocate:
      *result.mutable_allocate() = std::move(*answer.mutable_allocate());
      break;
    case WorkerResponse::kFree:
      *result.mutable_free() = std::move(*answer.mutable_free());
      break;
    case WorkerResponse::kRegisterCallback:
      *result.mutable_register_callback() =
          std::move(*answer.mutable_register_callback());
      break;
    case WorkerResponse::kReleaseCallback:
      *result.mutable_release_callback() =
          std::move(*answer.mutable_release_callback());
      break;
    case WorkerResponse::kBatch:
      *result.mutable_batch() = std::move(*answer.mutable_batch());
      break;
    default:
      break;
  }
}

v1::ConnectResponse StreamError(uint64_t tag, const absl::Status& status) {
  v1::ConnectResponse message;
  message.mutable_result()->set_tag(tag);
  message.mutable_result()->set_error_status(
      StatusToProto(status).SerializeAsString());
  return message;
}

// gRPC's server stream of byte buffers as a BytesStream.
class GrpcBytesStream : public BytesStream {
 public:
  using Stream = grpc::ServerReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>;
  explicit GrpcBytesStream(Stream* stream) : stream_(stream) {}
  bool Read(grpc::ByteBuffer* message) override {
    return stream_->Read(message);
  }
  bool Write(const grpc::ByteBuffer& message) override {
    return stream_->Write(message);
  }

 private:
  Stream* const stream_;
};

}  // namespace

FfiService::FfiService(SessionManager& sessions, ServiceOptions options)
    : sessions_(sessions),
      options_(std::move(options)),
      allowlist_(options_.allow_library) {
  if (options_.policy.allow_library.empty()) {
    options_.policy.allow_library = options_.allow_library;
  }
  // Read and Write take and give gRPC's raw buffers: their handlers are
  // streamed-unary ones (one request, one answer, as gRPC's generated
  // WithStreamedUnaryMethod_ code installs them) on byte buffers, at the
  // methods' indexes, which are their places in the service's declaration.
  const google::protobuf::ServiceDescriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::Ffi::service_full_name());
  using RawHandler =
      grpc::internal::StreamedUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>;
  using RawStream =
      grpc::ServerUnaryStreamer<grpc::ByteBuffer, grpc::ByteBuffer>;
  MarkMethodStreamed(
      descriptor->FindMethodByName("Read")->index(),
      new RawHandler([this](grpc::ServerContext* context, RawStream* stream) {
        return ServeBytes(context, stream, "Read", &FfiService::ReadBytes);
      }));
  MarkMethodStreamed(
      descriptor->FindMethodByName("Write")->index(),
      new RawHandler([this](grpc::ServerContext* context, RawStream* stream) {
        return ServeBytes(context, stream, "Write", &FfiService::WriteBytes);
      }));
  // WriteStream and ReadStream likewise, as bidirectional streams of byte
  // buffers (what gRPC makes of every streaming method on the server's
  // side): one client stream, one server stream.
  using RawStreamHandler = grpc::internal::TemplatedBidiStreamingHandler<
      grpc::ServerReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>, false>;
  MarkMethodStreamed(
      descriptor->FindMethodByName("WriteStream")->index(),
      new RawStreamHandler([this](grpc::ServerContext* context,
                                  GrpcBytesStream::Stream* stream) {
        GrpcBytesStream bytes(stream);
        return WriteStreamBytes(context, bytes);
      }));
  MarkMethodStreamed(
      descriptor->FindMethodByName("ReadStream")->index(),
      new RawStreamHandler([this](grpc::ServerContext* context,
                                  GrpcBytesStream::Stream* stream) {
        GrpcBytesStream bytes(stream);
        return ReadStreamBytes(context, bytes);
      }));
}

grpc::Status FfiService::GetServerInfo(grpc::ServerContext* context,
                                       const v1::GetServerInfoRequest* request,
                                       v1::GetServerInfoResponse* response) {
  absl::StatusOr<Caller> caller = Admit(*context, false);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  response->set_principal(caller->principal);
  const PolicyOptions& policy = options_.policy;
  *response->mutable_sandbox() = policy.available;
  if (!policy.sandbox) {
    v1::SandboxStatus off;
    off.set_rlimits(true);
    off.add_disabled("everything but rlimits: ffid runs with --no-sandbox");
    *response->mutable_sandbox() = off;
  }
  *response->mutable_default_limits() = DefaultLimits(policy);
  *response->mutable_max_limits() = policy.max_limits;
  response->set_network_allowed(policy.network_allowed);
  response->set_version(std::string(Version()));
  return grpc::Status::OK;
}

// ---------------------------------------------------------------- sessions

grpc::Status FfiService::CreateSession(grpc::ServerContext* context,
                                       const v1::CreateSessionRequest* request,
                                       v1::CreateSessionResponse* response) {
  absl::Status status = DoCreateSession(*context, *request, response);
  Audit(*context, "CreateSession", response->session().id(), status);
  return ToGrpcStatus(status);
}

absl::Status FfiService::DoCreateSession(
    grpc::ServerContext& context, const v1::CreateSessionRequest& request,
    v1::CreateSessionResponse* response) {
  ASSIGN_OR_RETURN(Caller caller, Admit(context));
  absl::Duration idle_timeout = absl::ZeroDuration();
  if (request.has_idle_timeout()) {
    ASSIGN_OR_RETURN(idle_timeout,
                     DurationField(request.idle_timeout(), "idle_timeout",
                                   /*zero_allowed=*/false,
                                   "for the server's default"));
  }
  if (options_.access == nullptr) {
    ASSIGN_OR_RETURN(SessionPolicy policy,
                     ResolveSessionPolicy(options_.policy, request));
    ASSIGN_OR_RETURN(std::shared_ptr<Session> session,
                     sessions_.Create(idle_timeout, std::move(policy)));
    *response->mutable_session() = session->ToProto();
    return absl::OkStatus();
  }
  AccessControl& access = *options_.access;
  ASSIGN_OR_RETURN(SessionPolicy policy,
                   ResolveSessionPolicy(access.NarrowPolicy(caller, options_.policy),
                                        request));
  policy.owner = caller.principal;
  RETURN_IF_ERROR(access.AcquireSession(caller));
  absl::StatusOr<std::shared_ptr<Session>> session =
      sessions_.Create(idle_timeout, std::move(policy));
  if (!session.ok()) {
    access.ReleaseSession(caller.principal);
    return session.status();
  }
  // The session counts against its principal until it ends, however it
  // ends (DeleteSession, idle timeout, client gone, shutdown).
  std::weak_ptr<AccessControl> weak_access = options_.access;
  (*session)->AddEndListener(
      [weak_access, principal = caller.principal, id = (*session)->id()] {
        if (std::shared_ptr<AccessControl> access = weak_access.lock()) {
          access->ReleaseSession(principal);
          Caller ended;
          ended.principal = principal;
          access->Audit(ended, "EndSession", id, absl::OkStatus());
        }
      });
  *response->mutable_session() = (*session)->ToProto();
  return absl::OkStatus();
}

absl::StatusOr<Caller> FfiService::Admit(grpc::ServerContext& context,
                                         bool rate_limited) {
  if (options_.access == nullptr) {
    static const auto* const kNoSettings =
        new std::shared_ptr<const AccessSettings>(
            std::make_shared<const AccessSettings>());
    Caller caller;
    caller.settings = *kNoSettings;
    return caller;
  }
  return options_.access->Admit(context, rate_limited);
}

absl::StatusOr<std::shared_ptr<Session>> FfiService::GetOwned(
    const Caller& caller, absl::string_view id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, sessions_.Get(id));
  if (session->policy().owner != caller.principal) {
    return SessionNotFoundError(id);
  }
  return session;
}

absl::StatusOr<SessionLease> FfiService::UseSession(
    grpc::ServerContext& context, absl::string_view id, Caller* caller_out) {
  ASSIGN_OR_RETURN(Caller caller, Admit(context));
  ASSIGN_OR_RETURN(SessionLease session, sessions_.Use(id));
  if (session->policy().owner != caller.principal) {
    return SessionNotFoundError(id);
  }
  if (caller_out != nullptr) *caller_out = std::move(caller);
  return session;
}

void FfiService::Audit(grpc::ServerContext& context, absl::string_view action,
                       absl::string_view target, const absl::Status& result) {
  if (options_.access == nullptr) return;
  absl::StatusOr<Caller> caller = options_.access->Admit(context, false);
  Caller shown;
  if (caller.ok()) {
    shown = *std::move(caller);
  } else {
    shown.principal = absl::StrCat(
        "(", absl::StatusCodeToString(caller.status().code()), ")");
  }
  options_.access->Audit(shown, action, target, result,
                         TraceOf(context).trace_id);
}

grpc::Status FfiService::GetSession(grpc::ServerContext* context,
                                    const v1::GetSessionRequest* request,
                                    v1::GetSessionResponse* response) {
  absl::StatusOr<SessionLease> session =
      UseSession(*context, request->session());
  if (!session.ok()) return ToGrpcStatus(session.status());
  *response->mutable_session() = (*session)->ToProto();
  return grpc::Status::OK;
}

grpc::Status FfiService::DeleteSession(
    grpc::ServerContext* context, const v1::DeleteSessionRequest* request,
    v1::DeleteSessionResponse* response) {
  absl::Status status = DoDeleteSession(*context, *request);
  Audit(*context, "DeleteSession", request->session(), status);
  return ToGrpcStatus(status);
}

absl::Status FfiService::DoDeleteSession(
    grpc::ServerContext& context, const v1::DeleteSessionRequest& request) {
  ASSIGN_OR_RETURN(Caller caller, Admit(context));
  RETURN_IF_ERROR(GetOwned(caller, request.session()).status());
  return sessions_.Delete(request.session());
}

grpc::Status FfiService::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>*
        stream) {
  return ToGrpcStatus(DoConnect(*context, stream));
}

absl::Status FfiService::DoConnect(
    grpc::ServerContext& context,
    grpc::ServerReaderWriter<v1::ConnectResponse, v1::ConnectRequest>*
        stream) {
  v1::ConnectRequest message;
  if (!stream->Read(&message)) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        "the Connect stream ended before its first message, which must be "
        "'attach'");
  }
  if (!message.has_attach()) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        "the first message on a Connect stream must be 'attach' naming the "
        "session");
  }
  ASSIGN_OR_RETURN(Caller caller, Admit(context));
  // Checked before attaching: a stranger's stream must not hold (or, on
  // detach, end) the session.
  RETURN_IF_ERROR(GetOwned(caller, message.attach().session()).status());
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session,
                   sessions_.Attach(message.attach().session()));
  // When the session is deleted (DeleteSession, shutdown), the stream ends:
  // the blocked Read() below returns and the client sees CANCELLED.
  int listener =
      session->AddEndListener([&context] { context.TryCancel(); });
  auto writer = std::make_shared<ConnectStreamWriter>(
      stream, message.attach().packed_results());
  const uint64_t stream_id = session->AddStream(writer);
  absl::Status result = absl::OkStatus();
  v1::ConnectResponse attached;
  *attached.mutable_attached()->mutable_session() = session->ToProto();
  attached.mutable_attached()->set_packed_calls(true);
  writer->Push(std::move(attached));
  // The session stays attached until the client half-closes the stream or
  // the stream breaks (client gone, cancelled, daemon shutting down).
  while (stream->Read(&message)) {
    switch (message.kind_case()) {
      case v1::ConnectRequest::kAttach:
        result = InvalidArgumentError(
            v1::ERROR_REASON_INVALID_REQUEST,
            "this Connect stream is already attached to a session; open "
            "another stream for another session");
        break;
      case v1::ConnectRequest::kCall:
        StartStreamCall(caller, session, stream_id, writer, message.call());
        continue;
      case v1::ConnectRequest::kCalls: {
        // The pack's requests leave for the worker together (a few KiB per
        // write), not in a write each.
        worker::SendBatch batch;
        for (const v1::StreamCall& call : message.calls().calls()) {
          StartStreamCall(caller, session, stream_id, writer, call, &batch);
        }
        continue;
      }
      case v1::ConnectRequest::kCallbackResult:
        session->AnswerInvocation(message.callback_result());
        continue;
      default:
        // Unknown kinds (from newer clients) are ignored.
        continue;
    }
    break;
  }
  // Invocations this client did not answer fail now: their native threads
  // get the callbacks' default results instead of waiting.
  session->RemoveStream(stream_id);
  writer->Close();
  session->RemoveEndListener(listener);
  sessions_.Detach(session);
  return result;
}

void FfiService::StartStreamCall(const Caller& caller,
                                 const std::shared_ptr<Session>& session,
                                 uint64_t stream_id,
                                 const std::shared_ptr<StreamSink>& writer,
                                 const v1::StreamCall& call,
                                 worker::SendBatch* batch) {
  // Counted before the drain is checked: a drain that has not begun yet
  // then finds the session busy until this call's answer is pushed.
  session->StreamCallStarted();
  auto refuse = [&](const absl::Status& why) {
    writer->Push(StreamError(call.tag(), why));
    session->StreamCallEnded();
  };
  // A drain refuses new calls here as gRPC refuses new RPCs: the session
  // is about to end once the calls already running are answered. A
  // callback's nested request belongs to a call that is running, and goes.
  if (call.invocation() == 0 && draining_.load(std::memory_order_acquire)) {
    refuse(ShuttingDownError());
    return;
  }
  if (options_.access != nullptr) {
    if (absl::Status counted = options_.access->CountCall(caller);
        !counted.ok()) {
      refuse(counted);
      return;
    }
  }
  absl::StatusOr<StreamRequest> prepared = PrepareStreamCall(*session, call, options_.arena_bytes);
  if (!prepared.ok()) {
    refuse(prepared.status());
    return;
  }
  const uint64_t tag = call.tag();
  // A RESTART session's dead worker is replaced before the call is sent,
  // as for a unary call.
  session->ReviveIfDead();
  session->TranslateHandles(prepared->request);
  const absl::Time started = absl::Now();
  // Only the asynchronous send is held back: nothing waits for its answer
  // before the batch is flushed.
  std::optional<worker::HoldSends> hold;
  if (batch != nullptr) hold.emplace(*batch);
  session->worker().ExecuteAsync(
      std::move(prepared->request), std::move(prepared->description),
      std::move(prepared->symbol), Route{stream_id, tag},
      [writer, tag, started, weak = std::weak_ptr<Session>(session)](
          absl::StatusOr<WorkerResponse> answer) {
        Metrics::Get().RecordCall(
            "stream",
            answer.ok() ? "OK" : ReasonName(GetErrorReason(answer.status())),
            absl::Now() - started);
        if (!answer.ok()) {
          writer->Push(StreamError(tag, answer.status()));
        } else {
          v1::ConnectResponse message;
          message.mutable_result()->set_tag(tag);
          FillStreamResult(*answer, *message.mutable_result());
          writer->Push(std::move(message));
        }
        // Weak: the worker holding this callback belongs to the session.
        if (std::shared_ptr<Session> owner = weak.lock()) {
          owner->StreamCallEnded();
        }
      });
}

// ---------------------------------------------------------------- libraries

grpc::Status FfiService::LoadLibrary(grpc::ServerContext* context,
                                     const v1::LoadLibraryRequest* request,
                                     v1::LoadLibraryResponse* response) {
  absl::Status status = DoLoadLibrary(*context, *request, response);
  Audit(*context, "LoadLibrary",
        response->path().empty() ? request->name() : response->path(), status);
  return ToGrpcStatus(status);
}

absl::Status FfiService::DoLoadLibrary(grpc::ServerContext& context,
                                       const v1::LoadLibraryRequest& request,
                                       v1::LoadLibraryResponse* response) {
  Caller caller;
  ASSIGN_OR_RETURN(SessionLease session,
                   UseSession(context, request.session(), &caller));
  RETURN_IF_ERROR(Required(request.name(), "name",
                           "a library path or soname such as 'libm.so.6'"));
  absl::StatusOr<std::string> real_path =
      options_.library_search_dirs.empty()
          ? ResolveLibrary(request.name())
          : ResolveLibrary(request.name(), options_.library_search_dirs);
  if (!real_path.ok()) return real_path.status();
  RETURN_IF_ERROR(allowlist_.Check(*real_path, request.name()));
  if (options_.access != nullptr) {
    RETURN_IF_ERROR(options_.access->CheckLibrary(caller, *real_path));
  }

  WorkerRequest forward;
  v1::LoadLibraryRequest* load = forward.mutable_load_library();
  load->set_name(*real_path);
  ASSIGN_OR_RETURN(
      WorkerResponse answer,
      Forward(context, *session, std::move(forward),
              absl::StrCat("loading library '", *real_path, "'")));
  RETURN_IF_ERROR(
      CheckResult(answer, WorkerResponse::kLoadLibrary, "LoadLibrary"));
  *response = std::move(*answer.mutable_load_library());
  if (response->path().empty()) response->set_path(*real_path);
  return absl::OkStatus();
}

grpc::Status FfiService::UnloadLibrary(grpc::ServerContext* context,
                                       const v1::UnloadLibraryRequest* request,
                                       v1::UnloadLibraryResponse* response) {
  return ToGrpcStatus(DoUnloadLibrary(*context, *request));
}

absl::Status FfiService::DoUnloadLibrary(
    grpc::ServerContext& context, const v1::UnloadLibraryRequest& request) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  RETURN_IF_ERROR(Required(request.library(), "library",
                           "the handle returned by LoadLibrary"));
  WorkerRequest forward;
  *forward.mutable_unload_library() = request;
  forward.mutable_unload_library()->clear_session();
  ASSIGN_OR_RETURN(
      WorkerResponse answer,
      Forward(context, *session, std::move(forward),
              absl::StrCat("unloading library '", request.library(), "'")));
  RETURN_IF_ERROR(
      CheckResult(answer, WorkerResponse::kUnloadLibrary, "UnloadLibrary"));
  session->ForgetLibrary(request.library());
  return absl::OkStatus();
}

// ------------------------------------------------------------- declarations

grpc::Status FfiService::ParseDeclarations(
    grpc::ServerContext* context, const v1::ParseDeclarationsRequest* request,
    v1::ParseDeclarationsResponse* response) {
  return ToGrpcStatus(DoParseDeclarations(*context, *request, response));
}

absl::Status FfiService::DoParseDeclarations(
    grpc::ServerContext& context, const v1::ParseDeclarationsRequest& request,
    v1::ParseDeclarationsResponse* response) {
  // Without a session the source stands alone; with one, it sees the
  // session's earlier types and its declarations are remembered.
  std::optional<SessionLease> session;
  std::vector<v1::TypeDeclaration> known;
  if (!request.session().empty()) {
    ASSIGN_OR_RETURN(session, UseSession(context, request.session()));
    known = (*session)->declarations().types();
  } else {
    RETURN_IF_ERROR(Admit(context).status());
  }
  ASSIGN_OR_RETURN(ffi::Declarations declarations,
                   ffi::ParseDeclarations(request.source(), known));
  if (session.has_value()) {
    RETURN_IF_ERROR((*session)->declarations().Add(declarations));
  }
  for (v1::VariableDeclaration& variable : declarations.variables) {
    *response->add_variables() = std::move(variable);
  }
  for (v1::FunctionDeclaration& function : declarations.functions) {
    *response->add_functions() = std::move(function);
  }
  for (v1::TypeDeclaration& type : declarations.types) {
    *response->add_types() = std::move(type);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- functions

grpc::Status FfiService::ResolveFunction(
    grpc::ServerContext* context, const v1::ResolveFunctionRequest* request,
    v1::ResolveFunctionResponse* response) {
  return ToGrpcStatus(DoResolveFunction(*context, *request, response));
}

absl::Status FfiService::DoResolveFunction(
    grpc::ServerContext& context, const v1::ResolveFunctionRequest& request,
    v1::ResolveFunctionResponse* response) {
  Caller caller;
  ASSIGN_OR_RETURN(SessionLease session,
                   UseSession(context, request.session(), &caller));
  RETURN_IF_ERROR(Required(request.library(), "library",
                           "the handle returned by LoadLibrary"));
  WorkerRequest forward;
  v1::ResolveFunctionRequest* resolve = forward.mutable_resolve_function();
  resolve->set_library(request.library());
  std::string symbol = request.symbol();
  switch (request.signature_case()) {
    case v1::ResolveFunctionRequest::kDeclaration: {
      absl::StatusOr<v1::FunctionDeclaration> declaration =
          ffi::ParseFunctionDeclaration(request.declaration(),
                                        session->declarations().types());
      if (!declaration.ok()) {
        return WithContext(declaration.status(),
                           absl::StrCat("declaration '",
                                        request.declaration(), "': "));
      }
      if (symbol.empty()) symbol = declaration->name();
      *resolve->mutable_type() = std::move(*declaration->mutable_type());
      break;
    }
    case v1::ResolveFunctionRequest::kType:
      *resolve->mutable_type() = request.type();
      break;
    case v1::ResolveFunctionRequest::SIGNATURE_NOT_SET: {
      std::optional<v1::FunctionDeclaration> declared =
          symbol.empty() ? std::nullopt
                         : session->declarations().Function(symbol);
      if (!declared.has_value()) {
        return InvalidArgumentError(
            v1::ERROR_REASON_INVALID_REQUEST,
            "one of the fields 'declaration' (a C prototype such as "
            "'double cos(double)') or 'type' is required, unless 'symbol' "
            "names a function declared in the session with "
            "ParseDeclarations");
      }
      *resolve->mutable_type() = std::move(*declared->mutable_type());
      break;
    }
  }
  RETURN_IF_ERROR(session->declarations().Resolve(*resolve->mutable_type()));
  RETURN_IF_ERROR(Required(symbol, "symbol",
                           "the name of the function to look up (or give a "
                           "'declaration' that names it)"));
  resolve->set_symbol(symbol);
  if (options_.access != nullptr) {
    RETURN_IF_ERROR(options_.access->CheckSymbol(caller, symbol));
  }
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   Forward(context, *session, std::move(forward),
                           absl::StrCat("resolving '", symbol, "'")));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kResolveFunction,
                              "ResolveFunction"));
  *response = std::move(*answer.mutable_resolve_function());
  if (response->symbol().empty()) response->set_symbol(symbol);
  if (!response->has_type()) *response->mutable_type() = resolve->type();
  if (!response->function().empty()) {
    session->RememberFunction(response->function(), response->symbol(),
                              request.library());
  }
  return absl::OkStatus();
}

grpc::Status FfiService::Call(grpc::ServerContext* context,
                              const v1::CallRequest* request,
                              v1::CallResponse* response) {
  absl::Status status = DoCall(*context, *request, response);
  if (options_.access != nullptr && options_.access->AuditCalls()) {
    Audit(*context, "Call", request->function(), status);
  }
  return ToGrpcStatus(status);
}

absl::Status FfiService::DoCall(grpc::ServerContext& context,
                                const v1::CallRequest& request,
                                v1::CallResponse* response,
                                absl::Time deadline) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  WorkerRequest forward;
  std::string description;
  std::string symbol;
  RETURN_IF_ERROR(
      PrepareCall(*session, request, forward, &description, &symbol));
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   Forward(context, *session, std::move(forward),
                           std::move(description), symbol, deadline));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kCall, "Call"));
  *response = std::move(*answer.mutable_call());
  return absl::OkStatus();
}

grpc::Status FfiService::CallStream(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::CallStreamResponse, v1::CallStreamRequest>*
        stream) {
  // Only an identified caller may hold one of the limited streams (each
  // call is admitted again, rate limit included, as a unary one is).
  if (absl::StatusOr<Caller> caller = Admit(*context, false); !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  {
    absl::MutexLock lock(&call_streams_mu_);
    if (draining_) {
      return ToGrpcStatus(ShuttingDownError());
    }
    if (call_streams_.size() >= kMaxCallStreams) {
      return ToGrpcStatus(MakeError(
          absl::StatusCode::kResourceExhausted,
          v1::ERROR_REASON_RESOURCE_LIMIT,
          absl::StrCat("ffid keeps at most ", kMaxCallStreams,
                       " CallStream streams open at once; use the Call RPC, "
                       "or close idle streams")));
    }
    call_streams_[context] = false;
  }
  // Whether this stream may go on; marks it running a call (`busy`) or
  // waiting for one. BeginDrain cancels a waiting stream, so a call read
  // just as the drain began is never started.
  auto mark = [&](bool busy) {
    absl::MutexLock lock(&call_streams_mu_);
    if (draining_) return false;
    call_streams_[context] = busy;
    return true;
  };
  for (;;) {
    // Fresh messages per call: a reused one would keep the capacity of the
    // biggest call's strings for as long as the stream stays open.
    v1::CallStreamRequest request;
    if (!stream->Read(&request) || !mark(true)) break;
    v1::CallStreamResponse response;
    const absl::Time started = absl::Now();
    absl::Status status;
    absl::Time deadline = absl::InfiniteFuture();
    if (request.has_timeout()) {
      absl::StatusOr<absl::Duration> timeout =
          DurationField(request.timeout(), "timeout", /*zero_allowed=*/true,
                        "for no limit of its own");
      status = timeout.status();
      if (timeout.ok()) deadline = started + *timeout;
    }
    if (status.ok()) {
      status = DoCall(*context, request.call(), response.mutable_call(),
                      deadline);
    }
    const absl::Duration elapsed = absl::Now() - started;
    const std::string reason =
        status.ok() ? "OK" : ReasonName(GetErrorReason(status));
    Metrics::Get().RecordCall("call_stream", reason, elapsed);
    // Read for each call: a SIGHUP may turn call auditing on or off.
    if (options_.access != nullptr && options_.access->AuditCalls()) {
      Audit(*context, "Call", request.call().function(), status);
    }
    if (!status.ok()) {
      // Logged as the RPC observer logs a failed unary Call.
      const grpc::Status as_grpc = ToGrpcStatus(status);
      if (IsServerSideFailure(as_grpc.error_code())) {
        LogRpc(LogLevel::kWarning, "call failed: " + as_grpc.error_message(),
               "ffid.v1.Ffi/CallStream",
               absl::StatusCodeToString(status.code()), reason, elapsed,
               TraceOf(*context));
      }
      response.Clear();
      response.set_error_status(StatusToProto(status).SerializeAsString());
    }
    if (!stream->Write(response) || !mark(false)) break;
  }
  absl::MutexLock lock(&call_streams_mu_);
  call_streams_.erase(context);
  return grpc::Status::OK;
}

void FfiService::BeginDrain() {
  absl::MutexLock lock(&call_streams_mu_);
  draining_.store(true, std::memory_order_release);
  for (const auto& [context, busy] : call_streams_) {
    if (!busy) context->TryCancel();
  }
}

grpc::Status FfiService::Batch(grpc::ServerContext* context,
                               const v1::BatchRequest* request,
                               v1::BatchResponse* response) {
  return ToGrpcStatus(DoBatch(*context, *request, response));
}

absl::Status FfiService::DoBatch(grpc::ServerContext& context,
                                 const v1::BatchRequest& request,
                                 v1::BatchResponse* response) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  // Arena handles the batch frees are forgotten first (see DoFree); an
  // arena allocation needs the arena attached.
  bool attached = false;
  for (const v1::BatchStep& step : request.steps()) {
    if (step.has_free()) {
      if (std::shared_ptr<SessionArena> arena = session->arena()) {
        arena->Forget(step.free().memory());
      }
    } else if (!attached && step.has_allocate() &&
               step.allocate().placement() == v1::ALLOCATION_PLACEMENT_ARENA) {
      RETURN_IF_ERROR(
          AttachedArena(*session, options_.arena_bytes, DeadlineOf(context))
              .status());
      attached = true;
    }
  }
  WorkerRequest forward;
  *forward.mutable_batch() = request;
  forward.mutable_batch()->clear_session();
  ASSIGN_OR_RETURN(
      WorkerResponse answer,
      Forward(context, *session, std::move(forward),
              absl::StrCat("running a batch of ", request.steps_size(),
                           " steps"),
              ""));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kBatch, "Batch"));
  *response = std::move(*answer.mutable_batch());
  return absl::OkStatus();
}

// ------------------------------------------------------------------- memory

grpc::Status FfiService::OpenArena(grpc::ServerContext* context,
                                   const v1::OpenArenaRequest* request,
                                   v1::OpenArenaResponse* response) {
  return ToGrpcStatus(DoOpenArena(*context, *request, response));
}

absl::Status FfiService::DoOpenArena(grpc::ServerContext& context,
                                     const v1::OpenArenaRequest& request,
                                     v1::OpenArenaResponse* response) {
  // The session lookup is the access check: only the principal owning the
  // session may map its arena (another gets NOT_FOUND, as for every session
  // RPC).
  ASSIGN_OR_RETURN(SessionLease session,
                   UseSession(context, request.session()));
  ASSIGN_OR_RETURN(std::shared_ptr<SessionArena> arena,
                   AttachedArena(*session, options_.arena_bytes,
                                 DeadlineOf(context)));
  response->set_size(arena->size());
  response->set_worker_address(arena->worker_address());
  if (options_.arena_broker != nullptr) {
    response->set_socket_path(options_.arena_broker->socket_path());
    response->set_token(options_.arena_broker->IssueToken(arena));
  }
  return absl::OkStatus();
}

grpc::Status FfiService::Allocate(grpc::ServerContext* context,
                                  const v1::AllocateRequest* request,
                                  v1::AllocateResponse* response) {
  return ToGrpcStatus(DoAllocate(*context, *request, response));
}

absl::Status FfiService::DoAllocate(grpc::ServerContext& context,
                                    const v1::AllocateRequest& request,
                                    v1::AllocateResponse* response) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  WorkerRequest forward;
  std::string description;
  RETURN_IF_ERROR(PrepareAllocate(*session, request, forward, &description));
  std::shared_ptr<SessionArena> arena;
  if (request.placement() == v1::ALLOCATION_PLACEMENT_ARENA) {
    ASSIGN_OR_RETURN(arena, AttachedArena(*session, options_.arena_bytes,
                                          DeadlineOf(context)));
  }
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   Forward(context, *session, std::move(forward),
                           std::move(description)));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kAllocate, "Allocate"));
  *response = std::move(*answer.mutable_allocate());
  if (arena != nullptr && response->in_arena() &&
      response->arena_offset() <= arena->size() &&
      response->size() <= arena->size() - response->arena_offset()) {
    arena->Remember(response->memory(), SessionArena::Block{
                                            response->arena_offset(),
                                            response->size()});
  }
  return absl::OkStatus();
}

grpc::Status FfiService::ServeBytes(
    grpc::ServerContext* context,
    grpc::ServerUnaryStreamer<grpc::ByteBuffer, grpc::ByteBuffer>* stream,
    const char* rpc, BytesHandler handler) {
  grpc::ByteBuffer request_bytes;
  if (!stream->Read(&request_bytes)) {
    return ToGrpcStatus(MakeError(
        absl::StatusCode::kInternal, v1::ERROR_REASON_INTERNAL,
        absl::StrCat("the ", rpc, " request did not arrive")));
  }
  grpc::ByteBuffer response;
  grpc::Status status =
      (this->*handler)(context, std::move(request_bytes), &response);
  if (!status.ok()) return status;
  // The last message: sent together with the status.
  stream->Write(response, grpc::WriteOptions().set_last_message());
  return grpc::Status::OK;
}

grpc::Status FfiService::ReadBytes(grpc::ServerContext* context,
                                   grpc::ByteBuffer request_bytes,
                                   grpc::ByteBuffer* response) {
  v1::ReadRequest request;
  absl::Status status = ParsedMessage(request_bytes, &request);
  if (status.ok()) status = DoRead(*context, request, response);
  return ToGrpcStatus(status);
}

absl::Status FfiService::DoRead(grpc::ServerContext& context,
                                const v1::ReadRequest& request,
                                grpc::ByteBuffer* response_bytes) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  return ReadAt(context, *session, request, response_bytes);
}

grpc::Status FfiService::WriteBytes(grpc::ServerContext* context,
                                    grpc::ByteBuffer request_bytes,
                                    grpc::ByteBuffer* response) {
  absl::StatusOr<std::unique_ptr<WriteRequestView>> request =
      WriteRequestView::Parse(std::move(request_bytes));
  absl::Status status = request.status();
  if (status.ok()) status = DoWrite(*context, **request);
  if (!status.ok()) return ToGrpcStatus(status);
  *response = SerializedBuffer(v1::WriteResponse());
  return grpc::Status::OK;
}

absl::Status FfiService::DoWrite(grpc::ServerContext& context,
                                 const WriteRequestView& view) {
  ASSIGN_OR_RETURN(SessionLease session,
                   UseSession(context, view.head().session()));
  return WriteAt(context, *session, view.head(), view.data(),
                 view.data_size());
}

// ---------------------------------------------------------------- streams

absl::Status FfiService::StillServing(Session& session,
                                      const WorkerProcess* worker) {
  absl::StatusOr<std::shared_ptr<Session>> now = sessions_.Get(session.id());
  if (!now.ok() || now->get() != &session) {
    return NotFoundError(
        v1::ERROR_REASON_SESSION_NOT_FOUND,
        absl::StrCat("session '", session.id(),
                     "' was deleted during the stream; create a new one"));
  }
  WorkerProcess& current = session.worker();
  if (&current != worker) {
    return MakeError(
        absl::StatusCode::kUnavailable, v1::ERROR_REASON_WORKER_CRASHED,
        "the session's worker died during the stream and was restarted: "
        "memory allocated before the restart is gone, allocate it again");
  }
  RETURN_IF_ERROR(current.dead_status());
  if (current.doomed()) {
    return MakeError(absl::StatusCode::kUnavailable,
                     v1::ERROR_REASON_WORKER_CRASHED,
                     "the session's worker is being stopped (a deadline or a "
                     "cancelled call killed it) and its memory with it");
  }
  return absl::OkStatus();
}

grpc::Status FfiService::WriteStreamBytes(grpc::ServerContext* context,
                                          BytesStream& stream) {
  uint64_t written = 0;
  absl::Status status = DoWriteStream(*context, stream, &written);
  if (!status.ok()) return ToGrpcStatus(status);
  v1::WriteStreamResponse response;
  response.set_written(written);
  stream.Write(SerializedBuffer(response));
  return grpc::Status::OK;
}

absl::Status FfiService::DoWriteStream(grpc::ServerContext& context,
                                       BytesStream& stream, uint64_t* done) {
  grpc::ByteBuffer message;
  if (!stream.Read(&message)) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        "the WriteStream ended before its first message, which names the "
        "session, the pointer and the length");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<WriteStreamRequestView> piece,
                   WriteStreamRequestView::Parse(std::move(message)));
  const v1::WriteStreamRequest first = piece->head();
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, first.session()));
  if (!first.has_pointer()) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        "field 'pointer' is required in the first WriteStream message: a "
        "memory handle (plus offset) or an address");
  }
  const uint64_t total = first.length();
  const WorkerProcess* const worker = &session->worker();
  RETURN_IF_ERROR(StillServing(*session, worker));
  // A stream too long for its memory writes nothing.
  RETURN_IF_ERROR(CheckWholeRange(context, *session, first.pointer(), total,
                                  /*write=*/true)
                      .status());
  *done = 0;
  v1::WriteRequest head;
  head.set_session(first.session());
  for (bool later = false;; later = true) {
    absl::Status status;
    if (piece->data_size() > total - *done) {
      status = InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat("the stream carries more than the ", total,
                       " bytes its first message announced (field "
                       "'length')"));
    } else if (later && (!piece->head().session().empty() ||
                         piece->head().has_pointer() ||
                         piece->head().length() != 0)) {
      status = InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          "only the first WriteStream message names the session, the "
          "pointer and the length; later ones carry data only");
    } else if (piece->data_size() > 0) {
      status = StillServing(*session, worker);
      if (status.ok()) {
        *head.mutable_pointer() = Advanced(first.pointer(), *done);
        status = WriteAt(context, *session, head, piece->data(),
                         piece->data_size());
      }
      if (status.ok()) *done += piece->data_size();
    }
    RETURN_IF_ERROR(AfterBytes(status, "WriteStream", *done, total, true));
    piece.reset();
    if (!stream.Read(&message)) break;
    absl::StatusOr<std::unique_ptr<WriteStreamRequestView>> next =
        WriteStreamRequestView::Parse(std::move(message));
    RETURN_IF_ERROR(
        AfterBytes(next.status(), "WriteStream", *done, total, true));
    piece = *std::move(next);
  }
  if (context.IsCancelled()) {
    return AfterBytes(
        MakeError(absl::StatusCode::kCancelled,
                  v1::ERROR_REASON_INVALID_REQUEST,
                  "the client cancelled the stream"),
        "WriteStream", *done, total, true);
  }
  if (*done != total) {
    return AfterBytes(
        InvalidArgumentError(
            v1::ERROR_REASON_INVALID_REQUEST,
            absl::StrCat("the stream ended after ", *done, " of the ", total,
                         " bytes its first message announced (field "
                         "'length')")),
        "WriteStream", *done, total, true);
  }
  return absl::OkStatus();
}

grpc::Status FfiService::ReadStreamBytes(grpc::ServerContext* context,
                                         BytesStream& stream) {
  return ToGrpcStatus(DoReadStream(*context, stream));
}

absl::Status FfiService::DoReadStream(grpc::ServerContext& context,
                                      BytesStream& stream) {
  grpc::ByteBuffer message;
  if (!stream.Read(&message)) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "the ReadStream request did not arrive");
  }
  v1::ReadStreamRequest request;
  RETURN_IF_ERROR(ParsedMessage(message, &request));
  ASSIGN_OR_RETURN(SessionLease session,
                   UseSession(context, request.session()));
  if (!request.has_pointer()) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "field 'pointer' is required: a memory "
                                "handle (plus offset) or an address");
  }
  const uint64_t piece =
      request.piece_bytes() == 0 ? kStreamPiece : request.piece_bytes();
  if (piece > kMaxStreamPiece) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat("field 'piece_bytes' is ", piece, ": at most ",
                     kMaxStreamPiece, " (0 means ", kStreamPiece, ")"));
  }
  const WorkerProcess* const worker = &session->worker();
  RETURN_IF_ERROR(StillServing(*session, worker));
  ASSIGN_OR_RETURN(const uint64_t total,
                   CheckWholeRange(context, *session, request.pointer(),
                                   request.length(), /*write=*/false));
  v1::ReadRequest read;
  read.set_session(request.session());
  uint64_t sent = 0;
  while (sent < total) {
    const uint64_t length = std::min(piece, total - sent);
    *read.mutable_pointer() = Advanced(request.pointer(), sent);
    read.set_length(length);
    grpc::ByteBuffer answer;
    // A client that cancelled gets no further piece read for it.
    absl::Status status = context.IsCancelled()
                              ? ReaderGoneError()
                              : StillServing(*session, worker);
    if (status.ok()) {
      status = ReadAt(context, *session, read, &answer, /*lend_arena=*/true);
    }
    if (status.ok() && !stream.Write(answer)) status = ReaderGoneError();
    RETURN_IF_ERROR(AfterBytes(status, "ReadStream", sent, total, false));
    sent += length;
  }
  return absl::OkStatus();
}

grpc::Status FfiService::Free(grpc::ServerContext* context,
                              const v1::FreeRequest* request,
                              v1::FreeResponse* response) {
  return ToGrpcStatus(DoFree(*context, *request));
}

absl::Status FfiService::DoFree(grpc::ServerContext& context,
                                const v1::FreeRequest& request) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  RETURN_IF_ERROR(Required(request.memory(), "memory",
                           "the handle returned by Allocate"));
  // Forgotten first, so no Read/Write is served from the arena once the
  // worker may hand the block out again.
  if (std::shared_ptr<SessionArena> arena = session->arena()) {
    arena->Forget(request.memory());
  }
  WorkerRequest forward;
  *forward.mutable_free() = request;
  forward.mutable_free()->clear_session();
  ASSIGN_OR_RETURN(
      WorkerResponse answer,
      Forward(context, *session, std::move(forward),
              absl::StrCat("freeing '", request.memory(), "'")));
  return CheckResult(answer, WorkerResponse::kFree, "Free");
}

// ---------------------------------------------------------------- callbacks

grpc::Status FfiService::RegisterCallback(
    grpc::ServerContext* context, const v1::RegisterCallbackRequest* request,
    v1::RegisterCallbackResponse* response) {
  return ToGrpcStatus(DoRegisterCallback(*context, *request, response));
}

absl::Status FfiService::DoRegisterCallback(
    grpc::ServerContext& context, const v1::RegisterCallbackRequest& request,
    v1::RegisterCallbackResponse* response) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  ASSIGN_OR_RETURN(v1::RegisterCallbackRequest parsed,
                   ParsedRegistration(*session, request));
  WorkerRequest forward;
  const std::string description =
      absl::StrCat("registering callback '", parsed.name(), "'");
  *forward.mutable_register_callback() = std::move(parsed);
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   Forward(context, *session, std::move(forward),
                           description));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kRegisterCallback,
                              "RegisterCallback"));
  *response = std::move(*answer.mutable_register_callback());
  return absl::OkStatus();
}

grpc::Status FfiService::ReleaseCallback(
    grpc::ServerContext* context, const v1::ReleaseCallbackRequest* request,
    v1::ReleaseCallbackResponse* response) {
  return ToGrpcStatus(DoReleaseCallback(*context, *request));
}

absl::Status FfiService::DoReleaseCallback(
    grpc::ServerContext& context, const v1::ReleaseCallbackRequest& request) {
  ASSIGN_OR_RETURN(SessionLease session, UseSession(context, request.session()));
  RETURN_IF_ERROR(Required(request.callback(), "callback",
                           "the handle returned by RegisterCallback"));
  WorkerRequest forward;
  *forward.mutable_release_callback() = request;
  forward.mutable_release_callback()->clear_session();
  ASSIGN_OR_RETURN(
      WorkerResponse answer,
      Forward(context, *session, std::move(forward),
              absl::StrCat("releasing callback '", request.callback(), "'")));
  return CheckResult(answer, WorkerResponse::kReleaseCallback,
                     "ReleaseCallback");
}

// ------------------------------------------------------------ ownership

grpc::Status FfiService::Adopt(grpc::ServerContext* context,
                               const v1::AdoptRequest* request,
                               v1::AdoptResponse* response) {
  return ToGrpcStatus(DoAdopt(*context, *request, response));
}

absl::Status FfiService::DoAdopt(grpc::ServerContext& context,
                                 const v1::AdoptRequest& request,
                                 v1::AdoptResponse* response) {
  Caller caller;
  ASSIGN_OR_RETURN(SessionLease session,
                   UseSession(context, request.session(), &caller));
  if (options_.access != nullptr) {
    RETURN_IF_ERROR(options_.access->CheckSymbol(
        caller, request.destructor().empty() ? "free" : request.destructor()));
  }
  if (!request.has_pointer()) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "field 'pointer' is required: the memory "
                                "handle or address to adopt");
  }
  WorkerRequest forward;
  *forward.mutable_adopt() = request;
  forward.mutable_adopt()->clear_session();
  ASSIGN_OR_RETURN(
      WorkerResponse answer,
      Forward(context, *session, std::move(forward),
              absl::StrCat("adopting ", PointerDescription(request.pointer()))));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kAdopt, "Adopt"));
  *response = std::move(*answer.mutable_adopt());
  return absl::OkStatus();
}

grpc::Status FfiService::ResolveVariable(
    grpc::ServerContext* context, const v1::ResolveVariableRequest* request,
    v1::ResolveVariableResponse* response) {
  return ToGrpcStatus(DoResolveVariable(*context, *request, response));
}

absl::Status FfiService::DoResolveVariable(
    grpc::ServerContext& context, const v1::ResolveVariableRequest& request,
    v1::ResolveVariableResponse* response) {
  Caller caller;
  ASSIGN_OR_RETURN(SessionLease session,
                   UseSession(context, request.session(), &caller));
  RETURN_IF_ERROR(Required(request.library(), "library",
                           "the handle returned by LoadLibrary"));
  WorkerRequest forward;
  v1::ResolveVariableRequest* resolve = forward.mutable_resolve_variable();
  resolve->set_library(request.library());
  std::string symbol = request.symbol();
  switch (request.variable_type_case()) {
    case v1::ResolveVariableRequest::kDeclaration: {
      absl::StatusOr<ffi::Declarations> parsed = ffi::ParseDeclarations(
          request.declaration(), session->declarations().types());
      if (!parsed.ok()) {
        return WithContext(parsed.status(),
                           absl::StrCat("declaration '", request.declaration(),
                                        "': "));
      }
      if (parsed->variables.size() != 1 || !parsed->functions.empty()) {
        return InvalidArgumentError(
            v1::ERROR_REASON_DECLARATION_INVALID,
            absl::StrCat("declaration '", request.declaration(),
                         "' must declare exactly one variable, such as "
                         "'extern int counter;'"));
      }
      if (symbol.empty()) symbol = parsed->variables[0].name();
      *resolve->mutable_type() = parsed->variables[0].type();
      break;
    }
    case v1::ResolveVariableRequest::kType:
      *resolve->mutable_type() = request.type();
      break;
    case v1::ResolveVariableRequest::VARIABLE_TYPE_NOT_SET: {
      std::optional<v1::VariableDeclaration> declared =
          symbol.empty() ? std::nullopt
                         : session->declarations().Variable(symbol);
      if (!declared.has_value()) {
        return InvalidArgumentError(
            v1::ERROR_REASON_INVALID_REQUEST,
            "one of the fields 'declaration' (such as 'extern int "
            "counter;') or 'type' is required, unless 'symbol' names a "
            "variable declared in the session with ParseDeclarations");
      }
      *resolve->mutable_type() = declared->type();
      break;
    }
  }
  RETURN_IF_ERROR(Required(symbol, "symbol", "the variable's symbol name"));
  if (options_.access != nullptr) {
    RETURN_IF_ERROR(options_.access->CheckSymbol(caller, symbol));
  }
  RETURN_IF_ERROR(session->declarations().Resolve(*resolve->mutable_type()));
  resolve->set_symbol(symbol);
  ASSIGN_OR_RETURN(WorkerResponse answer,
                   Forward(context, *session, std::move(forward),
                           absl::StrCat("resolving variable '", symbol, "'")));
  RETURN_IF_ERROR(CheckResult(answer, WorkerResponse::kResolveVariable,
                              "ResolveVariable"));
  *response = std::move(*answer.mutable_resolve_variable());
  return absl::OkStatus();
}

}  // namespace ffid::server
