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
// daemon: UNIMPLEMENTED, remembered for good), or it refused the stream
// (its limit of open streams). The caller then makes the unary Call RPC.
//
// Owned by one Session; the stub is shared. Thread-safe: concurrent calls
// get different streams. The destructor closes the idle streams; no call
// may be in progress then.
#ifndef FFID_CLIENTS_CPP_FFID_CALL_STREAMS_H_
#define FFID_CLIENTS_CPP_FFID_CALL_STREAMS_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ffid/v1/ffid.grpc.pb.h"

namespace ffid::client {

// Streams one CallStreams keeps open at most; calls beyond them at the same
// time take the unary RPC.
inline constexpr int kMaxCallStreams = 4;

class CallStreams {
 public:
  explicit CallStreams(std::shared_ptr<v1::Ffi::Stub> stub);
  ~CallStreams();
  CallStreams(const CallStreams&) = delete;
  CallStreams& operator=(const CallStreams&) = delete;

  // Runs `request` on a stream: the call's response or its error (the same
  // statuses as the Call RPC's; UNAVAILABLE if the stream broke during the
  // call). nullopt if no stream took the request (it did not run).
  std::optional<absl::StatusOr<v1::CallResponse>> Call(
      const v1::CallStreamRequest& request);

 private:
  struct Stream;

  // An idle stream, or a new one; nullptr when none may be opened.
  std::unique_ptr<Stream> Take();
  void Return(std::unique_ptr<Stream> stream);
  // Ends `stream` (it broke or was refused) and gives the status it ended
  // with.
  grpc::Status End(std::unique_ptr<Stream> stream);

  const std::shared_ptr<v1::Ffi::Stub> stub_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Stream>> idle_ ABSL_GUARDED_BY(mu_);
  // Streams open now, idle or lent.
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  // The daemon has no CallStream method: never try again.
  bool unsupported_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_CALL_STREAMS_H_
