#include "ffi/errors.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/any.pb.h"
#include "google/rpc/error_details.pb.h"

namespace ffid {

absl::Status MakeError(absl::StatusCode code, v1::ErrorReason reason,
                       absl::string_view message) {
  absl::Status status(code, message);
  google::rpc::ErrorInfo info;
  info.set_reason(ReasonName(reason));
  info.set_domain(std::string(kErrorDomain));
  status.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  return status;
}

absl::StatusOr<absl::Duration> DurationField(
    const google::protobuf::Duration& duration, absl::string_view field,
    bool zero_allowed, absl::string_view when_unset) {
  const bool zero = duration.seconds() == 0 && duration.nanos() == 0;
  if (duration.seconds() < 0 || duration.nanos() < 0 ||
      duration.nanos() >= 1000000000 || (zero && !zero_allowed)) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat("field '", field, "' must be a ",
                     zero_allowed ? "duration of zero or more"
                                  : "positive duration",
                     " (got ", duration.seconds(), "s ", duration.nanos(),
                     "ns); leave it unset ", when_unset));
  }
  return absl::Seconds(duration.seconds()) +
         absl::Nanoseconds(duration.nanos());
}

absl::Status WithContext(const absl::Status& status,
                         absl::string_view context) {
  if (status.ok() || context.empty()) return status;
  return MakeError(status.code(), GetErrorReason(status),
                   absl::StrCat(context, ": ", status.message()));
}

absl::Status WithMessage(const absl::Status& status,
                         absl::string_view message) {
  absl::Status result(status.code(), message);
  status.ForEachPayload(
      [&result](absl::string_view type_url, const absl::Cord& value) {
        result.SetPayload(type_url, value);
      });
  return result;
}

absl::Status WithMetadata(absl::Status status, absl::string_view key,
                          absl::string_view value) {
  if (status.ok()) return status;
  google::rpc::ErrorInfo info;
  if (auto payload = status.GetPayload(kErrorInfoTypeUrl);
      payload.has_value()) {
    info.ParseFromString(std::string(*payload));
  } else {
    info.set_domain(std::string(kErrorDomain));
    info.set_reason("INTERNAL");
  }
  (*info.mutable_metadata())[std::string(key)] = std::string(value);
  status.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  return status;
}

absl::Status InvalidArgumentError(v1::ErrorReason reason,
                                  absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, reason, message);
}

absl::Status NotFoundError(v1::ErrorReason reason, absl::string_view message) {
  return MakeError(absl::StatusCode::kNotFound, reason, message);
}

absl::Status FailedPreconditionError(v1::ErrorReason reason,
                                     absl::string_view message) {
  return MakeError(absl::StatusCode::kFailedPrecondition, reason, message);
}

std::string ReasonName(v1::ErrorReason reason) {
  constexpr absl::string_view kPrefix = "ERROR_REASON_";
  std::string name = v1::ErrorReason_Name(reason);
  if (absl::string_view(name).substr(0, kPrefix.size()) == kPrefix) {
    name.erase(0, kPrefix.size());
  }
  return name;
}

v1::ErrorReason GetErrorReason(const absl::Status& status) {
  auto payload = status.GetPayload(kErrorInfoTypeUrl);
  if (!payload.has_value()) return v1::ERROR_REASON_UNSPECIFIED;
  google::rpc::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) {
    return v1::ERROR_REASON_UNSPECIFIED;
  }
  v1::ErrorReason reason;
  if (!v1::ErrorReason_Parse(absl::StrCat("ERROR_REASON_", info.reason()),
                             &reason)) {
    return v1::ERROR_REASON_UNSPECIFIED;
  }
  return reason;
}

void SetCrashReport(absl::Status& status, const v1::CrashReport& report) {
  status.SetPayload(kCrashReportTypeUrl,
                    absl::Cord(report.SerializeAsString()));
}

std::optional<v1::CrashReport> GetCrashReport(const absl::Status& status) {
  auto payload = status.GetPayload(kCrashReportTypeUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::CrashReport report;
  if (!report.ParseFromString(std::string(*payload))) return std::nullopt;
  return report;
}

google::rpc::Status StatusToProto(const absl::Status& status) {
  google::rpc::Status proto;
  proto.set_code(static_cast<int>(status.code()));
  proto.set_message(std::string(status.message()));
  status.ForEachPayload(
      [&proto](absl::string_view type_url, const absl::Cord& value) {
        google::protobuf::Any* any = proto.add_details();
        any->set_type_url(std::string(type_url));
        any->set_value(std::string(value));
      });
  return proto;
}

absl::Status StatusFromProto(const google::rpc::Status& proto) {
  if (proto.code() == 0) return absl::OkStatus();
  absl::Status status(static_cast<absl::StatusCode>(proto.code()),
                      proto.message());
  for (const google::protobuf::Any& any : proto.details()) {
    status.SetPayload(any.type_url(), absl::Cord(any.value()));
  }
  return status;
}

}  // namespace ffid
