#include "server/config.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/options.h"

namespace ffid::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ConfigTest, ParsesEveryKindOfField) {
  absl::StatusOr<config::v1::Config> config = ParseConfig(R"pb(
    # A comment.
    listen: "127.0.0.1:7000"
    allow_library: "/opt/a/*"
    allow_library: "/opt/b/*"
    idle_timeout { seconds: 90 }
    worker_limits { address_space_bytes: 4294967296 cpu_seconds: 10 }
    tls { cert_file: "/etc/c.pem" key_file: "/etc/k.pem" }
    library {
      path: "/opt/v/libv.so"
      sha256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
    }
    policy {
      principal: "token:ci"
      principal: "unix:*"
      allow_library: "/opt/a/*"
      allow_symbol: "cos*"
      max_sessions: 2
      calls_per_second: 10.5
    }
    audit { calls: true }
  )pb", "ffid.conf");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen(), "127.0.0.1:7000");
  EXPECT_THAT(config->allow_library(), ElementsAre("/opt/a/*", "/opt/b/*"));
  EXPECT_EQ(config->worker_limits().cpu_seconds(), 10u);
  ASSERT_EQ(config->policy_size(), 1);
  EXPECT_EQ(config->policy(0).max_sessions(), 2u);
  EXPECT_TRUE(config->audit().calls());
}

TEST(ConfigTest, SyntaxErrorNamesFileLineAndColumn) {
  absl::StatusOr<config::v1::Config> config =
      ParseConfig("listen: \"unix:/x\"\n\nallow_libary: \"/a\"\n", "my.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr("my.conf:3:"));
  EXPECT_THAT(config.status().message(), HasSubstr("allow_libary"));
}

TEST(ConfigTest, WrongTypeIsReported) {
  absl::StatusOr<config::v1::Config> config =
      ParseConfig("policy { max_sessions: \"many\" }\n", "f.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("f.conf:1:"));
}

TEST(ConfigTest, MeaningErrorNamesLineAndField) {
  absl::StatusOr<config::v1::Config> config = ParseConfig(
      "policy { principal: \"a\" }\n"
      "policy {\n"
      "  principal: \"b\"\n"
      "  allow_library: \"/ok/*\"\n"
      "  allow_library: \"relative/*\"\n"
      "}\n",
      "p.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(),
              HasSubstr("p.conf:5:3: field 'policy[1].allow_library[1]'"));
}

TEST(ConfigTest, BadPinIsRefused) {
  absl::StatusOr<config::v1::Config> config = ParseConfig(
      "library { path: \"/opt/x.so\" sha256: \"abc\" }", "pin.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(),
              HasSubstr("pin.conf:1:29: field 'library[0].sha256'"));
}

TEST(ConfigTest, PolicyWithoutPrincipalIsRefused) {
  absl::StatusOr<config::v1::Config> config =
      ParseConfig("\npolicy { max_sessions: 1 }", "q.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("q.conf:2:1: field 'policy[0]'"));
}

TEST(ConfigTest, HalfTlsIsRefused) {
  absl::StatusOr<config::v1::Config> config =
      ParseConfig("tls { cert_file: \"/c.pem\" }", "t.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("field 'tls'"));
}

TEST(ConfigTest, MissingFileIsNamed) {
  absl::StatusOr<config::v1::Config> config =
      LoadConfigFile("/nonexistent/ffid.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("/nonexistent/ffid.conf"));
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ffid-config-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    unlink(path().c_str());
    rmdir(dir_.c_str());
  }
  std::string path() const { return dir_ + "/ffid.conf"; }
  void Write(const std::string& text) {
    std::ofstream(path()) << text;
  }
  std::string dir_;
};

TEST_F(ConfigFileTest, EveryFlagIsSettableInTheFile) {
  Write(R"pb(
    listen: "unix:/tmp/elsewhere/ffid.sock"
    allow_library: "/opt/lib/*"
    worker_path: "/opt/ffid-worker"
    idle_timeout { seconds: 42 }
    worker_limits {
      address_space_bytes: 1073741824
      cpu_seconds: 7
      open_files: 64
      file_size_bytes: 4096
      max_call_duration { seconds: 3 }
    }
    allow_network: true
    no_sandbox: true
    insecure: true
    tls { cert_file: "/c.pem" key_file: "/k.pem" client_ca_file: "/ca.pem" }
    token_file: "/etc/tokens"
    audit { calls: true }
    require_authentication: true
  )pb");
  absl::StatusOr<Options> options =
      ParseOptions({"ffid", "--config", path()});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->config_path, path());
  EXPECT_EQ(options->listen, "unix:/tmp/elsewhere/ffid.sock");
  EXPECT_THAT(options->allow_library, ElementsAre("/opt/lib/*"));
  EXPECT_EQ(options->worker_path, "/opt/ffid-worker");
  EXPECT_EQ(options->idle_timeout, absl::Seconds(42));
  EXPECT_EQ(options->worker_limits.address_space_bytes(), uint64_t{1} << 30);
  EXPECT_EQ(options->worker_limits.cpu_seconds(), 7u);
  EXPECT_EQ(options->worker_limits.open_files(), 64u);
  EXPECT_EQ(options->worker_limits.file_size_bytes(), 4096u);
  EXPECT_EQ(options->worker_limits.max_call_duration().seconds(), 3);
  EXPECT_TRUE(options->allow_network);
  EXPECT_FALSE(options->sandbox);
  EXPECT_TRUE(options->insecure);
  EXPECT_EQ(options->tls_cert, "/c.pem");
  EXPECT_EQ(options->tls_key, "/k.pem");
  EXPECT_EQ(options->tls_client_ca, "/ca.pem");
  EXPECT_EQ(options->token_file, "/etc/tokens");
  EXPECT_TRUE(options->audit_calls);
  EXPECT_TRUE(options->require_authentication);
}

TEST_F(ConfigFileTest, OperationsSettingsAreSettableInTheFile) {
  Write(R"pb(
    metrics_listen: "127.0.0.1:9464"
    log_format: LOG_FORMAT_JSON
    log_level: LOG_LEVEL_WARNING
    shutdown_grace { seconds: 25 }
    arena_bytes: 0
  )pb");
  absl::StatusOr<Options> options =
      ParseOptions({"ffid", "--config", path()});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(options->log_format, LogFormat::kJson);
  EXPECT_EQ(options->log_level, LogLevel::kWarning);
  EXPECT_EQ(options->shutdown_grace, absl::Seconds(25));
  // Zero is a value (no arenas), not "unset".
  EXPECT_EQ(options->arena_bytes, 0u);

  Write("shutdown_grace { seconds: -1 }\n");
  absl::StatusOr<Options> negative = ParseOptions({"ffid", "--config", path()});
  EXPECT_THAT(negative.status().message(),
              HasSubstr("field 'shutdown_grace'"));
}

TEST_F(ConfigFileTest, FlagsWinOverTheFile) {
  Write("listen: \"unix:/tmp/a/s.sock\"\n"
        "allow_library: \"/opt/file/*\"\n"
        "idle_timeout { seconds: 42 }\n");
  absl::StatusOr<Options> options = ParseOptions(
      {"ffid", "--listen=unix:/tmp/b/s.sock", "--config", path(),
       "--allow-library", "/opt/flag/*"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->listen, "unix:/tmp/b/s.sock");
  EXPECT_THAT(options->allow_library, ElementsAre("/opt/flag/*"));
  EXPECT_EQ(options->idle_timeout, absl::Seconds(42));
}

TEST_F(ConfigFileTest, FileWithoutAllowlistKeepsTheDefault) {
  Write("idle_timeout { seconds: 5 }\n");
  absl::StatusOr<Options> options = ParseOptions({"ffid", "--config", path()});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->allow_library, DefaultAllowedLibraries());
}

TEST_F(ConfigFileTest, ErrorInTheFileFailsParseOptions) {
  Write("listen: \"unix:/tmp/a/s.sock\"\nidle_timeout { seconds: -1 }\n");
  absl::StatusOr<Options> options = ParseOptions({"ffid", "--config", path()});
  ASSERT_FALSE(options.ok());
  EXPECT_THAT(options.status().message(),
              HasSubstr(path() + ":2:1: field 'idle_timeout'"));
}

}  // namespace
}  // namespace ffid::server
