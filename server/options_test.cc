#include "server/options.h"

#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<Options> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ffid");
  return ParseOptions(args);
}

TEST(OptionsTest, DefaultsWhenNoFlags) {
  auto options = Parse({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->listen, DefaultListenAddress());
  EXPECT_EQ(options->allow_library, DefaultAllowedLibraries());
  EXPECT_EQ(options->worker_path, DefaultWorkerPath());
  EXPECT_FALSE(options->insecure);
  EXPECT_FALSE(options->help);
  EXPECT_EQ(options->idle_timeout, absl::Seconds(300));
}

TEST(OptionsTest, SeparateAndInlineValues) {
  auto options = Parse({"--listen", "unix:/tmp/a/s.sock", "--allow-library",
                        "/opt/a/*", "--allow-library=/opt/b/*",
                        "--worker-path=/x/ffid-worker", "--idle-timeout",
                        "90s"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->listen, "unix:/tmp/a/s.sock");
  EXPECT_THAT(options->allow_library, ElementsAre("/opt/a/*", "/opt/b/*"));
  EXPECT_EQ(options->worker_path, "/x/ffid-worker");
  EXPECT_EQ(options->idle_timeout, absl::Seconds(90));
}

TEST(OptionsTest, InlineValueMayContainEquals) {
  auto options = Parse({"--allow-library=/opt/a=b/*"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_THAT(options->allow_library, ElementsAre("/opt/a=b/*"));
}

TEST(OptionsTest, TcpWithInsecure) {
  auto options = Parse({"--listen=127.0.0.1:0", "--insecure"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->listen, "127.0.0.1:0");
  EXPECT_TRUE(options->insecure);
}

TEST(OptionsTest, HelpStopsParsing) {
  for (const char* flag : {"--help", "-h"}) {
    auto options = Parse({flag, "--bogus"});
    ASSERT_TRUE(options.ok()) << options.status();
    EXPECT_TRUE(options->help);
  }
  EXPECT_THAT(HelpText(), HasSubstr("--allow-library GLOB"));
  EXPECT_THAT(HelpText(), HasSubstr("--listen ADDRESS"));
}

TEST(OptionsTest, UnknownFlag) {
  auto options = Parse({"--allow-libary", "/x/*"});
  ASSERT_FALSE(options.ok());
  EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(options.status()),
            v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_THAT(options.status().message(),
              HasSubstr("unknown flag '--allow-libary'"));
  EXPECT_THAT(options.status().message(), HasSubstr("--allow-library"));
}

TEST(OptionsTest, MissingValue) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"--listen"}, {"--listen", "--insecure"}, {"--worker-path="}}) {
    auto options = Parse(args);
    ASSERT_FALSE(options.ok()) << args[0];
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(options.status().message(), HasSubstr("needs a"));
  }
}

TEST(OptionsTest, SwitchWithValueIsRefused) {
  auto options = Parse({"--insecure=yes"});
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(),
              HasSubstr("--insecure takes no value"));
}

TEST(OptionsTest, PositionalArgumentIsRefused) {
  auto options = Parse({"serve"});
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(),
              HasSubstr("unexpected argument 'serve'"));
}

TEST(OptionsTest, BadValues) {
  EXPECT_THAT(Parse({"--idle-timeout=soon"}).status().message(),
              HasSubstr("not a duration"));
  EXPECT_THAT(Parse({"--idle-timeout=-5s"}).status().message(),
              HasSubstr("must be positive"));
  EXPECT_THAT(Parse({"--allow-library=lib/*"}).status().message(),
              HasSubstr("must be an absolute path"));
  EXPECT_THAT(Parse({"--listen=unix:"}).status().message(),
              HasSubstr("no socket path"));
  EXPECT_THAT(Parse({"--listen=localhost"}).status().message(),
              HasSubstr("neither"));
}

TEST(OptionsTest, OperationsFlags) {
  auto defaults = Parse({});
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->metrics_listen.empty());
  EXPECT_EQ(defaults->log_format, LogFormat::kText);
  EXPECT_EQ(defaults->log_level, LogLevel::kInfo);
  EXPECT_EQ(defaults->shutdown_grace, kDefaultShutdownGrace);

  auto options = Parse({"--metrics-listen", ":9464", "--log-format=json",
                        "--log-level=debug", "--shutdown-grace=30s"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->metrics_listen, ":9464");
  EXPECT_EQ(options->log_format, LogFormat::kJson);
  EXPECT_EQ(options->log_level, LogLevel::kDebug);
  EXPECT_EQ(options->shutdown_grace, absl::Seconds(30));

  EXPECT_THAT(Parse({"--metrics-listen=9464"}).status().message(),
              HasSubstr("not host:port"));
  EXPECT_THAT(Parse({"--metrics-listen=[::]:70000"}).status().message(),
              HasSubstr("not host:port"));
  EXPECT_THAT(Parse({"--log-format=xml"}).status().message(),
              HasSubstr("neither 'text' nor 'json'"));
  EXPECT_THAT(Parse({"--log-level=loud"}).status().message(),
              HasSubstr("not one of"));
  EXPECT_THAT(Parse({"--shutdown-grace=-1s"}).status().message(),
              HasSubstr("not a duration"));
}

class DefaultListenAddressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* old = getenv("XDG_RUNTIME_DIR");
    had_old_ = old != nullptr;
    if (had_old_) old_ = old;
  }
  void TearDown() override {
    if (had_old_) {
      setenv("XDG_RUNTIME_DIR", old_.c_str(), 1);
    } else {
      unsetenv("XDG_RUNTIME_DIR");
    }
  }
  bool had_old_ = false;
  std::string old_;
};

TEST_F(DefaultListenAddressTest, UsesRuntimeDirWhenWritable) {
  char dir[] = "/tmp/ffid_options_test_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  setenv("XDG_RUNTIME_DIR", dir, 1);
  EXPECT_EQ(DefaultListenAddress(),
            absl::StrCat("unix:", dir, "/ffid/ffid.sock"));
  rmdir(dir);
}

TEST_F(DefaultListenAddressTest, FallsBackToTmp) {
  std::string fallback =
      absl::StrCat("unix:/tmp/ffid-", getuid(), "/ffid.sock");
  unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(DefaultListenAddress(), fallback);
  setenv("XDG_RUNTIME_DIR", "/nonexistent/runtime", 1);
  EXPECT_EQ(DefaultListenAddress(), fallback);
  setenv("XDG_RUNTIME_DIR", "relative/dir", 1);
  EXPECT_EQ(DefaultListenAddress(), fallback);
}

TEST(DefaultWorkerPathTest, BesideTheExecutable) {
  std::string path = DefaultWorkerPath();
  EXPECT_EQ(path.substr(path.rfind('/') + 1), "ffid-worker");
  EXPECT_EQ(path[0], '/');
}

}  // namespace
}  // namespace ffid::server
