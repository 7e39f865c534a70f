// RPC observation for the daemon: a gRPC server interceptor that times
// every RPC, counts it in Metrics (server/metrics.h) by method, code and
// ErrorReason, and writes a log line (server/log.h) carrying the client's
// tracing id: debug for every RPC, warning for failures that are the
// server's side (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED,
// RESOURCE_EXHAUSTED, UNKNOWN, DATA_LOSS), so a worker crash or a limit hit
// is logged once with the id the client's own logs carry.
//
// Tracing ids come from the request metadata: a W3C `traceparent`
// ("00-<32 hex trace id>-<16 hex parent id>-<flags>") gives trace_id and
// span_id; otherwise `x-request-id` (any printable string up to 128 bytes)
// is the trace_id. Nothing is generated when the client sends neither.
//
// The factory is stateless and thread-safe; gRPC creates one interceptor
// per RPC.
#ifndef FFID_SERVER_RPC_OBSERVER_H_
#define FFID_SERVER_RPC_OBSERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/log.h"

namespace ffid::server {

// What a request says about its trace. Empty fields: not given.
struct TraceContext {
  std::string trace_id;
  std::string span_id;
};

// Parses the value of a `traceparent` header. False (and `out` untouched)
// if it is not a valid version-00-style header (all-zero ids are invalid).
[[nodiscard]] bool ParseTraceparent(absl::string_view value,
                                    TraceContext* out);

// Failures that point at the server's side rather than the request (logged
// as warnings).
bool IsServerSideFailure(grpc::StatusCode code);

// The trace context of the RPC `context` serves (from its client metadata).
TraceContext TraceOf(const grpc::ServerContextBase& context);

// The log line of one RPC (or of one call on a CallStream), if `level` is
// on: `message` with the method ("ffid.v1.Ffi/Call"), the code's name, the
// ErrorReason's name ("" when none), the duration and the trace ids.
void LogRpc(LogLevel level, absl::string_view message,
            absl::string_view method, absl::string_view code,
            absl::string_view reason, absl::Duration elapsed,
            const TraceContext& trace);

// How many RPCs of the servers built with the observer have started and
// are not over yet (streams included). Thread-safe.
int64_t RpcsInFlight();

// For grpc::ServerBuilder::experimental().SetInterceptorCreators.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcObserverFactory();

}  // namespace ffid::server

#endif  // FFID_SERVER_RPC_OBSERVER_H_
