#include "server/library_resolver.h"

#include <elf.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "ffi/errors.h"

namespace ffid::server {
namespace {

// ld.so.conf includes rarely nest more than twice; the limit stops cycles.
constexpr int kMaxIncludeDepth = 8;

void AddUnique(std::vector<std::string>& dirs, std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) {
    dirs.push_back(std::move(dir));
  }
}

void ReadLdSoConfInto(const std::string& path, int depth,
                      std::vector<std::string>& dirs) {
  if (depth > kMaxIncludeDepth) return;
  std::ifstream in(path);
  if (!in) return;
  std::string base_dir = path.substr(0, path.rfind('/') + 1);
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view text = line;
    size_t hash = text.find('#');
    if (hash != absl::string_view::npos) text = text.substr(0, hash);
    text = absl::StripAsciiWhitespace(text);
    if (text.empty()) continue;
    absl::string_view rest = text;
    if (absl::ConsumePrefix(&rest, "include") && !rest.empty() &&
        absl::ascii_isspace(rest[0])) {
      // One or more glob patterns, relative to this file's directory.
      for (absl::string_view pattern :
           absl::StrSplit(rest, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
        std::string full = pattern[0] == '/'
                               ? std::string(pattern)
                               : absl::StrCat(base_dir, pattern);
        glob_t matches;
        if (glob(full.c_str(), 0, nullptr, &matches) == 0) {
          for (size_t i = 0; i < matches.gl_pathc; ++i) {
            ReadLdSoConfInto(matches.gl_pathv[i], depth + 1, dirs);
          }
        }
        globfree(&matches);
      }
      continue;
    }
    if (absl::StartsWith(text, "hwcap") && text.size() > 5 &&
        absl::ascii_isspace(text[5])) {
      continue;  // Obsolete hwcap lines name no directory.
    }
    // Old ldconfig accepted "dir=TYPE"; the type is irrelevant here.
    text = text.substr(0, text.find('='));
    if (!text.empty() && text[0] == '/') AddUnique(dirs, std::string(text));
  }
}

// Whether `path` is a shared object this process could load: ld.so skips
// files of another ELF class or machine while searching. A file that is
// not ELF at all is accepted; dlopen then says what is wrong with it.
bool IsLoadableElf(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char header[sizeof(Elf64_Ehdr)];
  ssize_t n = read(fd, header, sizeof(header));
  close(fd);
  if (n < static_cast<ssize_t>(EI_NIDENT) ||
      memcmp(header, ELFMAG, SELFMAG) != 0) {
    return true;
  }
#if defined(__LP64__)
  constexpr unsigned char kClass = ELFCLASS64;
#else
  constexpr unsigned char kClass = ELFCLASS32;
#endif
  if (header[EI_CLASS] != kClass) return false;
  if (n < static_cast<ssize_t>(EI_NIDENT + 4)) return false;
  uint16_t machine;
  memcpy(&machine, header + EI_NIDENT + 2, sizeof(machine));  // e_machine
#if defined(__x86_64__)
  return machine == EM_X86_64;
#elif defined(__aarch64__)
  return machine == EM_AARCH64;
#else
  return true;
#endif
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<std::string> RealPath(const std::string& path) {
  char buffer[PATH_MAX];
  if (realpath(path.c_str(), buffer) == nullptr) {
    int error = errno;
    return NotFoundError(v1::ERROR_REASON_LIBRARY_NOT_FOUND,
                         absl::StrCat("library '", path,
                                      "' not found: ", strerror(error)));
  }
  return std::string(buffer);
}

// Replaces the existing directory prefix of `glob` by its real path, or
// returns "" if nothing changes or nothing exists.
std::string NormaliseGlob(const std::string& glob) {
  char buffer[PATH_MAX];
  size_t wildcard = glob.find_first_of("*?[");
  if (wildcard == std::string::npos) {
    if (realpath(glob.c_str(), buffer) != nullptr) return buffer;
    wildcard = glob.size();
  }
  if (wildcard == 0) return "";
  size_t slash = glob.rfind('/', wildcard - 1);
  if (slash == std::string::npos) return "";
  std::string dir = slash == 0 ? "/" : glob.substr(0, slash);
  if (realpath(dir.c_str(), buffer) == nullptr) return "";
  std::string real_dir = buffer;
  if (real_dir == "/") real_dir.clear();
  return real_dir + glob.substr(slash);
}

}  // namespace

std::vector<std::string> ReadLdSoConf(const std::string& path) {
  std::vector<std::string> dirs;
  ReadLdSoConfInto(path, 0, dirs);
  return dirs;
}

std::vector<std::string> DefaultLibraryDirectories() {
  return {
#if defined(__x86_64__)
      "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
#elif defined(__aarch64__)
      "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
#endif
      "/lib64", "/usr/lib64", "/lib", "/usr/lib",
  };
}

std::vector<std::string> LibrarySearchDirectories() {
  std::vector<std::string> dirs = ReadLdSoConf("/etc/ld.so.conf");
  for (std::string& dir : DefaultLibraryDirectories()) {
    AddUnique(dirs, std::move(dir));
  }
  return dirs;
}

absl::StatusOr<std::string> ResolveLibrary(
    absl::string_view name, const std::vector<std::string>& search_dirs) {
  if (name.empty()) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "field 'name' is required: a library path "
                                "or soname such as 'libm.so.6'");
  }
  if (name.find('\0') != absl::string_view::npos) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "library name contains a NUL byte");
  }
  if (name.find('/') != absl::string_view::npos) {
    if (name[0] != '/') {
      return InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat("library path '", name,
                       "' is relative; the daemon does not share your "
                       "working directory, so give an absolute path or a "
                       "bare soname"));
    }
    std::string path(name);
    ASSIGN_OR_RETURN(std::string real, RealPath(path));
    if (!IsRegularFile(real)) {
      return NotFoundError(
          v1::ERROR_REASON_LIBRARY_NOT_FOUND,
          absl::StrCat("library '", name, "' is not a regular file",
                       real == path ? "" : absl::StrCat(" ('", real, "')")));
    }
    return real;
  }
  for (const std::string& dir : search_dirs) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (!IsRegularFile(candidate) || !IsLoadableElf(candidate)) continue;
    absl::StatusOr<std::string> real = RealPath(candidate);
    if (real.ok()) return real;
  }
  return NotFoundError(
      v1::ERROR_REASON_LIBRARY_NOT_FOUND,
      absl::StrCat("library '", name, "' not found (searched: ",
                   absl::StrJoin(search_dirs, ", "),
                   "); give an absolute path or install the library"));
}

absl::StatusOr<std::string> ResolveLibrary(absl::string_view name) {
  return ResolveLibrary(name, LibrarySearchDirectories());
}

Allowlist::Allowlist(std::vector<std::string> globs)
    : globs_(std::move(globs)) {
  for (const std::string& glob : globs_) {
    if (std::find(patterns_.begin(), patterns_.end(), glob) ==
        patterns_.end()) {
      patterns_.push_back(glob);
    }
    std::string normalised = NormaliseGlob(glob);
    if (!normalised.empty() &&
        std::find(patterns_.begin(), patterns_.end(), normalised) ==
            patterns_.end()) {
      patterns_.push_back(std::move(normalised));
    }
  }
}

absl::Status Allowlist::Check(absl::string_view real_path,
                              absl::string_view requested_name) const {
  std::string path(real_path);
  for (const std::string& pattern : patterns_) {
    // No FNM_PATHNAME: "/usr/lib/*" covers the multiarch subdirectories.
    if (fnmatch(pattern.c_str(), path.c_str(), 0) == 0) {
      return absl::OkStatus();
    }
  }
  std::string dir = path.substr(0, path.rfind('/'));
  return MakeError(
      absl::StatusCode::kPermissionDenied,
      v1::ERROR_REASON_LIBRARY_NOT_ALLOWED,
      absl::StrCat("'", real_path, "'",
                   requested_name == real_path
                       ? ""
                       : absl::StrCat(" (resolved from '", requested_name,
                                      "')"),
                   " is not in the allowlist; start ffid with "
                   "--allow-library '",
                   dir, "/*' to allow it"));
}

}  // namespace ffid::server
