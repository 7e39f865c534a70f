// Finding the file a LoadLibrary name refers to, and deciding whether it may
// be loaded.
//
// The daemon, not the worker, decides which file loads: it resolves the name
// to the real path the dynamic loader would open (every symlink resolved)
// and checks that path against the allowlist, then hands the worker only
// the real path. So neither a symlink in an allowed directory nor a search
// path can smuggle in another file.
//
// How a bare soname is searched (like ld.so, without its cache): the
// directories listed in /etc/ld.so.conf (following `include` globs
// recursively), then the loader's default directories (the multiarch ones,
// /lib64, /usr/lib64, /lib, /usr/lib). The first regular file whose ELF
// class and machine match this process wins, as in ld.so, which skips
// libraries built for another architecture. Parsing ld.so.conf rather than
// the binary /etc/ld.so.cache keeps this readable and also sees libraries
// installed after the last `ldconfig`; the difference is only ever a
// library that ldconfig has not indexed yet. LD_LIBRARY_PATH is
// deliberately not honoured: the worker runs with the daemon's environment
// minus LD_LIBRARY_PATH, so the client's own search path has no say.
//
// Everything here is thread-safe: the functions read the file system only
// and Allowlist is immutable after construction.
#ifndef FFID_SERVER_LIBRARY_RESOLVER_H_
#define FFID_SERVER_LIBRARY_RESOLVER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ffid::server {

// The directories searched for a bare soname, in order, without duplicates.
// Reads /etc/ld.so.conf on every call (it is small and may change).
std::vector<std::string> LibrarySearchDirectories();

// The directories named by an ld.so.conf-format file, following `include`
// lines (globs, relative to the including file's directory) up to a small
// depth. A missing file yields no directories.
std::vector<std::string> ReadLdSoConf(const std::string& path);

// The loader's built-in directories, searched after ld.so.conf's.
std::vector<std::string> DefaultLibraryDirectories();

// Resolves a LoadLibrary name to a real path.
// - A name containing '/' is a path; it must be absolute and exist.
// - A bare name is searched in `search_dirs`.
// The result has every symlink resolved (realpath). Failures:
// INVALID_ARGUMENT + INVALID_REQUEST for an empty or relative name;
// NOT_FOUND + LIBRARY_NOT_FOUND "library 'libnope.so' not found (searched:
// ...)" or naming the missing path.
absl::StatusOr<std::string> ResolveLibrary(
    absl::string_view name, const std::vector<std::string>& search_dirs);
// The same, searching LibrarySearchDirectories().
absl::StatusOr<std::string> ResolveLibrary(absl::string_view name);

// The set of library files that may be loaded: fnmatch globs, '*' matching
// across '/'. The directory part of each glob (everything before the first
// wildcard, up to its last '/') is realpath-normalised at construction when
// it exists, so "/tmp/x/*" still matches when /tmp is a symlink; the glob
// as written is kept as well.
class Allowlist {
 public:
  explicit Allowlist(std::vector<std::string> globs);

  // OK if `real_path` matches a glob; else PERMISSION_DENIED +
  // LIBRARY_NOT_ALLOWED "'/real/path' (resolved from 'name') is not in the
  // allowlist; start ffid with --allow-library '/dir/*' to allow it".
  // `requested_name` is only used in the message.
  [[nodiscard]] absl::Status Check(absl::string_view real_path,
                                   absl::string_view requested_name) const;

  // The globs as given.
  const std::vector<std::string>& globs() const { return globs_; }
  // The globs actually matched (as given plus normalised forms).
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  std::vector<std::string> globs_;
  std::vector<std::string> patterns_;
};

}  // namespace ffid::server

#endif  // FFID_SERVER_LIBRARY_RESOLVER_H_
