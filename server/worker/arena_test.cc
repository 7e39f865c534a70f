#include "server/worker/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace ffid::worker {
namespace {

constexpr uint64_t kSize = uint64_t{1} << 20;

// A memfd of `size` bytes, sealed against shrinking if `sealed`.
int MakeMemfd(uint64_t size, bool sealed) {
  const int fd = memfd_create("arena-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  if (sealed) {
    EXPECT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  }
  return fd;
}

std::unique_ptr<SharedArena> MapOk() {
  absl::StatusOr<std::unique_ptr<SharedArena>> arena =
      SharedArena::Map(MakeMemfd(kSize, true), kSize);
  EXPECT_TRUE(arena.ok()) << arena.status();
  return arena.ok() ? *std::move(arena) : nullptr;
}

TEST(SharedArenaTest, RefusesUnsealedOrMisSizedMemfds) {
  EXPECT_FALSE(SharedArena::Map(MakeMemfd(kSize, false), kSize).ok());
  EXPECT_FALSE(SharedArena::Map(MakeMemfd(kSize, true), 2 * kSize).ok());
  EXPECT_FALSE(SharedArena::Map(-1, kSize).ok());
}

TEST(SharedArenaTest, AllocationsAreAlignedDisjointAndZeroed) {
  std::unique_ptr<SharedArena> arena = MapOk();
  ASSERT_NE(arena, nullptr);
  absl::StatusOr<void*> a = arena->Allocate(1);
  absl::StatusOr<void*> b = arena->Allocate(100);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*a) % SharedArena::kAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*b) % SharedArena::kAlignment, 0u);
  EXPECT_GE(static_cast<char*>(*b) - static_cast<char*>(*a), 64);
  EXPECT_EQ(arena->used(), 64u + 128u);
  std::memset(*b, 0xff, 100);
  arena->Free(*b);
  absl::StatusOr<void*> c = arena->Allocate(100);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, *b);
  EXPECT_EQ(std::string(static_cast<char*>(*c), 100), std::string(100, '\0'));
}

TEST(SharedArenaTest, LargeBlocksAreZeroedByPunchingHoles) {
  std::unique_ptr<SharedArena> arena = MapOk();
  ASSERT_NE(arena, nullptr);
  absl::StatusOr<void*> odd = arena->Allocate(100);  // Misaligns what follows.
  absl::StatusOr<void*> big = arena->Allocate(300000);
  ASSERT_TRUE(odd.ok() && big.ok());
  std::memset(*big, 0x33, 300000);
  arena->Free(*big);
  absl::StatusOr<void*> again = arena->Allocate(300000);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(std::string(static_cast<char*>(*again), 300000),
            std::string(300000, '\0'));
}

TEST(SharedArenaTest, FullArenaIsAResourceLimitAndFreeingCoalesces) {
  std::unique_ptr<SharedArena> arena = MapOk();
  ASSERT_NE(arena, nullptr);
  absl::StatusOr<void*> first = arena->Allocate(kSize / 2);
  absl::StatusOr<void*> second = arena->Allocate(kSize / 2);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FALSE(arena->Allocate(1).ok());
  arena->Free(*second);
  arena->Free(*first);
  arena->Free(*first);  // Twice, or a foreign pointer: ignored.
  EXPECT_EQ(arena->used(), 0u);
  absl::StatusOr<void*> whole = arena->Allocate(kSize);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(*whole, static_cast<void*>(arena->base()));
}

}  // namespace
}  // namespace ffid::worker
