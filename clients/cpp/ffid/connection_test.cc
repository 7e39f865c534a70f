// Unit tests of how a client decides its address, transport and token
// (connection.h); connections to a real daemon with TLS, mutual TLS and
// tokens are in tests/client_auth_test.cc.
#include "clients/cpp/ffid/connection.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::client {
namespace {

using ::testing::HasSubstr;

// Sets or clears an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(DefaultAddressTest, FollowsTheDaemonsRule) {
  {
    ScopedEnv address("FFID_ADDRESS", "unix:/somewhere/ffid.sock");
    ScopedEnv runtime("XDG_RUNTIME_DIR", "/run/user/1234");
    EXPECT_EQ(DefaultAddress(), "unix:/somewhere/ffid.sock");
  }
  {
    ScopedEnv address("FFID_ADDRESS", nullptr);
    ScopedEnv runtime("XDG_RUNTIME_DIR", "/run/user/1234");
    EXPECT_EQ(DefaultAddress(), "unix:/run/user/1234/ffid/ffid.sock");
  }
  {
    ScopedEnv address("FFID_ADDRESS", "");
    ScopedEnv runtime("XDG_RUNTIME_DIR", nullptr);
    EXPECT_EQ(DefaultAddress(),
              absl::StrCat("unix:/tmp/ffid-", getuid(), "/ffid.sock"));
  }
}

// Every FFID_* variable cleared for one scope, so the tests do not depend
// on the caller's environment.
class CleanEnvironment {
 public:
  ScopedEnv address{"FFID_ADDRESS", nullptr};
  ScopedEnv token{"FFID_TOKEN", nullptr};
  ScopedEnv token_file{"FFID_TOKEN_FILE", nullptr};
  ScopedEnv ca{"FFID_CA", nullptr};
  ScopedEnv cert{"FFID_CERT", nullptr};
  ScopedEnv key{"FFID_KEY", nullptr};
  ScopedEnv insecure{"FFID_INSECURE", nullptr};
};

// A file with `text` in a fresh temporary directory.
std::string TempFile(const std::string& name, const std::string& text) {
  std::string dir = ::testing::TempDir() + "/connection_test-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return "";
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

absl::StatusOr<ResolvedConnection> Resolve(const ConnectOptions& options) {
  return ResolveConnectOptions(options);
}

TEST(ResolveConnectOptionsTest, UnixSocketIsPlaintextWithOptionalToken) {
  CleanEnvironment clean;
  ConnectOptions options;
  options.address = "unix:/run/ffid.sock";
  absl::StatusOr<ResolvedConnection> resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_FALSE(resolved->tls);
  EXPECT_EQ(resolved->token, "");
  options.token = "  s3cret\n";
  resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->token, "s3cret");
}

TEST(ResolveConnectOptionsTest, TcpIsTlsUnlessInsecure) {
  CleanEnvironment clean;
  ConnectOptions options;
  options.address = "127.0.0.1:7000";
  absl::StatusOr<ResolvedConnection> resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_TRUE(resolved->tls);
  EXPECT_EQ(resolved->root_certs, "");  // the system's roots
  options.insecure = true;
  resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_FALSE(resolved->tls);
}

TEST(ResolveConnectOptionsTest, ReadsTheFiles) {
  CleanEnvironment clean;
  ConnectOptions options;
  options.address = "ffid.example:7000";
  options.ca_file = TempFile("ca.pem", "CA PEM");
  options.cert_file = TempFile("client.pem", "CERT PEM");
  options.key_file = TempFile("client.key", "KEY PEM");
  options.token_file = TempFile("token", "\n  from-a-file \n");
  absl::StatusOr<ResolvedConnection> resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_TRUE(resolved->tls);
  EXPECT_EQ(resolved->root_certs, "CA PEM");
  EXPECT_EQ(resolved->cert_chain, "CERT PEM");
  EXPECT_EQ(resolved->private_key, "KEY PEM");
  EXPECT_EQ(resolved->token, "from-a-file");
}

TEST(ResolveConnectOptionsTest, EnvironmentFillsWhatIsNotGiven) {
  CleanEnvironment clean;
  const std::string ca = TempFile("ca.pem", "ENV CA");
  ScopedEnv address("FFID_ADDRESS", "ffid.example:7000");
  ScopedEnv token("FFID_TOKEN", "env-token");
  ScopedEnv ca_env("FFID_CA", ca.c_str());
  absl::StatusOr<ResolvedConnection> resolved = Resolve({});
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->address, "ffid.example:7000");
  EXPECT_EQ(resolved->token, "env-token");
  EXPECT_EQ(resolved->root_certs, "ENV CA");

  // What is given wins; a given token file beats FFID_TOKEN.
  ConnectOptions options;
  options.address = "other.example:1";
  options.token_file = TempFile("token", "file-token");
  resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->address, "other.example:1");
  EXPECT_EQ(resolved->token, "file-token");

  // FFID_TOKEN_FILE when FFID_TOKEN is unset.
  {
    ScopedEnv no_token("FFID_TOKEN", nullptr);
    ScopedEnv token_file("FFID_TOKEN_FILE", options.token_file.c_str());
    resolved = Resolve({});
    ASSERT_TRUE(resolved.ok()) << resolved.status();
    EXPECT_EQ(resolved->token, "file-token");
  }

  // use_environment = false ignores all of it.
  options = {};
  options.use_environment = false;
  resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->address, DaemonDefaultAddress());
  EXPECT_EQ(resolved->token, "");
}

TEST(ResolveConnectOptionsTest, FfidInsecureMeansPlaintextTcp) {
  CleanEnvironment clean;
  ScopedEnv insecure("FFID_INSECURE", "1");
  ConnectOptions options;
  options.address = "127.0.0.1:7000";
  absl::StatusOr<ResolvedConnection> resolved = Resolve(options);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_FALSE(resolved->tls);
}

TEST(ResolveConnectOptionsTest, RefusesContradictionsNamingThem) {
  CleanEnvironment clean;
  const std::string pem = TempFile("x.pem", "PEM");
  struct Case {
    ConnectOptions options;
    std::string message;
  };
  std::vector<Case> cases(6);
  cases[0].options.address = "unix:/run/ffid.sock";
  cases[0].options.ca_file = pem;
  cases[0].message = "is the daemon's unix socket, which is plaintext";
  cases[1].options.address = "h:1";
  cases[1].options.cert_file = pem;
  cases[1].message = "needs both the client certificate and its key";
  cases[2].options.address = "h:1";
  cases[2].options.insecure = true;
  cases[2].options.ca_file = pem;
  cases[2].message = "contradicts the TLS settings";
  cases[3].options.address = "h:1";
  cases[3].options.token = "a";
  cases[3].options.token_file = pem;
  cases[3].message = "not both";
  cases[4].options.address = "h:1";
  cases[4].options.ca_file = "/nonexistent/ca.pem";
  cases[4].message = "cannot read the CA file '/nonexistent/ca.pem'";
  cases[5].options.address = "h:1";
  cases[5].options.token_file = TempFile("empty", " \n");
  cases[5].message = "is empty";
  for (const Case& c : cases) {
    absl::StatusOr<ResolvedConnection> resolved = Resolve(c.options);
    ASSERT_FALSE(resolved.ok()) << c.message;
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(resolved.status().message(), HasSubstr(c.message));
  }
}

TEST(ConnectFailureTest, SaysWhatToCheck) {
  ResolvedConnection tls;
  tls.address = "h:1";
  tls.tls = true;
  tls.ca_file = "/etc/ca.pem";
  absl::Status status = ConnectFailure(tls, "Ssl handshake failed");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("Ssl handshake failed"));
  EXPECT_THAT(status.message(), HasSubstr("the CA file '/etc/ca.pem'"));
  EXPECT_THAT(status.message(), HasSubstr("--insecure needs insecure"));
  ResolvedConnection plain;
  plain.address = "h:1";
  EXPECT_THAT(ConnectFailure(plain, "").message(),
              HasSubstr("plaintext TCP reaches only a daemon started with "
                        "--insecure"));
}

}  // namespace
}  // namespace ffid::client
