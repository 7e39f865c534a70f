// The C++ client and ffictl authenticating to a real daemon: bearer tokens on
// the unix socket, TLS and mutual TLS on TCP with certificates made at test
// time (tests/testing/make_test_pki.sh), plaintext TCP to an --insecure
// daemon, and the refusals a user meets when a setting is wrong.
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/daemon.h"
#include "tests/testing/ffid_test.h"
#include "tests/testing/subprocess.h"

namespace ffid::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kAliceToken[] = "alice-secret";

// Matches an OK StatusOr whose value equals `expected`.
MATCHER_P(IsOkAndHolds, expected, "") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  *result_listener << "value is " << ::testing::PrintToString(*arg);
  return *arg == expected;
}

// Every FFID_* variable a client reads, unset: ffictl's environment.
EnvironmentChanges CleanClientEnvironment() {
  EnvironmentChanges changes;
  for (const char* name : {"FFID_ADDRESS", "FFID_TOKEN", "FFID_TOKEN_FILE",
                           "FFID_CA", "FFID_CERT", "FFID_KEY", "FFID_INSECURE"}) {
    changes[name] = std::nullopt;
  }
  return changes;
}

class ClientAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // This process's own FFID_* variables must not leak into the clients.
    for (const auto& [name, value] : CleanClientEnvironment()) {
      unsetenv(name.c_str());
    }
    absl::StatusOr<std::string> dir = MakeTempDir("ffid-client-auth-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    pki_ = *dir;
    absl::StatusOr<ProcessResult> made = RunProcess(
        {"/bin/bash", FFID_TEST_PKI_SCRIPT, pki_}, {}, absl::Seconds(60));
    ASSERT_TRUE(made.ok()) << made.status();
    if (made->exit_code == 77) GTEST_SKIP() << made->err;
    ASSERT_EQ(made->exit_code, 0) << made->err;
  }
  void TearDown() override {
    daemon_.reset();
    RemoveTree(pki_);
  }

  std::string Pki(const std::string& name) const { return pki_ + "/" + name; }

  // Starts a daemon with the test's token file and `flags`, on `listen`
  // (empty: a unix socket).
  void Start(std::vector<std::string> flags, const std::string& listen = "") {
    DaemonOptions options;
    options.extra_flags = {"--token-file", Pki("tokens")};
    options.extra_flags.insert(options.extra_flags.end(), flags.begin(),
                               flags.end());
    options.listen = listen;
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    address_ = listen.empty() ? daemon_->address() : daemon_->ReportedAddress();
    ASSERT_FALSE(address_.empty()) << daemon_->Log();
  }
  void StartTls() {
    Start({"--tls-cert", Pki("server.pem"), "--tls-key", Pki("server.key")},
          "127.0.0.1:0");
  }
  void StartMutualTls() {
    Start({"--tls-cert", Pki("server.pem"), "--tls-key", Pki("server.key"),
           "--tls-client-ca", Pki("ca.pem")},
          "127.0.0.1:0");
  }

  client::ConnectOptions Options() const {
    client::ConnectOptions options;
    options.address = address_;
    options.timeout = absl::Seconds(10);
    return options;
  }

  // Who the daemon takes a client with `options` to be.
  static absl::StatusOr<std::string> PrincipalOf(
      const client::ConnectOptions& options) {
    absl::StatusOr<std::unique_ptr<client::Client>> connected =
        client::Client::Connect(options);
    if (!connected.ok()) return connected.status();
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::GetServerInfoResponse info;
    absl::Status status = client::StatusFromGrpc((*connected)->stub().GetServerInfo(
        &context, v1::GetServerInfoRequest(), &info));
    if (!status.ok()) return status;
    return info.principal();
  }

  // cos(0) in a new session.
  static absl::StatusOr<double> Cos(const client::ConnectOptions& options) {
    absl::StatusOr<std::unique_ptr<client::Client>> connected =
        client::Client::Connect(options);
    if (!connected.ok()) return connected.status();
    absl::StatusOr<std::unique_ptr<client::Session>> session =
        (*connected)->CreateSession();
    if (!session.ok()) return session.status();
    absl::StatusOr<client::Library> libm =
        (*session)->LoadLibrary("libm.so.6");
    if (!libm.ok()) return libm.status();
    absl::StatusOr<client::Function> cos =
        (*session)->ResolveFunction(*libm, "double cos(double)");
    if (!cos.ok()) return cos.status();
    absl::StatusOr<v1::CallResponse> result =
        (*session)->Call(*cos, {client::MakeDouble(0)});
    if (!result.ok()) return result.status();
    return result->result().double_value();
  }

  // ffictl with `args` and a clean FFID_* environment plus `environment`.
  absl::StatusOr<ProcessResult> Ffictl(std::vector<std::string> args,
                                       EnvironmentChanges environment = {}) {
    args.insert(args.begin(), FfictlPath());
    EnvironmentChanges changes = CleanClientEnvironment();
    for (auto& [name, value] : environment) changes[name] = value;
    return RunProcess(args, changes);
  }

  std::string pki_;
  std::unique_ptr<Daemon> daemon_;
  std::string address_;
};

// ------------------------------------------------------------ tokens

TEST_F(ClientAuthTest, TokenIsSentOnEveryRpc) {
  Start({});
  client::ConnectOptions options = Options();
  options.token = kAliceToken;
  EXPECT_THAT(PrincipalOf(options), IsOkAndHolds("token:alice"));
  // Unary calls and the session's Connect stream carry it.
  absl::StatusOr<double> cos = Cos(options);
  ASSERT_THAT(cos, IsOk());
  EXPECT_EQ(*cos, 1.0);
  // From a file.
  options.token = "";
  options.token_file = Pki("alice.token");
  EXPECT_THAT(PrincipalOf(options), IsOkAndHolds("token:alice"));
  // Without one the unix socket names the uid.
  EXPECT_THAT(PrincipalOf(Options()),
              IsOkAndHolds(absl::StrCat("unix:", getuid())));
}

TEST_F(ClientAuthTest, TokenFromTheEnvironment) {
  Start({});
  setenv("FFID_TOKEN", "bob-secret", 1);
  EXPECT_THAT(PrincipalOf(Options()), IsOkAndHolds("token:bob"));
  unsetenv("FFID_TOKEN");
  setenv("FFID_TOKEN_FILE", Pki("alice.token").c_str(), 1);
  EXPECT_THAT(PrincipalOf(Options()), IsOkAndHolds("token:alice"));
  // What the code gives wins over the environment.
  client::ConnectOptions options = Options();
  options.token = "bob-secret";
  EXPECT_THAT(PrincipalOf(options), IsOkAndHolds("token:bob"));
  unsetenv("FFID_TOKEN_FILE");
}

TEST_F(ClientAuthTest, WrongTokenIsUnauthenticated) {
  Start({});
  client::ConnectOptions options = Options();
  options.token = "guessed-token";
  absl::StatusOr<double> cos = Cos(options);
  EXPECT_THAT(cos, HasCode(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(cos, HasReason("UNAUTHENTICATED"));
  EXPECT_THAT(MessageOf(cos), HasSubstr("bearer token is not one"));
}

// ------------------------------------------------------------ TLS

TEST_F(ClientAuthTest, TlsWithTheRightCa) {
  StartTls();
  client::ConnectOptions options = Options();
  options.ca_file = Pki("ca.pem");
  EXPECT_THAT(PrincipalOf(options), IsOkAndHolds("anonymous"));
  EXPECT_THAT(Cos(options), IsOkAndHolds(1.0));
  // TLS and a token together.
  options.token = kAliceToken;
  EXPECT_THAT(PrincipalOf(options), IsOkAndHolds("token:alice"));
  options.token = "guessed-token";
  EXPECT_THAT(PrincipalOf(options), HasReason("UNAUTHENTICATED"));
}

TEST_F(ClientAuthTest, TlsWithTheWrongCaFailsNamingTheCa) {
  StartTls();
  client::ConnectOptions options = Options();
  options.ca_file = Pki("other-ca.pem");
  options.timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<client::Client>> connected =
      client::Client::Connect(options);
  EXPECT_THAT(connected, HasCode(absl::StatusCode::kUnavailable));
  EXPECT_THAT(MessageOf(connected),
              HasSubstr(absl::StrCat("the CA file '", Pki("other-ca.pem"),
                                     "' (--ca, FFID_CA) signed the daemon's "
                                     "certificate")));
  // The system's roots do not know the test CA either.
  options.ca_file = "";
  EXPECT_THAT(MessageOf(client::Client::Connect(options)),
              HasSubstr("or give its CA (--ca, FFID_CA)"));
}

TEST_F(ClientAuthTest, PlaintextClientOfATlsDaemonIsToldAboutTls) {
  StartTls();
  client::ConnectOptions options = Options();
  options.insecure = true;
  options.timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<client::Client>> connected =
      client::Client::Connect(options);
  EXPECT_THAT(connected, HasCode(absl::StatusCode::kUnavailable));
  EXPECT_THAT(MessageOf(connected), HasSubstr("drop insecure"));
}

TEST_F(ClientAuthTest, MutualTlsNamesTheCertificatesCommonName) {
  StartMutualTls();
  client::ConnectOptions options = Options();
  options.ca_file = Pki("ca.pem");
  options.cert_file = Pki("client.pem");
  options.key_file = Pki("client.key");
  EXPECT_THAT(PrincipalOf(options), IsOkAndHolds("x509:alice"));
  EXPECT_THAT(Cos(options), IsOkAndHolds(1.0));
  // From the environment.
  setenv("FFID_CA", Pki("ca.pem").c_str(), 1);
  setenv("FFID_CERT", Pki("client.pem").c_str(), 1);
  setenv("FFID_KEY", Pki("client.key").c_str(), 1);
  EXPECT_THAT(PrincipalOf(Options()), IsOkAndHolds("x509:alice"));
  for (const char* name : {"FFID_CA", "FFID_CERT", "FFID_KEY"}) unsetenv(name);
  // Without a client certificate the daemon ends the handshake.
  options.cert_file = options.key_file = "";
  options.timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<client::Client>> anonymous =
      client::Client::Connect(options);
  EXPECT_THAT(anonymous, HasCode(absl::StatusCode::kUnavailable));
  EXPECT_THAT(MessageOf(anonymous),
              HasSubstr("also needs a client certificate and key"));
}

TEST_F(ClientAuthTest, InsecureTcp) {
  Start({"--insecure"}, "127.0.0.1:0");
  client::ConnectOptions options = Options();
  options.insecure = true;
  options.token = kAliceToken;
  EXPECT_THAT(PrincipalOf(options), IsOkAndHolds("token:alice"));
  // By default a host:port address means TLS, which this daemon lacks.
  options.insecure = false;
  options.timeout = absl::Seconds(1);
  EXPECT_THAT(MessageOf(client::Client::Connect(options)),
              HasSubstr("a daemon started with --insecure needs insecure"));
}

// ------------------------------------------------------------ ffictl

TEST_F(ClientAuthTest, FfictlTakesTheSameSettings) {
  StartMutualTls();
  absl::StatusOr<ProcessResult> info = Ffictl(
      {"--address", address_, "--ca", Pki("ca.pem"), "--cert",
       Pki("client.pem"), "--key", Pki("client.key"), "info"});
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->exit_code, 0) << info->err;
  EXPECT_THAT(info->out, HasSubstr("principal: \"x509:alice\""));
  // The same from the environment, with a token on top (which wins).
  info = Ffictl({"info"}, {{"FFID_ADDRESS", address_},
                           {"FFID_CA", Pki("ca.pem")},
                           {"FFID_CERT", Pki("client.pem")},
                           {"FFID_KEY", Pki("client.key")},
                           {"FFID_TOKEN", "bob-secret"}});
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->exit_code, 0) << info->err;
  EXPECT_THAT(info->out, HasSubstr("principal: \"token:bob\""));
  absl::StatusOr<ProcessResult> call = Ffictl(
      {"--address", address_, "--ca", Pki("ca.pem"), "--cert",
       Pki("client.pem"), "--key", Pki("client.key"), "--token-file",
       Pki("alice.token"), "call", "libm.so.6", "double cos(double)", "0"});
  ASSERT_THAT(call, IsOk());
  EXPECT_EQ(call->exit_code, 0) << call->err;
  EXPECT_EQ(call->out, "1\n");
  // The wrong CA: exit 1 and a message naming --ca.
  absl::StatusOr<ProcessResult> wrong =
      Ffictl({"--address", address_, "--ca", Pki("other-ca.pem"), "--cert",
              Pki("client.pem"), "--key", Pki("client.key"), "info"});
  ASSERT_THAT(wrong, IsOk());
  EXPECT_EQ(wrong->exit_code, 1);
  EXPECT_THAT(wrong->err, HasSubstr("error: UNAVAILABLE: "));
  EXPECT_THAT(wrong->err, HasSubstr("(--ca, FFID_CA)"));
}

TEST_F(ClientAuthTest, FfictlWithAWrongTokenSaysUnauthenticated) {
  Start({});
  const std::string token_file = Pki("wrong.token");
  absl::StatusOr<ProcessResult> write = RunProcess(
      {"/bin/sh", "-c", absl::StrCat("echo guessed > ", token_file)});
  ASSERT_THAT(write, IsOk());
  absl::StatusOr<ProcessResult> call =
      Ffictl({"--address", address_, "--token-file", token_file, "call",
              "libm.so.6", "double cos(double)", "0"});
  ASSERT_THAT(call, IsOk());
  EXPECT_EQ(call->exit_code, 1);
  EXPECT_THAT(call->err, HasSubstr("error: UNAUTHENTICATED: "));
  EXPECT_THAT(call->err, HasSubstr("bearer token is not one"));
  // A contradiction is a usage error of the settings.
  absl::StatusOr<ProcessResult> contradiction =
      Ffictl({"--address", address_, "--ca", Pki("ca.pem"), "info"});
  ASSERT_THAT(contradiction, IsOk());
  EXPECT_EQ(contradiction->exit_code, 1);
  EXPECT_THAT(contradiction->err, HasSubstr("unix socket, which is plaintext"));
}

}  // namespace
}  // namespace ffid::testing
