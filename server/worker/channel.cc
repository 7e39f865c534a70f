#include "server/worker/channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

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
// write() only when the fd is not a socket (a pipe in a test). `pass_fd`
// (if >= 0) goes with the first bytes.
absl::Status WriteAll(int fd, const char* data, size_t size,
                      int pass_fd = -1) {
  bool use_write = false;
  while (size > 0) {
    ssize_t n = pass_fd >= 0 ? SendWithDescriptor(fd, data, size, pass_fd)
                : use_write  ? ::write(fd, data, size)
                             : ::send(fd, data, size, MSG_NOSIGNAL);
    if (n > 0) pass_fd = -1;
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

// Reads up to `size` bytes like read(); on a socket, descriptors passed
// with them (SCM_RIGHTS) are appended to `fds`.
ssize_t ReadSome(int fd, char* data, size_t size, std::vector<int>& fds) {
  iovec iov{data, size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr header{};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(fd, &header, MSG_CMSG_CLOEXEC);
  if (n < 0 && errno == ENOTSOCK) return ::read(fd, data, size);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&header); c != nullptr;
       c = CMSG_NXTHDR(&header, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.push_back(received);
    }
  }
  return n;
}

// The batch that holds back this thread's sends (HoldSends), if any.
thread_local SendBatch* holding_batch = nullptr;

}  // namespace

SendBatch::~SendBatch() { Flush(); }

void SendBatch::Flush() {
  for (FrameChannel* channel : channels_) channel->FlushHeldBack();
  channels_.clear();
}

HoldSends::HoldSends(SendBatch& batch) : previous_(holding_batch) {
  holding_batch = &batch;
}

HoldSends::~HoldSends() { holding_batch = previous_; }

ssize_t SendWithDescriptor(int socket, const char* data, size_t size, int fd) {
  iovec iov{const_cast<char*>(data), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr header{};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof(control);
  cmsghdr* rights = CMSG_FIRSTHDR(&header);
  rights->cmsg_level = SOL_SOCKET;
  rights->cmsg_type = SCM_RIGHTS;
  rights->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(rights), &fd, sizeof(int));
  return ::sendmsg(socket, &header, MSG_NOSIGNAL);
}

FrameChannel::FrameChannel(int fd) : fd_(fd) {}

FrameChannel::~FrameChannel() {
  if (fd_ >= 0) ::close(fd_);
  {
    absl::MutexLock lock(&receive_mu_);
    for (const auto& [at, fd] : arriving_fds_) ::close(fd);
  }
  absl::MutexLock lock(&fds_mu_);
  for (int fd : received_fds_) ::close(fd);
}

int FrameChannel::TakeReceivedFd() {
  absl::MutexLock lock(&fds_mu_);
  if (received_fds_.empty()) return -1;
  const int fd = received_fds_.front();
  received_fds_.pop_front();
  return fd;
}

absl::Status FrameChannel::Send(const google::protobuf::MessageLite& message) {
  return SendFrame(message, -1);
}

absl::Status FrameChannel::SendWithFd(
    const google::protobuf::MessageLite& message, int fd) {
  if (fd < 0) {
    return ffid::MakeError(absl::StatusCode::kInvalidArgument,
                           v1::ERROR_REASON_INTERNAL,
                           "SendWithFd needs a file descriptor");
  }
  return SendFrame(message, fd);
}

absl::Status FrameChannel::SendFrame(
    const google::protobuf::MessageLite& message, int pass_fd) {
  const size_t size = message.ByteSizeLong();
  if (size > kMaxFrameBytes) {
    return ffid::MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("message of ", size, " bytes exceeds the channel's ",
                     kMaxFrameBytes, "-byte frame limit"));
  }
  absl::MutexLock lock(&send_mu_);
  if (pass_fd < 0 && holding_batch != nullptr) {
    // Held back: appended to what this channel holds, written at the
    // batch's flush (or now, when enough has gathered).
    std::vector<FrameChannel*>& holding = holding_batch->channels_;
    if (holding.empty() || holding.back() != this) holding.push_back(this);
    const size_t at = held_.size();
    held_.resize(at + kHeaderBytes + size);
    EncodeLength(static_cast<uint32_t>(size), held_.data() + at);
    message.SerializeWithCachedSizesToArray(
        reinterpret_cast<uint8_t*>(held_.data() + at + kHeaderBytes));
    if (held_.size() >= kHeldBackBytes) return WriteHeldLocked();
    return absl::OkStatus();
  }
  // Frames held back go first: the order of frames is the order of sends.
  if (!held_.empty()) RETURN_IF_ERROR(WriteHeldLocked());
  // One buffer, one write: the header and payload go out together so a small
  // frame costs a single syscall. The buffer is reused: no allocation per
  // frame once it has grown to the usual size.
  out_.resize(kHeaderBytes + size);
  EncodeLength(static_cast<uint32_t>(size), out_.data());
  message.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(out_.data() + kHeaderBytes));
  absl::Status written = WriteAll(fd_, out_.data(), out_.size(), pass_fd);
  if (out_.capacity() > 4 * kReadChunk) {
    out_.clear();
    out_.shrink_to_fit();
  }
  return written;
}

absl::Status FrameChannel::WriteHeldLocked() {
  absl::Status written = WriteAll(fd_, held_.data(), held_.size());
  held_.clear();
  if (held_.capacity() > 4 * kReadChunk) held_.shrink_to_fit();
  if (!written.ok()) {
    // Frames that were counted as sent are lost: end the channel, so that
    // the peer and this side's reader see it end rather than wait for
    // answers to requests that never arrived.
    ::shutdown(fd_, SHUT_RDWR);
  }
  return written;
}

void FrameChannel::FlushHeldBack() {
  absl::MutexLock lock(&send_mu_);
  if (!held_.empty()) (void)WriteHeldLocked();
}

absl::Status FrameChannel::Fill(size_t need, absl::Time deadline,
                                size_t* have) {
  // Move what is left of the buffer to its front, then make room.
  if (in_start_ > 0) {
    const size_t left = in_end_ - in_start_;
    if (left > 0) std::memmove(in_.data(), in_.data() + in_start_, left);
    in_start_ = 0;
    in_end_ = left;
  }
  if (in_.size() < need) in_.resize(std::max(need, kReadChunk));
  while (in_end_ < need) {
    if (deadline != absl::InfiniteFuture()) {
      // Wait for bytes first: the socket itself blocks without a timeout.
      pollfd readable = {fd_, POLLIN, 0};
      const absl::Duration left =
          std::max(deadline - absl::Now(), absl::ZeroDuration());
      const timespec timeout = absl::ToTimespec(left);
      const int ready = ::ppoll(&readable, 1, &timeout, nullptr);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return IoError("poll", errno);
      if (ready == 0) {
        *have = in_end_;
        return ffid::MakeError(absl::StatusCode::kDeadlineExceeded,
                               v1::ERROR_REASON_DEADLINE_EXCEEDED,
                               "no frame arrived before the deadline");
      }
    }
    std::vector<int> fds;
    ssize_t n = ReadSome(fd_, in_.data() + in_end_, in_.size() - in_end_, fds);
    if (n > 0) received_total_ += static_cast<uint64_t>(n);
    for (int fd : fds) arriving_fds_.emplace_back(received_total_, fd);
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

absl::Status FrameChannel::ReceiveUntil(google::protobuf::MessageLite* message,
                                        absl::Time deadline) {
  absl::MutexLock lock(&receive_mu_);
  size_t have = in_end_ - in_start_;
  if (have < kHeaderBytes) {
    RETURN_IF_ERROR(Fill(kHeaderBytes, deadline, &have));
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
    RETURN_IF_ERROR(Fill(frame, deadline, &have));
    if (have < frame) {
      return ffid::MakeError(
          absl::StatusCode::kDataLoss, v1::ERROR_REASON_INTERNAL,
          absl::StrCat("channel truncated: peer closed after ",
                       have - kHeaderBytes, " of ", size, " bytes"));
    }
  }
  const char* payload = in_.data() + in_start_ + kHeaderBytes;
  in_start_ += frame;
  // Descriptors that arrived with this frame's bytes are now its own.
  const uint64_t frame_end = received_total_ - (in_end_ - in_start_);
  while (!arriving_fds_.empty() && arriving_fds_.front().first <= frame_end) {
    const int fd = arriving_fds_.front().second;
    arriving_fds_.pop_front();
    absl::MutexLock lock(&fds_mu_);
    received_fds_.push_back(fd);
  }
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
