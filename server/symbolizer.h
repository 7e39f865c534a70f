// Symbolizer: the native frames of a crashed worker -> function names and
// source lines, from the ELF symbol tables and DWARF debug information of
// the files the worker had loaded (elfutils' libdwfl), in the daemon.
//
// The worker's crash handler records, per frame, the address, the load bias
// of the object it lies in and that object's path (dladdr1); the daemon
// sees the same files at the same paths (the worker's mount view binds them
// where they are). Symbolize() opens each file once and keeps it (keyed by
// path, device, inode, size and modification time, at most kMaxModules
// files; a changed file is opened again): a crash in a library whose debug
// information has been read before costs a lookup, not a parse. Separate
// debug files are found as gdb finds them (.gnu_debuglink, build-id under
// /usr/lib/debug). A frame without symbols keeps its dladdr text.
//
// Source lines come only from a line table inside the file itself (a
// library built with -g), never from a separate debug file: those are
// compressed and libdw inflates their whole .debug_info and .debug_line on
// the first lookup (libc6-dbg's libc: ~110 ms and 16 MiB of the daemon's
// memory, for a line in libc's signal trampoline). Their symbol tables
// still name the functions. Files registered with NamesOnly() (the worker
// executable: ffid's own frames around the native call) get names only too.
//
// Thread-safe (one mutex: libdwfl handles are not). Symbolizer::Get() is
// process-wide and never destroyed.
#ifndef FFID_SERVER_SYMBOLIZER_H_
#define FFID_SERVER_SYMBOLIZER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ffid::server {

// One frame as the worker recorded it.
struct RawFrame {
  // The address: the interrupted instruction (exact) or a return address.
  uint64_t pc = 0;
  bool exact = false;
  // The load bias of the object holding `pc` (link_map::l_addr) and its
  // absolute path; path empty when the worker could not tell.
  uint64_t bias = 0;
  std::string path;
};

// What the debug information says about one frame.
struct FrameSymbol {
  // The function (demangled), "" if no symbol covers the address.
  std::string function;
  // The address's offset from the start of `function`.
  uint64_t offset = 0;
  // The source file (absolute when the compilation directory is known)
  // and line, when DWARF line information covers it.
  std::string file;
  int line = 0;
};

class Symbolizer {
 public:
  static Symbolizer& Get();

  // The largest number of files kept open.
  static constexpr size_t kMaxModules = 64;

  // Looks `frame` up. A return address is looked up one byte back, so the
  // line is the call's, not the next statement's.
  FrameSymbol Symbolize(const RawFrame& frame) ABSL_LOCKS_EXCLUDED(mu_);

  // `text` (backtrace_symbols' "path(name+0x1f) [0x7f...]") completed with
  // what Symbolize() found: a symbol name where dladdr had none, and
  // " at FILE:LINE". Unchanged when nothing is known.
  std::string Describe(const RawFrame& frame, const std::string& text)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Frames in the file at `path` (as it is now: device and inode) get a
  // function name but no source line. Files that cannot be stat'ed are
  // ignored.
  void NamesOnly(const std::string& path) ABSL_LOCKS_EXCLUDED(mu_);

  Symbolizer(const Symbolizer&) = delete;
  Symbolizer& operator=(const Symbolizer&) = delete;

 private:
  Symbolizer() = default;
  struct Module;

  // The open file for `path`, opened now if needed; null if it cannot be.
  Module* Find(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Module>> modules_ ABSL_GUARDED_BY(mu_);
  uint64_t uses_ ABSL_GUARDED_BY(mu_) = 0;
  // NamesOnly() files, by device and inode.
  std::set<std::pair<uint64_t, uint64_t>> names_only_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ffid::server

#endif  // FFID_SERVER_SYMBOLIZER_H_
