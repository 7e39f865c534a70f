// Metrics: the daemon's Prometheus metrics, and MetricsEndpoint, the HTTP
// listener that serves them as text on /metrics (--metrics-listen).
//
// Built on prometheus-cpp (Debian's prometheus-cpp-dev): the registry and
// the text exposition come from it, and its pull library serves HTTP with
// civetweb. Metrics::Get() is one process-wide instance (never destroyed),
// because the events it counts happen in every layer (service, sessions,
// worker processes) and a daemon has one set of metrics; without an
// endpoint it only counts. Every method is thread-safe and cheap (atomic
// increments; a labelled series is looked up under a short lock).
//
// Series (all prefixed ffid_):
//   rpcs_total{method,code,reason}        every RPC answered (any service)
//   rpc_duration_seconds{method}          histogram of RPC handling time
//   calls_total{via,reason}               native calls: via unary|stream;
//                                         reason OK or the ErrorReason name
//   call_duration_seconds{via}            histogram of native call latency
//   sessions                              sessions open now
//   sessions_created_total
//   workers                               worker processes alive now
//   worker_crashes_total{signal}          deaths not asked for by ffid:
//                                         signal name, or "exit"
//   worker_restarts_total                 restarts under RESTART policy
//   memory_bytes_total{direction}         Read (read) / Write (write) bytes
//   callback_invocations_total            native -> client callback calls
//   draining                              1 once SIGTERM began the drain
#ifndef FFID_SERVER_METRICS_H_
#define FFID_SERVER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace ffid::server {

class Metrics {
 public:
  // The process-wide instance.
  static Metrics& Get();

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The registry, for an endpoint (shared: the endpoint keeps it alive).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // `method` is the short name ("Call"); `code` the gRPC code name ("OK");
  // `reason` the ErrorReason name, or "" when there is none.
  void RecordRpc(absl::string_view method, absl::string_view code,
                 absl::string_view reason, absl::Duration elapsed);
  // One native function call; `via` is "unary" or "stream", `reason` "OK"
  // or the ErrorReason name.
  void RecordCall(absl::string_view via, absl::string_view reason,
                  absl::Duration elapsed);
  void SessionOpened();
  void SessionClosed();
  void WorkerStarted();
  void WorkerExited();
  // `cause`: the signal's name (SIGSEGV) or "exit".
  void WorkerCrashed(absl::string_view cause);
  void WorkerRestarted();
  void BytesRead(uint64_t bytes);
  void BytesWritten(uint64_t bytes);
  void CallbackInvoked();
  void SetDraining(bool draining);

  // The text exposition of every series now (what /metrics serves).
  std::string Render() const;

 private:
  Metrics();

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& rpcs_;
  prometheus::Family<prometheus::Histogram>& rpc_duration_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Histogram>& call_duration_;
  prometheus::Gauge& sessions_;
  prometheus::Counter& sessions_created_;
  prometheus::Gauge& workers_;
  prometheus::Family<prometheus::Counter>& crashes_;
  prometheus::Counter& restarts_;
  prometheus::Counter& bytes_read_;
  prometheus::Counter& bytes_written_;
  prometheus::Counter& callbacks_;
  prometheus::Gauge& draining_;

  // Series looked up by their label values once and kept (a series is
  // never removed): prometheus-cpp's Family::Add builds a new metric (a
  // histogram with its buckets) before it finds the existing one, which
  // perf showed on every pipelined call.
  template <typename T, typename MakeSeries>
  T& Series(absl::flat_hash_map<std::string, T*>& cache, std::string key,
            MakeSeries make);
  absl::Mutex series_mu_;
  absl::flat_hash_map<std::string, prometheus::Counter*> rpc_counts_
      ABSL_GUARDED_BY(series_mu_);
  absl::flat_hash_map<std::string, prometheus::Histogram*> rpc_durations_
      ABSL_GUARDED_BY(series_mu_);
  absl::flat_hash_map<std::string, prometheus::Counter*> call_counts_
      ABSL_GUARDED_BY(series_mu_);
  absl::flat_hash_map<std::string, prometheus::Histogram*> call_durations_
      ABSL_GUARDED_BY(series_mu_);
};

// An HTTP listener serving Metrics::Get() on /metrics. Owns the listener
// and its threads; destroying it stops them.
class MetricsEndpoint {
 public:
  // `address` is "host:port" ("127.0.0.1:9464", "[::]:9464", ":9464";
  // port 0 picks a free one). UNAVAILABLE if it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& address);

  // The port actually bound.
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace ffid::server

#endif  // FFID_SERVER_METRICS_H_
