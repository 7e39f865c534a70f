#include "server/worker/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ffi/errors.h"
#include "gtest/gtest.h"
#include "server/worker/protocol.pb.h"

namespace ffid::worker {
namespace {

struct Pair {
  int a = -1;
  int b = -1;
};

Pair MakeSocketPair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {fds[0], fds[1]};
}

void WriteRaw(int fd, const std::string& bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

std::string LittleEndian(uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

WorkerRequest WriteRequestOf(uint64_t id, std::string data) {
  WorkerRequest request;
  request.set_id(id);
  request.mutable_write()->mutable_pointer()->set_handle("mem_x");
  request.mutable_write()->set_data(std::move(data));
  return request;
}

TEST(FrameChannelTest, PassesADescriptorWithAFrame) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  FrameChannel right(pair.b);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  ASSERT_TRUE(left.Send(WriteRequestOf(1, "before")).ok());
  ASSERT_TRUE(left.SendWithFd(WriteRequestOf(2, "with fd"), pipe_fds[1]).ok());
  ::close(pipe_fds[1]);  // The sender keeps nothing open.
  EXPECT_FALSE(left.SendWithFd(WriteRequestOf(3, ""), -1).ok());

  WorkerRequest received;
  ASSERT_TRUE(right.Receive(&received).ok());
  EXPECT_EQ(received.id(), 1u);
  EXPECT_EQ(right.TakeReceivedFd(), -1);
  ASSERT_TRUE(right.Receive(&received).ok());
  EXPECT_EQ(received.id(), 2u);
  const int passed = right.TakeReceivedFd();
  ASSERT_GE(passed, 0);
  EXPECT_EQ(right.TakeReceivedFd(), -1);
  // The descriptor is the pipe's write end: what goes in comes out.
  ASSERT_EQ(::write(passed, "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(pipe_fds[0], &c, 1), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_NE(::fcntl(passed, F_GETFD) & FD_CLOEXEC, 0);
  ::close(passed);
  ::close(pipe_fds[0]);
}

TEST(FrameChannelTest, RoundTripsMessagesInOrder) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  FrameChannel right(pair.b);
  for (uint64_t id = 1; id <= 5; ++id) {
    ASSERT_TRUE(left.Send(WriteRequestOf(id, absl::StrCat("data", id))).ok());
  }
  for (uint64_t id = 1; id <= 5; ++id) {
    WorkerRequest received;
    ASSERT_TRUE(right.Receive(&received).ok());
    EXPECT_EQ(received.id(), id);
    EXPECT_EQ(received.write().data(), absl::StrCat("data", id));
  }
  // And the other direction.
  WorkerResponse response;
  response.set_id(42);
  response.mutable_status()->set_code(3);
  ASSERT_TRUE(right.Send(response).ok());
  WorkerResponse got;
  ASSERT_TRUE(left.Receive(&got).ok());
  EXPECT_EQ(got.id(), 42u);
  EXPECT_EQ(got.status().code(), 3);
}

// Receive() reads ahead: several frames arriving in one write, and a frame
// split across writes at every byte, come out whole and in order.
TEST(FrameChannelTest, FramesInOneWriteAndFramesSplitAcrossWrites) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  std::string burst;
  for (uint64_t id = 1; id <= 3; ++id) {
    const std::string payload =
        WriteRequestOf(id, absl::StrCat("burst", id)).SerializeAsString();
    burst += LittleEndian(static_cast<uint32_t>(payload.size())) + payload;
  }
  WriteRaw(pair.a, burst);
  for (uint64_t id = 1; id <= 3; ++id) {
    WorkerRequest received;
    ASSERT_TRUE(right.Receive(&received).ok());
    EXPECT_EQ(received.id(), id);
    EXPECT_EQ(received.write().data(), absl::StrCat("burst", id));
  }
  const std::string payload =
      WriteRequestOf(9, std::string(100000, 'q')).SerializeAsString();
  const std::string frame =
      LittleEndian(static_cast<uint32_t>(payload.size())) + payload;
  std::thread writer([&] {
    // One byte, then the rest of the header and some payload, then the rest.
    WriteRaw(pair.a, frame.substr(0, 1));
    WriteRaw(pair.a, frame.substr(1, 10));
    WriteRaw(pair.a, frame.substr(11));
  });
  WorkerRequest received;
  ASSERT_TRUE(right.Receive(&received).ok());
  writer.join();
  EXPECT_EQ(received.id(), 9u);
  EXPECT_EQ(received.write().data(), std::string(100000, 'q'));
  ::close(pair.a);
}

TEST(FrameChannelTest, ReceiveUntilGivesUpAtItsDeadlineAndKeepsItsPlace) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  WorkerRequest received;
  absl::Status nothing =
      right.ReceiveUntil(&received, absl::Now() + absl::Milliseconds(20));
  EXPECT_EQ(nothing.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(nothing.message(), "no frame arrived before the deadline");

  const std::string payload =
      WriteRequestOf(7, std::string(5000, 'd')).SerializeAsString();
  const std::string frame =
      LittleEndian(static_cast<uint32_t>(payload.size())) + payload;
  // Half a header, then half the payload: each wait ends at its deadline
  // with the bytes kept, and the frame is whole once the rest comes.
  WriteRaw(pair.a, frame.substr(0, 2));
  EXPECT_EQ(right.ReceiveUntil(&received, absl::Now() + absl::Milliseconds(20))
                .code(),
            absl::StatusCode::kDeadlineExceeded);
  WriteRaw(pair.a, frame.substr(2, 2000));
  EXPECT_EQ(right.ReceiveUntil(&received, absl::Now() + absl::Milliseconds(20))
                .code(),
            absl::StatusCode::kDeadlineExceeded);
  WriteRaw(pair.a, frame.substr(2002));
  ASSERT_TRUE(
      right.ReceiveUntil(&received, absl::Now() + absl::Seconds(10)).ok());
  EXPECT_EQ(received.id(), 7u);
  EXPECT_EQ(received.write().data(), std::string(5000, 'd'));

  // A peer that closes is still an end, not a deadline.
  ::close(pair.a);
  EXPECT_EQ(right.ReceiveUntil(&received, absl::Now() + absl::Seconds(10))
                .code(),
            absl::StatusCode::kUnavailable);
}

TEST(FrameChannelTest, EmptyMessageIsAZeroLengthFrame) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  ASSERT_TRUE(left.Send(WorkerRequest()).ok());
  char header[4];
  ASSERT_EQ(::read(pair.b, header, 4), 4);
  EXPECT_EQ(std::string(header, 4), LittleEndian(0));
  WriteRaw(pair.b, LittleEndian(0));
  WorkerRequest received;
  received.set_id(9);
  ASSERT_TRUE(left.Receive(&received).ok());
  EXPECT_EQ(received.id(), 0u);
  ::close(pair.b);
}

TEST(FrameChannelTest, FrameHeaderIsLittleEndianLength) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  WorkerRequest request = WriteRequestOf(7, "abc");
  ASSERT_TRUE(left.Send(request).ok());
  const std::string payload = request.SerializeAsString();
  std::string got(4 + payload.size(), '\0');
  ASSERT_EQ(::recv(pair.b, got.data(), got.size(), MSG_WAITALL),
            static_cast<ssize_t>(got.size()));
  EXPECT_EQ(got, LittleEndian(payload.size()) + payload);
  ::close(pair.b);
}

TEST(FrameChannelTest, LargeFrameRoundTrips) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  FrameChannel right(pair.b);
  std::string data(64u << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<char>((i * 131) >> 7);
  }
  absl::Status sent;
  std::thread sender([&] { sent = left.Send(WriteRequestOf(1, data)); });
  WorkerRequest received;
  absl::Status status = right.Receive(&received);
  sender.join();
  ASSERT_TRUE(sent.ok()) << sent;
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(received.write().data().size(), data.size());
  EXPECT_TRUE(received.write().data() == data);
}

TEST(FrameChannelTest, PeerCloseBetweenFramesIsUnavailable) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  {
    FrameChannel left(pair.a);
    ASSERT_TRUE(left.Send(WriteRequestOf(1, "last")).ok());
  }
  WorkerRequest received;
  ASSERT_TRUE(right.Receive(&received).ok());
  absl::Status status = right.Receive(&received);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(status.message(), "peer closed the channel");
}

TEST(FrameChannelTest, TruncatedPayloadIsDataLoss) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  WriteRaw(pair.a, LittleEndian(100) + std::string(10, 'x'));
  ::close(pair.a);
  WorkerRequest received;
  absl::Status status = right.Receive(&received);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("10 of 100 bytes"), absl::string_view::npos)
      << status;
}

TEST(FrameChannelTest, TruncatedHeaderIsDataLoss) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  WriteRaw(pair.a, std::string(2, '\x01'));
  ::close(pair.a);
  WorkerRequest received;
  EXPECT_EQ(right.Receive(&received).code(), absl::StatusCode::kDataLoss);
}

TEST(FrameChannelTest, HeaderWithoutPayloadIsDataLoss) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  WriteRaw(pair.a, LittleEndian(5));
  ::close(pair.a);
  WorkerRequest received;
  EXPECT_EQ(right.Receive(&received).code(), absl::StatusCode::kDataLoss);
}

TEST(FrameChannelTest, UnparsablePayloadIsDataLoss) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  // Field 1 as a length-delimited field that runs past the end.
  WriteRaw(pair.a, LittleEndian(3) + std::string("\x0a\x7f\x01", 3));
  WorkerRequest received;
  absl::Status status = right.Receive(&received);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("ffid.worker.WorkerRequest"),
            absl::string_view::npos)
      << status;
  ::close(pair.a);
}

TEST(FrameChannelTest, OversizedLengthIsRefusedWithoutReading) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  WriteRaw(pair.a, LittleEndian(kMaxFrameBytes + 1));
  WorkerRequest received;
  absl::Status status = right.Receive(&received);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_RESOURCE_LIMIT);
  EXPECT_NE(status.message().find("refused"), absl::string_view::npos);
  ::close(pair.a);
}

TEST(FrameChannelTest, SendToClosedPeerIsUnavailableNotSigpipe) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  ::close(pair.b);
  // Without MSG_NOSIGNAL this would kill the test with SIGPIPE.
  absl::Status status = left.Send(WriteRequestOf(1, std::string(1 << 20, 'z')));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

TEST(FrameChannelTest, ShutdownWakesABlockedReceive) {
  Pair pair = MakeSocketPair();
  FrameChannel right(pair.b);
  absl::Status status;
  std::thread receiver([&] {
    WorkerRequest received;
    status = right.Receive(&received);
  });
  ::usleep(50 * 1000);
  right.Shutdown();
  receiver.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  ::close(pair.a);
}

TEST(FrameChannelTest, DestructorClosesTheFd) {
  Pair pair = MakeSocketPair();
  { FrameChannel left(pair.a); }
  errno = 0;
  EXPECT_EQ(::fcntl(pair.a, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
  ::close(pair.b);
}

TEST(FrameChannelTest, ConcurrentSendersNeverInterleaveFrames) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  FrameChannel right(pair.b);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 300;
  std::vector<std::thread> senders;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // Sizes vary so that frames span several socket writes.
        const size_t size = 1 + (i * 7919 + t * 104729) % 200000;
        std::string data(size, static_cast<char>('a' + t));
        if (!left.Send(WriteRequestOf(t * 1000000 + i, std::move(data))).ok()) {
          ++failures;
        }
      }
    });
  }
  std::map<int, int> next_per_thread;
  for (int n = 0; n < kThreads * kPerThread; ++n) {
    WorkerRequest received;
    absl::Status status = right.Receive(&received);
    ASSERT_TRUE(status.ok()) << status;
    const int t = static_cast<int>(received.id() / 1000000);
    const int i = static_cast<int>(received.id() % 1000000);
    ASSERT_GE(t, 0);
    ASSERT_LT(t, kThreads);
    EXPECT_EQ(i, next_per_thread[t]++) << "thread " << t << " out of order";
    const std::string& data = received.write().data();
    ASSERT_EQ(data.size(), 1 + (i * 7919 + t * 104729) % 200000);
    EXPECT_EQ(data.find_first_not_of(static_cast<char>('a' + t)),
              std::string::npos);
  }
  for (auto& sender : senders) sender.join();
  EXPECT_EQ(failures.load(), 0);
}


// Whether `fd` has bytes to read right now (no waiting).
bool Readable(int fd) {
  pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

// Two channels over a socketpair: frames sent on left_ arrive on right_;
// peer_fd_ is right_'s descriptor, to see whether bytes are waiting.
class SendBatchTest : public ::testing::Test {
 protected:
  SendBatchTest()
      : pair_(MakeSocketPair()), left_(pair_.a), right_(pair_.b) {}

  Pair pair_;
  FrameChannel left_;
  FrameChannel right_;
  // right_'s descriptor (owned by right_).
  const int peer_fd_ = pair_.b;
};

TEST_F(SendBatchTest, HeldBackFramesLeaveAtTheFlushInOrder) {
  SendBatch batch;
  {
    HoldSends hold(batch);
    for (uint64_t id = 1; id <= 3; ++id) {
      ASSERT_TRUE(
          left_.Send(WriteRequestOf(id, absl::StrCat("frame ", id))).ok());
    }
  }
  EXPECT_FALSE(Readable(peer_fd_)) << "a held-back frame was written";
  batch.Flush();
  for (uint64_t id = 1; id <= 3; ++id) {
    WorkerRequest received;
    ASSERT_TRUE(right_.Receive(&received).ok());
    EXPECT_EQ(received.id(), id);
    EXPECT_EQ(received.write().data(), absl::StrCat("frame ", id));
  }
  EXPECT_FALSE(Readable(peer_fd_));
}

TEST_F(SendBatchTest, AnOrdinarySendWritesWhatIsHeldBackFirst) {
  SendBatch batch;
  {
    HoldSends hold(batch);
    ASSERT_TRUE(left_.Send(WriteRequestOf(1, "held")).ok());
    ASSERT_TRUE(left_.Send(WriteRequestOf(2, "held")).ok());
  }
  // Another thread's send (not held back) on the same channel.
  std::thread other([this] {
    EXPECT_TRUE(left_.Send(WriteRequestOf(3, "at once")).ok());
  });
  other.join();
  for (uint64_t id = 1; id <= 3; ++id) {
    WorkerRequest received;
    ASSERT_TRUE(right_.Receive(&received).ok());
    EXPECT_EQ(received.id(), id);
  }
  batch.Flush();  // Nothing is left to write.
  EXPECT_FALSE(Readable(peer_fd_));
}

TEST_F(SendBatchTest, OnlySendsInsideHoldSendsAreHeldBack) {
  SendBatch batch;
  ASSERT_TRUE(left_.Send(WriteRequestOf(1, "outside")).ok());
  EXPECT_TRUE(Readable(peer_fd_));
  WorkerRequest received;
  ASSERT_TRUE(right_.Receive(&received).ok());
  // A descriptor always leaves at once (after what is held back).
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  {
    HoldSends hold(batch);
    ASSERT_TRUE(left_.Send(WriteRequestOf(2, "held")).ok());
    EXPECT_FALSE(Readable(peer_fd_));
    ASSERT_TRUE(
        left_.SendWithFd(WriteRequestOf(3, "with fd"), pipe_fds[1]).ok());
    EXPECT_TRUE(Readable(peer_fd_));
  }
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  ASSERT_TRUE(right_.Receive(&received).ok());
  EXPECT_EQ(received.id(), 2u);
  ASSERT_TRUE(right_.Receive(&received).ok());
  EXPECT_EQ(received.id(), 3u);
  const int passed = right_.TakeReceivedFd();
  EXPECT_GE(passed, 0);
  if (passed >= 0) ::close(passed);
}

TEST_F(SendBatchTest, ALongRunLeavesBeforeTheFlush) {
  // Five frames of a quarter of kHeldBackBytes each: the first four pass
  // the limit and leave while the fifth is held.
  const std::string data(kHeldBackBytes / 4, 'x');
  {
    SendBatch batch;
    HoldSends hold(batch);
    for (uint64_t id = 1; id <= 5; ++id) {
      ASSERT_TRUE(left_.Send(WriteRequestOf(id, data)).ok());
    }
    EXPECT_TRUE(Readable(peer_fd_));
    for (uint64_t id = 1; id <= 4; ++id) {
      WorkerRequest received;
      ASSERT_TRUE(right_.Receive(&received).ok());
      EXPECT_EQ(received.id(), id);
    }
    EXPECT_FALSE(Readable(peer_fd_));
    // The batch's destructor flushes the fifth.
  }
  WorkerRequest received;
  ASSERT_TRUE(right_.Receive(&received).ok());
  EXPECT_EQ(received.id(), 5u);
}

TEST(HeldBackSendTest, AFailedFlushEndsTheChannel) {
  Pair pair = MakeSocketPair();
  FrameChannel left(pair.a);
  ::close(pair.b);
  SendBatch batch;
  {
    HoldSends hold(batch);
    ASSERT_TRUE(left.Send(WriteRequestOf(1, "lost")).ok());
  }
  batch.Flush();
  // The channel was shut down: whoever reads it sees the end at once.
  WorkerResponse response;
  EXPECT_FALSE(left.Receive(&response).ok());
}

}  // namespace
}  // namespace ffid::worker
