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
//
// A thread with several frames to send in a row can hold them back and
// send them in one write (SendBatch, HoldSends below): the daemon does so
// for the calls of one ConnectRequest.calls, which saves a send() per call
// on its side and a read() per call on the worker's.
//
// A frame may carry one file descriptor (SCM_RIGHTS, e.g. the session's
// arena memfd): SendWithFd() attaches it. Receive() keeps a descriptor that
// arrives with the bytes of a frame until that frame is returned, then
// offers it to TakeReceivedFd() (read-ahead never hands a frame's
// descriptor to an earlier frame).
#ifndef FFID_SERVER_WORKER_CHANNEL_H_
#define FFID_SERVER_WORKER_CHANNEL_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "google/protobuf/message_lite.h"

namespace ffid::worker {

// Frames larger than this are refused on both ends (RESOURCE_LIMIT).
inline constexpr uint32_t kMaxFrameBytes = 1u << 30;

// Sends up to `size` bytes on the unix socket `socket` with `fd` attached
// (SCM_RIGHTS), as send(..., MSG_NOSIGNAL) would: returns the bytes sent or
// -1 with errno. For the channel and the daemon's arena socket.
ssize_t SendWithDescriptor(int socket, const char* data, size_t size, int fd);

class FrameChannel;

// The channels that hold frames back for one thread (see HoldSends).
// Flush() (and the destructor) writes them. Used by one thread; it must not
// outlive the channels it has seen.
class SendBatch {
 public:
  SendBatch() = default;
  // Flushes.
  ~SendBatch();
  SendBatch(const SendBatch&) = delete;
  SendBatch& operator=(const SendBatch&) = delete;

  // Writes every frame held back so far, each channel's in one write. A
  // channel whose write fails is shut down (both ways), so that its peer
  // and its reader see the end instead of waiting for frames that never
  // came.
  void Flush();

 private:
  friend class FrameChannel;
  std::vector<FrameChannel*> channels_;
};

// While one is alive, Send() on this thread (not SendWithFd) appends its
// frame to the channel's held-back bytes instead of writing it, and
// registers the channel with `batch`; the bytes leave at batch.Flush(),
// when they pass kHeldBackBytes, or before any other frame sent on that
// channel (by any thread), so frames keep their order. Only for sends
// whose sender does not wait for an answer before the flush: a request
// that is waited for must leave at once.
class HoldSends {
 public:
  explicit HoldSends(SendBatch& batch);
  ~HoldSends();
  HoldSends(const HoldSends&) = delete;
  HoldSends& operator=(const HoldSends&) = delete;

 private:
  SendBatch* const previous_;
};

// Held-back bytes of one channel beyond which they are written at once,
// so the peer starts on a long run of frames before its end.
inline constexpr size_t kHeldBackBytes = 4096;

class FrameChannel {
 public:
  // Takes ownership of `fd`.
  explicit FrameChannel(int fd);
  ~FrameChannel();
  FrameChannel(const FrameChannel&) = delete;
  FrameChannel& operator=(const FrameChannel&) = delete;

  // Writes one frame. UNAVAILABLE if the peer has gone.
  [[nodiscard]] absl::Status Send(const google::protobuf::MessageLite& message);
  // Writes one frame with `fd` attached (SCM_RIGHTS); the caller keeps its
  // own `fd`. Needs a unix socket.
  [[nodiscard]] absl::Status SendWithFd(
      const google::protobuf::MessageLite& message, int fd);
  // Blocks for one frame. UNAVAILABLE with "peer closed the channel" on a
  // clean EOF between frames; DATA_LOSS on a truncated or unparsable frame.
  [[nodiscard]] absl::Status Receive(google::protobuf::MessageLite* message) {
    return ReceiveUntil(message, absl::InfiniteFuture());
  }
  // Receive(), giving up at `deadline` with DEADLINE_EXCEEDED (and no other
  // error has that code). Bytes of a frame that had partly arrived stay
  // buffered for the next call, so the stream stays in step.
  [[nodiscard]] absl::Status ReceiveUntil(
      google::protobuf::MessageLite* message, absl::Time deadline);
  // Shuts the socket down in both directions, waking a blocked Receive().
  void Shutdown();

  int fd() const { return fd_; }

  // The oldest descriptor that came with a frame Receive() has returned and
  // that was not taken yet (the caller owns it), or -1. Descriptors never
  // taken are closed with the channel.
  int TakeReceivedFd();

 private:
  // Writes a whole frame, with `pass_fd` attached if it is >= 0 (after
  // what is held back), or holds it back (see HoldSends).
  absl::Status SendFrame(const google::protobuf::MessageLite& message,
                         int pass_fd);
  // Writes the held-back bytes (SendBatch::Flush); shuts the socket down
  // if that fails.
  void FlushHeldBack();
  // Writes held_ and clears it; on failure shuts the socket down.
  absl::Status WriteHeldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);
  friend class SendBatch;

  // Reads until the buffer holds at least `need` unconsumed bytes (moving
  // them to its front first) or the peer closed; `*have` is then how many
  // it holds. DEADLINE_EXCEEDED if `deadline` comes first.
  [[nodiscard]] absl::Status Fill(size_t need, absl::Time deadline,
                                  size_t* have)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(receive_mu_);

  const int fd_;
  absl::Mutex send_mu_;
  // The frame being sent, reused.
  std::string out_ ABSL_GUARDED_BY(send_mu_);
  // Frames held back (HoldSends), in order; they leave before any other.
  std::string held_ ABSL_GUARDED_BY(send_mu_);
  absl::Mutex receive_mu_;
  // Read-ahead: bytes [in_start_, in_end_) of in_ are received, not yet
  // consumed.
  std::string in_ ABSL_GUARDED_BY(receive_mu_);
  size_t in_start_ ABSL_GUARDED_BY(receive_mu_) = 0;
  size_t in_end_ ABSL_GUARDED_BY(receive_mu_) = 0;
  // Bytes received since the start, and the descriptors that came with
  // them, each with that count at the end of the read that brought it: it
  // belongs to the frame holding that byte.
  uint64_t received_total_ ABSL_GUARDED_BY(receive_mu_) = 0;
  std::deque<std::pair<uint64_t, int>> arriving_fds_
      ABSL_GUARDED_BY(receive_mu_);
  absl::Mutex fds_mu_;
  std::deque<int> received_fds_ ABSL_GUARDED_BY(fds_mu_);
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_CHANNEL_H_
