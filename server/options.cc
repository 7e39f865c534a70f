#include "server/options.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "ffi/errors.h"
#include "server/config.h"

namespace ffid::server {
namespace {

absl::Status UsageError(absl::string_view message) {
  return InvalidArgumentError(
      v1::ERROR_REASON_INVALID_REQUEST,
      absl::StrCat(message, " (run 'ffid --help' for the usage)"));
}

bool TakesValue(absl::string_view name) {
  return name == "listen" || name == "allow-library" ||
         name == "worker-path" || name == "idle-timeout" ||
         name == "address-space-limit" || name == "cpu-limit" ||
         name == "open-files-limit" || name == "file-size-limit" ||
         name == "max-call-duration" || name == "config" ||
         name == "tls-cert" || name == "tls-key" || name == "tls-client-ca" ||
         name == "token-file" || name == "metrics-listen" ||
         name == "health-listen" ||
         name == "log-format" || name == "log-level" ||
         name == "shutdown-grace" || name == "arena-bytes";
}

bool IsSwitch(absl::string_view name) {
  return name == "insecure" || name == "help" || name == "allow-network" ||
         name == "no-sandbox" || name == "audit-calls" ||
         name == "require-authentication" || name == "no-reflection" ||
         name == "version";
}

absl::Status CheckListenAddress(absl::string_view address) {
  if (absl::StartsWith(address, "unix:")) {
    absl::string_view path = address.substr(5);
    if (path.empty()) {
      return UsageError(absl::StrCat("--listen '", address,
                                     "' has no socket path after 'unix:'"));
    }
    return absl::OkStatus();
  }
  if (absl::StartsWith(address, "unix-abstract:")) {
    return absl::OkStatus();
  }
  // host:port, [v6]:port
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon + 1 == address.size()) {
    return UsageError(absl::StrCat(
        "--listen '", address,
        "' is neither 'unix:/path/to/socket' nor 'host:port'"));
  }
  return absl::OkStatus();
}

absl::Status Apply(Options& options, absl::string_view name,
                   const std::string& value) {
  if (name == "listen") {
    RETURN_IF_ERROR(CheckListenAddress(value));
    options.listen = value;
  } else if (name == "config") {
    options.config_path = value;
  } else if (name == "tls-cert") {
    options.tls_cert = value;
  } else if (name == "tls-key") {
    options.tls_key = value;
  } else if (name == "tls-client-ca") {
    options.tls_client_ca = value;
  } else if (name == "token-file") {
    options.token_file = value;
  } else if (name == "allow-library") {
    if (value[0] != '/') {
      return UsageError(absl::StrCat(
          "--allow-library '", value,
          "' must be an absolute path or glob such as '/opt/vendor/lib/*'"));
    }
    options.allow_library.push_back(value);
  } else if (name == "worker-path") {
    options.worker_path = value;
  } else if (name == "idle-timeout") {
    absl::Duration timeout;
    if (!absl::ParseDuration(value, &timeout)) {
      return UsageError(absl::StrCat("--idle-timeout '", value,
                                     "' is not a duration such as '300s' "
                                     "or '5m'"));
    }
    if (timeout <= absl::ZeroDuration()) {
      return UsageError(
          absl::StrCat("--idle-timeout '", value, "' must be positive"));
    }
    options.idle_timeout = timeout;
  } else if (name == "arena-bytes") {
    uint64_t bytes = 0;
    if (!ParseByteSize(value, &bytes)) {
      return UsageError(absl::StrCat("--arena-bytes '", value,
                                     "' is not a size such as '256M' or '0' "
                                     "(no arenas)"));
    }
    options.arena_bytes = bytes;
  } else if (name == "address-space-limit" || name == "file-size-limit") {
    uint64_t bytes = 0;
    if (!ParseByteSize(value, &bytes)) {
      return UsageError(absl::StrCat("--", name, " '", value,
                                     "' is not a size such as '4G', '512M' "
                                     "or '0' (no limit)"));
    }
    if (name == "address-space-limit") {
      options.worker_limits.set_address_space_bytes(bytes);
    } else {
      options.worker_limits.set_file_size_bytes(bytes);
    }
  } else if (name == "cpu-limit" || name == "open-files-limit") {
    uint64_t number = 0;
    if (!absl::SimpleAtoi(value, &number)) {
      return UsageError(absl::StrCat("--", name, " '", value,
                                     "' is not a whole number"));
    }
    if (name == "cpu-limit") {
      options.worker_limits.set_cpu_seconds(number);
    } else {
      options.worker_limits.set_open_files(number);
    }
  } else if (name == "metrics-listen") {
    size_t colon = value.rfind(':');
    uint32_t port = 0;
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(value).substr(colon + 1),
                          &port) ||
        port > 65535) {
      return UsageError(absl::StrCat("--metrics-listen '", value,
                                     "' is not host:port such as "
                                     "'127.0.0.1:9464' or ':9464'"));
    }
    options.metrics_listen = value;
  } else if (name == "health-listen") {
    size_t colon = value.rfind(':');
    uint32_t port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(absl::string_view(value).substr(colon + 1),
                          &port) ||
        port > 65535) {
      return UsageError(absl::StrCat("--health-listen '", value,
                                     "' is not host:port such as "
                                     "'0.0.0.0:8081'"));
    }
    options.health_listen = value;
  } else if (name == "log-format") {
    if (!ParseLogFormat(value, &options.log_format)) {
      return UsageError(absl::StrCat("--log-format '", value,
                                     "' is neither 'text' nor 'json'"));
    }
  } else if (name == "log-level") {
    if (!ParseLogLevel(value, &options.log_level)) {
      return UsageError(absl::StrCat(
          "--log-level '", value,
          "' is not one of debug, info, warning, error"));
    }
  } else if (name == "shutdown-grace") {
    absl::Duration grace;
    if (!absl::ParseDuration(value, &grace) || grace < absl::ZeroDuration()) {
      return UsageError(absl::StrCat("--shutdown-grace '", value,
                                     "' is not a duration such as '10s'"));
    }
    options.shutdown_grace = grace;
  } else if (name == "max-call-duration") {
    absl::Duration duration;
    if (!absl::ParseDuration(value, &duration) ||
        duration < absl::ZeroDuration()) {
      return UsageError(absl::StrCat("--max-call-duration '", value,
                                     "' is not a duration such as '30s'"));
    }
    const int64_t nanos = absl::ToInt64Nanoseconds(duration);
    options.worker_limits.mutable_max_call_duration()->set_seconds(
        nanos / 1000000000);
    options.worker_limits.mutable_max_call_duration()->set_nanos(
        static_cast<int32_t>(nanos % 1000000000));
  }
  return absl::OkStatus();
}

bool IsWritableDirectory(const char* path) {
  struct stat st;
  return path[0] == '/' && stat(path, &st) == 0 && S_ISDIR(st.st_mode) &&
         access(path, W_OK | X_OK) == 0;
}

// The settings of a config file, applied before the flags.
void ApplyConfig(const config::v1::Config& config, Options& options) {
  if (!config.listen().empty()) options.listen = config.listen();
  options.allow_library.assign(config.allow_library().begin(),
                               config.allow_library().end());
  if (!config.worker_path().empty()) options.worker_path = config.worker_path();
  if (config.has_idle_timeout()) {
    options.idle_timeout = absl::Seconds(config.idle_timeout().seconds()) +
                           absl::Nanoseconds(config.idle_timeout().nanos());
  }
  if (config.has_worker_limits()) {
    const v1::ResourceLimits& limits = config.worker_limits();
    v1::ResourceLimits& merged = options.worker_limits;
    if (limits.address_space_bytes() != 0) {
      merged.set_address_space_bytes(limits.address_space_bytes());
    }
    if (limits.cpu_seconds() != 0) merged.set_cpu_seconds(limits.cpu_seconds());
    if (limits.open_files() != 0) merged.set_open_files(limits.open_files());
    if (limits.file_size_bytes() != 0) {
      merged.set_file_size_bytes(limits.file_size_bytes());
    }
    if (limits.has_max_call_duration()) {
      *merged.mutable_max_call_duration() = limits.max_call_duration();
    }
  }
  options.allow_network = config.allow_network();
  options.sandbox = !config.no_sandbox();
  options.insecure = config.insecure();
  options.tls_cert = config.tls().cert_file();
  options.tls_key = config.tls().key_file();
  options.tls_client_ca = config.tls().client_ca_file();
  options.token_file = config.token_file();
  options.audit_calls = config.audit().calls();
  options.require_authentication = config.require_authentication();
  options.reflection = !config.no_reflection();
  options.metrics_listen = config.metrics_listen();
  options.health_listen = config.health_listen();
  if (config.log_format() == config::v1::LOG_FORMAT_JSON) {
    options.log_format = LogFormat::kJson;
  }
  switch (config.log_level()) {
    case config::v1::LOG_LEVEL_DEBUG:
      options.log_level = LogLevel::kDebug;
      break;
    case config::v1::LOG_LEVEL_WARNING:
      options.log_level = LogLevel::kWarning;
      break;
    case config::v1::LOG_LEVEL_ERROR:
      options.log_level = LogLevel::kError;
      break;
    default:
      break;
  }
  if (config.has_arena_bytes()) options.arena_bytes = config.arena_bytes();
  if (config.has_shutdown_grace()) {
    options.shutdown_grace =
        absl::Seconds(config.shutdown_grace().seconds()) +
        absl::Nanoseconds(config.shutdown_grace().nanos());
  }
}

}  // namespace

absl::StatusOr<Options> ParseOptions(const std::vector<std::string>& args) {
  Options options;
  // First pass: collect the flags; the config file is read before they are
  // applied.
  std::vector<std::pair<std::string, std::string>> flags;
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "-h") arg = "--help";
    if (!absl::StartsWith(arg, "--") || arg.size() == 2) {
      return UsageError(absl::StrCat("unexpected argument '", arg,
                                     "'; ffid takes only --flags"));
    }
    absl::string_view body = arg.substr(2);
    size_t equals = body.find('=');
    absl::string_view name = body.substr(0, equals);
    bool inline_value = equals != absl::string_view::npos;
    if (IsSwitch(name)) {
      if (inline_value) {
        return UsageError(
            absl::StrCat("flag --", name, " takes no value (got '", arg, "')"));
      }
      if (name == "help") {
        options.help = true;
        return options;
      }
      if (name == "version") {
        options.version = true;
        return options;
      }
      flags.emplace_back(std::string(name), "");
      continue;
    }
    if (!TakesValue(name)) {
      return UsageError(absl::StrCat(
          "unknown flag '--", name,
          "'; known flags: --listen, --allow-library, --worker-path, "
          "--idle-timeout, --address-space-limit, --cpu-limit, "
          "--open-files-limit, --file-size-limit, --max-call-duration, "
          "--metrics-listen, --health-listen, --log-format, --log-level, "
          "--shutdown-grace, "
          "--allow-network, --no-sandbox, --insecure, --config, --tls-cert, "
          "--tls-key, --tls-client-ca, --token-file, --audit-calls, "
          "--require-authentication, --no-reflection, --version, --help"));
    }
    std::string value;
    if (inline_value) {
      value = std::string(body.substr(equals + 1));
    } else if (i + 1 < args.size() && !absl::StartsWith(args[i + 1], "--")) {
      value = args[++i];
    } else {
      return UsageError(absl::StrCat("flag --", name,
                                     " needs a value, as in --", name,
                                     "=VALUE or --", name, " VALUE"));
    }
    if (value.empty()) {
      return UsageError(
          absl::StrCat("flag --", name, " needs a non-empty value"));
    }
    if (name == "config") options.config_path = value;
    flags.emplace_back(std::string(name), std::move(value));
  }
  if (!options.config_path.empty()) {
    ASSIGN_OR_RETURN(options.config, LoadConfigFile(options.config_path));
    ApplyConfig(options.config, options);
  }
  bool allow_library_from_flags = false;
  for (const auto& [name, value] : flags) {
    if (name == "allow-network") {
      options.allow_network = true;
    } else if (name == "no-sandbox") {
      options.sandbox = false;
    } else if (name == "insecure") {
      options.insecure = true;
    } else if (name == "audit-calls") {
      options.audit_calls = true;
    } else if (name == "require-authentication") {
      options.require_authentication = true;
    } else if (name == "no-reflection") {
      options.reflection = false;
    } else {
      if (name == "allow-library" && !allow_library_from_flags) {
        options.allow_library.clear();
        allow_library_from_flags = true;
      }
      RETURN_IF_ERROR(Apply(options, name, value));
    }
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return UsageError("--tls-cert and --tls-key must be given together");
  }
  if (!options.tls_client_ca.empty() && options.tls_cert.empty()) {
    return UsageError(
        "--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too");
  }
  if (options.listen.empty()) options.listen = DefaultListenAddress();
  if (options.allow_library.empty()) {
    options.allow_library = DefaultAllowedLibraries();
  }
  if (options.worker_path.empty()) options.worker_path = DefaultWorkerPath();
  return options;
}

v1::ResourceLimits DefaultWorkerLimits() {
  v1::ResourceLimits limits;
  limits.set_address_space_bytes(uint64_t{8} << 30);
  limits.set_open_files(1024);
  limits.set_file_size_bytes(uint64_t{1} << 30);
  return limits;
}

bool ParseByteSize(absl::string_view text, uint64_t* bytes) {
  if (text.empty()) return false;
  uint64_t multiplier = 1;
  switch (text.back()) {
    case 'k': case 'K': multiplier = uint64_t{1} << 10; break;
    case 'm': case 'M': multiplier = uint64_t{1} << 20; break;
    case 'g': case 'G': multiplier = uint64_t{1} << 30; break;
    case 't': case 'T': multiplier = uint64_t{1} << 40; break;
    default: break;
  }
  if (multiplier != 1) text.remove_suffix(1);
  uint64_t number = 0;
  if (!absl::SimpleAtoi(text, &number)) return false;
  if (number > UINT64_MAX / multiplier) return false;
  *bytes = number * multiplier;
  return true;
}

std::string DefaultListenAddress() {
  const char* runtime_dir = getenv("XDG_RUNTIME_DIR");
  if (runtime_dir != nullptr && IsWritableDirectory(runtime_dir)) {
    std::string dir(runtime_dir);
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return absl::StrCat("unix:", dir, "/ffid/ffid.sock");
  }
  return absl::StrCat("unix:/tmp/ffid-", getuid(), "/ffid.sock");
}

std::vector<std::string> DefaultAllowedLibraries() {
  return {"/lib/*", "/lib64/*", "/usr/lib/*", "/usr/lib64/*",
          "/usr/local/lib/*"};
}

std::string DefaultWorkerPath() {
  char buffer[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return "ffid-worker";
  std::string self(buffer, static_cast<size_t>(n));
  size_t slash = self.rfind('/');
  if (slash == std::string::npos) return "ffid-worker";
  return absl::StrCat(self.substr(0, slash + 1), "ffid-worker");
}

std::string HelpText() {
  return absl::StrCat(
      "Usage: ffid [FLAGS]\n"
      "\n"
      "The ffid daemon: calls functions of native C libraries out of process,\n"
      "one sandboxed worker process per session, over gRPC (service "
      "ffid.v1.Ffi).\n"
      "\n"
      "Flags (each as --flag VALUE or --flag=VALUE):\n"
      "  --listen ADDRESS       where to listen: unix:/path/to/socket or "
      "host:port.\n"
      "                         Default here: ",
      DefaultListenAddress(),
      "\n"
      "                         ($XDG_RUNTIME_DIR/ffid/ffid.sock, else\n"
      "                         /tmp/ffid-$UID/ffid.sock). The socket's "
      "directory is\n"
      "                         created with mode 0700, the socket gets mode "
      "0600.\n"
      "  --allow-library GLOB   allow loading libraries whose real path "
      "(symlinks\n"
      "                         resolved) matches GLOB; '*' also matches '/'. "
      "Repeatable.\n"
      "                         Default: /lib/* /lib64/* /usr/lib/* "
      "/usr/lib64/*\n"
      "                         /usr/local/lib/*\n"
      "  --worker-path PATH     the ffid-worker executable. Default: "
      "ffid-worker beside\n"
      "                         this ffid.\n"
      "  --idle-timeout DURATION\n"
      "                         delete a session after this long without "
      "requests\n"
      "                         while no Connect stream is attached, unless "
      "it asks\n"
      "                         for its own (e.g. 90s, 5m). Default: 5m.\n"
      "  --address-space-limit SIZE\n"
      "                         RLIMIT_AS of every worker (e.g. 4G, 512M; 0: "
      "none).\n"
      "                         Default: 8G. Sessions may ask for less.\n"
      "  --cpu-limit SECONDS    RLIMIT_CPU of every worker over its life; "
      "0: none\n"
      "                         (default). Sessions may ask for less.\n"
      "  --open-files-limit N   RLIMIT_NOFILE of every worker. Default: "
      "1024.\n"
      "  --file-size-limit SIZE RLIMIT_FSIZE of every worker. Default: 1G.\n"
      "  --max-call-duration DURATION\n"
      "                         the longest one native call may run (e.g. "
      "30s); past it\n"
      "                         the worker is killed and the call fails with\n"
      "                         DEADLINE_EXCEEDED. Default: 0 (none).\n"
      "  --metrics-listen HOST:PORT\n"
      "                         serve Prometheus metrics (plain HTTP) on\n"
      "                         http://HOST:PORT/metrics, e.g. 127.0.0.1:9464; "
      "port 0\n"
      "                         picks a free one. Default: no metrics "
      "listener.\n"
      "  --health-listen HOST:PORT\n"
      "                         also serve gRPC health checking, and nothing "
      "else, in\n"
      "                         plain text on HOST:PORT (for probes that "
      "cannot speak\n"
      "                         TLS, such as Kubernetes' grpc probes). "
      "Default: off.\n"
      "  --log-format text|json one line per event on stderr, as text or as "
      "a JSON\n"
      "                         object (ts, level, msg, fields). Default: "
      "text.\n"
      "  --log-level LEVEL      debug (one line per RPC, with its trace id), "
      "info,\n"
      "                         warning or error. Default: info.\n"
      "  --shutdown-grace DURATION\n"
      "                         after SIGTERM: health turns NOT_SERVING, new "
      "RPCs are\n"
      "                         refused, running ones get this long to "
      "finish, then\n"
      "                         they are cancelled and every worker killed. "
      "Default: 10s.\n"
      "  --arena-bytes SIZE     the size of a session's shared-memory arena "
      "(OpenArena,\n"
      "                         Allocate placement ARENA), made on first "
      "use; 0: no\n"
      "                         arenas. Default: 256M.\n"
      "  --allow-network        let sessions ask for network access "
      "(sandbox.allow_network).\n"
      "  --no-sandbox           run workers without namespaces, seccomp or "
      "Landlock\n"
      "                         (rlimits stay). For debugging only.\n"
      "  --insecure             allow a TCP listener (host:port) without TLS "
      "or\n"
      "                         authentication. Anyone who can reach the port "
      "can run\n"
      "                         code in allowed libraries.\n"
      "  --config FILE          read settings from FILE (protobuf text format, "
      "schema\n"
      "                         ffid.config.v1.Config); flags win over it. "
      "SIGHUP\n"
      "                         re-reads its policies, tokens, pins and "
      "allowlist.\n"
      "  --tls-cert FILE --tls-key FILE\n"
      "                         serve TLS on a TCP listener with this PEM "
      "certificate\n"
      "                         chain and key.\n"
      "  --tls-client-ca FILE   require client certificates signed by these "
      "CAs\n"
      "                         (mutual TLS); the principal is x509:<common "
      "name>.\n"
      "  --token-file FILE      accept bearer tokens (metadata "
      "'authorization: Bearer T')\n"
      "                         listed by SHA-256 in FILE, one 'HEX NAME' a "
      "line;\n"
      "                         the principal is token:NAME.\n"
      "  --audit-calls          write an audit line per Call too.\n"
      "  --require-authentication\n"
      "                         refuse clients with no identity (no token, "
      "certificate\n"
      "                         or unix peer) with UNAUTHENTICATED.\n"
      "  --no-reflection        do not serve gRPC server reflection. With it "
      "on (the\n"
      "                         default) only clients with an identity "
      "(unix peer,\n"
      "                         token, client certificate) may use it; "
      "health checks\n"
      "                         need no identity.\n"
      "  --version              print the version and exit.\n"
      "  --help                 print this help and exit.\n"
      "\n"
      "Libraries named by soname (libm.so.6) are found as the dynamic loader "
      "would:\n"
      "the directories of /etc/ld.so.conf, then the system default "
      "directories;\n"
      "LD_LIBRARY_PATH is not used.\n"
      "Stop with SIGTERM or SIGINT: the daemon drains (see --shutdown-grace), "
      "kills\nevery worker and removes the socket.\n");
}

}  // namespace ffid::server
