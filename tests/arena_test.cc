// The session's shared-memory arena through the real daemon and worker:
// a client maps it (OpenArena + the fd over the arena socket), memory
// allocated there is the same bytes for the client, for native code in the
// worker and for Read/Write through gRPC.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "clients/cpp/ffid/arena.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeInt;
using client::MakePointer;
using ::testing::HasSubstr;

class ArenaTest : public FfidTest {
 protected:
  // Maps the arena and allocates `size` bytes in it.
  void MapAndAllocate(uint64_t size) {
    absl::StatusOr<std::shared_ptr<client::Arena>> arena =
        session_->MapArena();
    ASSERT_TRUE(arena.ok()) << arena.status();
    arena_ = *arena;
    absl::StatusOr<client::Memory> memory =
        session_->Allocate(size, "", v1::ALLOCATION_PLACEMENT_ARENA);
    ASSERT_TRUE(memory.ok()) << memory.status();
    memory_ = *memory;
    absl::StatusOr<absl::Span<char>> bytes = arena_->Bytes(memory_);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    bytes_ = *bytes;
  }

  std::shared_ptr<client::Arena> arena_;
  client::Memory memory_;
  absl::Span<char> bytes_;
};

TEST_F(ArenaTest, ClientWritesNativeCodeReads) {
  ASSERT_NO_FATAL_FAILURE(MapAndAllocate(16 * sizeof(int)));
  EXPECT_TRUE(memory_.in_arena);
  EXPECT_EQ(memory_.address, arena_->worker_address() + memory_.arena_offset);
  std::vector<int> values(16);
  for (int i = 0; i < 16; ++i) values[i] = i * 3;
  std::memcpy(bytes_.data(), values.data(), 16 * sizeof(int));

  absl::StatusOr<client::Function> sum =
      Resolve("int fx_sum_ints(const int *values, size_t count)");
  ASSERT_TRUE(sum.ok()) << sum.status();
  absl::StatusOr<v1::CallResponse> result =
      session_->Call(*sum, {MakePointer(memory_.handle), MakeInt(16)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->result().int_value(), 3 * (15 * 16 / 2));
}

TEST_F(ArenaTest, NativeCodeWritesClientReads) {
  ASSERT_NO_FATAL_FAILURE(MapAndAllocate(1000));
  absl::StatusOr<client::Function> fill =
      Resolve("void fx_fill(unsigned char *buffer, size_t size, int value)");
  ASSERT_TRUE(fill.ok()) << fill.status();
  ASSERT_THAT(session_->Call(*fill, {MakePointer(memory_.handle),
                                     MakeInt(1000), MakeInt(0x5a)}),
              IsOk());
  EXPECT_EQ(std::string(bytes_.data(), bytes_.size()),
            std::string(1000, '\x5a'));
}

TEST_F(ArenaTest, ReadAndWriteThroughGrpcSeeTheSameBytes) {
  ASSERT_NO_FATAL_FAILURE(MapAndAllocate(64));
  std::memcpy(bytes_.data(), "mapped by the client", 20);
  absl::StatusOr<std::string> read = session_->Read(memory_.handle, 0, 20);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "mapped by the client");

  ASSERT_THAT(session_->Write(memory_.handle, 4, "WRITE"), IsOk());
  EXPECT_EQ(std::string(bytes_.data(), 20), "mappWRITE the client");

  // Bounds are those of the allocation, as for heap memory.
  EXPECT_THAT(session_->Read(memory_.handle, 60, 8),
              HasReason("OUT_OF_BOUNDS"));
  EXPECT_THAT(session_->Write(memory_.handle, 65, "x"),
              HasReason("OUT_OF_BOUNDS"));
  // Length 0 reads to the end.
  read = session_->Read(memory_.handle, 60, 0);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->size(), 4u);
}

TEST_F(ArenaTest, FreedMemoryIsRefusedAndComesBackZeroed) {
  ASSERT_NO_FATAL_FAILURE(MapAndAllocate(4096));
  std::memset(bytes_.data(), 0x77, bytes_.size());
  const uint64_t offset = memory_.arena_offset;
  ASSERT_THAT(session_->Free(memory_.handle), IsOk());
  EXPECT_THAT(session_->Read(memory_.handle, 0, 1),
              HasReason("HANDLE_INVALID"));
  EXPECT_THAT(session_->Write(memory_.handle, 0, "x"),
              HasReason("HANDLE_INVALID"));
  absl::StatusOr<client::Memory> again =
      session_->Allocate(4096, "", v1::ALLOCATION_PLACEMENT_ARENA);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->arena_offset, offset);  // The block is reused ...
  absl::StatusOr<absl::Span<char>> bytes = arena_->Bytes(*again);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(std::string(bytes->data(), bytes->size()),
            std::string(4096, '\0'));  // ... zeroed.
}

TEST_F(ArenaTest, InitialBytesAndHeapMemoryIsNotInTheArena) {
  absl::StatusOr<std::shared_ptr<client::Arena>> arena = session_->MapArena();
  ASSERT_TRUE(arena.ok()) << arena.status();
  absl::StatusOr<client::Memory> placed =
      session_->Allocate(8, "abc", v1::ALLOCATION_PLACEMENT_ARENA);
  ASSERT_TRUE(placed.ok()) << placed.status();
  absl::StatusOr<absl::Span<char>> bytes = (*arena)->Bytes(*placed);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(std::string(bytes->data(), 8), std::string("abc\0\0\0\0\0", 8));

  absl::StatusOr<client::Memory> heap = session_->Allocate(8);
  ASSERT_TRUE(heap.ok()) << heap.status();
  EXPECT_FALSE(heap->in_arena);
  EXPECT_EQ((*arena)->Bytes(*heap).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ArenaTest, TooLargeForTheArenaIsAResourceLimit) {
  absl::StatusOr<std::shared_ptr<client::Arena>> arena = session_->MapArena();
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_THAT(session_->Allocate((*arena)->size() + 1, "",
                                 v1::ALLOCATION_PLACEMENT_ARENA),
              HasReason("RESOURCE_LIMIT"));
}

TEST_F(ArenaTest, ATokenWorksOnce) {
  v1::OpenArenaRequest request;
  request.set_session(session_->id());
  v1::OpenArenaResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(client_->stub().OpenArena(&context, request, &response).ok());
  EXPECT_FALSE(response.socket_path().empty());
  EXPECT_EQ(response.token().size(), 32u);
  absl::StatusOr<std::shared_ptr<client::Arena>> first = client::Arena::Receive(
      response.socket_path(), response.token(), response.size(),
      response.worker_address());
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::shared_ptr<client::Arena>> second =
      client::Arena::Receive(response.socket_path(), response.token(),
                             response.size(), response.worker_address());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(MessageOf(second), HasSubstr("token"));
  absl::StatusOr<std::shared_ptr<client::Arena>> guessed =
      client::Arena::Receive(response.socket_path(),
                             std::string(32, '0'), response.size(),
                             response.worker_address());
  EXPECT_EQ(guessed.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ArenaTest, OtherSessionsCannotOpenIt) {
  v1::OpenArenaRequest request;
  request.set_session("00000000000000000000000000000000");
  v1::OpenArenaResponse response;
  grpc::ClientContext context;
  EXPECT_FALSE(client_->stub().OpenArena(&context, request, &response).ok());
}

TEST_F(ArenaTest, BatchAllocatesInTheArena) {
  absl::StatusOr<std::shared_ptr<client::Arena>> arena = session_->MapArena();
  ASSERT_TRUE(arena.ok()) << arena.status();
  absl::StatusOr<client::Function> fill =
      Resolve("void fx_fill(unsigned char *buffer, size_t size, int value)");
  ASSERT_TRUE(fill.ok()) << fill.status();
  std::vector<v1::BatchStep> steps(2);
  steps[0].mutable_allocate()->set_size(32);
  steps[0].mutable_allocate()->set_placement(v1::ALLOCATION_PLACEMENT_ARENA);
  steps[1].mutable_call()->set_function(fill->handle);
  *steps[1].mutable_call()->add_arguments() = v1::Value();
  *steps[1].mutable_call()->add_arguments() = MakeInt(32);
  *steps[1].mutable_call()->add_arguments() = MakeInt(7);
  v1::BatchReference* reference = steps[1].add_references();
  reference->set_argument(0);
  reference->set_step(0);
  absl::StatusOr<v1::BatchResponse> response = session_->Batch(steps);
  ASSERT_TRUE(response.ok()) << response.status();
  const v1::AllocateResponse& allocated = response->results(0).allocate();
  ASSERT_TRUE(allocated.in_arena());
  EXPECT_EQ(std::string((*arena)->data() + allocated.arena_offset(), 32),
            std::string(32, '\7'));
}

}  // namespace
}  // namespace ffid::testing
