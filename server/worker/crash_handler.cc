#include "server/worker/crash_handler.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <ucontext.h>
#include <string.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

namespace ffid::worker {
namespace {

constexpr int kMaxFrames = 64;
constexpr size_t kAltStackBytes = 256 * 1024;
constexpr int kSignals[] = {SIGSEGV, SIGBUS,  SIGILL,  SIGFPE, SIGABRT,
                            SIGTRAP, SIGSYS, SIGXCPU, SIGXFSZ};

int g_report_fd = -1;
alignas(16) char g_alt_stack[kAltStackBytes];

void WriteAll(const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(g_report_fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void WriteString(const char* s) { WriteAll(s, strlen(s)); }

// "name value\n" with value in decimal (or 0x hex).
void WriteField(const char* name, uint64_t value, bool hex, bool negative) {
  char buffer[64];
  char* end = buffer + sizeof(buffer);
  char* p = end;
  *--p = '\n';
  const unsigned base = hex ? 16 : 10;
  do {
    *--p = "0123456789abcdef"[value % base];
    value /= base;
  } while (value != 0);
  if (hex) {
    *--p = 'x';
    *--p = '0';
  }
  if (negative) *--p = '-';
  *--p = ' ';
  WriteString(name);
  WriteAll(p, static_cast<size_t>(end - p));
}

void WriteInt(const char* name, int64_t value) {
  const bool negative = value < 0;
  WriteField(name,
             negative ? static_cast<uint64_t>(-(value + 1)) + 1
                      : static_cast<uint64_t>(value),
             false, negative);
}

// "raw PC BIAS PATH": a frame's address, the load bias of the object it
// lies in and that object's file, for the daemon's DWARF symbolizer
// (server/symbolizer.h). dladdr1 is what backtrace_symbols_fd uses too.
void WriteRawFrame(void* frame) {
  Dl_info info = {};
  link_map* map = nullptr;
  const bool found =
      dladdr1(frame, &info, reinterpret_cast<void**>(&map),
              RTLD_DL_LINKMAP) != 0 &&
      map != nullptr && info.dli_fname != nullptr && info.dli_fname[0] == '/';
  char buffer[64];
  char* end = buffer + sizeof(buffer);
  auto hex = [end](uintptr_t value) {
    char* p = end;
    do {
      *--p = "0123456789abcdef"[value % 16];
      value /= 16;
    } while (value != 0);
    *--p = 'x';
    *--p = '0';
    *--p = ' ';
    return p;
  };
  WriteString("raw");
  char* p = hex(reinterpret_cast<uintptr_t>(frame));
  WriteAll(p, static_cast<size_t>(end - p));
  p = hex(found ? static_cast<uintptr_t>(map->l_addr) : 0);
  WriteAll(p, static_cast<size_t>(end - p));
  WriteString(" ");
  WriteString(found ? info.dli_fname : "?");
  WriteString("\n");
}

void OnCrash(int signal, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (g_report_fd >= 0) {
    WriteInt("signal", signal);
    WriteInt("code", info->si_code);
    if (signal == SIGSEGV || signal == SIGBUS || signal == SIGILL ||
        signal == SIGFPE || signal == SIGTRAP) {
      WriteField("address", reinterpret_cast<uintptr_t>(info->si_addr), true,
                 false);
    }
    if (signal == SIGSYS) WriteInt("syscall", info->si_syscall);
    WriteInt("errno", saved_errno);
#if defined(__x86_64__)
    if (context != nullptr) {
      // The interrupted instruction itself (other frames are return
      // addresses).
      WriteField("pc",
                 static_cast<uint64_t>(static_cast<ucontext_t*>(context)
                                           ->uc_mcontext.gregs[REG_RIP]),
                 true, false);
    }
#endif
    void* frames[kMaxFrames];
    int count = backtrace(frames, kMaxFrames);
    for (int i = 0; i < count; ++i) WriteRawFrame(frames[i]);
    WriteString("frames\n");
    backtrace_symbols_fd(frames, count, g_report_fd);
  }
  // SA_RESETHAND restored the default action; die of the same signal.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, signal);
  sigprocmask(SIG_UNBLOCK, &mask, nullptr);
  raise(signal);
  // Still here: PID 1 of a PID namespace ignores its own default-action
  // signals (or the signal's default is to ignore). The record says which.
  _exit(128 + signal);
}

}  // namespace

bool InstallCrashHandler(int report_fd) {
  g_report_fd = report_fd;
  // backtrace() loads libgcc_s on first use, which allocates: do it now,
  // not in the handler (and before the sandbox hides the library).
  void* warm[2];
  backtrace(warm, 2);
  stack_t stack = {};
  stack.ss_sp = g_alt_stack;
  stack.ss_size = sizeof(g_alt_stack);
  if (sigaltstack(&stack, nullptr) != 0) return false;
  struct sigaction action = {};
  action.sa_sigaction = OnCrash;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (int signal : kSignals) {
    if (sigaction(signal, &action, nullptr) != 0) return false;
  }
  return true;
}

}  // namespace ffid::worker
