// FrameChannel: length-prefixed protobuf frames over a connected stream
// socket (the daemon <-> worker socketpair).
//
// A frame is a 4-byte little-endian payload length followed by the serialized
// message. The channel owns its fd and closes it on destruction. Send() and
// Receive() may be used concurrently with each other; concurrent Send()s,
// and concurrent Receive()s, are serialized by internal mutexes. Receive()
// reads ahead (as many frames as one read() returns, up to 64 KiB), so
// nothing else may read from the fd; a small frame costs one read() and one
// write(), and a burst of pipelined frames fewer than one read() each.
// Everything above this class speaks in messages, so a shared-memory ring can
// replace the socket later without touching the service code.
#ifndef FFID_SERVER_WORKER_CHANNEL_H_
#define FFID_SERVER_WORKER_CHANNEL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/message_lite.h"

namespace ffid::worker {

// Frames larger than this are refused on both ends (RESOURCE_LIMIT).
inline constexpr uint32_t kMaxFrameBytes = 1u << 30;

class FrameChannel {
 public:
  // Takes ownership of `fd`.
  explicit FrameChannel(int fd);
  ~FrameChannel();
  FrameChannel(const FrameChannel&) = delete;
  FrameChannel& operator=(const FrameChannel&) = delete;

  // Writes one frame. UNAVAILABLE if the peer has gone.
  [[nodiscard]] absl::Status Send(const google::protobuf::MessageLite& message);
  // Blocks for one frame. UNAVAILABLE with "peer closed the channel" on a
  // clean EOF between frames; DATA_LOSS on a truncated or unparsable frame.
  [[nodiscard]] absl::Status Receive(google::protobuf::MessageLite* message);
  // Shuts the socket down in both directions, waking a blocked Receive().
  void Shutdown();

  int fd() const { return fd_; }

 private:
  // Reads until the buffer holds at least `need` unconsumed bytes (moving
  // them to its front first) or the peer closed; `*have` is then how many
  // it holds.
  [[nodiscard]] absl::Status Fill(size_t need, size_t* have)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(receive_mu_);

  const int fd_;
  absl::Mutex send_mu_;
  // The frame being sent, reused.
  std::string out_ ABSL_GUARDED_BY(send_mu_);
  absl::Mutex receive_mu_;
  // Read-ahead: bytes [in_start_, in_end_) of in_ are received, not yet
  // consumed.
  std::string in_ ABSL_GUARDED_BY(receive_mu_);
  size_t in_start_ ABSL_GUARDED_BY(receive_mu_) = 0;
  size_t in_end_ ABSL_GUARDED_BY(receive_mu_) = 0;
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_CHANNEL_H_
