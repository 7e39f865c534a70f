// The worker's own crash reporter.
//
// InstallCrashHandler() installs, on an alternate signal stack (so that a
// stack overflow is reported too), a handler for the signals that mean the
// native code went wrong: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP,
// SIGSYS (a seccomp violation), SIGXCPU and SIGXFSZ (rlimits). The handler
// writes a small text record to `report_fd` with async-signal-safe calls
// only, then lets the process die of the same signal:
//
//   signal 11
//   code 1
//   address 0x10
//   syscall 41          (SIGSYS only: the refused system call)
//   errno 12            (errno when the signal arrived)
//   pc 0x7f...          (the interrupted instruction, x86-64)
//   raw 0x7f... 0x7f... /path/lib.so   (per frame: address, the load bias
//   ...                  of its object and the object's file, via dladdr1)
//   frames
//   /path/lib.so(fx_crash_null+0x4)[0x7f...]   (backtrace_symbols_fd)
//   ...
//
// The daemon reads the record after the worker is gone
// (server/crash_report.h parses it). When the worker is PID 1 of its PID
// namespace a re-raised signal is ignored, so the handler then exits with
// 128 + signal and the daemon takes the signal from the record.
// Process-wide; call once, from the main thread, before serving.
#ifndef FFID_SERVER_WORKER_CRASH_HANDLER_H_
#define FFID_SERVER_WORKER_CRASH_HANDLER_H_

namespace ffid::worker {

// The worker's end of the crash-report pipe, as set up by the daemon.
inline constexpr int kCrashReportFd = 4;

// Installs the handler. Returns false (errno set) if sigaltstack or
// sigaction fails.
[[nodiscard]] bool InstallCrashHandler(int report_fd);

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_CRASH_HANDLER_H_
