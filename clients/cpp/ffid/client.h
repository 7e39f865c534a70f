// The C++ client of the ffid daemon.
//
// A Client is a gRPC channel to one daemon. A Session is one session on it
// (one worker process on the daemon's side): it loads libraries, resolves
// functions, calls them and manages native memory. A Session keeps a Connect
// stream open for as long as it lives, so the daemon knows the client is
// still there, and deletes its session when destroyed. It reads the stream
// only while something can arrive there (a CallAsync's result; once a
// callback is registered, invocations; in a RESTART session, restart
// notices): an idle reader would be gRPC's poller and delay every other
// call's answer by a thread hand-off.
//
// Ownership: Connect() and CreateSession() return objects the caller owns. A
// Session shares the channel with its Client and may outlive it. Library,
// Function and Memory are plain values naming handles; they are valid only
// within the Session that issued them and until the session ends (or, for
// memory, until Free).
//
// Callbacks: Session::RegisterCallback turns a std::function into a callback
// handle that native code can call (pass Callback::value() wherever a
// function pointer is expected). Invocations arrive on the session's Connect
// stream and run on the session's callback threads (one per invocation in
// progress, so invocations from several native threads run concurrently).
// Inside a callback, make calls through the CallbackContext: they run on the
// native thread that waits for the callback, so a callback may call back
// into the library, to any depth. (A plain Session::Call from inside a
// callback would wait behind the call that is running the callback.)
//
// Pipelining: CallAsync sends a call on the Connect stream and returns at
// once; many may be in flight. Call without a timeout goes on a CallStream
// kept open (clients/cpp/ffid/call_streams.h), which costs less than a
// unary RPC; with a timeout, or against a daemon without CallStream, it is
// the unary Call RPC.
//
// Thread-safety: Client and Session are thread-safe (every method may be
// called concurrently from several threads) except that a Session must not be
// destroyed while another thread uses it.
//
// Errors: every method returns the server's status as an absl::Status with
// the same code and message. The reason the server gave (ErrorInfo.reason,
// e.g. "SYMBOL_NOT_FOUND") is ErrorReason(status); a worker's crash report is
// CrashReportOf(status).
#ifndef FFID_CLIENTS_CPP_FFID_CLIENT_H_
#define FFID_CLIENTS_CPP_FFID_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "clients/cpp/ffid/arena.h"
#include "clients/cpp/ffid/call_streams.h"
#include "clients/cpp/ffid/connection.h"
#include "ffid/v1/errors.pb.h"
#include "ffid/v1/ffid.grpc.pb.h"
#include "ffid/v1/ffid.pb.h"
#include "ffid/v1/types.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"

namespace ffid::client {

// absl::Status payload type URLs under which errors carry their details (the
// same URLs the server uses in google.rpc.Status.details).
inline constexpr absl::string_view kErrorInfoTypeUrl =
    "type.googleapis.com/google.rpc.ErrorInfo";
inline constexpr absl::string_view kCrashReportTypeUrl =
    "type.googleapis.com/ffid.v1.CrashReport";
inline constexpr absl::string_view kCallResponseTypeUrl =
    "type.googleapis.com/ffid.v1.CallResponse";
// The ErrorInfo domain of ffid's errors.
inline constexpr absl::string_view kErrorDomain = "ffid.dev";

// The ErrorInfo reason of `status` ("SYMBOL_NOT_FOUND"), or "" if it has none.
std::string ErrorReason(const absl::Status& status);

// The crash report attached to `status`, if the status reports a worker crash.
std::optional<v1::CrashReport> CrashReportOf(const absl::Status& status);

// For a RESOURCE_LIMIT error: the limit reached ("open_files",
// "address_space_bytes", "cpu_seconds", ...), from the ErrorInfo metadata
// or the crash report; "" for any other error.
std::string LimitOf(const absl::Status& status);

// For a call that reached a limit without killing the worker
// (RESOURCE_LIMIT naming "open_files" or "address_space_bytes"): what the
// function returned, with errno_value set.
std::optional<v1::CallResponse> LimitedCallOf(const absl::Status& status);

// Converts a gRPC status to an absl::Status with the same code and message;
// every google.rpc.Status detail becomes a payload under its type URL.
[[nodiscard]] absl::Status StatusFromGrpc(const grpc::Status& status);

// Converts a google.rpc.Status (as a failed StreamResult carries it) the same
// way.
[[nodiscard]] absl::Status StatusFromRpcStatus(
    const google::rpc::Status& status);
// The error a stream's answer carries as a serialized google.rpc.Status
// (StreamResult and CallStreamResponse `error_status`): OK when
// `serialized` is empty; INTERNAL, naming `stream`, when it does not parse
// or says OK.
[[nodiscard]] absl::Status StatusFromErrorStatus(absl::string_view serialized,
                                                 absl::string_view stream);

// Builds an error that carries an ErrorInfo with `reason`, as the server's
// errors do; for errors detected on the client's side.
[[nodiscard]] absl::Status ErrorWithReason(absl::StatusCode code, absl::string_view reason,
                             absl::string_view message);

// The index of the batch step that `status` (a failed Session::Batch)
// reports, or -1 if it is not a batch step's failure.
int BatchFailedStep(const absl::Status& status);

// For a failed call_columns step: the index of the call in it that failed
// (counted from 0), or -1 if `status` names no such call.
int BatchFailedCall(const absl::Status& status);

// A loaded library.
struct Library {
  // The library handle.
  std::string handle;
  // The real path the daemon loaded.
  std::string path;
};

// A resolved function.
struct Function {
  // The function handle.
  std::string handle;
  // The symbol it was resolved from.
  std::string symbol;
  // The signature it was prepared with.
  v1::FunctionType type;
};

// A block of native memory owned by the session.
struct Memory {
  // The memory handle.
  std::string handle;
  // Its size in bytes.
  uint64_t size = 0;
  // Its address in the worker (informational).
  uint64_t address = 0;
  // Whether it lives in the session's shared-memory arena, and where
  // (Arena::Bytes gives its bytes in this process).
  bool in_arena = false;
  uint64_t arena_offset = 0;
};

// Options of one Call.
struct CallOptions {
  // Ask for errno right after the native call (CallResponse.errno_value).
  bool capture_errno = false;
  // For a variadic function: the types of the arguments after the fixed
  // parameters.
  std::vector<v1::TypeDescriptor> variadic_types;
  // Deadline of the RPC, from when Call starts.
  absl::Duration timeout = absl::InfiniteDuration();
  // For a function returning `char *`: leave the pointer borrowed
  // (UNSPECIFIED/BORROW, its handle in CallResponse.result_pointer), ADOPT
  // it (released by `result_destructor` on Free or at the session's end) or
  // RELEASE it at once (strdup-like functions).
  v1::ResultOwnership result_ownership = v1::RESULT_OWNERSHIP_UNSPECIFIED;
  // With ADOPT or RELEASE: the destructor's symbol; empty means `free`.
  std::string result_destructor;
};

// A library's global variable, as ResolveVariable found it.
struct Variable {
  // A borrowed memory handle of the variable's size (bounds-checked; Free
  // refuses it).
  std::string memory;
  // The symbol.
  std::string symbol;
  // Its type, laid out.
  v1::TypeDescriptor type;
  // Its address in the worker (informational).
  uint64_t address = 0;

  // The pointer to the variable, for ReadValue / WriteValue.
  v1::PointerValue pointer() const {
    v1::PointerValue result;
    result.set_handle(memory);
    return result;
  }
};

// Options of AllocateValue.
struct TypedAllocation {
  // How many values of the type (an array of them); 0 or 1 means one.
  uint64_t count = 1;
  // The initial value (of the type); unset means zero-filled.
  std::optional<v1::Value> initial_value;
  // For a struct ending in a flexible array member: room for this many of
  // its elements.
  uint64_t flexible_length = 0;
};

// A registered callback.
struct Callback {
  // The callback handle.
  std::string handle;
  // The signature it was prepared with.
  v1::FunctionType type;
  // The address of its native entry point in the worker (informational).
  uint64_t address = 0;

  // The argument value that passes this callback as a function pointer.
  v1::Value value() const {
    v1::Value result;
    result.set_callback_handle(handle);
    return result;
  }
};

// One call of a callback by native code.
struct Invocation {
  // The invocation id (unique in the session).
  uint64_t id = 0;
  // The callback handle that was called.
  std::string callback;
  // The arguments; pointers are borrowed memory handles.
  std::vector<v1::Value> arguments;
  // The Linux thread id of the native thread that called.
  int64_t native_thread_id = 0;
};

class Session;

// What a running callback may do besides computing its result: make calls
// that run inside it (on the native thread waiting for it). Valid only
// while the callback runs; used from the callback's thread.
class CallbackContext {
 public:
  const Invocation& invocation() const { return invocation_; }
  const std::vector<v1::Value>& arguments() const {
    return invocation_.arguments;
  }

  // As Session::Call, Read and Write, but run on the waiting native thread.
  absl::StatusOr<v1::CallResponse> Call(const Function& function,
                                        std::vector<v1::Value> arguments,
                                        const CallOptions& options = {});
  absl::StatusOr<std::string> Read(const v1::PointerValue& pointer,
                                   uint64_t length);
  [[nodiscard]] absl::Status Write(const v1::PointerValue& pointer,
                                   absl::string_view data);

 private:
  friend class Session;
  CallbackContext(Session& session, Invocation invocation)
      : session_(session), invocation_(std::move(invocation)) {}

  Session& session_;
  const Invocation invocation_;
};

// A callback's body: returns the result (an unset Value for void) or an
// error, whose message the native call then reports as CALLBACK_FAILED.
using CallbackFunction =
    std::function<absl::StatusOr<v1::Value>(CallbackContext& context)>;

// Options of RegisterCallback.
struct CallbackOptions {
  // What happens when the callback fails (error, timeout, disconnect);
  // unspecified means RETURN_DEFAULT.
  v1::CallbackFailurePolicy failure_policy =
      v1::CALLBACK_FAILURE_POLICY_UNSPECIFIED;
  // What the native caller gets on failure; unset means zero.
  std::optional<v1::Value> default_result;
  // How long a native thread waits for one invocation's answer; zero means
  // the server's default (60 s).
  absl::Duration timeout = absl::ZeroDuration();
  // A name for messages; defaults to the declaration's.
  std::string name;
};

// Options of CreateSession.
struct SessionOptions {
  // How long the daemon keeps the session without requests while no stream
  // is attached; zero means the server's default.
  absl::Duration idle_timeout = absl::ZeroDuration();
  // Keep a Connect stream attached for the session's lifetime (the daemon
  // deletes the session when the stream closes).
  bool attach_stream = true;
  // The worker's resource limits; zero fields take the server's defaults.
  v1::ResourceLimits limits;
  // The worker's sandbox policy (network access).
  v1::SandboxPolicy sandbox;
  // What happens when the worker dies; UNSPECIFIED means NEVER.
  v1::RestartPolicy restart_policy = v1::RESTART_POLICY_UNSPECIFIED;
};

class Session;

class Client {
 public:
  // Connects to the daemon as `options` say (address, TLS or mutual TLS,
  // bearer token; clients/cpp/ffid/connection.h), waiting at most
  // `options.timeout` for the connection. Fails with INVALID_ARGUMENT for
  // contradictory or unreadable settings, with UNAVAILABLE (saying what to
  // check) if the daemon cannot be reached or the TLS handshake fails.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const ConnectOptions& options);

  // Connects to the daemon at `address` ("unix:/path" or "host:port"),
  // waiting at most `timeout`; the other settings come from the environment
  // (FFID_TOKEN, FFID_CA, ...: connection.h).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      std::string address = DefaultAddress(),
      absl::Duration timeout = absl::Seconds(10));

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Creates a session (and its worker) and attaches a Connect stream to it.
  absl::StatusOr<std::unique_ptr<Session>> CreateSession(
      const SessionOptions& options = {});

  const std::string& address() const { return address_; }
  // The raw stub, for RPCs this class does not wrap. Owned by the Client.
  v1::Ffi::Stub& stub() const { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

 private:
  Client(std::string address, std::shared_ptr<grpc::Channel> channel);

  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<v1::Ffi::Stub> stub_;
};

class Session {
 public:
  // Deletes the session on the daemon (ending its worker) unless Delete() was
  // called, then closes the Connect stream.
  ~Session();

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // The session id.
  const std::string& id() const { return id_; }
  // The worker's process id when the session was created.
  int32_t worker_pid() const { return worker_pid_; }

  // The session's current state as the daemon sees it.
  absl::StatusOr<v1::Session> Get() const;

  // Deletes the session now; later calls fail with SESSION_NOT_FOUND.
  [[nodiscard]] absl::Status Delete();

  // Loads a library by path or soname.
  absl::StatusOr<Library> LoadLibrary(absl::string_view name) const;
  // Unloads a library; its function handles become invalid.
  [[nodiscard]] absl::Status UnloadLibrary(const Library& library) const;

  // Parses C declarations into type descriptors.
  absl::StatusOr<v1::ParseDeclarationsResponse> ParseDeclarations(
      absl::string_view source) const;

  // Resolves the function that `declaration` (one C prototype, e.g.
  // "double cos(double)") names in `library`.
  absl::StatusOr<Function> ResolveFunction(const Library& library,
                                           absl::string_view declaration) const;
  // Resolves `symbol` in `library` with the signature `type`.
  absl::StatusOr<Function> ResolveFunction(const Library& library,
                                           absl::string_view symbol,
                                           const v1::FunctionType& type) const;

  // Calls `function` with `arguments` (one per fixed parameter, then the
  // variadic ones).
  absl::StatusOr<v1::CallResponse> Call(const Function& function,
                                        std::vector<v1::Value> arguments,
                                        const CallOptions& options = {}) const;

  // Allocates `size` bytes of zero-filled native memory, the first bytes set
  // to `initial_bytes` (which must not be longer than `size`).
  absl::StatusOr<Memory> Allocate(uint64_t size,
                                  absl::string_view initial_bytes = "") const;
  // The same, placed as `placement` says: ALLOCATION_PLACEMENT_ARENA puts
  // it in the session's shared-memory arena (see MapArena).
  absl::StatusOr<Memory> Allocate(uint64_t size, absl::string_view initial_bytes,
                                  v1::AllocationPlacement placement) const;

  // Maps the session's shared-memory arena into this process (the daemon
  // must be on this host, listening on a unix socket); made on the first
  // call, the same Arena afterwards. See clients/cpp/ffid/arena.h.
  absl::StatusOr<std::shared_ptr<Arena>> MapArena();
  // Reads `length` bytes at `offset` of a memory handle (owned or borrowed);
  // length 0 reads an owned block to its end.
  absl::StatusOr<std::string> Read(absl::string_view memory, uint64_t offset,
                                   uint64_t length) const;
  // Reads from any pointer (handle + offset, or a raw address). More than
  // 1 MiB comes on one ReadStream (a daemon without it: 1 MiB Read RPCs,
  // several in flight); a failure says which bytes had arrived.
  absl::StatusOr<std::string> Read(const v1::PointerValue& pointer,
                                   uint64_t length) const;
  // As Read of `out.size()` bytes, but into the caller's buffer: beyond
  // 1 MiB each piece is copied into it as it arrives and no buffer of the
  // whole size is allocated, so a caller reading often reuses one. On
  // failure the contents of `out` are unspecified (the status says what
  // failed, as Read's does). An empty `out` reads nothing and asks the
  // daemon nothing.
  [[nodiscard]] absl::Status ReadInto(absl::string_view memory,
                                      uint64_t offset,
                                      absl::Span<char> out) const;
  [[nodiscard]] absl::Status ReadInto(const v1::PointerValue& pointer,
                                      absl::Span<char> out) const;
  // Writes `data` at `offset` of a memory handle.
  [[nodiscard]] absl::Status Write(absl::string_view memory, uint64_t offset,
                                   absl::string_view data) const;
  // Writes to any pointer (handle + offset, or a raw address). More than
  // 1 MiB goes on one WriteStream (a daemon without it: 1 MiB Write RPCs,
  // the last first); a write too long for owned memory writes nothing, and
  // a failure midway says which bytes were written.
  [[nodiscard]] absl::Status Write(const v1::PointerValue& pointer,
                                   absl::string_view data) const;
  // Releases owned memory.
  [[nodiscard]] absl::Status Free(absl::string_view memory) const;

  // Typed memory. A type is a descriptor; NamedType("struct point") or
  // NamedType("int[16]") (values.h) names one over the session's
  // declarations. Values are checked and laid out by the daemon.
  //
  // Allocates zero-filled memory for a value of `type` (see
  // TypedAllocation), owned by the session.
  absl::StatusOr<Memory> AllocateValue(const v1::TypeDescriptor& type,
                                       const TypedAllocation& options = {})
      const;
  // Reads one value of `type` at `pointer`. A union comes back with every
  // member decoded (RecordValue.union_bytes has its bytes); a misaligned
  // address is MISALIGNED_ACCESS, a bad borrowed one BAD_ADDRESS.
  absl::StatusOr<v1::Value> ReadValue(const v1::PointerValue& pointer,
                                      const v1::TypeDescriptor& type,
                                      uint64_t flexible_length = 0) const;
  // Writes `value` as `type` at `pointer`.
  [[nodiscard]] absl::Status WriteValue(const v1::PointerValue& pointer,
                                        const v1::TypeDescriptor& type,
                                        const v1::Value& value,
                                        uint64_t flexible_length = 0) const;
  // Takes ownership of a pointer native code returned (a borrowed handle or
  // an address): `destructor` (empty: `free`), looked up in `library` if
  // given and then globally, releases it on Free or at the session's end.
  // `size` > 0 makes Read/Write of it bounds-checked.
  absl::StatusOr<Memory> Adopt(const v1::PointerValue& pointer,
                               absl::string_view destructor = "",
                               const Library* library = nullptr,
                               uint64_t size = 0) const;
  // Resolves a global variable of `library`: `symbol_or_declaration` is a
  // variable the session declared (`fxt_counter`, from ParseDeclarations)
  // or a C declaration (`extern int counter;`).
  absl::StatusOr<Variable> ResolveVariable(
      const Library& library, absl::string_view symbol_or_declaration) const;
  // As above, with the type given.
  absl::StatusOr<Variable> ResolveVariable(const Library& library,
                                           absl::string_view symbol,
                                           const v1::TypeDescriptor& type) const;

  // Registers `function` as a callback with the signature `declaration`
  // (one C prototype, e.g. "int compare(const void *a, const void *b)").
  // Needs the session's Connect stream (SessionOptions::attach_stream).
  absl::StatusOr<Callback> RegisterCallback(absl::string_view declaration,
                                            CallbackFunction function,
                                            const CallbackOptions& options = {});
  // As above, with the signature as a descriptor (e.g. from
  // ParseDeclarations, for struct types declared there).
  absl::StatusOr<Callback> RegisterCallback(const v1::FunctionType& type,
                                            CallbackFunction function,
                                            const CallbackOptions& options = {});
  // Releases a callback; native calls of it after this fail (reported).
  [[nodiscard]] absl::Status ReleaseCallback(const Callback& callback);

  // Runs `steps` in one round trip, in order, in the session's worker (see
  // ffid.v1.Batch): a step may take arguments from earlier steps' results
  // (BatchStep.references). A failed step fails the whole call with that
  // step's error; BatchFailedStep(status) says which step it was.
  absl::StatusOr<v1::BatchResponse> Batch(std::vector<v1::BatchStep> steps,
                                          absl::Duration timeout =
                                              absl::InfiniteDuration()) const;

  // Sends a call on the Connect stream and returns at once; the future
  // gets the result. Many may be in flight; they run in the order sent.
  // `options.timeout` does not apply (the call ends with its answer or the
  // session).
  std::future<absl::StatusOr<v1::CallResponse>> CallAsync(
      const Function& function, std::vector<v1::Value> arguments,
      const CallOptions& options = {});

  // Batch() sent on the Connect stream (StreamCall.batch) and returning at
  // once: the batch runs in order with the stream's other calls, without a
  // unary round trip of its own. The future gets the response, or the
  // failing step's error (BatchFailedStep works on it).
  std::future<absl::StatusOr<v1::BatchResponse>> BatchAsync(
      std::vector<v1::BatchStep> steps);

 private:
  friend class Client;
  friend class CallbackContext;
  Session(std::shared_ptr<v1::Ffi::Stub> stub,
          std::shared_ptr<grpc::Channel> channel, const v1::Session& session);

  // Opens the Connect stream and waits for the daemon to confirm it.
  [[nodiscard]] absl::Status Attach();
  void CloseStream();

  absl::StatusOr<Callback> Register(v1::RegisterCallbackRequest request,
                                    CallbackFunction function,
                                    const CallbackOptions& options);
  // Runs once with a stream call's result, or with the error if the stream
  // is gone: on the stream's reader thread with stream_mu_ held (it must
  // not block or take stream_mu_), or on the sending thread if the call
  // never left.
  using StreamCompletion =
      absl::AnyInvocable<void(absl::StatusOr<v1::StreamResult>)>;
  // Sends `call` (its tag is assigned here) on the stream; `done` gets the
  // StreamResult, or the error if the stream is gone.
  void SendStreamCall(v1::StreamCall call, StreamCompletion done);
  // The same, with the result delivered to the returned future.
  std::future<absl::StatusOr<v1::StreamResult>> SendStreamCall(
      v1::StreamCall call);
  [[nodiscard]] bool WriteToStream(const v1::ConnectRequest& request);
  // Queues a stream call for the writer thread (false once the stream is
  // closed). The writer sends the calls queued at the time together in
  // one message (ConnectRequest.calls), and lets gRPC hold a message while
  // more are queued behind it, so a burst of CallAsync leaves in a few
  // messages and writes, not one per call.
  [[nodiscard]] bool QueueForStream(v1::StreamCall call);
  void WriteLoop();
  // Reads the Connect stream while ReaderWantedLocked(), parked otherwise.
  void ReadLoop();
  // Whether anything can arrive on the Connect stream: a stream call's
  // result, an invocation of a callback registered here, a restart notice
  // of a RESTART session, or (once CloseStream began) the stream's end.
  bool ReaderWantedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(stream_mu_);
  // Completes the future of the stream call `result` answers (moved from).
  void DeliverLocked(v1::StreamResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stream_mu_);
  // Runs invocations on callback threads, starting one when all are busy.
  void Dispatch(Invocation invocation);
  void CallbackThread();
  void RunInvocation(Invocation invocation);

  std::shared_ptr<v1::Ffi::Stub> stub_;
  // Streams for Call (created with the session, thread-safe itself).
  const std::unique_ptr<CallStreams> call_streams_;
  // The stub's channel: big Reads and Writes go on it as raw bytes
  // (grpc::GenericStub), so their data is not copied into messages.
  std::shared_ptr<grpc::Channel> channel_;
  const std::string id_;
  const int32_t worker_pid_;
  // Set once the daemon answered a WriteStream or ReadStream with
  // UNIMPLEMENTED (a daemon older than them): big transfers then go as
  // unary pieces.
  mutable std::atomic<bool> pieces_only_{false};

  absl::Mutex mu_;
  bool deleted_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<Arena> arena_ ABSL_GUARDED_BY(mu_);
  // The Connect stream; the daemon deletes the session when it closes.
  std::unique_ptr<grpc::ClientContext> stream_context_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::ConnectRequest, v1::ConnectResponse>>
      stream_;
  // Serializes writes on stream_.
  absl::Mutex write_mu_;
  std::thread reader_;
  // Stream calls waiting for the writer thread.
  absl::Mutex outbox_mu_;
  std::deque<v1::StreamCall> outbox_ ABSL_GUARDED_BY(outbox_mu_);
  // Set by CloseStream (after which nothing is queued) or when a write
  // failed.
  bool outbox_closed_ ABSL_GUARDED_BY(outbox_mu_) = false;
  // The daemon said it takes packs of calls (SessionAttached.packed_calls);
  // an older one gets every call in a message of its own.
  bool pack_calls_ ABSL_GUARDED_BY(outbox_mu_) = false;
  absl::CondVar outbox_ready_;
  std::thread writer_;

  absl::Mutex stream_mu_;
  // Set when the stream's reader has ended: stream calls fail at once.
  bool stream_ended_ ABSL_GUARDED_BY(stream_mu_) = true;
  uint64_t next_tag_ ABSL_GUARDED_BY(stream_mu_) = 1;
  absl::flat_hash_map<uint64_t, StreamCompletion> in_flight_
      ABSL_GUARDED_BY(stream_mu_);
  std::map<std::string, std::shared_ptr<CallbackFunction>, std::less<>>
      callbacks_ ABSL_GUARDED_BY(stream_mu_);
  // Set by the first RegisterCallback, never cleared (an invocation may be
  // on its way after a release), and from the start in a RESTART session
  // (restart notices): the reader then reads without parking.
  bool listening_ ABSL_GUARDED_BY(stream_mu_) = false;
  // Set by CloseStream so that a parked reader wakes and sees the end.
  bool closing_ ABSL_GUARDED_BY(stream_mu_) = false;
  // Callback threads and their work.
  std::deque<Invocation> invocations_ ABSL_GUARDED_BY(stream_mu_);
  std::vector<std::thread> callback_threads_ ABSL_GUARDED_BY(stream_mu_);
  int idle_callback_threads_ ABSL_GUARDED_BY(stream_mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(stream_mu_) = false;
  absl::CondVar invocation_ready_;
};

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_CLIENT_H_
