#include "server/symbolizer.h"

#include <cxxabi.h>
#include <elfutils/libdwfl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace ffid::server {
namespace {

// Separate debug files only where the distribution installs them, by build
// id (/usr/lib/debug/.build-id, Debian's -dbgsym packages). Not
// dwfl_standard_find_debuginfo: for a file without local debug information
// (a stripped libffi, say) it starts a debuginfod client, whose curl handle
// keeps a socket pair open in the daemon for as long as the module is cached,
// and would fetch files over the network when DEBUGINFOD_URLS is set; ffid
// downloads nothing while it runs.
char* g_debuginfo_path = nullptr;
const Dwfl_Callbacks kCallbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_build_id_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = &g_debuginfo_path,
};

std::string Demangle(const char* name) {
  if (name == nullptr) return "";
  if (name[0] != '_' || name[1] != 'Z') return name;
  int status = 0;
  char* demangled = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || demangled == nullptr) return name;
  std::string result(demangled);
  std::free(demangled);
  return result;
}

// `path` (absolute) without "." and ".." components.
std::string Normalize(const std::string& path) {
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  return absl::StrCat("/", absl::StrJoin(parts, "/"));
}

// Whether `elf` has its own DWARF line table (.debug_line, as a library built
// with -g has): source lines are looked up only then (see symbolizer.h on
// separate debug files).
bool HasOwnLineTable(Elf* elf) {
  size_t names = 0;
  if (elf == nullptr || elf_getshdrstrndx(elf, &names) != 0) return false;
  for (Elf_Scn* section = elf_nextscn(elf, nullptr); section != nullptr;
       section = elf_nextscn(elf, section)) {
    GElf_Shdr header;
    if (gelf_getshdr(section, &header) == nullptr ||
        header.sh_type == SHT_NOBITS) {
      continue;
    }
    const char* name = elf_strptr(elf, names, header.sh_name);
    if (name != nullptr && (std::strcmp(name, ".debug_line") == 0 ||
                            std::strcmp(name, ".zdebug_line") == 0)) {
      return true;
    }
  }
  return false;
}

}  // namespace

struct Symbolizer::Module {
  ~Module() {
    if (dwfl != nullptr) dwfl_end(dwfl);
  }
  // What the file was when it was opened.
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  struct timespec modified = {};
  uint64_t used = 0;
  Dwfl* dwfl = nullptr;
  // Addresses in it are the file's own (bias 0).
  Dwfl_Module* module = nullptr;
  // Whether the file itself carries a line table (see HasOwnLineTable).
  bool own_lines = false;
};

Symbolizer& Symbolizer::Get() {
  static Symbolizer* const instance = new Symbolizer();
  return *instance;
}

Symbolizer::Module* Symbolizer::Find(const std::string& path) {
  struct stat st;
  if (path.empty() || path[0] != '/' || stat(path.c_str(), &st) != 0) {
    return nullptr;
  }
  ++uses_;
  auto it = modules_.find(path);
  if (it != modules_.end()) {
    Module& known = *it->second;
    if (known.device == st.st_dev && known.inode == st.st_ino &&
        known.size == st.st_size &&
        known.modified.tv_sec == st.st_mtim.tv_sec &&
        known.modified.tv_nsec == st.st_mtim.tv_nsec) {
      known.used = uses_;
      return known.module == nullptr ? nullptr : &known;
    }
    modules_.erase(it);
  }
  if (modules_.size() >= kMaxModules) {
    auto oldest = modules_.begin();
    for (auto m = modules_.begin(); m != modules_.end(); ++m) {
      if (m->second->used < oldest->second->used) oldest = m;
    }
    modules_.erase(oldest);
  }
  auto module = std::make_unique<Module>();
  module->device = st.st_dev;
  module->inode = st.st_ino;
  module->size = st.st_size;
  module->modified = st.st_mtim;
  module->used = uses_;
  module->dwfl = dwfl_begin(&kCallbacks);
  if (module->dwfl != nullptr) {
    dwfl_report_begin(module->dwfl);
    // ET_DYN at bias 0: module addresses are the file's own; ET_EXEC
    // (not position-independent) is where it says anyway.
    module->module = dwfl_report_elf(module->dwfl, path.c_str(), path.c_str(),
                                     -1, 0, true);
    dwfl_report_end(module->dwfl, nullptr, nullptr);
  }
  if (module->module != nullptr &&
      names_only_.count({static_cast<uint64_t>(st.st_dev),
                         static_cast<uint64_t>(st.st_ino)}) == 0) {
    GElf_Addr bias = 0;
    module->own_lines =
        HasOwnLineTable(dwfl_module_getelf(module->module, &bias));
  }
  // A file that cannot be read is remembered too, so it is not retried on
  // every frame.
  Module* found = module->module == nullptr ? nullptr : module.get();
  modules_[path] = std::move(module);
  return found;
}

void Symbolizer::NamesOnly(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return;
  absl::MutexLock lock(&mu_);
  names_only_.insert({static_cast<uint64_t>(st.st_dev),
                      static_cast<uint64_t>(st.st_ino)});
  // Opened before with its line table: open it again without.
  for (auto it = modules_.begin(); it != modules_.end();) {
    if (it->second->device == st.st_dev && it->second->inode == st.st_ino) {
      it = modules_.erase(it);
    } else {
      ++it;
    }
  }
}

FrameSymbol Symbolizer::Symbolize(const RawFrame& frame) {
  FrameSymbol symbol;
  if (frame.path.empty() || frame.pc < frame.bias) return symbol;
  uint64_t address = frame.pc - frame.bias;
  // A return address points after the call; the call is one byte back.
  if (!frame.exact && address > 0) --address;
  absl::MutexLock lock(&mu_);
  Module* module = Find(frame.path);
  if (module == nullptr) return symbol;
  GElf_Off offset = 0;
  GElf_Sym sym;
  const char* name = dwfl_module_addrinfo(module->module, address, &offset,
                                          &sym, nullptr, nullptr, nullptr);
  if (name != nullptr) {
    symbol.function = Demangle(name);
    // Of the address looked up, which is one byte short for a return
    // address: report the return address's offset as dladdr does.
    symbol.offset = offset + (frame.exact ? 0 : 1);
  }
  Dwfl_Line* line = module->own_lines
                        ? dwfl_module_getsrc(module->module, address)
                        : nullptr;
  if (line != nullptr) {
    int number = 0;
    const char* file =
        dwfl_lineinfo(line, nullptr, &number, nullptr, nullptr, nullptr);
    if (file != nullptr && number > 0) {
      symbol.file = file;
      // Relative to the compilation directory (ccache's base_dir, say).
      const char* directory = dwfl_line_comp_dir(line);
      if (symbol.file[0] != '/' && directory != nullptr &&
          directory[0] == '/') {
        symbol.file = Normalize(absl::StrCat(directory, "/", symbol.file));
      }
      symbol.line = number;
    }
  }
  return symbol;
}

std::string Symbolizer::Describe(const RawFrame& frame,
                                 const std::string& text) {
  FrameSymbol symbol = Symbolize(frame);
  std::string described = text;
  if (!symbol.function.empty()) {
    // "path(+0x1139) [0x...]": dladdr knew no name (a static function).
    const size_t open = described.find("(+");
    if (open != std::string::npos) {
      const size_t close = described.find(')', open);
      if (close != std::string::npos) {
        described.replace(open, close - open + 1,
                          absl::StrCat("(", symbol.function, "+0x",
                                       absl::Hex(symbol.offset), ")"));
      }
    } else if (described.empty()) {
      described = absl::StrCat(frame.path, "(", symbol.function, "+0x",
                               absl::Hex(symbol.offset), ") [0x",
                               absl::Hex(frame.pc), "]");
    }
  }
  if (!symbol.file.empty()) {
    absl::StrAppend(&described, " at ", symbol.file, ":", symbol.line);
  }
  return described;
}

}  // namespace ffid::server
