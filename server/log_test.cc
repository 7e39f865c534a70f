#include "server/log.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ffid::server {
namespace {

TEST(LogTest, TextLinesKeepTheHistoricalShapeAndQuoteValues) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, LogLevel::kInfo, "",
                          "listening on unix:/x", {}),
            "ffid: listening on unix:/x");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, LogLevel::kWarning, "",
                          "worker died",
                          {{"session", "ab12"},
                           {"function", "f g"},
                           {"empty", ""}}),
            "ffid: warning: worker died session=ab12 function=\"f g\"");
}

TEST(LogTest, JsonLinesAreOneObjectWithTsLevelMsgAndFields) {
  const std::string line = FormatLogLine(
      LogFormat::kJson, LogLevel::kError, "2026-11-29T20:00:00.000000Z",
      "bad \"thing\"\n", {{"trace_id", "abc"}, {"span_id", ""}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json parsed = nlohmann::json::parse(line);
  EXPECT_EQ(parsed["ts"], "2026-11-29T20:00:00.000000Z");
  EXPECT_EQ(parsed["level"], "error");
  EXPECT_EQ(parsed["msg"], "bad \"thing\"\n");
  EXPECT_EQ(parsed["trace_id"], "abc");
  EXPECT_FALSE(parsed.contains("span_id"));
  // Invalid UTF-8 from a library path is replaced, not an error.
  nlohmann::json replaced = nlohmann::json::parse(FormatLogLine(
      LogFormat::kJson, LogLevel::kInfo, "t", "\xff\xfe", {}));
  EXPECT_TRUE(replaced["msg"].is_string());
}

TEST(LogTest, LevelsAndFormatsParse) {
  LogLevel level;
  EXPECT_TRUE(ParseLogLevel("warn", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_TRUE(ParseLogLevel("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("verbose", &level));
  LogFormat format;
  EXPECT_TRUE(ParseLogFormat("json", &format));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_FALSE(ParseLogFormat("xml", &format));
}

TEST(LogTest, TheLevelFiltersLines) {
  SetLogLevel(LogLevel::kWarning);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  SetLogLevel(LogLevel::kInfo);
  EXPECT_TRUE(LogEnabled(LogLevel::kInfo));
  EXPECT_FALSE(LogEnabled(LogLevel::kDebug));
}

// The audit's lines (LogAlways) are written whatever the level; Log's are
// filtered.
TEST(LogTest, LogAlwaysIgnoresTheLevel) {
  SetLogFormat(LogFormat::kText);
  SetLogLevel(LogLevel::kError);
  ::testing::internal::CaptureStderr();
  Log(LogLevel::kInfo, "filtered out", {{"principal", "unix:1"}});
  LogAlways(LogLevel::kInfo, "audit", {{"principal", "unix:1"}});
  const std::string written = ::testing::internal::GetCapturedStderr();
  SetLogLevel(LogLevel::kInfo);
  EXPECT_EQ(written, "ffid: audit principal=unix:1\n");
}

}  // namespace
}  // namespace ffid::server
