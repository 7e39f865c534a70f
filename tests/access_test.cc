// Access control against the real daemon on real sockets: principals from
// the unix socket (SO_PEERCRED), bearer tokens, TLS and mutual TLS with
// certificates made here by openssl; ownership (another principal gets
// NOT_FOUND); every refusal of a per-principal policy; library pins; the
// audit log (text and JSON); health without an identity; a second unix
// uid (as root); the config file at start-up and its reload on SIGHUP.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/health.h"
#include "clients/cpp/ffid/values.h"
#include "ffi/errors.h"
#include "ffid/v1/ffid.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/daemon.h"
#include "tests/testing/ffid_test.h"
#include "tests/testing/subprocess.h"

namespace ffid::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kLibm[] = "libm.so.6";
// The SHA-256 of "alice-secret" and of "bob-secret".
constexpr char kAliceToken[] = "alice-secret";
constexpr char kBobToken[] = "bob-secret";

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// SHA-256 by the sha256sum tool, so the test does not share the daemon's
// code.
std::string Sha256Sum(const std::string& path) {
  absl::StatusOr<ProcessResult> result =
      RunProcess({"/usr/bin/sha256sum", path});
  if (!result.ok() || result->exit_code != 0) return "";
  return result->out.substr(0, 64);
}

std::string Sha256OfText(const std::string& dir, const std::string& text) {
  const std::string path = dir + "/hash-input";
  WriteFile(path, text);
  std::string hash = Sha256Sum(path);
  unlink(path.c_str());
  return hash;
}

// A client on a raw channel: every request may carry a bearer token.
class RawClient {
 public:
  RawClient(std::shared_ptr<grpc::Channel> channel, std::string token = "")
      : stub_(v1::Ffi::NewStub(std::move(channel))), token_(std::move(token)) {}

  static RawClient Unix(const Daemon& daemon, std::string token = "") {
    return RawClient(grpc::CreateChannel(daemon.address(),
                                         grpc::InsecureChannelCredentials()),
                     std::move(token));
  }

  // Every later request carries `x-request-id: id` (a tracing id).
  void set_request_id(std::string id) { request_id_ = std::move(id); }

  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo() {
    v1::GetServerInfoResponse response;
    RETURN_IF_ERROR(Invoke(&v1::Ffi::Stub::GetServerInfo,
                           v1::GetServerInfoRequest(), &response));
    return response;
  }

  absl::StatusOr<std::string> CreateSession(
      const v1::CreateSessionRequest& request = {}) {
    v1::CreateSessionResponse response;
    RETURN_IF_ERROR(Invoke(&v1::Ffi::Stub::CreateSession, request, &response));
    return response.session().id();
  }

  absl::Status GetSession(const std::string& id) {
    v1::GetSessionRequest request;
    request.set_session(id);
    v1::GetSessionResponse response;
    return Invoke(&v1::Ffi::Stub::GetSession, request, &response);
  }

  absl::Status DeleteSession(const std::string& id) {
    v1::DeleteSessionRequest request;
    request.set_session(id);
    v1::DeleteSessionResponse response;
    return Invoke(&v1::Ffi::Stub::DeleteSession, request, &response);
  }

  absl::StatusOr<std::string> LoadLibrary(const std::string& session,
                                          const std::string& name) {
    v1::LoadLibraryRequest request;
    request.set_session(session);
    request.set_name(name);
    v1::LoadLibraryResponse response;
    RETURN_IF_ERROR(Invoke(&v1::Ffi::Stub::LoadLibrary, request, &response));
    return response.library();
  }

  absl::StatusOr<std::string> Resolve(const std::string& session,
                                      const std::string& library,
                                      const std::string& declaration) {
    v1::ResolveFunctionRequest request;
    request.set_session(session);
    request.set_library(library);
    request.set_declaration(declaration);
    v1::ResolveFunctionResponse response;
    RETURN_IF_ERROR(
        Invoke(&v1::Ffi::Stub::ResolveFunction, request, &response));
    return response.function();
  }

  absl::StatusOr<double> CallDouble(const std::string& session,
                                    const std::string& function, double x) {
    v1::CallRequest request;
    request.set_session(session);
    request.set_function(function);
    request.add_arguments()->set_double_value(x);
    v1::CallResponse response;
    RETURN_IF_ERROR(Invoke(&v1::Ffi::Stub::Call, request, &response));
    return response.result().double_value();
  }

  // CallDouble on a CallStream of its own: the call's answer, its error,
  // or the status the daemon ended the stream with.
  absl::StatusOr<double> StreamCallDouble(const std::string& session,
                                          const std::string& function,
                                          double x) {
    auto context = Context();
    auto stream = stub_->CallStream(context.get());
    v1::CallStreamRequest request;
    request.mutable_call()->set_session(session);
    request.mutable_call()->set_function(function);
    request.mutable_call()->add_arguments()->set_double_value(x);
    v1::CallStreamResponse response;
    if (!stream->Write(request) || !stream->Read(&response)) {
      return client::StatusFromGrpc(stream->Finish());
    }
    stream->WritesDone();
    (void)stream->Finish();
    if (!response.error_status().empty()) {
      google::rpc::Status error;
      if (!error.ParseFromString(response.error_status())) {
        return absl::DataLossError("unreadable error_status");
      }
      return client::StatusFromRpcStatus(error);
    }
    return response.call().result().double_value();
  }

  // Opens a Connect stream attaching to `session` and returns the status
  // the daemon ends it with (OK if it confirmed the attachment).
  absl::Status Attach(const std::string& session) {
    auto context = Context();
    auto stream = stub_->Connect(context.get());
    v1::ConnectRequest attach;
    attach.mutable_attach()->set_session(session);
    stream->Write(attach);
    v1::ConnectResponse response;
    if (stream->Read(&response) && response.has_attached()) {
      context->TryCancel();
      (void)stream->Finish();
      return absl::OkStatus();
    }
    return client::StatusFromGrpc(stream->Finish());
  }

  // A new session with libm's cos resolved in it.
  struct CosSession {
    std::string session;
    std::string function;
  };
  absl::StatusOr<CosSession> OpenCos() {
    CosSession opened;
    ASSIGN_OR_RETURN(opened.session, CreateSession());
    ASSIGN_OR_RETURN(std::string library, LoadLibrary(opened.session, kLibm));
    ASSIGN_OR_RETURN(opened.function,
                     Resolve(opened.session, library, "double cos(double)"));
    return opened;
  }

  // cos(x) in a new session of its own.
  absl::StatusOr<double> Cos(double x) {
    ASSIGN_OR_RETURN(CosSession opened, OpenCos());
    return CallDouble(opened.session, opened.function, x);
  }

 private:
  // One unary RPC with a deadline and the token.
  template <typename Request, typename Response>
  absl::Status Invoke(grpc::Status (v1::Ffi::Stub::*method)(
                          grpc::ClientContext*, const Request&, Response*),
                      const Request& request, Response* response) {
    auto context = Context();
    return client::StatusFromGrpc(
        (stub_.get()->*method)(context.get(), request, response));
  }

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    if (!token_.empty()) {
      context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
    }
    if (!request_id_.empty()) context->AddMetadata("x-request-id", request_id_);
    return context;
  }

  std::unique_ptr<v1::Ffi::Stub> stub_;
  std::string token_;
  std::string request_id_;
};

// "OK", or the code, reason and message of a failure, for a report that
// crosses a process boundary.
std::string Describe(const absl::Status& status) {
  if (status.ok()) return "OK";
  return absl::StrCat(absl::StatusCodeToString(status.code()), " ",
                      client::ErrorReason(status), " ", status.message());
}

class AccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> dir = MakeTempDir("ffid-access-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
    tokens_ = dir_ + "/tokens";
    WriteFile(tokens_,
              absl::StrCat("# hashed bearer tokens\n",
                           Sha256OfText(dir_, kAliceToken), " alice\n",
                           Sha256OfText(dir_, kBobToken), " bob\n"));
  }
  void TearDown() override {
    daemon_.reset();
    RemoveTree(dir_);
  }

  // Starts a daemon with `config` as its --config file plus `flags`.
  void Start(const std::string& config, std::vector<std::string> flags = {},
             const std::string& listen = "") {
    config_ = dir_ + "/ffid.conf";
    WriteFile(config_, config);
    DaemonOptions options;
    options.extra_flags = {"--config", config_};
    options.extra_flags.insert(options.extra_flags.end(), flags.begin(),
                               flags.end());
    options.listen = listen;
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(options);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
  }

  // Sends SIGHUP and waits for the daemon to log `line` a new time.
  bool Reload(const std::string& line) {
    const size_t before = Count(daemon_->Log(), line);
    kill(daemon_->pid(), SIGHUP);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      if (Count(daemon_->Log(), line) > before) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  // Waits (bounded) for the daemon's log to contain `what`: the test reads
  // the daemon's stderr through a pipe, a little behind the daemon.
  bool LogShows(const std::string& what) const {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!absl::StrContains(daemon_->Log(), what)) {
      if (absl::Now() >= deadline) {
        ADD_FAILURE() << "the daemon's log lacks '" << what << "':\n"
                      << daemon_->Log();
        return false;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return true;
  }

  static size_t Count(const std::string& text, const std::string& what) {
    size_t count = 0;
    for (size_t at = text.find(what); at != std::string::npos;
         at = text.find(what, at + 1)) {
      ++count;
    }
    return count;
  }

  // The "host:port" the daemon printed it listens on.
  std::string TcpAddress() const {
    const std::string log = daemon_->Log();
    const std::string marker = "ffid: listening on ";
    size_t at = log.find(marker);
    if (at == std::string::npos) return "";
    at += marker.size();
    return log.substr(at, log.find('\n', at) - at);
  }

  std::string tokens_config() const {
    return absl::StrCat("token_file: \"", tokens_, "\"\n");
  }

  std::string dir_;
  std::string tokens_;
  std::string config_;
  std::unique_ptr<Daemon> daemon_;
};

// ------------------------------------------------------------ principals

TEST_F(AccessTest, UnixClientIsItsUid) {
  Start("");
  RawClient client = RawClient::Unix(*daemon_);
  absl::StatusOr<double> cos = client.Cos(0);
  ASSERT_THAT(cos, IsOk());
  EXPECT_EQ(*cos, 1.0);
  EXPECT_TRUE(LogShows(absl::StrCat("ffid: audit principal=unix:", getuid(),
                                    " what=CreateSession")));
  EXPECT_TRUE(LogShows("what=LoadLibrary target=/"));
  EXPECT_TRUE(LogShows("libm.so.6 result=OK"));
  // Calls are audited only with audit { calls: true }.
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("what=Call ")));
}

TEST_F(AccessTest, SocketIsPrivateInAPrivateDirectory) {
  Start("");
  struct stat socket_info;
  ASSERT_EQ(stat(daemon_->socket_path().c_str(), &socket_info), 0);
  EXPECT_EQ(socket_info.st_mode & 0777, 0600u);
  // The default address's directory is created 0700 (sessions_test checks
  // it); here the harness's temporary directory is 0700 too.
  struct stat dir_info;
  ASSERT_EQ(stat(daemon_->temp_dir().c_str(), &dir_info), 0);
  EXPECT_EQ(dir_info.st_mode & 077, 0u);
}

TEST_F(AccessTest, TokenNamesThePrincipal) {
  Start(tokens_config() + "audit { calls: true }\n");
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  ASSERT_THAT(alice.Cos(0), IsOk());
  EXPECT_TRUE(LogShows("principal=token:alice what=CreateSession"));
  EXPECT_TRUE(LogShows("principal=token:alice what=Call"));
  // A call on a CallStream is audited as a unary one.
  absl::StatusOr<RawClient::CosSession> opened = alice.OpenCos();
  ASSERT_THAT(opened, IsOk());
  ASSERT_THAT(alice.StreamCallDouble(opened->session, opened->function, 0),
              IsOk());
  EXPECT_TRUE(LogShows(absl::StrCat("principal=token:alice what=Call target=",
                                    opened->function, " result=OK")));
  // The token file holds hashes only.
  EXPECT_THAT(ReadFile(tokens_), Not(HasSubstr(kAliceToken)));
}

TEST_F(AccessTest, UnknownTokenIsUnauthenticated) {
  Start(tokens_config());
  RawClient mallory = RawClient::Unix(*daemon_, "guessed-token");
  absl::StatusOr<std::string> session = mallory.CreateSession();
  EXPECT_THAT(session, HasCode(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(session, HasReason("UNAUTHENTICATED"));
  EXPECT_TRUE(LogShows(
      "principal=(UNAUTHENTICATED) what=CreateSession "
      "result=UNAUTHENTICATED reason=UNAUTHENTICATED"));
  // Nor may it hold one of the daemon's CallStreams.
  EXPECT_THAT(mallory.StreamCallDouble("session", "function", 0),
              HasReason("UNAUTHENTICATED"));
}

TEST_F(AccessTest, AnotherPrincipalCannotSeeASession) {
  Start(tokens_config());
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  RawClient bob = RawClient::Unix(*daemon_, kBobToken);
  RawClient local = RawClient::Unix(*daemon_);
  absl::StatusOr<RawClient::CosSession> opened = alice.OpenCos();
  ASSERT_THAT(opened, IsOk());
  const std::string* session = &opened->session;
  const std::string* function = &opened->function;

  for (RawClient* stranger : {&bob, &local}) {
    absl::Status get = stranger->GetSession(*session);
    EXPECT_THAT(get, HasCode(absl::StatusCode::kNotFound));
    EXPECT_THAT(get, HasReason("SESSION_NOT_FOUND"));
    // Exactly what an id that never existed gets.
    const std::string unknown(session->size(), '0');
    EXPECT_EQ(MessageOf(get),
              absl::StrCat("session '", *session,
                           MessageOf(stranger->GetSession(unknown))
                               .substr(unknown.size() + 9)));
    EXPECT_THAT(stranger->CallDouble(*session, *function, 0),
                HasReason("SESSION_NOT_FOUND"));
    EXPECT_THAT(stranger->StreamCallDouble(*session, *function, 0),
                HasReason("SESSION_NOT_FOUND"));
    EXPECT_THAT(stranger->LoadLibrary(*session, kLibm),
                HasReason("SESSION_NOT_FOUND"));
    EXPECT_THAT(stranger->Attach(*session), HasReason("SESSION_NOT_FOUND"));
    EXPECT_THAT(stranger->DeleteSession(*session),
                HasReason("SESSION_NOT_FOUND"));
  }
  // Still alice's, and alive.
  EXPECT_THAT(alice.CallDouble(*session, *function, 0), IsOk());
  EXPECT_THAT(alice.StreamCallDouble(*session, *function, 0), IsOk());
  EXPECT_THAT(alice.DeleteSession(*session), IsOk());
}

// ------------------------------------------------------------ policies

TEST_F(AccessTest, RequireAuthenticationRefusesAnonymousTcp) {
  Start(tokens_config() + "require_authentication: true\n", {"--insecure"},
        "127.0.0.1:0");
  const std::string address = TcpAddress();
  ASSERT_FALSE(address.empty()) << daemon_->Log();
  EXPECT_THAT(daemon_->Log(), HasSubstr("without TLS or authentication"));
  RawClient anonymous(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  EXPECT_THAT(anonymous.CreateSession(), HasReason("UNAUTHENTICATED"));
  RawClient alice(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()),
      kAliceToken);
  EXPECT_THAT(alice.Cos(0), IsOk());
}

TEST_F(AccessTest, DeniedPrincipalIsRefusedEverything) {
  Start(tokens_config() + "policy { principal: \"token:bob\" deny: true }\n");
  RawClient bob = RawClient::Unix(*daemon_, kBobToken);
  absl::StatusOr<std::string> session = bob.CreateSession();
  EXPECT_THAT(session, HasCode(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(session, HasReason("PRINCIPAL_DENIED"));
  EXPECT_THAT(RawClient::Unix(*daemon_, kAliceToken).Cos(0), IsOk());
}

TEST_F(AccessTest, LibraryOutsideThePrincipalsGlobsIsRefused) {
  Start(tokens_config() +
        absl::StrCat("policy { principal: \"token:*\" allow_library: \"",
                     FixtureDir(), "/*\" }\n"));
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  absl::StatusOr<std::string> session = alice.CreateSession();
  ASSERT_THAT(session, IsOk());
  absl::StatusOr<std::string> libm = alice.LoadLibrary(*session, kLibm);
  EXPECT_THAT(libm, HasCode(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(libm, HasReason("LIBRARY_NOT_ALLOWED"));
  EXPECT_THAT(MessageOf(libm), HasSubstr("principal 'token:alice'"));
  EXPECT_THAT(alice.LoadLibrary(*session, FixturePath()), IsOk());
  EXPECT_TRUE(LogShows("principal=token:alice what=LoadLibrary target=" +
                       std::string(kLibm) +
                       " result=PERMISSION_DENIED reason=LIBRARY_NOT_ALLOWED"));
  // Without a policy the unix client may load it.
  EXPECT_THAT(RawClient::Unix(*daemon_).Cos(0), IsOk());
}

TEST_F(AccessTest, SymbolOutsideThePrincipalsGlobsIsRefused) {
  Start(tokens_config() +
        "policy { principal: \"token:alice\" allow_symbol: \"sin*\" }\n");
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  absl::StatusOr<std::string> session = alice.CreateSession();
  ASSERT_THAT(session, IsOk());
  absl::StatusOr<std::string> library = alice.LoadLibrary(*session, kLibm);
  ASSERT_THAT(library, IsOk());
  absl::StatusOr<std::string> cos =
      alice.Resolve(*session, *library, "double cos(double)");
  EXPECT_THAT(cos, HasCode(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(cos, HasReason("SYMBOL_NOT_ALLOWED"));
  EXPECT_THAT(alice.Resolve(*session, *library, "double sin(double)"),
              IsOk());
}

TEST_F(AccessTest, SandboxMaximaOfThePrincipal) {
  Start(tokens_config() +
            "policy { principal: \"token:alice\" "
            "max_limits { address_space_bytes: 1073741824 } }\n",
        {"--allow-network"});
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  v1::CreateSessionRequest big;
  big.mutable_limits()->set_address_space_bytes(uint64_t{2} << 30);
  EXPECT_THAT(alice.CreateSession(big), HasReason("RESOURCE_LIMIT"));
  v1::CreateSessionRequest network;
  network.mutable_sandbox()->set_allow_network(true);
  EXPECT_THAT(alice.CreateSession(network), HasReason("SANDBOX_VIOLATION"));
  // bob has no policy: the server's maxima (8G, network allowed).
  RawClient bob = RawClient::Unix(*daemon_, kBobToken);
  EXPECT_THAT(bob.CreateSession(big), IsOk());
  EXPECT_THAT(bob.CreateSession(network), IsOk());
  // alice's sessions get her maximum as their default.
  absl::StatusOr<std::string> session = alice.CreateSession();
  ASSERT_THAT(session, IsOk());
}

TEST_F(AccessTest, SessionQuota) {
  Start(tokens_config() +
        "policy { principal: \"token:alice\" max_sessions: 2 }\n");
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  absl::StatusOr<std::string> first = alice.CreateSession();
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(alice.CreateSession(), IsOk());
  absl::StatusOr<std::string> third = alice.CreateSession();
  EXPECT_THAT(third, HasCode(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(third, HasReason("SESSION_QUOTA"));
  // Deleting one makes room.
  ASSERT_THAT(alice.DeleteSession(*first), IsOk());
  EXPECT_THAT(alice.CreateSession(), IsOk());
}

TEST_F(AccessTest, CallRate) {
  // One request now and the next a thousand seconds later.
  Start(tokens_config() +
        "policy { principal: \"token:alice\" calls_per_second: 0.001 }\n");
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  ASSERT_THAT(alice.CreateSession(), IsOk());
  absl::StatusOr<std::string> second = alice.CreateSession();
  EXPECT_THAT(second, HasCode(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(second, HasReason("RATE_LIMITED"));
  // Others have their own rate.
  EXPECT_THAT(RawClient::Unix(*daemon_, kBobToken).Cos(0), IsOk());
}

TEST_F(AccessTest, PinnedLibraryLoadsOnlyWithItsContents) {
  const std::string hash = Sha256Sum(FixturePath());
  ASSERT_EQ(hash.size(), 64u);
  std::string wrong = hash;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  Start(absl::StrCat("library { path: \"", FixturePath(), "\" sha256: \"",
                     hash, "\" }\n", "library { path: \"",
                     "/usr/lib/x86_64-linux-gnu/libm.so*\" sha256: \"", wrong,
                     "\" }\n"));
  RawClient client = RawClient::Unix(*daemon_);
  absl::StatusOr<std::string> session = client.CreateSession();
  ASSERT_THAT(session, IsOk());
  EXPECT_THAT(client.LoadLibrary(*session, FixturePath()), IsOk());
  absl::StatusOr<std::string> libm = client.LoadLibrary(*session, kLibm);
  EXPECT_THAT(libm, HasCode(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(libm, HasReason("LIBRARY_PIN_MISMATCH"));
  EXPECT_THAT(MessageOf(libm), HasSubstr(wrong));
}

// ------------------------------------------------------------ TLS

class TlsTest : public AccessTest {
 protected:
  void SetUp() override {
    AccessTest::SetUp();
    if (access("/usr/bin/openssl", X_OK) != 0) {
      GTEST_SKIP() << "openssl is not installed (deploy/install-deps.sh)";
    }
    // A CA, a server certificate for 127.0.0.1 and a client certificate
    // with common name "alice", all signed by the CA.
    ASSERT_TRUE(Openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes",
                         "-keyout", Path("ca.key"), "-out", Path("ca.pem"),
                         "-days", "2", "-subj", "/CN=ffid test CA"}));
    ASSERT_TRUE(Openssl({"req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                         Path("server.key"), "-out", Path("server.csr"),
                         "-subj", "/CN=localhost"}));
    WriteFile(Path("server.ext"),
              "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    ASSERT_TRUE(Openssl({"x509", "-req", "-in", Path("server.csr"), "-CA",
                         Path("ca.pem"), "-CAkey", Path("ca.key"),
                         "-CAcreateserial", "-out", Path("server.pem"),
                         "-days", "2", "-extfile", Path("server.ext")}));
    ASSERT_TRUE(Openssl({"req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                         Path("client.key"), "-out", Path("client.csr"),
                         "-subj", "/CN=alice"}));
    ASSERT_TRUE(Openssl({"x509", "-req", "-in", Path("client.csr"), "-CA",
                         Path("ca.pem"), "-CAkey", Path("ca.key"),
                         "-CAcreateserial", "-out", Path("client.pem"),
                         "-days", "2"}));
  }

  std::string Path(const std::string& name) const {
    return dir_ + "/" + name;
  }

  bool Openssl(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    absl::StatusOr<ProcessResult> result = RunProcess(args);
    EXPECT_TRUE(result.ok() && result->exit_code == 0)
        << (result.ok() ? result->err : result.status().ToString());
    return result.ok() && result->exit_code == 0;
  }

  std::shared_ptr<grpc::Channel> Channel(bool with_client_certificate) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadFile(Path("ca.pem"));
    if (with_client_certificate) {
      options.pem_private_key = ReadFile(Path("client.key"));
      options.pem_cert_chain = ReadFile(Path("client.pem"));
    }
    return grpc::CreateChannel(TcpAddress(), grpc::SslCredentials(options));
  }
};

TEST_F(TlsTest, TlsServesAnonymousClients) {
  Start(absl::StrCat("tls { cert_file: \"", Path("server.pem"),
                     "\" key_file: \"", Path("server.key"), "\" }\n"),
        {}, "127.0.0.1:0");
  ASSERT_FALSE(TcpAddress().empty()) << daemon_->Log();
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("without TLS")));
  RawClient client(Channel(false));
  absl::StatusOr<double> cos = client.Cos(0);
  ASSERT_THAT(cos, IsOk());
  EXPECT_EQ(*cos, 1.0);
  EXPECT_TRUE(LogShows("principal=anonymous"));
  // A client that does not speak TLS gets nowhere.
  RawClient plain(
      grpc::CreateChannel(TcpAddress(), grpc::InsecureChannelCredentials()));
  EXPECT_THAT(plain.CreateSession(), HasCode(absl::StatusCode::kUnavailable));
}

TEST_F(TlsTest, MutualTlsMapsTheCertificateToAPrincipal) {
  Start(absl::StrCat("tls { cert_file: \"", Path("server.pem"),
                     "\" key_file: \"", Path("server.key"),
                     "\" client_ca_file: \"", Path("ca.pem"), "\" }\n",
                     "policy { principal: \"x509:alice\" max_sessions: 1 }\n"),
        {}, "127.0.0.1:0");
  ASSERT_FALSE(TcpAddress().empty()) << daemon_->Log();
  RawClient alice(Channel(true));
  ASSERT_THAT(alice.Cos(0), IsOk());
  EXPECT_TRUE(LogShows("principal=x509:alice what=CreateSession"));
  // Her policy applies: one session at a time (Cos left one behind).
  EXPECT_THAT(alice.CreateSession(), HasReason("SESSION_QUOTA"));
  // Without a client certificate the handshake fails.
  RawClient anonymous(Channel(false));
  EXPECT_THAT(anonymous.CreateSession(),
              HasCode(absl::StatusCode::kUnavailable));
}

// ------------------------------------------------------------ health, audit

// Probes (kubelet's grpc probe, a container HEALTHCHECK) carry no
// credentials: health answers everyone, even where the API demands an
// identity.
TEST_F(AccessTest, HealthNeedsNoIdentityButTheApiDoes) {
  Start(tokens_config() + "require_authentication: true\n", {"--insecure"},
        "127.0.0.1:0");
  const std::string address = TcpAddress();
  ASSERT_FALSE(address.empty()) << daemon_->Log();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  for (const char* service : {"", "ffid.v1.Ffi"}) {
    absl::StatusOr<client::ServingStatus> health =
        client::CheckHealth(channel, service, absl::Seconds(30));
    ASSERT_THAT(health, IsOk()) << service;
    EXPECT_EQ(*health, client::ServingStatus::kServing) << service;
  }
  RawClient anonymous(channel);
  EXPECT_THAT(anonymous.GetServerInfo(), HasReason("UNAUTHENTICATED"));
  RawClient alice(channel, kAliceToken);
  EXPECT_THAT(alice.GetServerInfo(), IsOk());
}

TEST_F(AccessTest, AuditLinesAreJsonWhenTheLogIs) {
  Start(tokens_config() + "log_format: LOG_FORMAT_JSON\n");
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  alice.set_request_id("audit-trace-7");
  absl::StatusOr<std::string> session = alice.CreateSession();
  ASSERT_THAT(session, IsOk());
  RawClient mallory = RawClient::Unix(*daemon_, "guessed-token");
  EXPECT_THAT(mallory.CreateSession(), HasReason("UNAUTHENTICATED"));
  ASSERT_TRUE(LogShows("\"principal\":\"(UNAUTHENTICATED)\""));

  std::vector<nlohmann::json> audits;
  for (absl::string_view line : absl::StrSplit(daemon_->Log(), '\n')) {
    if (line.empty()) continue;
    // Every line of the daemon is JSON now, the audit's included.
    nlohmann::json parsed = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(parsed.is_discarded()) << line;
    if (parsed.value("msg", "") == "audit") audits.push_back(parsed);
  }
  bool saw_alice = false;
  bool saw_mallory = false;
  for (const nlohmann::json& audit : audits) {
    EXPECT_EQ(audit.value("level", ""), "info");
    EXPECT_FALSE(audit.value("ts", "").empty());
    if (audit.value("principal", "") == "token:alice" &&
        audit.value("what", "") == "CreateSession") {
      saw_alice = true;
      EXPECT_EQ(audit.value("target", ""), *session);
      EXPECT_EQ(audit.value("result", ""), "OK");
      EXPECT_EQ(audit.value("trace_id", ""), "audit-trace-7");
      EXPECT_FALSE(audit.contains("reason"));
    }
    if (audit.value("principal", "") == "(UNAUTHENTICATED)") {
      saw_mallory = true;
      EXPECT_EQ(audit.value("what", ""), "CreateSession");
      EXPECT_EQ(audit.value("result", ""), "UNAUTHENTICATED");
      EXPECT_EQ(audit.value("reason", ""), "UNAUTHENTICATED");
    }
  }
  EXPECT_TRUE(saw_alice) << daemon_->Log();
  EXPECT_TRUE(saw_mallory) << daemon_->Log();
}

// ------------------------------------------------------------ a second uid

constexpr uid_t kNobody = 65534;

// The child's side of SecondUnixUidIsItsOwnPrincipal, in a forked child that
// has not used gRPC yet: becomes uid/gid 65534, reads the first principal's
// session id from `in`, tries things on the daemon at `address` and writes
// one "name=result" line per try to `out`. Returns the exit status.
int RunAsNobody(const std::string& address, int in, int out) {
  std::string report;
  auto send = [&] {
    const char* data = report.data();
    size_t left = report.size();
    while (left > 0) {
      ssize_t n = write(out, data, left);
      if (n <= 0) return;
      data += n;
      left -= static_cast<size_t>(n);
    }
  };
  if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 ||
      setuid(kNobody) != 0 || getuid() != kNobody) {
    report = absl::StrCat("setuid=", strerror(errno), "\n");
    send();
    return 3;
  }
  std::string first;
  char c;
  while (read(in, &c, 1) == 1 && c != '\n') first.push_back(c);
  if (first.empty()) return 4;  // the parent gave up

  RawClient nobody(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  absl::StrAppend(&report, "get_first=", Describe(nobody.GetSession(first)),
                  "\n");
  absl::StrAppend(&report,
                  "delete_first=", Describe(nobody.DeleteSession(first)), "\n");
  absl::StatusOr<std::string> mine = nobody.CreateSession();
  absl::StrAppend(&report, "create=", Describe(mine.status()), "\n");
  if (mine.ok()) {
    absl::StrAppend(&report, "get_mine=", Describe(nobody.GetSession(*mine)),
                    "\n");
    absl::StrAppend(&report, "load_libm=",
                    Describe(nobody.LoadLibrary(*mine, kLibm).status()), "\n");
    absl::StrAppend(
        &report, "load_fixture=",
        Describe(nobody.LoadLibrary(*mine, FixturePath()).status()), "\n");
    absl::StrAppend(&report, "second_session=",
                    Describe(nobody.CreateSession().status()), "\n");
  }
  send();
  return 0;
}

TEST_F(AccessTest, SecondUnixUidIsItsOwnPrincipal) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root: the test runs a client as uid 65534 "
                    "(nobody) in a forked child, which only root may do; "
                    "run the suite as root to include it";
  }
  Start(absl::StrCat("policy { principal: \"unix:65534\" allow_library: \"",
                     FixtureDir(), "/*\" max_sessions: 1 }\n"));
  // Let uid 65534 reach the socket (the daemon makes it 0600 in a 0700
  // directory; an operator sharing it would open it to a group).
  ASSERT_EQ(chmod(daemon_->temp_dir().c_str(), 0711), 0);
  ASSERT_EQ(chmod(daemon_->socket_path().c_str(), 0666), 0);

  int to_child[2];
  int from_child[2];
  ASSERT_EQ(pipe2(to_child, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(from_child, O_CLOEXEC), 0);
  // Forked before this process uses gRPC: the child starts it afresh.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(to_child[1]);
    close(from_child[0]);
    _exit(RunAsNobody(daemon_->address(), to_child[0], from_child[1]));
  }
  close(to_child[0]);
  close(from_child[1]);
  int to_child_fd = to_child[1];
  absl::Cleanup reap = [&] {
    if (to_child_fd >= 0) close(to_child_fd);
    close(from_child[0]);
    int status = 0;
    waitpid(child, &status, 0);
  };

  RawClient root = RawClient::Unix(*daemon_);
  absl::StatusOr<RawClient::CosSession> opened = root.OpenCos();
  ASSERT_THAT(opened, IsOk());
  const std::string line = opened->session + "\n";
  ASSERT_EQ(write(to_child_fd, line.data(), line.size()),
            static_cast<ssize_t>(line.size()));
  close(to_child_fd);
  to_child_fd = -1;
  std::string report;
  char buffer[4096];
  for (ssize_t n; (n = read(from_child[0], buffer, sizeof(buffer))) > 0;) {
    report.append(buffer, static_cast<size_t>(n));
  }
  std::map<std::string, std::string> results;
  for (absl::string_view entry : absl::StrSplit(report, '\n')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(entry, '=');
    if (!kv.first.empty()) results[kv.first] = kv.second;
  }

  // The first principal's session does not exist for uid 65534.
  EXPECT_THAT(results["get_first"],
              ::testing::StartsWith("NOT_FOUND SESSION_NOT_FOUND"))
      << report;
  EXPECT_THAT(results["delete_first"],
              ::testing::StartsWith("NOT_FOUND SESSION_NOT_FOUND"))
      << report;
  // Its own session works, under its own policy.
  EXPECT_EQ(results["create"], "OK") << report;
  EXPECT_EQ(results["get_mine"], "OK") << report;
  EXPECT_THAT(results["load_libm"],
              ::testing::StartsWith("PERMISSION_DENIED LIBRARY_NOT_ALLOWED"))
      << report;
  EXPECT_THAT(results["load_libm"], HasSubstr("principal 'unix:65534'"));
  EXPECT_EQ(results["load_fixture"], "OK") << report;
  EXPECT_THAT(results["second_session"],
              ::testing::StartsWith("RESOURCE_EXHAUSTED SESSION_QUOTA"))
      << report;
  EXPECT_TRUE(LogShows("principal=unix:65534 what=CreateSession"));
  // The first principal (root, no policy) is untouched.
  EXPECT_THAT(root.CallDouble(opened->session, opened->function, 0), IsOk());
  EXPECT_THAT(root.LoadLibrary(opened->session, kLibm), IsOk());
}

// ------------------------------------------------------------ config

TEST_F(AccessTest, SighupReloadsPoliciesAndKeepsSessions) {
  Start(tokens_config());
  RawClient alice = RawClient::Unix(*daemon_, kAliceToken);
  absl::StatusOr<RawClient::CosSession> opened = alice.OpenCos();
  ASSERT_THAT(opened, IsOk());
  const std::string* session = &opened->session;
  const std::string* function = &opened->function;

  // alice may now load only the fixture directory.
  WriteFile(config_, tokens_config() +
                         absl::StrCat("policy { principal: \"token:alice\" "
                                      "allow_library: \"",
                                      FixtureDir(), "/*\" }\n"));
  ASSERT_TRUE(Reload("configuration reloaded")) << daemon_->Log();
  EXPECT_THAT(alice.CallDouble(*session, *function, 0), IsOk());
  EXPECT_THAT(alice.LoadLibrary(*session, kLibm),
              HasReason("LIBRARY_NOT_ALLOWED"));

  // A broken file is refused, with file, line and field, and the policy of
  // the last good one stays.
  WriteFile(config_, tokens_config() + "\npolicy { principal: \"x\" "
                                       "allow_library: \"relative\" }\n");
  ASSERT_TRUE(Reload("keeping the old one")) << daemon_->Log();
  EXPECT_TRUE(
      LogShows(config_ + ":3:25: field 'policy[0].allow_library[0]'"));
  EXPECT_THAT(alice.LoadLibrary(*session, kLibm),
              HasReason("LIBRARY_NOT_ALLOWED"));
  EXPECT_THAT(alice.CallDouble(*session, *function, 0), IsOk());

  // A token added to the file works after the next reload.
  WriteFile(tokens_, ReadFile(tokens_) +
                         absl::StrCat(Sha256OfText(dir_, "carol-secret"),
                                      " carol\n"));
  WriteFile(config_, tokens_config());
  RawClient carol = RawClient::Unix(*daemon_, "carol-secret");
  EXPECT_THAT(carol.CreateSession(), HasReason("UNAUTHENTICATED"));
  ASSERT_TRUE(Reload("configuration reloaded")) << daemon_->Log();
  EXPECT_THAT(carol.CreateSession(), IsOk());
  EXPECT_THAT(alice.LoadLibrary(*session, kLibm), IsOk());
}

TEST(AccessStartupTest, ConfigErrorStopsTheDaemonNamingLineAndField) {
  absl::StatusOr<std::string> dir = MakeTempDir("ffid-access-config");
  ASSERT_TRUE(dir.ok());
  const std::string config = *dir + "/bad.conf";
  WriteFile(config, "listen: \"unix:/tmp/x.sock\"\nidle_timeout { seconds: 0 }\n");
  absl::StatusOr<ProcessResult> result =
      RunProcess({FfidPath(), "--config", config});
  RemoveTree(*dir);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 2);
  EXPECT_THAT(result->err, HasSubstr(config + ":2:1: field 'idle_timeout'"));
}

TEST(AccessStartupTest, TcpWithoutTlsNeedsInsecure) {
  absl::StatusOr<ProcessResult> result =
      RunProcess({FfidPath(), "--listen", "127.0.0.1:0"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 2);
  EXPECT_THAT(result->err, HasSubstr("--tls-cert"));
  EXPECT_THAT(result->err, HasSubstr("--insecure"));
}

}  // namespace
}  // namespace ffid::testing
