// The standard gRPC health check (grpc.health.v1.Health/Check) against an
// ffid daemon, for `ffictl health`, container health checks and tests.
//
// The daemon answers SERVING while it accepts requests and NOT_SERVING once
// it drains after SIGTERM (then, shortly after, refuses new RPCs
// altogether). Messages are encoded here with protobuf's wire-format
// primitives: the request is one optional string, the answer one enum, so
// a client needs no generated code for grpc/health/v1 (nor Debian's
// grpc-proto, which only the daemon's build uses). Thread-safe; the
// channel is shared.
#ifndef FFID_CLIENTS_CPP_FFID_HEALTH_H_
#define FFID_CLIENTS_CPP_FFID_HEALTH_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"

namespace ffid::client {

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class ServingStatus {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3,
};

// "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN".
std::string ServingStatusName(ServingStatus status);

// Asks the server on `channel` about `service` ("" for the server as a
// whole, "ffid.v1.Ffi" for the API), waiting at most `timeout`. A failed
// RPC (daemon unreachable, shutting down, unknown service: NOT_FOUND) is
// returned as its status.
absl::StatusOr<ServingStatus> CheckHealth(
    std::shared_ptr<grpc::Channel> channel, absl::string_view service,
    absl::Duration timeout);

}  // namespace ffid::client

#endif  // FFID_CLIENTS_CPP_FFID_HEALTH_H_
