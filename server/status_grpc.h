// The one place where an absl::Status becomes a grpc::Status.
//
// Every service method ends in ToGrpcStatus(), so every failure a client
// sees has the same shape: the canonical code (absl and gRPC share the
// numbering), the message, and binary_error_details holding a serialized
// google.rpc.Status whose details are the ErrorInfo and, for a worker crash,
// the CrashReport (as google.protobuf.Any). A status that arrives without a
// reason (a bug: every ffid error should have one) gets reason INTERNAL, so
// clients can always rely on ErrorInfo being present. Pure functions,
// thread-safe.
#ifndef FFID_SERVER_STATUS_GRPC_H_
#define FFID_SERVER_STATUS_GRPC_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace ffid::server {

// absl -> gRPC, with google.rpc.Status details.
grpc::Status ToGrpcStatus(const absl::Status& status);

// gRPC -> absl, restoring the payloads from binary_error_details (for
// clients and tests; the inverse of ToGrpcStatus).
[[nodiscard]] absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace ffid::server

#endif  // FFID_SERVER_STATUS_GRPC_H_
