// The daemon's log: one line per event on stderr, either as text
// ("ffid: warning: message key=value ...") or as one JSON object per line
// ({"ts":"...","level":"warning","msg":"...","key":"value"}), with levels
// debug < info < warning < error.
//
// The format and the lowest level written are process-wide settings
// (SetLogFormat, SetLogLevel), set once by main() before threads start;
// Log() may then be called from any thread (each line is written with one
// write(2), so lines of concurrent threads never interleave).
//
// Fields carry what a line is about (session, trace_id, method, code...):
// in JSON they become members, in text they follow the message as
// key=value; a field with an empty value is left out. A trace id from the client's gRPC metadata (TraceIdOf) goes
// into the "trace_id" field of every line about that request.
#ifndef FFID_SERVER_LOG_H_
#define FFID_SERVER_LOG_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace ffid::server {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// "debug", "info", "warning" (or "warn"), "error". False if unknown.
[[nodiscard]] bool ParseLogLevel(absl::string_view text, LogLevel* level);
// "text" or "json". False if unknown.
[[nodiscard]] bool ParseLogFormat(absl::string_view text, LogFormat* format);
// "debug", "info", "warning", "error".
absl::string_view LogLevelName(LogLevel level);

// Process-wide settings; call before other threads log. Defaults: text,
// info.
void SetLogFormat(LogFormat format);
void SetLogLevel(LogLevel level);
// Whether a line at `level` would be written (to skip building fields).
bool LogEnabled(LogLevel level);

// One key=value pair of a line.
using LogField = std::pair<absl::string_view, std::string>;

// Writes one line at `level` if it is enabled.
void Log(LogLevel level, absl::string_view message,
         std::initializer_list<LogField> fields = {});

// Writes one line at `level` whatever the lowest level logged is: for the
// audit log, which its own settings turn on and off (an operator who turns
// the log down to warnings keeps the audit).
void LogAlways(LogLevel level, absl::string_view message,
               std::initializer_list<LogField> fields = {});

// Renders a line without writing it (what Log writes, without the newline);
// `timestamp` is the RFC 3339 time for JSON lines. For tests.
std::string FormatLogLine(LogFormat format, LogLevel level,
                          absl::string_view timestamp,
                          absl::string_view message,
                          std::initializer_list<LogField> fields);

}  // namespace ffid::server

#endif  // FFID_SERVER_LOG_H_
