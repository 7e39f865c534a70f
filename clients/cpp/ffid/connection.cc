#include "clients/cpp/ffid/connection.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/client_interceptor.h"

namespace ffid::client {
namespace {

std::string Environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// Fills `field` from the environment variable `name` if it is empty.
void FromEnvironment(const ConnectOptions& options, const char* name,
                     std::string& field) {
  if (field.empty() && options.use_environment) field = Environment(name);
}

// The whole file, or INVALID_ARGUMENT naming `what` and the file.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read ", what, " '", path, "': ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// Adds "authorization: Bearer TOKEN" to every RPC of a channel.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::string header)
      : header_(std::move(header)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", header_);
    }
    methods->Proceed();
  }

 private:
  const std::string header_;
};

class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat("Bearer ", token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

}  // namespace

std::string DefaultAddress() {
  const char* address = std::getenv("FFID_ADDRESS");
  if (address != nullptr && *address != '\0') return address;
  return DaemonDefaultAddress();
}

std::string DaemonDefaultAddress() {
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  if (runtime_dir != nullptr && *runtime_dir != '\0') {
    return absl::StrCat("unix:", runtime_dir, "/ffid/ffid.sock");
  }
  return absl::StrCat("unix:/tmp/ffid-", getuid(), "/ffid.sock");
}

absl::StatusOr<ResolvedConnection> ResolveConnectOptions(
    const ConnectOptions& given) {
  ConnectOptions options = given;
  ResolvedConnection resolved;
  resolved.timeout = options.timeout;
  resolved.address = options.address;
  if (resolved.address.empty()) {
    resolved.address =
        options.use_environment ? DefaultAddress() : DaemonDefaultAddress();
  }
  if (resolved.address.empty()) {
    return absl::InvalidArgumentError("the daemon's address is empty");
  }

  // The token: given (token or token_file), else FFID_TOKEN, else
  // FFID_TOKEN_FILE.
  if (!options.token.empty() && !options.token_file.empty()) {
    return absl::InvalidArgumentError(
        "give the bearer token or a token file, not both");
  }
  if (options.token.empty() && options.token_file.empty()) {
    FromEnvironment(options, "FFID_TOKEN", options.token);
    if (options.token.empty()) {
      FromEnvironment(options, "FFID_TOKEN_FILE", options.token_file);
    }
  }
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> token =
        ReadWholeFile(options.token_file, "the token file");
    if (!token.ok()) return token.status();
    options.token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the token file '", options.token_file, "' is empty"));
    }
  }
  resolved.token = std::string(absl::StripAsciiWhitespace(options.token));
  if (resolved.token.find_first_of("\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        "the bearer token holds a line break: it must be one line");
  }

  // The transport.
  FromEnvironment(options, "FFID_CA", options.ca_file);
  FromEnvironment(options, "FFID_CERT", options.cert_file);
  FromEnvironment(options, "FFID_KEY", options.key_file);
  if (!options.insecure && options.use_environment) {
    const std::string insecure =
        absl::AsciiStrToLower(Environment("FFID_INSECURE"));
    options.insecure = insecure == "1" || insecure == "true" || insecure == "yes";
  }
  const bool tls_settings = !options.ca_file.empty() ||
                            !options.cert_file.empty() ||
                            !options.key_file.empty();
  if (absl::StartsWith(resolved.address, "unix:")) {
    if (tls_settings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS settings (CA, certificate, key; FFID_CA, FFID_CERT, FFID_KEY) "
          "apply to TCP addresses, but ", resolved.address,
          " is the daemon's unix socket, which is plaintext: drop them or "
          "give a host:port address"));
    }
    return resolved;
  }
  if (options.insecure) {
    if (tls_settings) {
      return absl::InvalidArgumentError(
          "insecure (plaintext TCP, FFID_INSECURE) contradicts the TLS "
          "settings given (CA, certificate or key; FFID_CA, FFID_CERT, "
          "FFID_KEY): give one or the other");
    }
    return resolved;
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "mutual TLS needs both the client certificate and its key "
        "(FFID_CERT and FFID_KEY); only one was given");
  }
  resolved.tls = true;
  resolved.ca_file = options.ca_file;
  resolved.cert_file = options.cert_file;
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::string> pem =
        ReadWholeFile(options.ca_file, "the CA file");
    if (!pem.ok()) return pem.status();
    resolved.root_certs = *std::move(pem);
  }
  if (!options.cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadWholeFile(options.cert_file, "the client certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadWholeFile(options.key_file, "the client key");
    if (!key.ok()) return key.status();
    resolved.cert_chain = *std::move(cert);
    resolved.private_key = *std::move(key);
  }
  return resolved;
}

std::shared_ptr<grpc::Channel> MakeChannel(
    const ResolvedConnection& connection) {
  grpc::ChannelArguments args;
  // Read and Write move whole buffers in one message.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Each Client owns its connection: gRPC's process-wide subchannel pool
  // would otherwise hand a new Client the broken connection of an earlier
  // one to a daemon that has since restarted.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (connection.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = connection.root_certs;
    ssl.pem_cert_chain = connection.cert_chain;
    ssl.pem_private_key = connection.private_key;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (connection.token.empty()) {
    return grpc::CreateCustomChannel(connection.address, credentials, args);
  }
  std::vector<std::unique_ptr<
      grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<BearerTokenInterceptorFactory>(connection.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      connection.address, credentials, args, std::move(interceptors));
}

absl::Status ConnectFailure(const ResolvedConnection& connection,
                            const std::string& detail) {
  std::string message = absl::StrCat(
      "cannot connect to ffid at ", connection.address, " within ",
      absl::FormatDuration(connection.timeout));
  if (!detail.empty()) absl::StrAppend(&message, " (", detail, ")");
  if (!connection.tls) {
    absl::StrAppend(&message,
                    ": is the daemon running? (set --address or "
                    "FFID_ADDRESS)");
    if (!absl::StartsWith(connection.address, "unix:")) {
      absl::StrAppend(&message,
                      "; plaintext TCP reaches only a daemon started with "
                      "--insecure: for one with --tls-cert, drop insecure "
                      "(FFID_INSECURE) and give its CA (--ca, FFID_CA)");
    }
    return absl::UnavailableError(message);
  }
  absl::StrAppend(
      &message, ": is the daemon running with TLS there? If the TLS handshake "
      "failed, check that ",
      connection.ca_file.empty()
          ? std::string("the daemon's certificate is signed by a CA the "
                        "system trusts, or give its CA (--ca, FFID_CA)")
          : absl::StrCat("the CA file '", connection.ca_file,
                         "' (--ca, FFID_CA) signed the daemon's certificate"),
      " and that the certificate names the host you connect to; ",
      connection.cert_file.empty()
          ? "a daemon with --tls-client-ca (mutual TLS) also needs a client "
            "certificate and key (--cert/--key, FFID_CERT/FFID_KEY); "
          : absl::StrCat("that the daemon's --tls-client-ca signed the "
                         "client certificate '",
                         connection.cert_file, "'; "),
      "a daemon started with --insecure needs insecure (--insecure, "
      "FFID_INSECURE=1)");
  return absl::UnavailableError(message);
}

}  // namespace ffid::client
