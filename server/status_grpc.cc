#include "server/status_grpc.h"

#include <string>

#include "ffi/errors.h"
#include "google/rpc/status.pb.h"

namespace ffid::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  absl::Status with_reason = status;
  if (GetErrorReason(status) == v1::ERROR_REASON_UNSPECIFIED) {
    // MakeError builds the ErrorInfo payload; keep any other payloads.
    with_reason = MakeError(status.code(), v1::ERROR_REASON_INTERNAL,
                            status.message());
    status.ForEachPayload(
        [&with_reason](absl::string_view type_url, const absl::Cord& value) {
          if (type_url != kErrorInfoTypeUrl) {
            with_reason.SetPayload(type_url, value);
          }
        });
  }
  google::rpc::Status details = StatusToProto(with_reason);
  return grpc::Status(static_cast<grpc::StatusCode>(with_reason.code()),
                      std::string(with_reason.message()),
                      details.SerializeAsString());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  google::rpc::Status details;
  if (!status.error_details().empty() &&
      details.ParseFromString(status.error_details())) {
    // The outer code and message are authoritative.
    details.set_code(static_cast<int>(status.error_code()));
    details.set_message(status.error_message());
    return StatusFromProto(details);
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace ffid::server
