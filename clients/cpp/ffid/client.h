// The C++ client of the ffid daemon.
//
// A Client is a gRPC channel to one daemon. A Session is one session on it
// (one worker process on the daemon's side): it loads libraries, resolves
// functions, calls them and manages native memory. A Session keeps a Connect
// stream open for as long as it lives, so the daemon knows the client is
// still there, and deletes its session when destroyed.
//
// Ownership: Connect() and CreateSession() return objects the caller owns. A
// Session shares the channel with its Client and may outlive it. Library,
// Function and Memory are plain values naming handles; they are valid only
// within the Session that issued them and until the session ends (or, for
// memory, until Free).
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

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ffid/v1/errors.pb.h"
#include "ffid/v1/ffid.grpc.pb.h"
#include "ffid/v1/ffid.pb.h"
#include "ffid/v1/types.pb.h"
#include "grpcpp/grpcpp.h"

namespace ffid::client {

// absl::Status payload type URLs under which errors carry their details (the
// same URLs the server uses in google.rpc.Status.details).
inline constexpr absl::string_view kErrorInfoTypeUrl =
    "type.googleapis.com/google.rpc.ErrorInfo";
inline constexpr absl::string_view kCrashReportTypeUrl =
    "type.googleapis.com/ffid.v1.CrashReport";
// The ErrorInfo domain of ffid's errors.
inline constexpr absl::string_view kErrorDomain = "ffid.dev";

// The daemon's default address: $FFID_ADDRESS if set, else
// unix:$XDG_RUNTIME_DIR/ffid/ffid.sock if XDG_RUNTIME_DIR is set, else
// unix:/tmp/ffid-$UID/ffid.sock.
std::string DefaultAddress();

// The ErrorInfo reason of `status` ("SYMBOL_NOT_FOUND"), or "" if it has none.
std::string ErrorReason(const absl::Status& status);

// The crash report attached to `status`, if the status reports a worker crash.
std::optional<v1::CrashReport> CrashReportOf(const absl::Status& status);

// Converts a gRPC status to an absl::Status with the same code and message;
// every google.rpc.Status detail becomes a payload under its type URL.
[[nodiscard]] absl::Status StatusFromGrpc(const grpc::Status& status);

// Builds an error that carries an ErrorInfo with `reason`, as the server's
// errors do; for errors detected on the client's side.
[[nodiscard]] absl::Status ErrorWithReason(absl::StatusCode code, absl::string_view reason,
                             absl::string_view message);

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
};

// Options of CreateSession.
struct SessionOptions {
  // How long the daemon keeps the session without requests while no stream
  // is attached; zero means the server's default.
  absl::Duration idle_timeout = absl::ZeroDuration();
  // Keep a Connect stream attached for the session's lifetime (the daemon
  // deletes the session when the stream closes).
  bool attach_stream = true;
};

class Session;

class Client {
 public:
  // Connects to the daemon at `address` ("unix:/path" or "host:port",
  // plaintext), waiting at most `timeout` for the connection. Fails with
  // UNAVAILABLE if the daemon cannot be reached.
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
  // Reads `length` bytes at `offset` of a memory handle (owned or borrowed);
  // length 0 reads an owned block to its end.
  absl::StatusOr<std::string> Read(absl::string_view memory, uint64_t offset,
                                   uint64_t length) const;
  // Reads from any pointer (handle + offset, or a raw address).
  absl::StatusOr<std::string> Read(const v1::PointerValue& pointer,
                                   uint64_t length) const;
  // Writes `data` at `offset` of a memory handle.
  [[nodiscard]] absl::Status Write(absl::string_view memory, uint64_t offset,
                                   absl::string_view data) const;
  // Writes to any pointer (handle + offset, or a raw address).
  [[nodiscard]] absl::Status Write(const v1::PointerValue& pointer,
                                   absl::string_view data) const;
  // Releases owned memory.
  [[nodiscard]] absl::Status Free(absl::string_view memory) const;

 private:
  friend class Client;
  Session(std::shared_ptr<v1::Ffi::Stub> stub, const v1::Session& session);

  // Opens the Connect stream and waits for the daemon to confirm it.
  [[nodiscard]] absl::Status Attach();
  void CloseStream();

  std::shared_ptr<v1::Ffi::Stub> stub_;
  const std::string id_;
  const int32_t worker_pid_;

  absl::Mutex mu_;
  bool deleted_ ABSL_GUARDED_BY(mu_) = false;
  // The Connect stream; the daemon deletes the session when it closes.
  std::unique_ptr<grpc::ClientContext> stream_context_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::ConnectRequest, v1::ConnectResponse>>
      stream_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_CLIENT_H_
