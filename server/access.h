// Access control: who made a request (its principal), what that principal
// may do (its policy), and the audit log.
//
// Principals:
//   "unix:UID"   a client on the unix socket, from SO_PEERCRED (the daemon
//                accepts unix connections itself, UnixListener, and records
//                each connection's credentials in a PeerRegistry);
//   "token:NAME" a client that sent "authorization: Bearer TOKEN" where
//                SHA-256(TOKEN) is listed in the token file under NAME;
//   "x509:CN"    a client certificate's common name (mutual TLS);
//   "anonymous"  anything else (TCP with --insecure, TLS without client
//                certificates).
// A token wins over the other sources; an unknown token is UNAUTHENTICATED.
//
// AccessControl holds the reloadable settings (policies, pins, tokens,
// audit) as an immutable snapshot that Reload() replaces atomically; a
// request keeps the snapshot it was admitted with. Rate buckets and session
// counts survive reloads. Thread-safe.
#ifndef FFID_SERVER_ACCESS_H_
#define FFID_SERVER_ACCESS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ffid/config/v1/config.pb.h"
#include "grpcpp/server_context.h"
#include "server/session_policy.h"

namespace ffid::server {

// The credentials of the connections the daemon accepted itself, keyed by
// the name gRPC gives their peer ("fd:N"). Thread-safe.
class PeerRegistry {
 public:
  // Records `principal` for the connection on file descriptor `fd`,
  // replacing whatever an earlier connection with the same number left.
  void Set(int fd, std::string principal);
  // The principal of gRPC peer `peer` ("fd:N"), or "" if unknown.
  std::string Find(absl::string_view peer) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<int, std::string> by_fd_ ABSL_GUARDED_BY(mu_);
};

// The reloadable part of the configuration.
struct AccessSettings {
  std::vector<config::v1::Policy> policies;
  std::vector<config::v1::PinnedLibrary> pins;
  // Lowercase hex SHA-256 of a token -> its name.
  absl::flat_hash_map<std::string, std::string> tokens;
  bool audit_calls = false;
  bool require_authentication = false;
};

// The reloadable settings of a configuration: `config`'s policies and pins,
// the tokens of `token_file` (none when empty), the audit and
// authentication switches. Errors as LoadTokenFile.
absl::StatusOr<AccessSettings> MakeAccessSettings(
    const config::v1::Config& config, const std::string& token_file,
    bool audit_calls, bool require_authentication);

// Reads the token file: one "SHA256HEX NAME" a line; '#' starts a comment,
// blank lines are skipped. INVALID_ARGUMENT naming the file and line on a
// malformed line.
absl::StatusOr<absl::flat_hash_map<std::string, std::string>> LoadTokenFile(
    const std::string& path);

// The lowercase hex SHA-256 of `data` / of the file at `path`.
std::string Sha256Hex(absl::string_view data);
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

// Whether `name` matches one of the globs (fnmatch, '*' crosses '/').
bool MatchesAnyGlob(const std::string& name,
                    const std::vector<std::string>& globs);

// A request that was admitted: its principal, the policy that applies to it
// (null when none does) and the settings it was admitted under.
struct Caller {
  std::string principal;
  std::shared_ptr<const AccessSettings> settings;
  const config::v1::Policy* policy = nullptr;
};

class AccessControl {
 public:
  AccessControl(AccessSettings settings, std::shared_ptr<PeerRegistry> peers);

  // Replaces the settings; requests already admitted keep the old ones.
  void Reload(AccessSettings settings);

  // Identifies the caller of `context` and applies its policy's `deny` and,
  // when `rate_limited`, its calls_per_second. UNAUTHENTICATED +
  // UNAUTHENTICATED for an unknown token (or no identity when
  // require_authentication); PERMISSION_DENIED + PRINCIPAL_DENIED;
  // RESOURCE_EXHAUSTED + RATE_LIMITED.
  absl::StatusOr<Caller> Admit(const grpc::ServerContextBase& context,
                               bool rate_limited);

  // For one more request on an admitted Connect stream: RATE_LIMITED as
  // Admit.
  [[nodiscard]] absl::Status CountCall(const Caller& caller);

  // The library at `real_path` against the caller's policy (PERMISSION_DENIED
  // + LIBRARY_NOT_ALLOWED) and the pins (PERMISSION_DENIED +
  // LIBRARY_PIN_MISMATCH when a pin's path matches and the contents differ).
  [[nodiscard]] absl::Status CheckLibrary(const Caller& caller,
                                          const std::string& real_path) const;

  // `symbol` against the caller's policy: PERMISSION_DENIED +
  // SYMBOL_NOT_ALLOWED.
  [[nodiscard]] absl::Status CheckSymbol(const Caller& caller,
                                         const std::string& symbol) const;

  // The server's session maxima narrowed by the caller's policy.
  PolicyOptions NarrowPolicy(const Caller& caller,
                             const PolicyOptions& server) const;

  // Counts a new session of the caller: RESOURCE_EXHAUSTED + SESSION_QUOTA
  // when it has max_sessions already. Each successful call must be matched
  // by ReleaseSession when the session ends.
  [[nodiscard]] absl::Status AcquireSession(const Caller& caller);
  void ReleaseSession(const std::string& principal);

  // Writes one audit line through the daemon's log (server/log.h, text or
  // JSON, whatever --log-level says) with the fields principal, what
  // (`action`, e.g. "CreateSession"), target (a session id, a library path,
  // a function handle), result ("OK" or the gRPC code's name), reason (the
  // ErrorReason's name, on failures) and trace_id (the request's, when
  // given). Text: ffid: audit principal=P what=A target=T result=R ...
  void Audit(const Caller& caller, absl::string_view action,
             absl::string_view target, const absl::Status& result,
             absl::string_view trace_id = "") const;

  // Whether Call requests are audited too.
  bool AuditCalls() const;

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time last;
  };
  std::shared_ptr<const AccessSettings> Snapshot() const;
  [[nodiscard]] absl::Status Spend(const Caller& caller);

  const std::shared_ptr<PeerRegistry> peers_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const AccessSettings> settings_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint32_t> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ffid::server

#endif  // FFID_SERVER_ACCESS_H_
