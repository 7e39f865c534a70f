// WriteStream and ReadStream through the real daemon and worker: the C++
// client's big Session::Write/Read (which use them) at sizes around the
// piece size, in the arena and on the heap; the raw RPCs' bounds, handles,
// malformed streams, a worker crash, a deleted session and a client that
// cancels midway; and the client's fallback to unary pieces against a
// daemon that does not know the streams.
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clients/cpp/ffid/client.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Bytes that differ between places 1 MiB apart.
std::string Pattern(uint64_t size, uint32_t seed = 1) {
  std::string bytes(size, '\0');
  for (uint64_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<char>(
        ((static_cast<uint32_t>(i) + seed) * 2654435761u) >> 24);
  }
  return bytes;
}

// The ErrorInfo metadata `key` of `status`, "" if absent.
std::string MetadataOf(const absl::Status& status, const std::string& key) {
  const auto payload = status.GetPayload(client::kErrorInfoTypeUrl);
  if (!payload.has_value()) return "";
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) return "";
  auto it = info.metadata().find(key);
  return it == info.metadata().end() ? "" : it->second;
}

class StreamsTest : public FfidTest {
 protected:
  v1::Ffi::Stub& stub() { return client_->stub(); }

  // Allocates `size` bytes placed as `placement`, filled with `fill`.
  client::Memory Allocated(uint64_t size, v1::AllocationPlacement placement,
                           char fill = '\0') {
    absl::StatusOr<client::Memory> memory =
        session_->Allocate(size, std::string(size, fill), placement);
    EXPECT_TRUE(memory.ok()) << memory.status();
    return memory.ok() ? *memory : client::Memory();
  }

  // A raw WriteStream of `session_`.
  struct RawWrite {
    grpc::ClientContext context;
    v1::WriteStreamResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::WriteStreamRequest>> writer;
  };
  std::unique_ptr<RawWrite> StartWrite() {
    auto raw = std::make_unique<RawWrite>();
    raw->writer = stub().WriteStream(&raw->context, &raw->response);
    return raw;
  }
  v1::WriteStreamRequest FirstPiece(const std::string& handle, uint64_t offset,
                                    uint64_t length, std::string data) {
    v1::WriteStreamRequest piece;
    piece.set_session(session_->id());
    piece.mutable_pointer()->set_handle(handle);
    piece.mutable_pointer()->set_offset(offset);
    piece.set_length(length);
    piece.set_data(std::move(data));
    return piece;
  }
  static v1::WriteStreamRequest DataPiece(std::string data) {
    v1::WriteStreamRequest piece;
    piece.set_data(std::move(data));
    return piece;
  }
  // Ends the stream and returns its status.
  static absl::Status Finish(RawWrite& raw) {
    raw.writer->WritesDone();
    return client::StatusFromGrpc(raw.writer->Finish());
  }

  // A whole raw ReadStream of `session_`: the bytes received and the status.
  absl::Status ReadAll(const v1::ReadStreamRequest& request, std::string* data,
                       int* messages = nullptr) {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<v1::ReadStreamResponse>> reader =
        stub().ReadStream(&context, request);
    v1::ReadStreamResponse piece;
    int count = 0;
    while (reader->Read(&piece)) {
      data->append(piece.data());
      ++count;
    }
    if (messages != nullptr) *messages = count;
    return client::StatusFromGrpc(reader->Finish());
  }
  v1::ReadStreamRequest ReadRequest(const std::string& handle, uint64_t offset,
                                    uint64_t length, uint64_t piece_bytes = 0) {
    v1::ReadStreamRequest request;
    request.set_session(session_->id());
    request.mutable_pointer()->set_handle(handle);
    request.mutable_pointer()->set_offset(offset);
    request.set_length(length);
    request.set_piece_bytes(piece_bytes);
    return request;
  }

  // Waits until the daemon has written `expected` at `offset` of `handle`
  // (the stream's pieces are written in order, so once its last bytes are
  // there, the piece is).
  void AwaitWritten(const std::string& handle, uint64_t offset,
                    const std::string& expected) {
    for (int attempt = 0; attempt < 2000; ++attempt) {
      absl::StatusOr<std::string> seen =
          session_->Read(handle, offset + expected.size() - 64, 64);
      ASSERT_TRUE(seen.ok()) << seen.status();
      if (*seen == expected.substr(expected.size() - 64)) return;
      usleep(1000);
    }
    FAIL() << "the daemon never wrote the first piece";
  }
};

const v1::AllocationPlacement kPlacements[] = {
    v1::ALLOCATION_PLACEMENT_HEAP, v1::ALLOCATION_PLACEMENT_ARENA};

// Session::Write and Read of more than one piece go on the streams; every
// byte lands at its place around the 1 MiB piece boundaries, at an offset
// that is not a multiple of a piece, in the arena as on the heap.
TEST_F(StreamsTest, ClientRoundTripsAroundPieceBoundaries) {
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    const client::Memory memory = Allocated(4 * kMiB + 64, placement, 'z');
    for (const uint64_t size : {kMiB + 1, 2 * kMiB - 1, 2 * kMiB,
                                2 * kMiB + 1, 3 * kMiB + 12345}) {
      SCOPED_TRACE(size);
      const std::string data = Pattern(size, static_cast<uint32_t>(size));
      ASSERT_THAT(session_->Write(memory.handle, 7, data), IsOk());
      absl::StatusOr<std::string> read = session_->Read(memory.handle, 7, size);
      ASSERT_THAT(read, IsOk());
      EXPECT_TRUE(*read == data);
      // The byte before the range is untouched.
      absl::StatusOr<std::string> before = session_->Read(memory.handle, 6, 1);
      ASSERT_THAT(before, IsOk());
      EXPECT_EQ(*before, "z");
    }
    ASSERT_THAT(session_->Free(memory.handle), IsOk());
  }
}

// ReadInto fills the caller's buffer with what Read would return, one
// piece or many, and touches no byte past the range it was asked for; a
// read past the end of owned memory fails and names the bounds; an empty
// buffer asks for nothing.
TEST_F(StreamsTest, ReadIntoFillsTheCallersBuffer) {
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    const client::Memory memory = Allocated(3 * kMiB, placement);
    const std::string data = Pattern(3 * kMiB - 3);
    ASSERT_THAT(session_->Write(memory.handle, 3, data), IsOk());
    for (const uint64_t size : {uint64_t{1}, kMiB, kMiB + 1, 3 * kMiB - 3}) {
      SCOPED_TRACE(size);
      std::string out(size + 2, '#');
      ASSERT_THAT(session_->ReadInto(memory.handle, 3,
                                     absl::MakeSpan(out.data(), size)),
                  IsOk());
      EXPECT_TRUE(out.substr(0, size) == data.substr(0, size));
      EXPECT_EQ(out.substr(size), "##");
    }
    std::string out(2 * kMiB, '#');
    EXPECT_THAT(session_->ReadInto(memory.handle, kMiB + 1, absl::MakeSpan(out)),
                HasReason("OUT_OF_BOUNDS"));
    EXPECT_THAT(session_->ReadInto(memory.handle, 0, absl::Span<char>()),
                IsOk());
    ASSERT_THAT(session_->Free(memory.handle), IsOk());
    EXPECT_THAT(session_->ReadInto(memory.handle, 0, absl::MakeSpan(out)),
                HasReason("HANDLE_INVALID"));
  }
}

// Pieces of any size, an empty first piece included, make one write; a
// ReadStream answers in pieces of the size asked for, 0 meaning 1 MiB, and
// length 0 reads owned memory to its end.
TEST_F(StreamsTest, RawStreamsTakeAnyPiecesAndAnswerInTheSizeAskedFor) {
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    const uint64_t size = 2 * kMiB + 100;
    const client::Memory memory = Allocated(size, placement);
    const std::string data = Pattern(size);
    std::unique_ptr<RawWrite> raw = StartWrite();
    ASSERT_TRUE(raw->writer->Write(FirstPiece(memory.handle, 0, size, "")));
    ASSERT_TRUE(raw->writer->Write(DataPiece(data.substr(0, 3))));
    ASSERT_TRUE(raw->writer->Write(DataPiece(data.substr(3, kMiB + 5))));
    ASSERT_TRUE(raw->writer->Write(DataPiece(data.substr(kMiB + 8))));
    ASSERT_THAT(Finish(*raw), IsOk());
    EXPECT_EQ(raw->response.written(), size);

    std::string read;
    int messages = 0;
    ASSERT_THAT(ReadAll(ReadRequest(memory.handle, 0, 0), &read, &messages),
                IsOk());
    EXPECT_TRUE(read == data);
    EXPECT_EQ(messages, 3);  // 1 MiB, 1 MiB, 100 bytes
    read.clear();
    ASSERT_THAT(
        ReadAll(ReadRequest(memory.handle, 50, size - 60, 256 << 10), &read,
                &messages),
        IsOk());
    EXPECT_TRUE(read == data.substr(50, size - 60));
    EXPECT_EQ(messages, 9);
    ASSERT_THAT(session_->Free(memory.handle), IsOk());
  }
}

// A write or read past the end of owned memory fails with OUT_OF_BOUNDS as
// Write and Read do, and a write writes nothing at all: the whole range is
// checked before the first byte.
TEST_F(StreamsTest, OutOfBoundsWritesNothing) {
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    const client::Memory memory = Allocated(3 * kMiB, placement, 'o');
    const absl::Status written =
        session_->Write(memory.handle, 10, Pattern(3 * kMiB));
    EXPECT_THAT(written, HasReason("OUT_OF_BOUNDS"));
    absl::StatusOr<std::string> after =
        session_->Read(memory.handle, 0, 3 * kMiB);
    ASSERT_THAT(after, IsOk());
    EXPECT_TRUE(*after == std::string(3 * kMiB, 'o'));
    EXPECT_THAT(session_->Read(memory.handle, 1, 3 * kMiB),
                HasReason("OUT_OF_BOUNDS"));
    EXPECT_THAT(session_->Read(memory.handle, 1, UINT64_MAX),
                HasReason("OUT_OF_BOUNDS"));
    std::string read;
    EXPECT_THAT(ReadAll(ReadRequest(memory.handle, 3 * kMiB + 1, 0), &read),
                HasReason("OUT_OF_BOUNDS"));
    EXPECT_TRUE(read.empty());
    ASSERT_THAT(session_->Free(memory.handle), IsOk());
  }
}

// Unknown and freed handles fail as in Write and Read; so do a request
// without a pointer and a piece size over 4 MiB.
TEST_F(StreamsTest, BadHandlesAndRequestsAreRefused) {
  const std::string big = Pattern(2 * kMiB);
  EXPECT_THAT(session_->Write("mem_nothing_1", 0, big),
              HasReason("HANDLE_INVALID"));
  EXPECT_THAT(session_->Read("mem_nothing_1", 0, 2 * kMiB),
              HasReason("HANDLE_INVALID"));
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    const client::Memory memory = Allocated(2 * kMiB, placement);
    ASSERT_THAT(session_->Free(memory.handle), IsOk());
    EXPECT_THAT(session_->Write(memory.handle, 0, big),
                HasReason("HANDLE_INVALID"));
    EXPECT_THAT(session_->Read(memory.handle, 0, 2 * kMiB),
                HasReason("HANDLE_INVALID"));
  }
  const client::Memory memory =
      Allocated(2 * kMiB, v1::ALLOCATION_PLACEMENT_ARENA);
  std::string read;
  v1::ReadStreamRequest no_pointer = ReadRequest(memory.handle, 0, 0);
  no_pointer.clear_pointer();
  EXPECT_THAT(ReadAll(no_pointer, &read), HasReason("INVALID_REQUEST"));
  EXPECT_THAT(ReadAll(ReadRequest(memory.handle, 0, 0, 5 * kMiB), &read),
              HasReason("INVALID_REQUEST"));
  v1::ReadStreamRequest unknown_session = ReadRequest(memory.handle, 0, 0);
  unknown_session.set_session("00000000000000000000000000000000");
  EXPECT_THAT(ReadAll(unknown_session, &read), HasReason("SESSION_NOT_FOUND"));
  EXPECT_TRUE(read.empty());
  // Another session's handle is unknown here.
  std::unique_ptr<client::Session> other = NewSession();
  ASSERT_NE(other, nullptr);
  EXPECT_THAT(other->Write(memory.handle, 0, big),
              HasReason("HANDLE_INVALID"));
}

// A stream that carries fewer or more bytes than it announced, or names the
// session again later, fails; what was written is named and stays written.
TEST_F(StreamsTest, MalformedWriteStreamsSayWhatWasWritten) {
  const client::Memory memory =
      Allocated(4 * kMiB, v1::ALLOCATION_PLACEMENT_ARENA, 'm');
  const std::string data = Pattern(kMiB);
  {
    std::unique_ptr<RawWrite> raw = StartWrite();
    ASSERT_TRUE(raw->writer->Write(FirstPiece(memory.handle, 0, 3 * kMiB,
                                              data)));
    const absl::Status status = Finish(*raw);
    EXPECT_THAT(status, HasReason("INVALID_REQUEST"));
    EXPECT_THAT(MessageOf(status),
                HasSubstr("bytes 0..1048575 of 3145728 were written"));
    EXPECT_THAT(MessageOf(status), HasSubstr("ended after 1048576"));
    EXPECT_EQ(MetadataOf(status, "bytes_written"), "1048576");
    absl::StatusOr<std::string> read = session_->Read(memory.handle, 0, kMiB);
    ASSERT_THAT(read, IsOk());
    EXPECT_TRUE(*read == data);
  }
  {
    std::unique_ptr<RawWrite> raw = StartWrite();
    (void)raw->writer->Write(FirstPiece(memory.handle, 0, 10, ""));
    (void)raw->writer->Write(DataPiece("0123456789A"));
    const absl::Status status = Finish(*raw);
    EXPECT_THAT(status, HasReason("INVALID_REQUEST"));
    EXPECT_THAT(MessageOf(status), HasSubstr("more than the 10 bytes"));
    EXPECT_EQ(MetadataOf(status, "bytes_written"), "0");
  }
  {
    std::unique_ptr<RawWrite> raw = StartWrite();
    (void)raw->writer->Write(FirstPiece(memory.handle, 0, 20, "0123456789"));
    (void)raw->writer->Write(FirstPiece(memory.handle, 10, 0, "0123456789"));
    const absl::Status status = Finish(*raw);
    EXPECT_THAT(status, HasReason("INVALID_REQUEST"));
    EXPECT_THAT(MessageOf(status), HasSubstr("only the first"));
    EXPECT_EQ(MetadataOf(status, "bytes_written"), "10");
  }
  {
    // An empty first piece, then a message naming the session again.
    std::unique_ptr<RawWrite> raw = StartWrite();
    (void)raw->writer->Write(FirstPiece(memory.handle, 0, 20, ""));
    (void)raw->writer->Write(FirstPiece(memory.handle, 0, 0, "0123456789"));
    const absl::Status status = Finish(*raw);
    EXPECT_THAT(status, HasReason("INVALID_REQUEST"));
    EXPECT_THAT(MessageOf(status), HasSubstr("only the first"));
    EXPECT_EQ(MetadataOf(status, "bytes_written"), "0");
  }
  {
    // No message at all.
    std::unique_ptr<RawWrite> raw = StartWrite();
    EXPECT_THAT(Finish(*raw), HasReason("INVALID_REQUEST"));
  }
}

// The worker dies between two pieces: the stream ends with WORKER_CRASHED
// and the crash report, saying which bytes were written.
TEST_F(StreamsTest, WorkerCrashMidStreamEndsItNamingTheBytesWritten) {
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    std::unique_ptr<client::Session> session = NewSession();
    ASSERT_NE(session, nullptr);
    session_.swap(session);
    functions_.clear();
    absl::StatusOr<client::Library> library =
        session_->LoadLibrary(FixturePath());
    ASSERT_THAT(library, IsOk());
    fixture_ = *library;
    const client::Memory memory = Allocated(3 * kMiB, placement);
    const std::string data = Pattern(kMiB);
    std::unique_ptr<RawWrite> raw = StartWrite();
    ASSERT_TRUE(raw->writer->Write(FirstPiece(memory.handle, 0, 3 * kMiB,
                                              data)));
    AwaitWritten(memory.handle, 0, data);
    EXPECT_THAT(Call("void fx_crash_null(void)"), HasReason("WORKER_CRASHED"));
    (void)raw->writer->Write(DataPiece(data));
    const absl::Status status = Finish(*raw);
    EXPECT_THAT(status, HasReason("WORKER_CRASHED"));
    EXPECT_THAT(MessageOf(status),
                HasSubstr("bytes 0..1048575 of 3145728 were written"));
    EXPECT_EQ(MetadataOf(status, "bytes_written"), "1048576");
    EXPECT_TRUE(client::CrashReportOf(status).has_value()) << status;
    // A stream started after the crash fails at once.
    std::string read;
    EXPECT_THAT(ReadAll(ReadRequest(memory.handle, 0, 0), &read),
                HasReason("WORKER_CRASHED"));
    EXPECT_TRUE(read.empty());
    session_.swap(session);
  }
}

// The session is deleted between two pieces: SESSION_NOT_FOUND, naming the
// bytes written.
TEST_F(StreamsTest, DeletedSessionMidStreamEndsIt) {
  client::SessionOptions options;
  options.attach_stream = false;
  std::unique_ptr<client::Session> session = NewSession(options);
  ASSERT_NE(session, nullptr);
  session_.swap(session);
  const client::Memory memory =
      Allocated(2 * kMiB, v1::ALLOCATION_PLACEMENT_ARENA);
  const std::string data = Pattern(kMiB);
  std::unique_ptr<RawWrite> raw = StartWrite();
  ASSERT_TRUE(
      raw->writer->Write(FirstPiece(memory.handle, 0, 2 * kMiB, data)));
  AwaitWritten(memory.handle, 0, data);
  v1::DeleteSessionRequest request;
  request.set_session(session_->id());
  v1::DeleteSessionResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub().DeleteSession(&context, request, &response).ok());
  (void)raw->writer->Write(DataPiece(data));
  const absl::Status status = Finish(*raw);
  EXPECT_THAT(status, HasReason("SESSION_NOT_FOUND"));
  EXPECT_THAT(MessageOf(status), HasSubstr("was deleted during the stream"));
  EXPECT_EQ(MetadataOf(status, "bytes_written"), "1048576");
  session_.swap(session);
}

// A client that cancels its streams midway leaves the session usable; the
// pieces that arrived before are written.
TEST_F(StreamsTest, ClientCancellingMidwayLeavesTheSessionUsable) {
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    const client::Memory memory = Allocated(8 * kMiB, placement, 'c');
    const std::string data = Pattern(kMiB);
    {
      std::unique_ptr<RawWrite> raw = StartWrite();
      ASSERT_TRUE(
          raw->writer->Write(FirstPiece(memory.handle, 0, 3 * kMiB, data)));
      AwaitWritten(memory.handle, 0, data);
      raw->context.TryCancel();
      EXPECT_THAT(client::StatusFromGrpc(raw->writer->Finish()),
                  HasCode(absl::StatusCode::kCancelled));
    }
    {
      grpc::ClientContext context;
      std::unique_ptr<grpc::ClientReader<v1::ReadStreamResponse>> reader =
          stub().ReadStream(&context, ReadRequest(memory.handle, 0, 0, 64 << 10));
      v1::ReadStreamResponse piece;
      ASSERT_TRUE(reader->Read(&piece));
      EXPECT_TRUE(piece.data() == data.substr(0, 64 << 10));
      context.TryCancel();
      EXPECT_THAT(client::StatusFromGrpc(reader->Finish()),
                  HasCode(absl::StatusCode::kCancelled));
    }
    absl::StatusOr<std::string> read =
        session_->Read(memory.handle, 0, 2 * kMiB);
    ASSERT_THAT(read, IsOk());
    EXPECT_TRUE(read->substr(0, kMiB) == data);
    EXPECT_TRUE(read->substr(kMiB) == std::string(kMiB, 'c'));
    ASSERT_THAT(session_->Free(memory.handle), IsOk());
  }
}

// A client that cancels a Read or a Write while the worker holds it (queued
// behind a running call) keeps its session: the worker only copies bytes,
// so the daemon stops waiting for the copy instead of killing the worker as
// it must for native code. The RPCs end as cancelled (before the call
// ends); the call and the session go on.
TEST_F(StreamsTest, CancellingACopyTheWorkerHoldsKeepsTheSession) {
  const client::Memory memory =
      Allocated(2 * kMiB, v1::ALLOCATION_PLACEMENT_HEAP, 'k');
  absl::StatusOr<client::Function> sleep = Resolve("void fx_sleep_ms(int ms)");
  ASSERT_THAT(sleep, IsOk());
  // The worker runs one request at a time: the copies wait behind this.
  std::optional<absl::StatusOr<v1::CallResponse>> slept;
  std::thread sleeping(
      [&] { slept = session_->Call(*sleep, {client::MakeInt(1500)}); });
  // Margins, not timings: the call reaches the worker well within them
  // even on a loaded machine.
  absl::SleepFor(absl::Milliseconds(400));
  grpc::ClientContext read_context;
  grpc::ClientContext write_context;
  grpc::Status read_status;
  grpc::Status write_status;
  std::thread reading([&] {
    v1::ReadRequest request;
    request.set_session(session_->id());
    request.mutable_pointer()->set_handle(memory.handle);
    request.set_length(2 * kMiB);
    v1::ReadResponse response;
    read_status = stub().Read(&read_context, request, &response);
  });
  std::thread writing([&] {
    v1::WriteRequest request;
    request.set_session(session_->id());
    request.mutable_pointer()->set_handle(memory.handle);
    request.set_data(std::string(kMiB, 'w'));
    v1::WriteResponse response;
    write_status = stub().Write(&write_context, request, &response);
  });
  absl::SleepFor(absl::Milliseconds(300));
  read_context.TryCancel();
  write_context.TryCancel();
  reading.join();
  writing.join();
  sleeping.join();
  EXPECT_EQ(read_status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(write_status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(slept.has_value());
  EXPECT_THAT(*slept, IsOk());
  absl::StatusOr<std::string> read = session_->Read(memory.handle, kMiB, kMiB);
  ASSERT_THAT(read, IsOk());
  EXPECT_TRUE(*read == std::string(kMiB, 'k'));
  EXPECT_THAT(session_->Free(memory.handle), IsOk());
}

// A daemon as one from before WriteStream and ReadStream: the RPCs a
// session without a Connect stream uses go to the real daemon, the streams
// get gRPC's own UNIMPLEMENTED (the generated service's default).
class OldDaemon final : public v1::Ffi::Service {
 public:
  explicit OldDaemon(v1::Ffi::Stub& daemon) : daemon_(daemon) {}

  grpc::Status CreateSession(grpc::ServerContext*,
                             const v1::CreateSessionRequest* request,
                             v1::CreateSessionResponse* response) override {
    return Forward(&v1::Ffi::Stub::CreateSession, *request, response);
  }
  grpc::Status DeleteSession(grpc::ServerContext*,
                             const v1::DeleteSessionRequest* request,
                             v1::DeleteSessionResponse* response) override {
    return Forward(&v1::Ffi::Stub::DeleteSession, *request, response);
  }
  grpc::Status Allocate(grpc::ServerContext*,
                        const v1::AllocateRequest* request,
                        v1::AllocateResponse* response) override {
    return Forward(&v1::Ffi::Stub::Allocate, *request, response);
  }
  grpc::Status Read(grpc::ServerContext*, const v1::ReadRequest* request,
                    v1::ReadResponse* response) override {
    ++unary_reads;
    return Forward(&v1::Ffi::Stub::Read, *request, response);
  }
  grpc::Status Write(grpc::ServerContext*, const v1::WriteRequest* request,
                     v1::WriteResponse* response) override {
    ++unary_writes;
    return Forward(&v1::Ffi::Stub::Write, *request, response);
  }

  std::atomic<int> unary_reads{0};
  std::atomic<int> unary_writes{0};

 private:
  template <typename Request, typename Response>
  grpc::Status Forward(grpc::Status (v1::Ffi::Stub::*rpc)(
                           grpc::ClientContext*, const Request&, Response*),
                       const Request& request, Response* response) {
    grpc::ClientContext context;
    return (daemon_.*rpc)(&context, request, response);
  }

  v1::Ffi::Stub& daemon_;
};

TEST_F(StreamsTest, ClientFallsBackToPiecesWithADaemonWithoutStreams) {
  OldDaemon old(stub());
  const std::string socket =
      absl::StrCat(::testing::TempDir(), "/old-ffid-", getpid(), ".sock");
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket,
                           grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(-1);
  builder.RegisterService(&old);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<client::Client>> client =
      client::Client::Connect("unix:" + socket, absl::Seconds(10));
  ASSERT_THAT(client, IsOk());
  client::SessionOptions options;
  options.attach_stream = false;
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      (*client)->CreateSession(options);
  ASSERT_THAT(session, IsOk());
  for (const v1::AllocationPlacement placement : kPlacements) {
    SCOPED_TRACE(v1::AllocationPlacement_Name(placement));
    absl::StatusOr<client::Memory> memory =
        (*session)->Allocate(3 * kMiB, "", placement);
    ASSERT_THAT(memory, IsOk());
    const std::string data = Pattern(3 * kMiB - 5);
    const int writes = old.unary_writes;
    const int reads = old.unary_reads;
    ASSERT_THAT((*session)->Write(memory->handle, 5, data), IsOk());
    absl::StatusOr<std::string> read =
        (*session)->Read(memory->handle, 5, data.size());
    ASSERT_THAT(read, IsOk());
    EXPECT_TRUE(*read == data);
    EXPECT_EQ(old.unary_writes - writes, 3);
    EXPECT_EQ(old.unary_reads - reads, 3);
    std::string into(data.size(), '#');
    ASSERT_THAT((*session)->ReadInto(memory->handle, 5, absl::MakeSpan(into)),
                IsOk());
    EXPECT_TRUE(into == data);
    EXPECT_EQ(old.unary_reads - reads, 6);
    // Too long for the block: nothing written, as with the stream.
    EXPECT_THAT((*session)->Write(memory->handle, 6, data),
                HasReason("OUT_OF_BOUNDS"));
  }
  EXPECT_THAT((*session)->Delete(), IsOk());
  server->Shutdown();
}

}  // namespace
}  // namespace ffid::testing
