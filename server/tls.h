// Server credentials for a TCP listener: TLS with the server's certificate,
// optionally requiring client certificates (mutual TLS).
//
// Pure functions of their arguments (they read the PEM files); thread-safe.
#ifndef FFID_SERVER_TLS_H_
#define FFID_SERVER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace ffid::server {

struct TlsFiles {
  // PEM certificate chain and private key of the server.
  std::string cert;
  std::string key;
  // PEM certificate authorities for client certificates; empty: clients
  // need none.
  std::string client_ca;
};

// TLS credentials from the files. With `client_ca`, a client must present a
// certificate that one of those authorities signed, or the handshake fails.
// FAILED_PRECONDITION naming the file if one cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeTlsCredentials(
    const TlsFiles& files);

// The whole contents of `path`; FAILED_PRECONDITION naming it on failure.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          const std::string& what);

}  // namespace ffid::server

#endif  // FFID_SERVER_TLS_H_
