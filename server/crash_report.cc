#include "server/crash_report.h"

#include <seccomp.h>
#include <signal.h>
#include <string.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ffid::server {
namespace {

std::string Name(int signal) {
  const char* abbreviation = sigabbrev_np(signal);
  if (abbreviation == nullptr) return absl::StrCat("signal ", signal);
  return absl::StrCat("SIG", abbreviation);
}

// The most bytes of frame text a report carries.
constexpr size_t kMaxFrameBytes = 3072;

std::string Bytes(uint64_t bytes) {
  if (bytes % (1024 * 1024) == 0) return absl::StrCat(bytes >> 20, " MiB");
  return absl::StrCat(bytes, " bytes");
}

}  // namespace

CrashRecord ParseCrashRecord(absl::string_view text) {
  CrashRecord record;
  bool in_frames = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty()) continue;
    if (in_frames) {
      if (record.frames.size() < 64) record.frames.emplace_back(line);
      continue;
    }
    if (line == "frames") {
      in_frames = true;
      continue;
    }
    size_t space = line.find(' ');
    if (space == absl::string_view::npos) continue;
    absl::string_view name = line.substr(0, space);
    absl::string_view value = line.substr(space + 1);
    int64_t number = 0;
    if (name == "raw") {
      // "raw 0xPC 0xBIAS PATH"
      std::vector<absl::string_view> parts =
          absl::StrSplit(value, absl::MaxSplits(' ', 2));
      RawFrame frame;
      if (parts.size() == 3 && absl::ConsumePrefix(&parts[0], "0x") &&
          absl::ConsumePrefix(&parts[1], "0x") &&
          absl::SimpleHexAtoi(parts[0], &frame.pc) &&
          absl::SimpleHexAtoi(parts[1], &frame.bias) &&
          record.raw_frames.size() < 64) {
        if (parts[2] != "?") frame.path = std::string(parts[2]);
        record.raw_frames.push_back(std::move(frame));
      }
      continue;
    }
    if (name == "pc") {
      if (absl::ConsumePrefix(&value, "0x") &&
          absl::SimpleHexAtoi(value, &record.pc)) {
        record.has_pc = true;
      }
      continue;
    }
    if (name == "address") {
      uint64_t address = 0;
      if (absl::ConsumePrefix(&value, "0x") &&
          absl::SimpleHexAtoi(value, &address)) {
        record.address = address;
        record.has_address = true;
      }
      continue;
    }
    if (!absl::SimpleAtoi(value, &number)) continue;
    if (name == "signal") {
      record.signal = static_cast<int>(number);
      record.present = true;
    } else if (name == "code") {
      record.code = static_cast<int>(number);
    } else if (name == "syscall") {
      record.syscall = static_cast<int>(number);
    } else if (name == "errno") {
      record.error = static_cast<int>(number);
    }
  }
  return record;
}

std::string SyscallName(int number) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number);
  if (name == nullptr) return absl::StrCat("syscall ", number);
  std::string result(name);
  free(name);
  return result;
}

v1::ErrorReason ExplainDeath(const CrashRecord& record,
                             const worker::WorkerPolicy& policy,
                             v1::CrashReport& report, std::string& how) {
  if (!record.present) {
    if (report.signal() == SIGXCPU) {
      report.set_limit("cpu_seconds");
      how = absl::StrCat("used up its CPU time limit of ", policy.cpu_seconds(),
                         " s (RLIMIT_CPU) and was killed by SIGXCPU");
      return v1::ERROR_REASON_RESOURCE_LIMIT;
    }
    return v1::ERROR_REASON_WORKER_CRASHED;
  }
  // The handler saw the signal first; as PID 1 of its namespace the worker
  // may have had to exit instead of dying of it.
  report.set_signal(record.signal);
  report.set_signal_name(Name(record.signal));
  report.set_exit_code(0);
  report.set_signal_code(record.code);
  if (record.has_address) report.set_fault_address(record.address);
  // Runs of the same frame (a recursion) are told once, and the frames
  // stop at a byte budget: the report travels in gRPC trailers.
  const bool raw = record.raw_frames.size() == record.frames.size();
  size_t bytes = 0;
  for (size_t i = 0; i < record.frames.size(); ++i) {
    size_t same = 0;
    while (i + same + 1 < record.frames.size() &&
           record.frames[i + same + 1] == record.frames[i]) {
      ++same;
    }
    std::string text = record.frames[i];
    if (raw) {
      RawFrame frame = record.raw_frames[i];
      frame.exact = record.has_pc && frame.pc == record.pc;
      text = Symbolizer::Get().Describe(frame, text);
    }
    if (bytes + text.size() > kMaxFrameBytes) {
      report.add_frames(absl::StrCat("... ", record.frames.size() - i,
                                     " more frames"));
      break;
    }
    bytes += text.size();
    report.add_frames(std::move(text));
    if (same > 0) {
      report.add_frames(absl::StrCat("... the frame above ", same,
                                     " more times"));
      i += same;
    }
  }
  const std::string description = sigdescr_np(record.signal) == nullptr
                                      ? ""
                                      : sigdescr_np(record.signal);
  how = absl::StrCat("was killed by ", Name(record.signal),
                     description.empty() ? "" : " (", description,
                     description.empty() ? "" : ")");
  if (record.has_address) {
    absl::StrAppend(&how, " at address 0x", absl::Hex(record.address));
  }
  if (record.signal == SIGSYS && record.syscall >= 0) {
    report.set_syscall(record.syscall);
    report.set_syscall_name(SyscallName(record.syscall));
    how = absl::StrCat(
        "was stopped by the sandbox: it made the system call '",
        report.syscall_name(), "' (", record.syscall,
        "), which the sandbox does not allow");
    return v1::ERROR_REASON_SANDBOX_VIOLATION;
  }
  if (record.signal == SIGXCPU) {
    report.set_limit("cpu_seconds");
    how = absl::StrCat("used up its CPU time limit of ", policy.cpu_seconds(),
                       " s (RLIMIT_CPU) and was killed by SIGXCPU");
    return v1::ERROR_REASON_RESOURCE_LIMIT;
  }
  if (record.signal == SIGXFSZ) {
    report.set_limit("file_size_bytes");
    how = absl::StrCat("tried to write a file larger than its limit of ",
                       Bytes(policy.file_size_bytes()),
                       " (RLIMIT_FSIZE) and was killed by SIGXFSZ");
    return v1::ERROR_REASON_RESOURCE_LIMIT;
  }
  if (record.error == ENOMEM && policy.address_space_bytes() > 0) {
    report.set_limit("address_space_bytes");
    how = absl::StrCat("ran out of memory under its address-space limit of ",
                       Bytes(policy.address_space_bytes()),
                       " (RLIMIT_AS: an allocation failed with ENOMEM) and ",
                       how);
    return v1::ERROR_REASON_RESOURCE_LIMIT;
  }
  return v1::ERROR_REASON_WORKER_CRASHED;
}

}  // namespace ffid::server
