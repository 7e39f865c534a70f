#include "server/worker/channel.h"

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"

namespace ffid::worker {
namespace {

constexpr size_t kHeaderBytes = 4;

void EncodeLength(uint32_t length, char* out) {
  for (size_t i = 0; i < kHeaderBytes; ++i) {
    out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  }
}

uint32_t DecodeLength(const unsigned char* in) {
  uint32_t length = 0;
  for (size_t i = 0; i < kHeaderBytes; ++i) {
    length |= static_cast<uint32_t>(in[i]) << (8 * i);
  }
  return length;
}

absl::Status PeerGone(absl::string_view what) {
  return ffid::MakeError(absl::StatusCode::kUnavailable,
                         v1::ERROR_REASON_INTERNAL,
                         absl::StrCat("peer closed the channel", what));
}

absl::Status IoError(absl::string_view operation, int error) {
  return ffid::MakeError(
      absl::StatusCode::kUnavailable, v1::ERROR_REASON_INTERNAL,
      absl::StrCat("channel ", operation, " failed: ", std::strerror(error)));
}

// Writes all of [data, data+size). send() with MSG_NOSIGNAL so that a dead
// peer is an EPIPE error rather than a SIGPIPE that would kill the daemon;
// write() only when the fd is not a socket (a pipe in a test).
absl::Status WriteAll(int fd, const char* data, size_t size) {
  bool use_write = false;
  while (size > 0) {
    ssize_t n = use_write ? ::write(fd, data, size)
                          : ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOTSOCK && !use_write) {
        use_write = true;
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) {
        return PeerGone(" while sending");
      }
      return IoError("send", errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// The read-ahead buffer's usual size; a bigger frame grows it for as long
// as it is being received.
constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

FrameChannel::FrameChannel(int fd) : fd_(fd) {}

FrameChannel::~FrameChannel() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status FrameChannel::Send(const google::protobuf::MessageLite& message) {
  const size_t size = message.ByteSizeLong();
  if (size > kMaxFrameBytes) {
    return ffid::MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("message of ", size, " bytes exceeds the channel's ",
                     kMaxFrameBytes, "-byte frame limit"));
  }
  absl::MutexLock lock(&send_mu_);
  // One buffer, one write: the header and payload go out together so a small
  // frame costs a single syscall. The buffer is reused: no allocation per
  // frame once it has grown to the usual size.
  out_.resize(kHeaderBytes + size);
  EncodeLength(static_cast<uint32_t>(size), out_.data());
  message.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(out_.data() + kHeaderBytes));
  absl::Status written = WriteAll(fd_, out_.data(), out_.size());
  if (out_.capacity() > 4 * kReadChunk) {
    out_.clear();
    out_.shrink_to_fit();
  }
  return written;
}

absl::Status FrameChannel::Fill(size_t need, size_t* have) {
  // Move what is left of the buffer to its front, then make room.
  if (in_start_ > 0) {
    const size_t left = in_end_ - in_start_;
    if (left > 0) std::memmove(in_.data(), in_.data() + in_start_, left);
    in_start_ = 0;
    in_end_ = left;
  }
  if (in_.size() < need) in_.resize(std::max(need, kReadChunk));
  while (in_end_ < need) {
    ssize_t n = ::read(fd_, in_.data() + in_end_, in_.size() - in_end_);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != ECONNRESET) return IoError("receive", errno);
      n = 0;  // A reset is an end like EOF.
    }
    if (n == 0) break;
    in_end_ += static_cast<size_t>(n);
  }
  *have = in_end_;
  return absl::OkStatus();
}

absl::Status FrameChannel::Receive(google::protobuf::MessageLite* message) {
  absl::MutexLock lock(&receive_mu_);
  size_t have = in_end_ - in_start_;
  if (have < kHeaderBytes) {
    RETURN_IF_ERROR(Fill(kHeaderBytes, &have));
    if (have == 0) return PeerGone("");
    if (have < kHeaderBytes) {
      return ffid::MakeError(
          absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
          absl::StrCat("channel truncated: peer closed after ", have, " of ",
                       kHeaderBytes, " header bytes"));
    }
  }
  const uint32_t size = DecodeLength(
      reinterpret_cast<const unsigned char*>(in_.data() + in_start_));
  if (size > kMaxFrameBytes) {
    // The stream cannot be resynchronized after this; the caller must drop
    // the channel.
    return ffid::MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("refused a frame of ", size, " bytes: the limit is ",
                     kMaxFrameBytes, " bytes"));
  }
  const size_t frame = kHeaderBytes + size;
  if (have < frame) {
    RETURN_IF_ERROR(Fill(frame, &have));
    if (have < frame) {
      return ffid::MakeError(
          absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
          absl::StrCat("channel truncated: peer closed after ",
                       have - kHeaderBytes, " of ", size, " bytes"));
    }
  }
  const char* payload = in_.data() + in_start_ + kHeaderBytes;
  in_start_ += frame;
  const bool parsed = message->ParseFromArray(payload, static_cast<int>(size));
  if (in_start_ == in_end_) {
    in_start_ = in_end_ = 0;
    // A big frame's buffer is not kept.
    if (in_.size() > 4 * kReadChunk) {
      in_.clear();
      in_.shrink_to_fit();
    }
  }
  if (!parsed) {
    return ffid::MakeError(
        absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
        absl::StrCat("could not parse a ", size, "-byte frame as ",
                     message->GetTypeName()));
  }
  return absl::OkStatus();
}

void FrameChannel::Shutdown() { ::shutdown(fd_, SHUT_RDWR); }

}  // namespace ffid::worker
