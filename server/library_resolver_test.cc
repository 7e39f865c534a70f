#include "server/library_resolver.h"

#include <elf.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/options.h"

namespace ffid::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string RealPathOf(const std::string& path) {
  char buffer[PATH_MAX];
  if (realpath(path.c_str(), buffer) == nullptr) return "";
  return buffer;
}

class LibraryResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ffid_resolver_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    real_root_ = RealPathOf(root_);
  }
  void TearDown() override {
    std::string command = absl::StrCat("rm -rf '", root_, "'");
    ASSERT_EQ(system(command.c_str()), 0);
  }

  std::string MakeDir(const std::string& relative) {
    std::string path = absl::StrCat(root_, "/", relative);
    EXPECT_EQ(mkdir(path.c_str(), 0755), 0) << path;
    return path;
  }
  std::string WriteFile(const std::string& relative,
                        const std::string& content) {
    std::string path = absl::StrCat(root_, "/", relative);
    std::ofstream(path) << content;
    return path;
  }
  // The start of an ELF header of the given class and machine.
  std::string ElfHeader(unsigned char elf_class, uint16_t machine) {
    std::string header(sizeof(Elf64_Ehdr), '\0');
    memcpy(&header[0], ELFMAG, SELFMAG);
    header[EI_CLASS] = static_cast<char>(elf_class);
    header[EI_DATA] = ELFDATA2LSB;
    header[EI_VERSION] = EV_CURRENT;
    memcpy(&header[EI_NIDENT + 2], &machine, sizeof(machine));
    return header;
  }
  std::string Symlink(const std::string& target, const std::string& relative) {
    std::string path = absl::StrCat(root_, "/", relative);
    EXPECT_EQ(symlink(target.c_str(), path.c_str()), 0) << path;
    return path;
  }

  std::string root_;
  std::string real_root_;
};

TEST_F(LibraryResolverTest, AbsolutePathResolvesSymlinks) {
  MakeDir("lib");
  WriteFile("lib/libfoo.so.1.2", "not really a library");
  Symlink("libfoo.so.1.2", "lib/libfoo.so.1");
  auto path = ResolveLibrary(absl::StrCat(root_, "/lib/libfoo.so.1"), {});
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, absl::StrCat(real_root_, "/lib/libfoo.so.1.2"));
}

TEST_F(LibraryResolverTest, MissingPathIsLibraryNotFound) {
  std::string missing = absl::StrCat(root_, "/libnope.so");
  auto path = ResolveLibrary(missing, {});
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetErrorReason(path.status()), v1::ERROR_REASON_LIBRARY_NOT_FOUND);
  EXPECT_THAT(path.status().message(), HasSubstr(missing));
  EXPECT_THAT(path.status().message(), HasSubstr("No such file"));
}

TEST_F(LibraryResolverTest, DirectoryIsNotALibrary) {
  std::string dir = MakeDir("lib");
  auto path = ResolveLibrary(dir, {});
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(GetErrorReason(path.status()), v1::ERROR_REASON_LIBRARY_NOT_FOUND);
  EXPECT_THAT(path.status().message(), HasSubstr("not a regular file"));
}

TEST_F(LibraryResolverTest, RelativeAndEmptyNamesAreInvalid) {
  for (absl::string_view name : {"lib/libm.so.6", "./libm.so.6", ""}) {
    auto path = ResolveLibrary(name, {});
    ASSERT_FALSE(path.ok()) << name;
    EXPECT_EQ(path.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(GetErrorReason(path.status()),
              v1::ERROR_REASON_INVALID_REQUEST);
  }
}

TEST_F(LibraryResolverTest, SonameSearchesDirectoriesInOrder) {
  std::string first = MakeDir("first");
  std::string second = MakeDir("second");
  std::string third = MakeDir("third");
  WriteFile("second/libbar.so", ElfHeader(ELFCLASS64, EM_X86_64));
  WriteFile("third/libbar.so", ElfHeader(ELFCLASS64, EM_X86_64));
  auto path = ResolveLibrary("libbar.so", {first, second, third});
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, absl::StrCat(real_root_, "/second/libbar.so"));
}

#if defined(__x86_64__)
TEST_F(LibraryResolverTest, SonameSearchSkipsOtherArchitectures) {
  std::string first = MakeDir("first");
  std::string second = MakeDir("second");
  std::string third = MakeDir("third");
  WriteFile("first/libbar.so", ElfHeader(ELFCLASS32, EM_386));
  WriteFile("second/libbar.so", ElfHeader(ELFCLASS64, EM_AARCH64));
  WriteFile("third/libbar.so", ElfHeader(ELFCLASS64, EM_X86_64));
  auto path = ResolveLibrary("libbar.so", {first, second, third});
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, absl::StrCat(real_root_, "/third/libbar.so"));
}
#endif

TEST_F(LibraryResolverTest, SonameNotFoundListsTheSearchedDirectories) {
  std::string first = MakeDir("first");
  std::string second = MakeDir("second");
  auto path = ResolveLibrary("libnope.so", {first, second});
  ASSERT_FALSE(path.ok());
  EXPECT_EQ(path.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetErrorReason(path.status()), v1::ERROR_REASON_LIBRARY_NOT_FOUND);
  EXPECT_THAT(path.status().message(),
              HasSubstr(absl::StrCat(
                  "library 'libnope.so' not found (searched: ", first, ", ",
                  second, ")")));
}

TEST_F(LibraryResolverTest, ReadLdSoConfFollowsIncludes) {
  MakeDir("conf.d");
  WriteFile("ld.so.conf",
            "# comment\n"
            "include conf.d/*.conf\n"
            "/opt/top   # trailing comment\n"
            "hwcap 0 nosegneg\n"
            "include ld.so.conf\n");  // A cycle must terminate.
  WriteFile("conf.d/a.conf", "/opt/a\n/opt/shared/\n");
  WriteFile("conf.d/b.conf", "  /opt/b\n/opt/shared\n\n");
  WriteFile("conf.d/ignored.txt", "/opt/ignored\n");
  std::vector<std::string> dirs =
      ReadLdSoConf(absl::StrCat(root_, "/ld.so.conf"));
  EXPECT_THAT(dirs, ElementsAre("/opt/a", "/opt/shared", "/opt/b", "/opt/top"));
  EXPECT_TRUE(ReadLdSoConf(absl::StrCat(root_, "/missing.conf")).empty());
}

TEST(LibrarySearchDirectoriesTest, EndsWithTheDefaults) {
  std::vector<std::string> dirs = LibrarySearchDirectories();
  for (const std::string& dir : DefaultLibraryDirectories()) {
    EXPECT_NE(std::find(dirs.begin(), dirs.end(), dir), dirs.end()) << dir;
  }
}

TEST(SystemLibraryTest, FindsLibmAndLibcAndAllowsThemByDefault) {
  Allowlist allowlist(DefaultAllowedLibraries());
  for (const char* soname : {"libm.so.6", "libc.so.6"}) {
    auto path = ResolveLibrary(soname);
    ASSERT_TRUE(path.ok()) << path.status();
    EXPECT_THAT(*path, StartsWith("/"));
    EXPECT_EQ(*path, RealPathOf(*path));
    EXPECT_TRUE(allowlist.Check(*path, soname).ok());
  }
}

TEST_F(LibraryResolverTest, AllowlistStarCrossesSlashes) {
  Allowlist allowlist({"/opt/vendor/*"});
  EXPECT_TRUE(
      allowlist.Check("/opt/vendor/lib/x86_64/libv.so", "libv.so").ok());
  EXPECT_TRUE(allowlist.Check("/opt/vendor/libv.so", "libv.so").ok());
  EXPECT_FALSE(allowlist.Check("/opt/vendorx/libv.so", "libv.so").ok());
}

TEST_F(LibraryResolverTest, AllowlistRefusalIsActionable) {
  Allowlist allowlist({"/opt/vendor/*"});
  absl::Status status = allowlist.Check("/home/u/libevil.so", "libevil.so");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_LIBRARY_NOT_ALLOWED);
  EXPECT_EQ(status.message(),
            "'/home/u/libevil.so' (resolved from 'libevil.so') is not in the "
            "allowlist; start ffid with --allow-library '/home/u/*' to allow "
            "it");
  status = allowlist.Check("/home/u/libevil.so", "/home/u/libevil.so");
  EXPECT_EQ(status.message(),
            "'/home/u/libevil.so' is not in the allowlist; start ffid with "
            "--allow-library '/home/u/*' to allow it");
}

TEST_F(LibraryResolverTest, SymlinkOutOfAllowedDirectoryIsRefused) {
  MakeDir("allowed");
  MakeDir("outside");
  WriteFile("outside/libevil.so", "evil");
  WriteFile("allowed/libgood.so", "good");
  Symlink(absl::StrCat(root_, "/outside/libevil.so"), "allowed/libtrojan.so");
  Allowlist allowlist({absl::StrCat(root_, "/allowed/*")});

  std::string trojan = absl::StrCat(root_, "/allowed/libtrojan.so");
  auto path = ResolveLibrary(trojan, {});
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, absl::StrCat(real_root_, "/outside/libevil.so"));
  absl::Status status = allowlist.Check(*path, trojan);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_LIBRARY_NOT_ALLOWED);
  EXPECT_THAT(status.message(), HasSubstr("outside/libevil.so"));
  EXPECT_THAT(status.message(), HasSubstr("resolved from '" + trojan + "'"));

  // The same file found by soname is refused too.
  auto by_soname =
      ResolveLibrary("libtrojan.so", {absl::StrCat(root_, "/allowed")});
  ASSERT_TRUE(by_soname.ok()) << by_soname.status();
  EXPECT_FALSE(allowlist.Check(*by_soname, "libtrojan.so").ok());

  auto good = ResolveLibrary(absl::StrCat(root_, "/allowed/libgood.so"), {});
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(allowlist.Check(*good, "libgood.so").ok());
}

TEST_F(LibraryResolverTest, GlobThroughSymlinkedDirectoryIsNormalised) {
  MakeDir("real");
  WriteFile("real/libok.so", "ok");
  Symlink(absl::StrCat(root_, "/real"), "link");
  Allowlist allowlist({absl::StrCat(root_, "/link/*")});
  EXPECT_THAT(allowlist.patterns(),
              ElementsAre(absl::StrCat(root_, "/link/*"),
                          absl::StrCat(real_root_, "/real/*")));
  auto path = ResolveLibrary(absl::StrCat(root_, "/link/libok.so"), {});
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, absl::StrCat(real_root_, "/real/libok.so"));
  EXPECT_TRUE(allowlist.Check(*path, "libok.so").ok());
}

TEST_F(LibraryResolverTest, ExactPathGlobIsNormalised) {
  MakeDir("real");
  WriteFile("real/libok.so", "ok");
  Symlink("real", "link");
  Allowlist allowlist({absl::StrCat(root_, "/link/libok.so")});
  EXPECT_TRUE(
      allowlist.Check(absl::StrCat(real_root_, "/real/libok.so"), "x").ok());
  EXPECT_FALSE(
      allowlist.Check(absl::StrCat(real_root_, "/real/libother.so"), "x").ok());
}

TEST_F(LibraryResolverTest, GlobWithMissingDirectoryIsKeptAsIs) {
  Allowlist allowlist({"/nonexistent/dir/lib*.so"});
  EXPECT_THAT(allowlist.patterns(), ElementsAre("/nonexistent/dir/lib*.so"));
  EXPECT_TRUE(allowlist.Check("/nonexistent/dir/libx.so", "libx.so").ok());
}

}  // namespace
}  // namespace ffid::server
