// HealthService: gRPC's standard health checking protocol
// (grpc.health.v1.Health, the proto from Debian's grpc-proto) as a
// synchronous service, in place of grpc::EnableDefaultHealthCheckService.
//
// Why not gRPC's own: in gRPC 1.51 the default service is written on the
// callback API, and a server with any callback method gets a callback
// completion queue whose "nexting" threads poll gRPC's shared event loop.
// They then took every incoming request first and handed it to a
// synchronous-server thread: with it, one Call cost the daemon about
// 130 µs of CPU and 3-5 thread wake-ups; without it 23-38 µs and one
// (docs/performance.md, "The health service's polling threads").
//
// Knows the server as a whole ("") and the service names it is given; any
// other name is NOT_FOUND for Check and SERVICE_UNKNOWN for Watch (which
// stays open, as the protocol says). Every known name has one status.
// Watch holds a server thread while the watcher stays, like every
// synchronous streaming RPC, so at most kMaxWatches run at once (health
// needs no identity: anyone who reaches the port may watch); Shutdown()
// ends every Watch so the server can stop. Thread-safe.
#ifndef FFID_SERVER_HEALTH_H_
#define FFID_SERVER_HEALTH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace ffid::server {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Watches past this many are refused with RESOURCE_EXHAUSTED.
  static constexpr int kMaxWatches = 64;

  // Starts NOT_SERVING: the daemon says SERVING once it listens.
  explicit HealthService(std::vector<std::string> services);

  // SERVING or NOT_SERVING for "" and every known service; watchers are
  // told at once.
  void SetServing(bool serving) ABSL_LOCKS_EXCLUDED(mu_);
  // NOT_SERVING for good (SetServing no longer changes it); every Watch
  // sends that and ends with OK.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  grpc::Status Check(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(
      grpc::ServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request,
      grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer)
      override;

 private:
  // The status of `service`; SERVICE_UNKNOWN if it is not known.
  ServingStatus StatusLocked(const std::string& service) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const std::vector<std::string> services_;
  mutable absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Bumped on every change, so a watcher knows it has news.
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  int watches_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ffid::server

#endif  // FFID_SERVER_HEALTH_H_
