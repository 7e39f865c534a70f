// The daemon's command line.
//
// A small hand-written parser rather than absl flags: `--allow-library` is
// repeatable and appends, and every flag takes both `--flag value` and
// `--flag=value`, which absl flags cannot do together. ParseOptions returns
// a value the caller owns; every function here is thread-compatible (reads
// the environment, nothing else shared).
//
// Flags:
//   --listen ADDRESS        unix:/path or host:port (TCP needs --insecure).
//                           Default: DefaultListenAddress().
//   --allow-library GLOB    repeatable; fnmatch glob on a library's real path
//                           ('*' crosses '/').
//                           Default: DefaultAllowedLibraries().
//   --worker-path PATH      the ffid-worker executable. Default: ffid-worker
//                           beside the running ffid (/proc/self/exe).
//   --idle-timeout DURATION default idle timeout of a session ("300s", "5m").
//   --address-space-limit SIZE  RLIMIT_AS of workers (e.g. "4G"); 0: none.
//   --cpu-limit SECONDS     RLIMIT_CPU of workers; 0: none.
//   --open-files-limit N    RLIMIT_NOFILE of workers; 0: inherited.
//   --file-size-limit SIZE  RLIMIT_FSIZE of workers; 0: none.
//   --max-call-duration DURATION  the longest one call may run; 0: none.
//   --arena-bytes SIZE      size of a session's shared-memory arena; 0: none.
//                           Each of these five is the default and the
//                           maximum: a session may ask for less.
//   --metrics-listen HOST:PORT  serve Prometheus metrics on /metrics there
//                           (plain HTTP; port 0 picks one). Default: off.
//   --health-listen HOST:PORT  also serve grpc.health.v1 (only) there, in
//                           plain text, for probes without TLS. Default: off.
//   --log-format text|json  the log's line format. Default: text.
//   --log-level LEVEL       debug, info, warning or error. Default: info.
//   --shutdown-grace DURATION  after SIGTERM, how long running RPCs may
//                           still finish before they are cancelled and the
//                           workers killed. Default: kDefaultShutdownGrace.
//   --allow-network         let sessions ask for network access.
//   --no-sandbox            no namespaces, seccomp or Landlock (rlimits
//                           stay); for debugging.
//   --insecure              allow a TCP listener without TLS.
//   --config FILE           a config file (config::v1::Config in protobuf
//                           text format, server/config.h); flags given on
//                           the command line win over it.
//   --tls-cert FILE, --tls-key FILE  TLS on a TCP listener.
//   --tls-client-ca FILE    require client certificates signed by these CAs.
//   --token-file FILE       bearer tokens, hashed (server/auth.h).
//   --audit-calls           an audit line per Call too.
//   --require-authentication  refuse clients without an identity.
//   --no-reflection         do not serve gRPC server reflection (served by
//                           default, to callers with an identity only).
//   --version               print the version and exit 0.
//   --help                  print the usage and exit 0.
#ifndef FFID_SERVER_OPTIONS_H_
#define FFID_SERVER_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ffid/config/v1/config.pb.h"
#include "ffid/v1/ffid.pb.h"
#include "server/log.h"

namespace ffid::server {

// The default idle timeout of a session without an attached Connect stream.
inline constexpr absl::Duration kDefaultIdleTimeout = absl::Seconds(300);
inline constexpr uint64_t kDefaultArenaBytes = uint64_t{256} << 20;

// How long RPCs may run on after SIGTERM before they are cancelled.
inline constexpr absl::Duration kDefaultShutdownGrace = absl::Seconds(10);

// The worker limits without flags: 8 GiB of address space, 1024 open
// files, 1 GiB files, no CPU or call-duration limit.
v1::ResourceLimits DefaultWorkerLimits();

// "4G", "512M", "64k", "1000" -> bytes. False if malformed.
bool ParseByteSize(absl::string_view text, uint64_t* bytes);

struct Options {
  // Where to listen: "unix:/path" or "host:port".
  std::string listen;
  // Globs matched against the real path of every library before it loads.
  std::vector<std::string> allow_library;
  // The worker executable.
  std::string worker_path;
  // Whether a TCP listener without TLS is allowed.
  bool insecure = false;
  // The idle timeout of sessions that do not ask for one.
  absl::Duration idle_timeout = kDefaultIdleTimeout;
  // Worker limits: each the default and the maximum for sessions.
  v1::ResourceLimits worker_limits = DefaultWorkerLimits();
  // Sessions may ask for network access.
  bool allow_network = false;
  // Namespaces, seccomp and Landlock on (--no-sandbox turns them off).
  bool sandbox = true;
  // The --config file, empty if none.
  std::string config_path;
  // The file's contents as parsed (policies, pins, audit): empty without a
  // file. The fields above already include what the file sets.
  config::v1::Config config;
  // TLS for a TCP listener: PEM files; empty when off.
  std::string tls_cert;
  std::string tls_key;
  // Client certificate authorities (mutual TLS); empty when off.
  std::string tls_client_ca;
  // The bearer token file; empty when tokens are off.
  std::string token_file;
  // An audit line per Call.
  bool audit_calls = false;
  // Clients without an identity get UNAUTHENTICATED.
  bool require_authentication = false;
  // Where to serve /metrics ("host:port"); empty: nowhere.
  std::string metrics_listen;
  // Where to serve health checking alone, in plain text ("host:port");
  // empty: nowhere (health is on the API listener anyway).
  std::string health_listen;
  // The log's format and lowest level.
  LogFormat log_format = LogFormat::kText;
  LogLevel log_level = LogLevel::kInfo;
  // How long RPCs may finish after SIGTERM.
  absl::Duration shutdown_grace = kDefaultShutdownGrace;
  // The size of a session's shared-memory arena (0: arenas off).
  uint64_t arena_bytes = kDefaultArenaBytes;
  // gRPC server reflection is served (to callers with an identity only).
  bool reflection = true;
  // --help was given: print HelpText() and exit 0; nothing else is parsed.
  bool help = false;
  // --version was given: print the version and exit 0; nothing else is
  // parsed.
  bool version = false;
};

// Parses argv (argv[0] is the program name and skipped). With --config,
// the file is read first and the flags then override it (a repeatable flag
// given on the command line replaces the file's list). Unset options get
// their defaults. Errors in the file are INVALID_ARGUMENT with its name,
// line and field. Unknown flags, missing or malformed values and stray
// positional arguments are INVALID_ARGUMENT with a message naming the flag.
absl::StatusOr<Options> ParseOptions(const std::vector<std::string>& args);

// "unix:$XDG_RUNTIME_DIR/ffid/ffid.sock" when XDG_RUNTIME_DIR is set to an
// absolute, writable directory, else "unix:/tmp/ffid-$UID/ffid.sock". The
// C++ client (clients/cpp) keeps its own copy of this rule; change both.
std::string DefaultListenAddress();

// The system library directories: /lib/*, /lib64/*, /usr/lib/*,
// /usr/lib64/*, /usr/local/lib/*.
std::vector<std::string> DefaultAllowedLibraries();

// "ffid-worker" in the directory of /proc/self/exe.
std::string DefaultWorkerPath();

// The --help text.
std::string HelpText();

}  // namespace ffid::server

#endif  // FFID_SERVER_OPTIONS_H_
