// ffid: the daemon. Parses the flags (server/options.h), prepares the
// listening socket, serves ffid.v1.Ffi plus gRPC health checking and server
// reflection (and Prometheus metrics with --metrics-listen), and on SIGTERM
// or SIGINT drains: health turns NOT_SERVING, no new RPCs are accepted,
// running ones get --shutdown-grace to finish, then every worker is killed
// and the daemon stops.
//
// Exit status: 0 after a clean shutdown or --help, 2 for a usage error, 1
// when it cannot start (socket in use, worker missing, bind failure).
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/grpc.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "server/health.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/access.h"
#include "server/options.h"
#include "server/reflection_guard.h"
#include "server/rpc_observer.h"
#include "server/sandbox_probe.h"
#include "server/session_policy.h"
#include "server/symbolizer.h"
#include "server/tls.h"
#include "server/unix_listener.h"
#include "server/version.h"
#include "server/service.h"
#include "server/session.h"
#include "server/worker/channel.h"

namespace ffid::server {
namespace {

// How long after the shutdown grace gRPC cancels the RPCs still running:
// by then ending the sessions has answered every call that waited on a
// worker, so only RPCs that are stuck elsewhere are left.
constexpr absl::Duration kCancelAfterGrace = absl::Seconds(2);
// How often a drain looks for sessions that have nothing running any more.
constexpr absl::Duration kQuietSessionsPoll = absl::Milliseconds(20);

absl::Status StartupError(absl::string_view message) {
  return absl::FailedPreconditionError(message);
}

// Creates the socket's directory (and missing parents) with mode 0700. For
// the default location, which is predictable, the directory must belong to
// us and be closed to others: someone else could have created it first.
absl::Status PrepareSocketDirectory(const std::string& socket_path,
                                    bool must_be_private) {
  size_t slash = socket_path.rfind('/');
  if (slash == std::string::npos || slash == 0) return absl::OkStatus();
  std::string dir = socket_path.substr(0, slash);
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    std::string prefix = dir.substr(0, i);
    if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return StartupError(absl::StrCat("cannot create directory '", prefix,
                                       "': ", strerror(errno)));
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return StartupError(
        absl::StrCat("'", dir, "' is not a directory; choose another --listen "
                           "path"));
  }
  if (must_be_private) {
    if (st.st_uid != geteuid()) {
      return StartupError(absl::StrCat(
          "directory '", dir, "' belongs to uid ", st.st_uid,
          ", not to this user; remove it or choose another --listen path"));
    }
    if ((st.st_mode & 077) != 0 && chmod(dir.c_str(), 0700) != 0) {
      return StartupError(absl::StrCat("cannot make '", dir,
                                       "' private: ", strerror(errno)));
    }
  }
  return absl::OkStatus();
}

// Removes a socket file left behind by an ffid that did not exit cleanly;
// refuses if something still listens on it or if it is not a socket.
absl::Status RemoveStaleSocket(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return StartupError(
        absl::StrCat("cannot inspect '", path, "': ", strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return StartupError(absl::StrCat(
        "'", path,
        "' exists and is not a socket; remove it or choose another --listen "
        "path"));
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return StartupError(absl::StrCat("socket: ", strerror(errno)));
  }
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, path.data(), path.size());
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  int error = errno;
  close(fd);
  if (rc == 0) {
    return StartupError(absl::StrCat(
        "another process is already listening on unix:", path,
        " (another ffid?); stop it or choose another --listen path"));
  }
  if (error != ECONNREFUSED) {
    return StartupError(absl::StrCat("cannot check whether '", path,
                                     "' is in use: ", strerror(error)));
  }
  if (unlink(path.c_str()) != 0) {
    return StartupError(absl::StrCat("cannot remove the stale socket '", path,
                                     "': ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status CheckWorker(const std::string& worker_path) {
  struct stat st;
  if (stat(worker_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      access(worker_path.c_str(), X_OK) != 0) {
    return StartupError(absl::StrCat(
        "the worker executable '", worker_path,
        "' is missing or not executable; build it (target ffid_worker_main) "
        "or pass --worker-path"));
  }
  return absl::OkStatus();
}

int Fail(const absl::Status& status, int exit_code) {
  Log(LogLevel::kError, status.message());
  return exit_code;
}

// SIGHUP: reads the flags and the config file again and applies the
// reloadable settings (policies, pins, tokens, audit); sessions stay. A
// file with errors changes nothing.
void Reload(int argc, char** argv, AccessControl& access) {
  absl::StatusOr<Options> options =
      ParseOptions(std::vector<std::string>(argv, argv + argc));
  absl::StatusOr<AccessSettings> settings =
      options.ok() ? MakeAccessSettings(options->config, options->token_file,
                                        options->audit_calls,
                                        options->require_authentication)
                   : absl::StatusOr<AccessSettings>(options.status());
  if (!settings.ok()) {
    Log(LogLevel::kError,
        absl::StrCat("SIGHUP: the configuration has errors, keeping the old "
                     "one: ",
                     settings.status().message()));
    return;
  }
  access.Reload(*std::move(settings));
  Log(LogLevel::kInfo, absl::StrCat("SIGHUP: configuration reloaded (",
                                    options->config.policy_size(),
                                    " policies)"));
}

int Run(int argc, char** argv) {
  absl::StatusOr<Options> parsed =
      ParseOptions(std::vector<std::string>(argv, argv + argc));
  if (!parsed.ok()) return Fail(parsed.status(), 2);
  const Options& options = *parsed;
  if (options.help) {
    fputs(HelpText().c_str(), stdout);
    return 0;
  }
  if (options.version) {
    printf("ffid %s\n", std::string(Version()).c_str());
    return 0;
  }
  SetLogFormat(options.log_format);
  SetLogLevel(options.log_level);
  Log(LogLevel::kInfo, absl::StrCat("ffid ", Version(), " starting"));

  // Before any thread exists, so that every thread inherits the mask and
  // only the sigwait() thread below sees these signals. Workers get a clean
  // mask from posix_spawn.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  // SIGHUP reloads the configuration (the same thread waits for it).
  sigset_t handled_signals = stop_signals;
  sigaddset(&handled_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &handled_signals, nullptr);
  // A client or worker that goes away must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
  // One reference to gRPC that is never given back, so that its final
  // shutdown does not run as the daemon exits: that shutdown joins gRPC's
  // executor threads, and after large Read/Write messages one of them sits
  // in a poll of up to 10 s, which made a drained daemon take that long to
  // exit after "stopped". Everything of ours has been shut down by then.
  grpc_init();

  if (absl::Status status = CheckWorker(options.worker_path); !status.ok()) {
    return Fail(status, 1);
  }
  // Crash reports name the worker's own functions around the native call
  // but not their source lines: reading its line tables would cost the
  // first crash ~15 ms and 9 MiB for frames that are ffid's, not the
  // library's.
  Symbolizer::Get().NamesOnly(options.worker_path);

  std::string address = options.listen;
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  std::string socket_path;
  if (absl::StartsWith(address, "unix:")) {
    socket_path = address.substr(5);
    if (absl::StartsWith(socket_path, "//")) socket_path.erase(0, 2);
    if (socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
                      "socket path '", socket_path, "' is longer than ",
                      sizeof(sockaddr_un{}.sun_path) - 1,
                      " bytes; choose a shorter --listen path")),
                  2);
    }
    absl::Status status = PrepareSocketDirectory(
        socket_path, address == DefaultListenAddress());
    if (status.ok()) status = RemoveStaleSocket(socket_path);
    if (!status.ok()) return Fail(status, 1);
    address = absl::StrCat("unix:", socket_path);
  } else if (!absl::StartsWith(address, "unix-abstract:")) {
    if (!options.tls_cert.empty()) {
      absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tls =
          MakeTlsCredentials({options.tls_cert, options.tls_key,
                              options.tls_client_ca});
      if (!tls.ok()) return Fail(tls.status(), 1);
      credentials = *std::move(tls);
      Log(LogLevel::kInfo,
          absl::StrCat("TCP ", address, " with TLS",
                       options.tls_client_ca.empty()
                           ? ""
                           : " and client certificates (mutual TLS)"));
    } else if (!options.insecure) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
                      "--listen ", address,
                      " is a TCP address: give --tls-cert and --tls-key (and "
                      "--tls-client-ca for mutual TLS), or pass --insecure to "
                      "listen without encryption or authentication, or use a "
                      "unix socket")),
                  2);
    } else {
      Log(LogLevel::kWarning,
          absl::StrCat("listening on TCP ", address,
                       " without TLS or authentication (--insecure): anyone "
                       "who can reach it can call the allowed libraries"));
    }
  }

  // Before any thread: the probe forks.
  v1::SandboxStatus sandbox = ProbeSandbox();
  if (options.sandbox) {
    for (const std::string& line : DescribeSandbox(sandbox)) {
      Log(LogLevel::kInfo, line);
    }
  } else {
    Log(LogLevel::kWarning,
        "--no-sandbox: workers run without namespaces, seccomp or Landlock");
  }

  // Before the gRPC listener: a metrics address in use is a start-up error.
  std::unique_ptr<MetricsEndpoint> metrics_endpoint;
  if (!options.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(options.metrics_listen);
    if (!endpoint.ok()) return Fail(endpoint.status(), 1);
    metrics_endpoint = std::move(*endpoint);
    std::string host =
        options.metrics_listen.substr(0, options.metrics_listen.rfind(':'));
    Log(LogLevel::kInfo,
        absl::StrCat("metrics on http://", host.empty() ? "0.0.0.0" : host,
                     ":", metrics_endpoint->port(), "/metrics"));
  }

  absl::StatusOr<AccessSettings> access_settings =
      MakeAccessSettings(options.config, options.token_file,
                         options.audit_calls, options.require_authentication);
  if (!access_settings.ok()) return Fail(access_settings.status(), 2);
  auto peers = std::make_shared<PeerRegistry>();
  auto access =
      std::make_shared<AccessControl>(*std::move(access_settings), peers);
  // The unix socket is accepted by the daemon itself, to learn each
  // client's uid (server/unix_listener.h).
  std::unique_ptr<UnixListener> unix_listener;
  if (!socket_path.empty()) {
    unix_listener = std::make_unique<UnixListener>(socket_path, peers);
    if (absl::Status bound = unix_listener->Bind(); !bound.ok()) {
      return Fail(bound, 1);
    }
  }

  SessionManagerOptions session_options;
  session_options.worker_path = options.worker_path;
  session_options.default_idle_timeout = options.idle_timeout;
  SessionManager sessions(std::move(session_options));
  // Local clients map session arenas through a socket beside the daemon's
  // own (same directory, so the same 0700 protection).
  std::unique_ptr<ArenaBroker> arena_broker;
  if (!socket_path.empty() && options.arena_bytes > 0) {
    absl::StatusOr<std::unique_ptr<ArenaBroker>> started =
        ArenaBroker::Start(absl::StrCat(socket_path, ".arena"));
    if (started.ok()) {
      arena_broker = *std::move(started);
    } else {
      fprintf(stderr,
              "ffid: warning: no arena socket, clients cannot map session "
              "arenas: %s\n",
              std::string(started.status().message()).c_str());
    }
  }
  ServiceOptions service_options;
  service_options.arena_bytes = options.arena_bytes;
  service_options.arena_broker = arena_broker.get();
  service_options.allow_library = options.allow_library;
  service_options.policy.max_limits = options.worker_limits;
  service_options.policy.network_allowed = options.allow_network;
  service_options.policy.sandbox = options.sandbox;
  service_options.policy.available = sandbox;
  service_options.policy.allow_library = options.allow_library;
  service_options.access = access;
  FfiService service(sessions, std::move(service_options));

  // Health checking needs no identity (probes carry none); reflection only
  // for callers with one (server/reflection_guard.h), or not at all. Our
  // own synchronous health service, not gRPC's default one, whose callback
  // API threads cost every RPC (server/health.h).
  HealthService health({std::string(v1::Ffi::service_full_name())});
  // The plain-text health-only listener: health checking and nothing
  // else (no reflection, no API).
  std::unique_ptr<grpc::Server> health_server;
  int health_port = 0;
  if (!options.health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.SetOption(WithoutReflection());
    health_builder.AddListeningPort(options.health_listen,
                                    grpc::InsecureServerCredentials(),
                                    &health_port);
    health_builder.RegisterService(&health);
    health_server = health_builder.BuildAndStart();
  }
  // However Run() returns: the health listener stops last.
  absl::Cleanup stop_health = [&] {
    health.Shutdown();
    if (health_server != nullptr) {
      health_server->Shutdown(absl::ToChronoTime(absl::Now()));
    }
  };
  if (!options.health_listen.empty()) {
    if (health_server == nullptr || health_port == 0) {
      sessions.Shutdown();
      return Fail(absl::UnavailableError(absl::StrCat(
                      "cannot listen on --health-listen ",
                      options.health_listen,
                      " (address in use, or not a valid address?)")),
                  1);
    }
    Log(LogLevel::kInfo,
        absl::StrCat("health checking (only) on ",
                     options.health_listen.substr(
                         0, options.health_listen.rfind(':')),
                     ":", health_port));
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!options.reflection) builder.SetOption(WithoutReflection());
  int selected_port = 0;
  if (unix_listener == nullptr) {
    builder.AddListeningPort(address, credentials, &selected_port);
  }
  builder.RegisterService(&service);
  builder.RegisterService(&health);
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(MakeRpcObserverFactory());
  if (options.reflection) {
    interceptors.push_back(MakeReflectionGuardFactory(access));
  }
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // The synchronous server's threads: one takes each RPC, and whenever no
  // idle thread is left polling, gRPC starts another. With gRPC's default
  // of at most 2 idle threads, a thread that finishes its RPC while 2 others
  // poll exits, so a few RPCs in flight at once (a client's 1 MiB Read or
  // Write pieces, several clients) start and end a thread every second RPC
  // or so: ~60 thread starts per 64 MiB Write+Read, each with a fresh
  // stack to fault in and an idle CPU to wake. Up to kIdleServerThreads
  // idle threads stay instead (docs/performance.md, "Read/Write of 64 MiB:
  // the daemon's threads").
  constexpr int kIdleServerThreads = 8;
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, kIdleServerThreads);
  // Read/Write move up to a worker frame's worth of bytes in one message.
  builder.SetMaxReceiveMessageSize(static_cast<int>(worker::kMaxFrameBytes));
  builder.SetMaxSendMessageSize(static_cast<int>(worker::kMaxFrameBytes));
  // The socket must never be reachable by others, not even between bind()
  // and chmod().
  mode_t old_umask = umask(077);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  const bool is_tcp = socket_path.empty() &&
                      !absl::StartsWith(address, "unix-abstract:");
  if (server == nullptr || (is_tcp && selected_port == 0)) {
    sessions.Shutdown();
    return Fail(absl::UnavailableError(absl::StrCat(
                    "cannot listen on ", address,
                    " (address in use, or not a valid address?)")),
                1);
  }
  std::string shown = address;
  if (unix_listener != nullptr) {
    unix_listener->Start(server.get());
  } else if (is_tcp) {
    shown = absl::StrCat(address.substr(0, address.rfind(':')), ":",
                         selected_port);
  }
  health.SetServing(true);
  Log(LogLevel::kInfo, absl::StrCat("listening on ", shown));

  std::thread signal_thread([&] {
    int signal_number = 0;
    for (;;) {
      if (sigwait(&handled_signals, &signal_number) != 0) continue;
      if (signal_number != SIGHUP) break;
      Reload(argc, argv, *access);
    }
    if (unix_listener != nullptr) unix_listener->Stop();
    Log(LogLevel::kInfo,
        absl::StrCat(SignalName(signal_number),
                     " received, draining: health NOT_SERVING, new RPCs "
                     "refused, running RPCs may finish within ",
                     absl::FormatDuration(options.shutdown_grace)));
    Metrics::Get().SetDraining(true);
    service.BeginDrain();
    // Watchers see NOT_SERVING, then their streams end, so that they do
    // not hold up the drain.
    health.Shutdown();
    // Sessions end as soon as nothing is running in them: an idle client's
    // Connect stream would otherwise hold the drain for the whole grace.
    // At the end of the grace the workers die first, so that a call still
    // running in native code is answered with ffid's own "shutting down"
    // error; gRPC cancels whatever is left (an RPC not waiting on a worker)
    // a little later. One thread owns the grace's end, so the warning is
    // logged exactly when RPCs were still running then.
    const absl::Time grace_end = absl::Now() + options.shutdown_grace;
    absl::Notification drained;
    absl::Notification shutdown_begun;
    std::thread backstop([&] {
      shutdown_begun.WaitForNotification();
      int quiet_polls = 0;
      while (!drained.WaitForNotificationWithTimeout(kQuietSessionsPoll) &&
             absl::Now() < grace_end) {
        // Once no session and no RPC is left, only idle connections keep
        // gRPC's shutdown waiting: it asks each client to acknowledge the
        // GOAWAY, and a client with no thread in gRPC answers only at its
        // next backup poll, seconds later. Nothing is running, so they are
        // closed now (the gRPC core call that Shutdown's deadline makes).
        // Two polls in a row: an RPC gRPC has taken but not yet handed to a
        // thread is not counted yet.
        const bool quiet =
            sessions.EndQuietSessions() == 0 && RpcsInFlight() == 0;
        quiet_polls = quiet ? quiet_polls + 1 : 0;
        if (quiet_polls == 2) {
          grpc_server_cancel_all_calls(server->c_server());
          return;
        }
      }
      if (!drained.WaitForNotificationWithDeadline(grace_end)) {
        Log(LogLevel::kWarning,
            "grace period over: ending every session (the calls still "
            "running are answered UNAVAILABLE) and killing every worker");
        sessions.Shutdown();
      }
    });
    // Shutdown() makes gRPC refuse new RPCs first thing; the backstop
    // closes connections no sooner than two polls after this.
    shutdown_begun.Notify();
    server->Shutdown(absl::ToChronoTime(grace_end + kCancelAfterGrace));
    drained.Notify();
    backstop.join();
  });
  server->Wait();
  signal_thread.join();
  // Every worker ends here at the latest (idle sessions' workers included).
  sessions.Shutdown();
  if (!socket_path.empty()) unlink(socket_path.c_str());
  Log(LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace
}  // namespace ffid::server

int main(int argc, char** argv) {
  // Debian's abseil is built with absl::Mutex deadlock detection on, which
  // keeps a lock graph on every Lock(): measurable on the call path (perf
  // showed GraphCycles among the daemon's top user-space symbols). The unit
  // tests keep it on; the daemon turns it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Big Reads and Writes arrive as 1 MiB messages: glibc's defaults give
  // each message's buffers fresh pages (mapped, faulted in and cleared,
  // then unmapped or trimmed again), which perf showed as the largest cost
  // of a 64 MiB transfer. Blocks below 4 MiB come from the heap, and up to
  // 16 MiB freed at the top of a heap stays for the next message
  // (docs/performance.md).
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 16 << 20);
  return ffid::server::Run(argc, argv);
}
