// The symbolizer on this test binary's own code (built with -g): a static
// function's address gives its name and this file's line, a return address
// the line of the call, and unknown files or addresses give nothing.
#include "server/symbolizer.h"

#include <dlfcn.h>
#include <link.h>
#include <limits.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::server {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The frame `address` is in, as the worker's crash handler records it.
RawFrame FrameOf(const void* address) {
  Dl_info info = {};
  link_map* map = nullptr;
  RawFrame frame;
  frame.pc = reinterpret_cast<uint64_t>(address);
  if (dladdr1(address, &info, reinterpret_cast<void**>(&map),
              RTLD_DL_LINKMAP) != 0 &&
      map != nullptr) {
    frame.bias = map->l_addr;
    frame.path = info.dli_fname;
  }
  if (!frame.path.empty() && frame.path[0] != '/') {
    // The executable as argv[0] named it (the worker's is absolute).
    char self[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) frame.path.assign(self, static_cast<size_t>(n));
  }
  return frame;
}

// A function dladdr cannot name (internal linkage), on the line after
// kLocalFunctionLine.
constexpr int kLocalFunctionLine = __LINE__ + 1;
__attribute__((noinline)) int LocalFunction(int x) {
  return x * 3 + 1;
}

int g_data = 1;

__attribute__((noinline)) const void* ReturnAddressHere() {
  return __builtin_return_address(0);
}

TEST(SymbolizerTest, NamesAStaticFunctionAndItsSourceLine) {
  RawFrame frame = FrameOf(reinterpret_cast<const void*>(&LocalFunction));
  ASSERT_FALSE(frame.path.empty());
  frame.exact = true;
  FrameSymbol symbol = Symbolizer::Get().Symbolize(frame);
  EXPECT_THAT(symbol.function, HasSubstr("LocalFunction"));
  EXPECT_EQ(symbol.offset, 0u);
  EXPECT_THAT(symbol.file, EndsWith("server/symbolizer_test.cc"));
  // The function's opening line (or its body's first line).
  EXPECT_GE(symbol.line, kLocalFunctionLine);
  EXPECT_LE(symbol.line, kLocalFunctionLine + 1);
  EXPECT_EQ(LocalFunction(1), 4);
}

TEST(SymbolizerTest, AReturnAddressGivesTheLineOfTheCall) {
  const void* after_call = ReturnAddressHere(); const int call_line = __LINE__;
  RawFrame frame = FrameOf(after_call);
  FrameSymbol symbol = Symbolizer::Get().Symbolize(frame);
  EXPECT_THAT(symbol.function, HasSubstr("SymbolizerTest"));
  EXPECT_THAT(symbol.file, EndsWith("server/symbolizer_test.cc"));
  EXPECT_EQ(symbol.line, call_line);
}

TEST(SymbolizerTest, DescribeCompletesBacktraceText) {
  RawFrame frame = FrameOf(reinterpret_cast<const void*>(&LocalFunction));
  frame.exact = true;
  const std::string text = frame.path + "(+0x1234) [0x5678]";
  const std::string described = Symbolizer::Get().Describe(frame, text);
  EXPECT_THAT(described, StartsWith(frame.path + "("));
  EXPECT_THAT(described, HasSubstr("LocalFunction"));
  EXPECT_THAT(described, HasSubstr("+0x0) [0x5678] at "));
  EXPECT_THAT(described, HasSubstr("symbolizer_test.cc:"));
}

TEST(SymbolizerTest, NamesOnlyFilesGetTheFunctionButNoLine) {
  RawFrame frame = FrameOf(reinterpret_cast<const void*>(&LocalFunction));
  frame.exact = true;
  // A copy of this executable (its own file: the cache is process-wide),
  // looked up at the same addresses.
  char copy[] = "/tmp/ffid-symbolizer-test-XXXXXX";
  const int fd = mkstemp(copy);
  ASSERT_GE(fd, 0);
  close(fd);
  ASSERT_EQ(std::system(("cp " + frame.path + " " + copy).c_str()), 0);
  frame.path = copy;
  EXPECT_THAT(Symbolizer::Get().Symbolize(frame).file,
              EndsWith("server/symbolizer_test.cc"));

  Symbolizer::Get().NamesOnly(copy);
  FrameSymbol symbol = Symbolizer::Get().Symbolize(frame);
  EXPECT_THAT(symbol.function, HasSubstr("LocalFunction"));
  EXPECT_EQ(symbol.file, "");
  EXPECT_EQ(symbol.line, 0);
  unlink(copy);
}

TEST(SymbolizerTest, UnknownFilesAndAddressesGiveNothing) {
  RawFrame missing;
  missing.pc = 0x1234;
  missing.path = "/nonexistent/lib.so";
  FrameSymbol symbol = Symbolizer::Get().Symbolize(missing);
  EXPECT_EQ(symbol.function, "");
  EXPECT_EQ(symbol.line, 0);
  EXPECT_EQ(Symbolizer::Get().Describe(missing, "text"), "text");

  // Data, not code: no line describes it. (Not the ELF header: a build's
  // discarded functions may keep line entries at address 0.)
  RawFrame nowhere = FrameOf(&g_data);
  nowhere.exact = true;
  EXPECT_EQ(Symbolizer::Get().Symbolize(nowhere).line, 0);

  RawFrame no_path;
  no_path.pc = 0x1234;
  EXPECT_EQ(Symbolizer::Get().Describe(no_path, "x(+0x1) [0x1234]"),
            "x(+0x1) [0x1234]");
}

}  // namespace
}  // namespace ffid::server
