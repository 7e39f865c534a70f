#include "server/worker/channel.h"

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
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

// Reads exactly `size` bytes. Sets *eof_at_start when the peer closed before
// the first byte, which is a clean end between frames.
absl::Status ReadAll(int fd, char* data, size_t size, bool* eof_at_start) {
  *eof_at_start = false;
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) {
        if (done == 0) {
          *eof_at_start = true;
          return absl::OkStatus();
        }
        n = 0;  // Treated as a truncated read below.
      } else {
        return IoError("receive", errno);
      }
    }
    if (n == 0) {
      if (done == 0) {
        *eof_at_start = true;
        return absl::OkStatus();
      }
      return ffid::MakeError(
          absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
          absl::StrCat("channel truncated: peer closed after ", done, " of ",
                       size, " bytes"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

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
  // One buffer, one write: the header and payload go out together so a small
  // frame costs a single syscall.
  std::string frame;
  frame.resize(kHeaderBytes + size);
  EncodeLength(static_cast<uint32_t>(size), frame.data());
  message.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(frame.data() + kHeaderBytes));
  absl::MutexLock lock(&send_mu_);
  return WriteAll(fd_, frame.data(), frame.size());
}

absl::Status FrameChannel::Receive(google::protobuf::MessageLite* message) {
  unsigned char header[kHeaderBytes];
  bool eof = false;
  RETURN_IF_ERROR(
      ReadAll(fd_, reinterpret_cast<char*>(header), kHeaderBytes, &eof));
  if (eof) return PeerGone("");
  const uint32_t size = DecodeLength(header);
  if (size > kMaxFrameBytes) {
    // The stream cannot be resynchronized after this; the caller must drop
    // the channel.
    return ffid::MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("refused a frame of ", size, " bytes: the limit is ",
                     kMaxFrameBytes, " bytes"));
  }
  std::string payload;
  payload.resize(size);
  if (size > 0) {
    RETURN_IF_ERROR(ReadAll(fd_, payload.data(), size, &eof));
    if (eof) {
      return ffid::MakeError(
          absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
          absl::StrCat("channel truncated: peer closed after the header of a ",
                       size, "-byte frame"));
    }
  }
  if (!message->ParseFromString(payload)) {
    return ffid::MakeError(
        absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
        absl::StrCat("could not parse a ", size, "-byte frame as ",
                     message->GetTypeName()));
  }
  return absl::OkStatus();
}

void FrameChannel::Shutdown() { ::shutdown(fd_, SHUT_RDWR); }

}  // namespace ffid::worker
