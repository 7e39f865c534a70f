// CallStreams: the C++ client's synchronous calls on CallStream streams.
//
// A unary Call RPC pays gRPC's whole per-RPC cost (a new HTTP/2 stream,
// headers and trailers both ways); a call on a CallStream kept open costs
// one message each way. CallStreams keeps a few such streams open to one
// daemon and lends one to each synchronous call: the calling thread writes
// its request and reads the answer itself, so no other thread is woken.
//
// Call() answers nullopt, without having run the call, when no stream can
// take it: all are busy, the daemon has no CallStream method (an older
// daemon: UNIMPLEMENTED, remembered for good), or it refused a new stream
// (its limit of open streams: then no stream is tried for a while, 1 s
// doubling up to 64 s, so a full daemon does not see a refused stream per
// call). The caller then makes the unary Call RPC. Only a stream that has
// answered nothing yet counts as refused: once a call may have run, its
// failure is the call's.
//
// Owned by one Session; the stub is shared. Thread-safe: concurrent calls
// get different streams. Close() (and the destructor) end the idle streams;
// no call may be in progress at destruction.
#ifndef FFID_CLIENTS_CPP_FFID_CALL_STREAMS_H_
#define FFID_CLIENTS_CPP_FFID_CALL_STREAMS_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ffid/v1/ffid.grpc.pb.h"

namespace ffid::client {

// Streams one session's CallStreams keeps open at most (it opens a second
// only for a second call at the same time); calls beyond them take the
// unary RPC.
inline constexpr int kStreamsPerSession = 4;

class CallStreams {
 public:
  explicit CallStreams(std::shared_ptr<v1::Ffi::Stub> stub);
  ~CallStreams();
  CallStreams(const CallStreams&) = delete;
  CallStreams& operator=(const CallStreams&) = delete;

  // Runs `request` on a stream: the call's response or its error (the same
  // statuses as the Call RPC's; UNAVAILABLE if the stream broke during the
  // call). nullopt if no stream took the request (it did not run).
  [[nodiscard]] std::optional<absl::StatusOr<v1::CallResponse>> Call(
      const v1::CallStreamRequest& request) ABSL_LOCKS_EXCLUDED(mu_);

  // Ends the idle streams; later calls answer nullopt. For Session::Delete.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Stream;

  // An idle stream, or a new one; nullptr when none may be opened.
  [[nodiscard]] std::unique_ptr<Stream> Take() ABSL_LOCKS_EXCLUDED(mu_);
  void Return(std::unique_ptr<Stream> stream) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends `stream` (it broke or was refused) and gives the status it ended
  // with; `*refused` says whether the daemon refused it before running
  // anything on it (then no stream is tried for a while).
  [[nodiscard]] grpc::Status End(std::unique_ptr<Stream> stream,
                                 bool* refused) ABSL_LOCKS_EXCLUDED(mu_);

  const std::shared_ptr<v1::Ffi::Stub> stub_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Stream>> idle_ ABSL_GUARDED_BY(mu_);
  // Streams open now, idle or lent.
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  // The daemon has no CallStream method: never try again.
  bool unsupported_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // After a refusal no new stream is opened before refused_until_; the
  // wait doubles with each refusal in a row.
  absl::Time refused_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
};

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_CALL_STREAMS_H_
