// FrameChannel: length-prefixed protobuf frames over a connected stream
// socket (the daemon <-> worker socketpair).
//
// A frame is a 4-byte little-endian payload length followed by the serialized
// message. The channel owns its fd and closes it on destruction. Send() and
// Receive() may be used concurrently with each other (one sender, one
// receiver); concurrent Send()s are serialized by an internal mutex.
// Everything above this class speaks in messages, so a shared-memory ring can
// replace the socket later without touching the service code.
#ifndef FFID_SERVER_WORKER_CHANNEL_H_
#define FFID_SERVER_WORKER_CHANNEL_H_

#include <cstdint>

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
  const int fd_;
  absl::Mutex send_mu_;
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_CHANNEL_H_
