#include "server/metrics.h"

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "prometheus/text_serializer.h"

namespace ffid::server {
namespace {

// 50 µs .. 10 s: a trivial call over a unix socket is ~100 µs, a slow
// native call can take seconds.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
          0.025,   0.05,   0.1,     0.25,   0.5,   1,     2.5,    5,    10};
}

}  // namespace

Metrics& Metrics::Get() {
  // Never destroyed: worker reader threads may count while the process
  // exits.
  static Metrics* const instance = new Metrics();
  return *instance;
}

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      rpcs_(prometheus::BuildCounter()
                .Name("ffid_rpcs_total")
                .Help("RPCs answered, by method, gRPC code and ffid "
                      "ErrorReason")
                .Register(*registry_)),
      rpc_duration_(prometheus::BuildHistogram()
                        .Name("ffid_rpc_duration_seconds")
                        .Help("Time from receiving an RPC to sending its "
                              "status, by method")
                        .Register(*registry_)),
      calls_(prometheus::BuildCounter()
                 .Name("ffid_calls_total")
                 .Help("Native function calls, by path (unary Call RPC or "
                       "Connect stream) and result (OK or the ErrorReason)")
                 .Register(*registry_)),
      call_duration_(prometheus::BuildHistogram()
                         .Name("ffid_call_duration_seconds")
                         .Help("Latency of native function calls as the "
                               "daemon sees it, by path")
                         .Register(*registry_)),
      sessions_(prometheus::BuildGauge()
                    .Name("ffid_sessions")
                    .Help("Sessions open now")
                    .Register(*registry_)
                    .Add({})),
      sessions_created_(prometheus::BuildCounter()
                            .Name("ffid_sessions_created_total")
                            .Help("Sessions created")
                            .Register(*registry_)
                            .Add({})),
      workers_(prometheus::BuildGauge()
                   .Name("ffid_workers")
                   .Help("Worker processes alive now")
                   .Register(*registry_)
                   .Add({})),
      crashes_(prometheus::BuildCounter()
                   .Name("ffid_worker_crashes_total")
                   .Help("Workers that died without ffid asking them to, by "
                         "signal (or \"exit\")")
                   .Register(*registry_)),
      restarts_(prometheus::BuildCounter()
                    .Name("ffid_worker_restarts_total")
                    .Help("Workers restarted under the RESTART policy")
                    .Register(*registry_)
                    .Add({})),
      bytes_read_(prometheus::BuildCounter()
                      .Name("ffid_memory_bytes_total")
                      .Help("Bytes moved by Read and Write")
                      .Register(*registry_)
                      .Add({{"direction", "read"}})),
      bytes_written_(prometheus::BuildCounter()
                         .Name("ffid_memory_bytes_total")
                         .Help("Bytes moved by Read and Write")
                         .Register(*registry_)
                         .Add({{"direction", "write"}})),
      callbacks_(prometheus::BuildCounter()
                     .Name("ffid_callback_invocations_total")
                     .Help("Callback invocations sent from native code to "
                           "clients")
                     .Register(*registry_)
                     .Add({})),
      draining_(prometheus::BuildGauge()
                    .Name("ffid_draining")
                    .Help("1 while the daemon drains after SIGTERM")
                    .Register(*registry_)
                    .Add({})) {}

namespace {

// The key of a label combination in a Series cache: the label values,
// joined (short ones stay in the string's own buffer: no allocation).
std::string SeriesKey(absl::string_view a, absl::string_view b = "",
                      absl::string_view c = "") {
  return absl::StrCat(a, "\x1f", b, "\x1f", c);
}

}  // namespace

template <typename T, typename MakeSeries>
T& Metrics::Series(absl::flat_hash_map<std::string, T*>& cache,
                   std::string key, MakeSeries make) {
  absl::MutexLock lock(&series_mu_);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  T& series = make();
  cache.emplace(std::move(key), &series);
  return series;
}

void Metrics::RecordRpc(absl::string_view method, absl::string_view code,
                        absl::string_view reason, absl::Duration elapsed) {
  Series(rpc_counts_, SeriesKey(method, code, reason), [&]() -> auto& {
    return rpcs_.Add({{"method", std::string(method)},
                      {"code", std::string(code)},
                      {"reason", std::string(reason)}});
  }).Increment();
  Series(rpc_durations_, SeriesKey(method), [&]() -> auto& {
    return rpc_duration_.Add({{"method", std::string(method)}},
                             LatencyBuckets());
  }).Observe(absl::ToDoubleSeconds(elapsed));
}

void Metrics::RecordCall(absl::string_view via, absl::string_view reason,
                         absl::Duration elapsed) {
  Series(call_counts_, SeriesKey(via, reason), [&]() -> auto& {
    return calls_.Add({{"via", std::string(via)},
                       {"reason", std::string(reason)}});
  }).Increment();
  Series(call_durations_, SeriesKey(via), [&]() -> auto& {
    return call_duration_.Add({{"via", std::string(via)}}, LatencyBuckets());
  }).Observe(absl::ToDoubleSeconds(elapsed));
}

void Metrics::SessionOpened() {
  sessions_.Increment();
  sessions_created_.Increment();
}
void Metrics::SessionClosed() { sessions_.Decrement(); }
void Metrics::WorkerStarted() { workers_.Increment(); }
void Metrics::WorkerExited() { workers_.Decrement(); }
void Metrics::WorkerCrashed(absl::string_view cause) {
  crashes_.Add({{"signal", std::string(cause)}}).Increment();
}
void Metrics::WorkerRestarted() { restarts_.Increment(); }
void Metrics::BytesRead(uint64_t bytes) {
  bytes_read_.Increment(static_cast<double>(bytes));
}
void Metrics::BytesWritten(uint64_t bytes) {
  bytes_written_.Increment(static_cast<double>(bytes));
}
void Metrics::CallbackInvoked() { callbacks_.Increment(); }
void Metrics::SetDraining(bool draining) { draining_.Set(draining ? 1 : 0); }

std::string Metrics::Render() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address) {
  // civetweb wants "host:port" with IPv6 hosts in brackets, and a bare
  // port for every IPv4 address.
  std::string bind = address;
  if (!bind.empty() && bind[0] == ':') bind = bind.substr(1);
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  // prometheus-cpp reports a failed bind by throwing (CivetException);
  // this is the one place ffid lets a library's exception reach it, and it
  // becomes a Status here.
  try {
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", bind, "num_threads",
                                 "2"});
  } catch (const std::exception& error) {
    return MakeError(absl::StatusCode::kUnavailable,
                     v1::ERROR_REASON_INVALID_REQUEST,
                     absl::StrCat("cannot serve metrics on '", address,
                                  "' (", error.what(),
                                  "): address in use or not host:port?"));
  }
  endpoint->exposer_->RegisterCollectable(Metrics::Get().registry());
  std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (!ports.empty()) endpoint->port_ = ports.front();
  return endpoint;
}

}  // namespace ffid::server
