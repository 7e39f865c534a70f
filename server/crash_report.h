// Turns a dead worker's crash record (written by its handler, see
// server/worker/crash_handler.h) and its wait status into a CrashReport and
// the reason the calls in flight fail with:
//
// - SIGSYS with a system call: SANDBOX_VIOLATION ("made the system call
//   'socket' (41), which the sandbox does not allow").
// - SIGXCPU: RESOURCE_LIMIT, limit "cpu_seconds".
// - SIGXFSZ: RESOURCE_LIMIT, limit "file_size_bytes".
// - a crash with errno ENOMEM while an address-space limit is set (a
//   failed allocation the library did not survive): RESOURCE_LIMIT, limit
//   "address_space_bytes".
// - anything else: WORKER_CRASHED.
//
// Pure functions, thread-safe.
#ifndef FFID_SERVER_CRASH_REPORT_H_
#define FFID_SERVER_CRASH_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "ffid/v1/errors.pb.h"
#include "server/symbolizer.h"
#include "server/worker/protocol.pb.h"

namespace ffid::server {

// What the worker's crash handler wrote.
struct CrashRecord {
  bool present = false;
  int signal = 0;
  int code = 0;
  bool has_address = false;
  uint64_t address = 0;
  int syscall = -1;
  int error = 0;
  // The interrupted instruction, when the handler could read it.
  bool has_pc = false;
  uint64_t pc = 0;
  // backtrace_symbols' text per frame, and the same frames raw (address,
  // load bias, file) for the symbolizer, in the same order.
  std::vector<std::string> frames;
  std::vector<RawFrame> raw_frames;
};

CrashRecord ParseCrashRecord(absl::string_view text);

// "socket" for 41 on x86-64; "syscall 999" when unknown.
std::string SyscallName(int number);

// Completes `report` (already holding pid, signal or exit code, function)
// from `record` (its frames symbolized by server/symbolizer.h: function
// names and FILE:LINE where the files have them), and returns the reason with a sentence saying what
// happened, e.g. "was stopped by the sandbox: it made the system call
// 'socket' (41), which the sandbox does not allow". `how` holds the
// wait-status sentence ("was killed by SIGSEGV (...)") and is replaced when
// the record says more.
v1::ErrorReason ExplainDeath(const CrashRecord& record,
                             const worker::WorkerPolicy& policy,
                             v1::CrashReport& report, std::string& how);

}  // namespace ffid::server

#endif  // FFID_SERVER_CRASH_REPORT_H_
