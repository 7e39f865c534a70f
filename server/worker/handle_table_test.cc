#include "server/worker/handle_table.h"

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "ffi/errors.h"
#include "gtest/gtest.h"

namespace ffid::worker {
namespace {

constexpr char kTag[] = "0a1b2c3d";

void ExpectHandleInvalid(const absl::Status& status,
                         const std::string& message_part,
                         absl::StatusCode code =
                             absl::StatusCode::kInvalidArgument) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_HANDLE_INVALID) << status;
  EXPECT_NE(status.message().find(message_part), absl::string_view::npos)
      << "message: " << status.message() << "\nexpected to contain: "
      << message_part;
}

// A handle of this session's shape that was never issued.
std::string Unissued(absl::string_view kind) {
  return std::string(kind) + "_" + kTag + "_" + std::string(32, 'f');
}

TEST(HandleTableTest, HandlesHaveKindTagAndRandomPart) {
  HandleTable table(kTag);
  const std::regex shape(R"(^(lib|fn|mem)_0a1b2c3d_[0-9a-f]{32}$)");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string handle = table.NewHandle(HandleKind::kMemory);
    EXPECT_TRUE(std::regex_match(handle, shape)) << handle;
    EXPECT_EQ(handle.rfind("mem_", 0), 0u);
    seen.insert(handle);
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(table.NewHandle(HandleKind::kLibrary).rfind("lib_", 0), 0u);
  EXPECT_EQ(table.NewHandle(HandleKind::kFunction).rfind("fn_", 0), 0u);
}

TEST(HandleTableTest, OwnedMemoryLifecycle) {
  HandleTable table(kTag);
  void* block = std::calloc(1, 64);
  const std::string handle = table.AddOwnedMemory(block, 64);
  absl::StatusOr<MemoryEntry*> entry = table.GetMemory(handle);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ((*entry)->address, block);
  EXPECT_EQ((*entry)->size, 64u);
  EXPECT_TRUE((*entry)->owned);
  EXPECT_EQ(table.memory_count(), 1u);

  ASSERT_TRUE(table.FreeMemory(handle).ok());
  EXPECT_EQ(table.memory_count(), 0u);
  ExpectHandleInvalid(table.GetMemory(handle).status(),
                      "memory handle " + handle + " was freed");
  ExpectHandleInvalid(table.FreeMemory(handle), handle + " was freed");
}

TEST(HandleTableTest, NeverIssuedHandleDoesNotExist) {
  HandleTable table(kTag);
  ExpectHandleInvalid(table.GetMemory(Unissued("mem")).status(),
                      "memory handle " + Unissued("mem") +
                          " does not exist in this session");
  ExpectHandleInvalid(table.GetFunction(Unissued("fn")).status(),
                      "does not exist in this session");
  ExpectHandleInvalid(table.GetLibrary(Unissued("lib")).status(),
                      "does not exist in this session");
}

TEST(HandleTableTest, OtherSessionsHandlesAreRejected) {
  HandleTable mine(kTag);
  HandleTable theirs("99999999");
  const std::string foreign =
      theirs.AddOwnedMemory(std::calloc(1, 8), 8);
  ExpectHandleInvalid(mine.GetMemory(foreign).status(),
                      "handle " + foreign + " belongs to another session");
  ExpectHandleInvalid(mine.FreeMemory(foreign), "belongs to another session");
  // Still alive in its own session.
  EXPECT_TRUE(theirs.GetMemory(foreign).ok());
}

TEST(HandleTableTest, WrongKindNamesBothKinds) {
  HandleTable table(kTag);
  const std::string memory = table.AddOwnedMemory(std::calloc(1, 8), 8);
  ExpectHandleInvalid(
      table.GetFunction(memory).status(),
      "handle " + memory + " is a memory handle, not a function handle");
  const std::string library = table.AddLibrary(nullptr, "/lib/x.so");
  ExpectHandleInvalid(table.GetMemory(library).status(),
                      "is a library handle, not a memory handle");
}

TEST(HandleTableTest, MalformedAndEmptyHandles) {
  HandleTable table(kTag);
  ExpectHandleInvalid(table.GetMemory("").status(),
                      "no memory handle was given");
  for (const char* bad :
       {"garbage", "mem_", "mem_0a1b2c3d_", "mem_0a1b2c3d_xyz",
        "xx_0a1b2c3d_ffffffffffffffffffffffffffffffff",
        "mem_0a1b2c3d_FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        "mem_ffffffffffffffffffffffffffffffff"}) {
    ExpectHandleInvalid(table.GetMemory(bad).status(),
                        "is not a valid memory handle");
  }
}

TEST(HandleTableTest, CallbackHandlesAreTheirOwnKind) {
  HandleTable table(kTag);
  const std::string callback = table.NewHandle(HandleKind::kCallback);
  EXPECT_EQ(callback.substr(0, 3), "cb_");
  EXPECT_TRUE(table.CheckHandle(callback, HandleKind::kCallback).ok());
  ExpectHandleInvalid(table.GetMemory(callback).status(),
                      "is a callback handle, not a memory handle");
}

TEST(HandleTableTest, BorrowedMemoryIsDedupedAndCannotBeFreed) {
  HandleTable table(kTag);
  static char native[16];
  const std::string first = table.AddBorrowedMemory(native);
  const std::string second = table.AddBorrowedMemory(native);
  EXPECT_EQ(first, second);
  EXPECT_NE(table.AddBorrowedMemory(native + 1), first);
  absl::StatusOr<MemoryEntry*> entry = table.GetMemory(first);
  ASSERT_TRUE(entry.ok());
  EXPECT_FALSE((*entry)->owned);
  EXPECT_EQ((*entry)->address, native);
  ExpectHandleInvalid(table.FreeMemory(first),
                      "is borrowed; ffid does not own it",
                      absl::StatusCode::kFailedPrecondition);
  // Refusing to free did not retire it.
  EXPECT_TRUE(table.GetMemory(first).ok());
}

TEST(HandleTableTest, PointerToOwnedMemoryWrapsToTheOwnedHandle) {
  HandleTable table(kTag);
  void* block = std::calloc(1, 32);
  const std::string owned = table.AddOwnedMemory(block, 32);
  EXPECT_EQ(table.AddBorrowedMemory(block), owned);
  ASSERT_TRUE(table.FreeMemory(owned).ok());
  // Once freed, the address is no longer mapped to the dead handle (the
  // block is never dereferenced, only used as a key).
  EXPECT_NE(table.AddBorrowedMemory(block), owned);
}

TEST(HandleTableTest, UnloadingALibraryRetiresItsFunctions) {
  HandleTable table(kTag);
  const std::string lib = table.AddLibrary(nullptr, "/lib/libfake.so");
  const std::string other = table.AddLibrary(nullptr, "/lib/libother.so");
  const std::string fn = table.AddFunction(lib, nullptr);
  const std::string kept = table.AddFunction(other, nullptr);
  absl::StatusOr<const LibraryEntry*> entry = table.GetLibrary(lib);
  ASSERT_TRUE(entry.ok());
  EXPECT_EQ((*entry)->path, "/lib/libfake.so");
  ASSERT_TRUE(table.GetFunction(fn).ok());

  absl::StatusOr<LibraryEntry> removed = table.RemoveLibrary(lib);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->path, "/lib/libfake.so");
  ExpectHandleInvalid(table.GetFunction(fn).status(),
                      "function handle " + fn +
                          " was unloaded with its library " + lib);
  ExpectHandleInvalid(table.GetLibrary(lib).status(),
                      "library handle " + lib + " was unloaded");
  ExpectHandleInvalid(table.RemoveLibrary(lib).status(), "was unloaded");
  EXPECT_TRUE(table.GetFunction(kept).ok());
  EXPECT_EQ(table.library_count(), 1u);
  EXPECT_EQ(table.function_count(), 1u);
}

TEST(HandleTableTest, DestructionReleasesOwnedMemoryAndKeepAlives) {
  std::weak_ptr<void> watched;
  {
    HandleTable table(kTag);
    auto keep = std::make_shared<int>(5);
    watched = keep;
    table.AddOwnedMemory(std::calloc(1, 128), 128, std::move(keep));
    table.AddOwnedMemory(std::calloc(1, 4096), 4096);
    EXPECT_FALSE(watched.expired());
  }
  // The owned blocks were freed too; the asan preset's leak checker would
  // flag them otherwise.
  EXPECT_TRUE(watched.expired());
}

TEST(HandleTableTest, FreeReleasesKeepAlive) {
  HandleTable table(kTag);
  auto keep = std::make_shared<int>(5);
  std::weak_ptr<void> watched = keep;
  const std::string handle =
      table.AddOwnedMemory(std::calloc(1, 8), 8, std::move(keep));
  ASSERT_TRUE(table.FreeMemory(handle).ok());
  EXPECT_TRUE(watched.expired());
}

TEST(HandleTableTest, DestructionClosesLibraries) {
  void* dl = ::dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(dl, nullptr) << ::dlerror();
  {
    HandleTable table(kTag);
    table.AddLibrary(dl, "libm.so.6");
  }
  // Nothing observable beyond not crashing and not leaking: the reference
  // taken above was dropped exactly once (a second dlclose would fail).
  SUCCEED();
}

TEST(HandleTableTest, RetiredHandlesAreRememberedUpToALimit) {
  constexpr size_t kLimit = 100;
  HandleTable table(kTag, kLimit);
  std::vector<std::string> freed;
  for (size_t i = 0; i <= kLimit; ++i) {
    freed.push_back(table.AddOwnedMemory(std::malloc(1), 1));
    ASSERT_TRUE(table.FreeMemory(freed.back()).ok());
  }
  // The oldest was forgotten; the next oldest and the newest are not.
  ExpectHandleInvalid(table.GetMemory(freed[0]).status(),
                      "does not exist in this session");
  ExpectHandleInvalid(table.GetMemory(freed[1]).status(), "was freed");
  ExpectHandleInvalid(table.GetMemory(freed.back()).status(), "was freed");
  EXPECT_GE(HandleTable::kMaxRetired, size_t{1} << 16);
}

}  // namespace
}  // namespace ffid::worker
