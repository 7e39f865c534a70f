#include "server/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace ffid::server {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<LogLevel> g_level{LogLevel::kInfo};

// Text values are quoted when they contain spaces, quotes or '=' so that a
// line stays splittable into key=value pairs.
std::string TextValue(absl::string_view value) {
  if (!value.empty() &&
      value.find_first_of(" \t\n\"=") == absl::string_view::npos) {
    return std::string(value);
  }
  // JSON string quoting is also a fine quoting for text.
  return nlohmann::json(std::string(value)).dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void WriteAll(const std::string& line) {
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, data, left);
    if (n <= 0) return;  // stderr gone: nothing useful to do
    data += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  if (text == "debug") {
    *level = LogLevel::kDebug;
  } else if (text == "info") {
    *level = LogLevel::kInfo;
  } else if (text == "warning" || text == "warn") {
    *level = LogLevel::kWarning;
  } else if (text == "error") {
    *level = LogLevel::kError;
  } else {
    return false;
  }
  return true;
}

bool ParseLogFormat(absl::string_view text, LogFormat* format) {
  if (text == "text") {
    *format = LogFormat::kText;
  } else if (text == "json") {
    *format = LogFormat::kJson;
  } else {
    return false;
  }
  return true;
}

absl::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void SetLogFormat(LogFormat format) { g_format.store(format); }
void SetLogLevel(LogLevel level) { g_level.store(level); }

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= static_cast<int>(g_level.load());
}

std::string FormatLogLine(LogFormat format, LogLevel level,
                          absl::string_view timestamp,
                          absl::string_view message,
                          std::initializer_list<LogField> fields) {
  if (format == LogFormat::kJson) {
    // Keys in insertion order: ts, level, msg, then the fields.
    nlohmann::ordered_json line;
    line["ts"] = std::string(timestamp);
    line["level"] = std::string(LogLevelName(level));
    line["msg"] = std::string(message);
    for (const LogField& field : fields) {
      if (field.second.empty()) continue;
      line[std::string(field.first)] = field.second;
    }
    // Invalid UTF-8 (a library path, a client's string) is replaced rather
    // than making dump() fail.
    return line.dump(-1, ' ', false,
                     nlohmann::ordered_json::error_handler_t::replace);
  }
  // Text: the historical "ffid: message" for info, "ffid: warning: ..."
  // otherwise.
  std::string line = "ffid: ";
  if (level != LogLevel::kInfo) absl::StrAppend(&line, LogLevelName(level), ": ");
  absl::StrAppend(&line, message);
  for (const LogField& field : fields) {
    if (field.second.empty()) continue;
    absl::StrAppend(&line, " ", field.first, "=", TextValue(field.second));
  }
  return line;
}

void Log(LogLevel level, absl::string_view message,
         std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  LogAlways(level, message, fields);
}

void LogAlways(LogLevel level, absl::string_view message,
               std::initializer_list<LogField> fields) {
  const LogFormat format = g_format.load();
  std::string timestamp;
  if (format == LogFormat::kJson) {
    timestamp = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(),
                                 absl::UTCTimeZone());
  }
  std::string line = FormatLogLine(format, level, timestamp, message, fields);
  line.push_back('\n');
  WriteAll(line);
}

}  // namespace ffid::server
