#include "server/status_grpc.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "google/rpc/status.pb.h"

namespace ffid::server {
namespace {

// Messages quote user input (declarations, values); the message travels
// twice (grpc-message and the details), both in HTTP/2 headers whose default
// limit is 8 KiB. Past that the client would see RESOURCE_EXHAUSTED instead
// of the real error, so long messages are cut.
constexpr size_t kMaxMessageBytes = 2048;

std::string Shorten(absl::string_view message) {
  if (message.size() <= kMaxMessageBytes) return std::string(message);
  size_t cut = kMaxMessageBytes;
  // Do not split a UTF-8 sequence.
  while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return absl::StrCat(message.substr(0, cut), "... (",
                      message.size() - cut, " more bytes cut)");
}

}  // namespace

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
  const std::string message = Shorten(with_reason.message());
  google::rpc::Status details = StatusToProto(with_reason);
  details.set_message(message);
  return grpc::Status(static_cast<grpc::StatusCode>(with_reason.code()),
                      message, details.SerializeAsString());
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
