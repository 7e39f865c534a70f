// How a client reaches the ffid daemon and proves who it is: the address,
// the transport (the unix socket, TLS or mutual TLS on TCP, or plaintext TCP
// for a daemon started with --insecure) and a bearer token.
//
// Every ffid client (C++, Python, Go, Node) takes the same settings and
// falls back to the same environment variables for the ones not given:
//
//   FFID_ADDRESS     "unix:/path" or "host:port" (default: DefaultAddress())
//   FFID_TOKEN       a bearer token, sent as "authorization: Bearer TOKEN"
//   FFID_TOKEN_FILE  a file holding the token (surrounding whitespace is
//                    ignored); FFID_TOKEN wins when both are set
//   FFID_CA          PEM file of the CA certificates that signed the
//                    daemon's certificate (default: the system's roots)
//   FFID_CERT        PEM file of the client certificate chain (mutual TLS)
//   FFID_KEY         PEM file of its private key (with FFID_CERT)
//   FFID_INSECURE    "1" (or "true", "yes"): plaintext TCP
//
// Transport: a unix: address is always plaintext (the daemon names the
// client by its uid); any other address uses TLS unless `insecure` is set.
// TLS settings on a unix: address, a certificate without its key, or
// `insecure` together with TLS settings are refused with INVALID_ARGUMENT.
//
// Everything here is thread-compatible: it reads the environment and files
// and returns values the caller owns.
#ifndef FFID_CLIENTS_CPP_FFID_CONNECTION_H_
#define FFID_CLIENTS_CPP_FFID_CONNECTION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"

namespace ffid::client {

// The daemon's default address: $FFID_ADDRESS if set, else
// unix:$XDG_RUNTIME_DIR/ffid/ffid.sock if XDG_RUNTIME_DIR is set, else
// unix:/tmp/ffid-$UID/ffid.sock.
std::string DefaultAddress();

// The daemon's own default socket, as DefaultAddress() without
// FFID_ADDRESS.
std::string DaemonDefaultAddress();

// How Client::Connect reaches the daemon. An empty string (or false) means
// "not given": with `use_environment` it then takes its environment
// variable (see the top of this file).
struct ConnectOptions {
  // "unix:/path" or "host:port"; FFID_ADDRESS, else the daemon's default
  // socket.
  std::string address;
  // How long to wait for the connection.
  absl::Duration timeout = absl::Seconds(10);
  // The bearer token (FFID_TOKEN), or a file holding it (FFID_TOKEN_FILE);
  // at most one of the two.
  std::string token;
  std::string token_file;
  // TLS: the CA certificates (PEM file) to check the daemon's certificate
  // against (FFID_CA); empty means the system's root certificates.
  std::string ca_file;
  // Mutual TLS: the client's certificate chain and private key, PEM files
  // (FFID_CERT, FFID_KEY); both or neither.
  std::string cert_file;
  std::string key_file;
  // Plaintext TCP, for a daemon started with --insecure (FFID_INSECURE).
  bool insecure = false;
  // Fill the settings not given from the environment.
  bool use_environment = true;
};

// What ResolveConnectOptions makes of ConnectOptions: the files read, the
// transport decided.
struct ResolvedConnection {
  std::string address;
  absl::Duration timeout;
  // Empty: no token.
  std::string token;
  // TLS is used iff `tls`; then the PEM contents (empty root_certs: the
  // system's roots; empty cert_chain: no client certificate).
  bool tls = false;
  std::string root_certs;
  std::string cert_chain;
  std::string private_key;
  // For messages: the files the PEMs came from.
  std::string ca_file;
  std::string cert_file;
};

// Applies the environment, reads the files and checks the combination.
// INVALID_ARGUMENT for a contradictory or unreadable setting, naming it.
absl::StatusOr<ResolvedConnection> ResolveConnectOptions(
    const ConnectOptions& options);

// A channel (not yet connected) for `connection`, sending the token with
// every RPC if there is one. Shared by the Client and its Sessions.
std::shared_ptr<grpc::Channel> MakeChannel(
    const ResolvedConnection& connection);

// The UNAVAILABLE error for a connection that did not come up within its
// timeout: what to check, for the transport in use. `detail` is gRPC's own
// account (e.g. the TLS handshake's failure), may be empty.
absl::Status ConnectFailure(const ResolvedConnection& connection,
                            const std::string& detail);

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_CONNECTION_H_
