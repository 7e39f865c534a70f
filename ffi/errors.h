// Errors with a machine-readable reason.
//
// ffid reports every failure as an absl::Status that carries a
// google.rpc.ErrorInfo payload (domain "ffid.dev", reason such as
// "SYMBOL_NOT_FOUND") and, for a worker crash, an ffid.v1.CrashReport payload.
// The payloads travel across the worker channel inside a google.rpc.Status
// (StatusToProto / StatusFromProto) and become gRPC status details at the
// service edge. Everything here is a pure function and thread-safe.
#ifndef FFID_FFI_ERRORS_H_
#define FFID_FFI_ERRORS_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ffid/v1/errors.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/rpc/status.pb.h"

namespace ffid {

// The ErrorInfo domain of every ffid error.
inline constexpr absl::string_view kErrorDomain = "ffid.dev";
// absl::Status payload type URLs.
inline constexpr absl::string_view kErrorInfoTypeUrl =
    "type.googleapis.com/google.rpc.ErrorInfo";
inline constexpr absl::string_view kCrashReportTypeUrl =
    "type.googleapis.com/ffid.v1.CrashReport";

// Returns a status with `code`, `message` and an ErrorInfo naming `reason`.
[[nodiscard]] absl::Status MakeError(absl::StatusCode code,
                                     v1::ErrorReason reason,
                                     absl::string_view message);

// Shorthands for the common codes.
[[nodiscard]] absl::Status InvalidArgumentError(v1::ErrorReason reason,
                                                absl::string_view message);
[[nodiscard]] absl::Status NotFoundError(v1::ErrorReason reason,
                                         absl::string_view message);
[[nodiscard]] absl::Status FailedPreconditionError(v1::ErrorReason reason,
                                                   absl::string_view message);

// A request's Duration field named `field` as an absl::Duration.
// INVALID_ARGUMENT (INVALID_REQUEST) for a malformed or negative one, or a
// zero one unless `zero_allowed`; the message gives the value and ends
// "leave it unset <when_unset>".
[[nodiscard]] absl::StatusOr<absl::Duration> DurationField(
    const google::protobuf::Duration& duration, absl::string_view field,
    bool zero_allowed, absl::string_view when_unset);

// `status` restated in `context` ("parameter 2 'x' of 'f': ..."): the same
// code and reason, the message prefixed with "<context>: ". OK statuses and an
// empty context pass through unchanged.
[[nodiscard]] absl::Status WithContext(const absl::Status& status,
                                       absl::string_view context);

// `status` with `message` in place of its own: the same code and every
// payload (reason, metadata, crash report) kept.
[[nodiscard]] absl::Status WithMessage(const absl::Status& status,
                                       absl::string_view message);

// `status` with `key` = `value` added to its ErrorInfo metadata (an
// ErrorInfo with reason INTERNAL is made if it has none). OK passes through.
[[nodiscard]] absl::Status WithMetadata(absl::Status status,
                                        absl::string_view key,
                                        absl::string_view value);

// The reason string without the "ERROR_REASON_" prefix ("SYMBOL_NOT_FOUND").
std::string ReasonName(v1::ErrorReason reason);

// The reason attached to `status`, or ERROR_REASON_UNSPECIFIED if none.
v1::ErrorReason GetErrorReason(const absl::Status& status);

// Attaches a crash report to `status` (which must not be OK).
void SetCrashReport(absl::Status& status, const v1::CrashReport& report);
// The crash report attached to `status`, if any.
std::optional<v1::CrashReport> GetCrashReport(const absl::Status& status);

// Converts to and from google.rpc.Status; payloads become `details` (Any)
// and back. The round trip preserves code, message and every payload.
google::rpc::Status StatusToProto(const absl::Status& status);
[[nodiscard]] absl::Status StatusFromProto(const google::rpc::Status& proto);

}  // namespace ffid

// Returns early from the enclosing function if `expr` (an absl::Status) is not
// OK. Debian's abseil lacks the status macros, so ffid keeps its own.
#define RETURN_IF_ERROR(expr)                              \
  do {                                                     \
    ::absl::Status ffid_status_ = (expr);                  \
    if (ABSL_PREDICT_FALSE(!ffid_status_.ok())) {          \
      return ffid_status_;                                 \
    }                                                      \
  } while (0)

#define FFID_STATUS_CONCAT_INNER_(a, b) a##b
#define FFID_STATUS_CONCAT_(a, b) FFID_STATUS_CONCAT_INNER_(a, b)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on
// error returns its status, else moves the value into `lhs`, which may be a
// declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, expr)                                           \
  FFID_ASSIGN_OR_RETURN_IMPL_(                                                \
      FFID_STATUS_CONCAT_(ffid_statusor_, __LINE__), lhs, expr)

#define FFID_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {              \
    return std::move(statusor).status();                 \
  }                                                      \
  lhs = std::move(statusor).value()

#endif  // FFID_FFI_ERRORS_H_
