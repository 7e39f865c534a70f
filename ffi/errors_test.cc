#include "ffi/errors.h"

#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"

namespace ffid {
namespace {

TEST(MakeError, CarriesCodeMessageAndReason) {
  absl::Status status =
      MakeError(absl::StatusCode::kNotFound, v1::ERROR_REASON_SYMBOL_NOT_FOUND,
                "symbol 'nope' not found in libm.so.6");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(status.message()),
            "symbol 'nope' not found in libm.so.6");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_SYMBOL_NOT_FOUND);

  auto payload = status.GetPayload(kErrorInfoTypeUrl);
  ASSERT_TRUE(payload.has_value());
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(info.ParseFromString(std::string(*payload)));
  EXPECT_EQ(info.reason(), "SYMBOL_NOT_FOUND");
  EXPECT_EQ(info.domain(), "ffid.dev");
}

TEST(MakeError, Shorthands) {
  absl::Status status =
      InvalidArgumentError(v1::ERROR_REASON_TYPE_MISMATCH, "bad");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
  status = NotFoundError(v1::ERROR_REASON_LIBRARY_NOT_FOUND, "gone");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_LIBRARY_NOT_FOUND);
  status = FailedPreconditionError(v1::ERROR_REASON_WORKER_CRASHED, "dead");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_WORKER_CRASHED);
}

TEST(WithContext, PrefixesTheMessageKeepingCodeAndReason) {
  const absl::Status status = WithContext(
      InvalidArgumentError(v1::ERROR_REASON_VALUE_OUT_OF_RANGE, "too big"),
      "parameter 1 'x' of 'f'");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_VALUE_OUT_OF_RANGE);
  EXPECT_EQ(status.message(), "parameter 1 'x' of 'f': too big");
}

TEST(WithContext, OkAndEmptyContextPassThrough) {
  EXPECT_TRUE(WithContext(absl::OkStatus(), "parameter 1").ok());
  const absl::Status error =
      NotFoundError(v1::ERROR_REASON_HANDLE_INVALID, "no such handle");
  EXPECT_EQ(WithContext(error, ""), error);
}

TEST(WithMessage, ReplacesTheMessageKeepingCodeAndEveryPayload) {
  absl::Status status =
      NotFoundError(v1::ERROR_REASON_HANDLE_INVALID, "no such handle");
  v1::CrashReport report;
  report.set_signal(11);
  SetCrashReport(status, report);
  const absl::Status replaced = WithMessage(status, "another message");
  EXPECT_EQ(replaced.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(replaced.message(), "another message");
  EXPECT_EQ(GetErrorReason(replaced), v1::ERROR_REASON_HANDLE_INVALID);
  ASSERT_TRUE(GetCrashReport(replaced).has_value());
  EXPECT_EQ(GetCrashReport(replaced)->signal(), 11);
}

TEST(ReasonName, DropsThePrefix) {
  EXPECT_EQ(ReasonName(v1::ERROR_REASON_LIBRARY_NOT_ALLOWED),
            "LIBRARY_NOT_ALLOWED");
  EXPECT_EQ(ReasonName(v1::ERROR_REASON_UNSPECIFIED), "UNSPECIFIED");
  // Every reason survives the trip through its name.
  for (int i = v1::ErrorReason_MIN; i <= v1::ErrorReason_MAX; ++i) {
    if (!v1::ErrorReason_IsValid(i)) continue;
    auto reason = static_cast<v1::ErrorReason>(i);
    if (reason == v1::ERROR_REASON_UNSPECIFIED) continue;
    EXPECT_EQ(GetErrorReason(MakeError(absl::StatusCode::kInternal, reason, "x")),
              reason)
        << ReasonName(reason);
  }
}

TEST(GetErrorReason, UnspecifiedWithoutOrWithBrokenPayload) {
  EXPECT_EQ(GetErrorReason(absl::OkStatus()), v1::ERROR_REASON_UNSPECIFIED);
  EXPECT_EQ(GetErrorReason(absl::InternalError("plain")),
            v1::ERROR_REASON_UNSPECIFIED);
  absl::Status garbage = absl::InternalError("x");
  garbage.SetPayload(kErrorInfoTypeUrl, absl::Cord("\xff\xff\xff"));
  EXPECT_EQ(GetErrorReason(garbage), v1::ERROR_REASON_UNSPECIFIED);
  absl::Status unknown = absl::InternalError("x");
  google::rpc::ErrorInfo info;
  info.set_reason("NOT_A_REASON");
  unknown.SetPayload(kErrorInfoTypeUrl, absl::Cord(info.SerializeAsString()));
  EXPECT_EQ(GetErrorReason(unknown), v1::ERROR_REASON_UNSPECIFIED);
}

TEST(CrashReport, AttachesAndReadsBack) {
  absl::Status status =
      MakeError(absl::StatusCode::kUnavailable, v1::ERROR_REASON_WORKER_CRASHED,
                "worker 1234 was killed by SIGSEGV while calling 'crash'");
  EXPECT_FALSE(GetCrashReport(status).has_value());
  v1::CrashReport report;
  report.set_signal(11);
  report.set_signal_name("SIGSEGV");
  report.set_pid(1234);
  report.set_function("crash");
  report.add_frames("crash+0x10");
  SetCrashReport(status, report);
  std::optional<v1::CrashReport> read = GetCrashReport(status);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->signal_name(), "SIGSEGV");
  EXPECT_EQ(read->pid(), 1234);
  EXPECT_EQ(read->frames(0), "crash+0x10");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_WORKER_CRASHED);
}

TEST(StatusProto, RoundTripKeepsEverything) {
  absl::Status status =
      MakeError(absl::StatusCode::kUnavailable, v1::ERROR_REASON_WORKER_CRASHED,
                "worker died");
  v1::CrashReport report;
  report.set_signal(6);
  report.set_signal_name("SIGABRT");
  SetCrashReport(status, report);

  google::rpc::Status proto = StatusToProto(status);
  EXPECT_EQ(proto.code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(proto.message(), "worker died");
  EXPECT_EQ(proto.details_size(), 2);

  // Through the wire format, as it crosses the worker channel.
  google::rpc::Status parsed;
  ASSERT_TRUE(parsed.ParseFromString(proto.SerializeAsString()));
  absl::Status back = StatusFromProto(parsed);
  EXPECT_EQ(back.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(back.message()), "worker died");
  EXPECT_EQ(GetErrorReason(back), v1::ERROR_REASON_WORKER_CRASHED);
  ASSERT_TRUE(GetCrashReport(back).has_value());
  EXPECT_EQ(GetCrashReport(back)->signal_name(), "SIGABRT");
}

TEST(StatusProto, OkIsOk) {
  google::rpc::Status proto = StatusToProto(absl::OkStatus());
  EXPECT_EQ(proto.code(), 0);
  EXPECT_TRUE(StatusFromProto(proto).ok());
}

absl::Status FailIf(bool fail) {
  if (fail) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST, "failed");
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ValueOrFail(bool fail) {
  if (fail) return absl::NotFoundError("none");
  return 7;
}

absl::Status UsesMacros(bool fail_first, bool fail_second, int* out) {
  RETURN_IF_ERROR(FailIf(fail_first));
  ASSIGN_OR_RETURN(int value, ValueOrFail(fail_second));
  ASSIGN_OR_RETURN(*out, ValueOrFail(false));
  *out += value;
  return absl::OkStatus();
}

TEST(Macros, ReturnEarlyOnErrorAndAssignOtherwise) {
  int out = 0;
  absl::Status status = UsesMacros(true, false, &out);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_EQ(out, 0);
  status = UsesMacros(false, true, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(out, 0);
  ASSERT_TRUE(UsesMacros(false, false, &out).ok());
  EXPECT_EQ(out, 14);
}

google::protobuf::Duration MakeDuration(int64_t seconds, int32_t nanos) {
  google::protobuf::Duration duration;
  duration.set_seconds(seconds);
  duration.set_nanos(nanos);
  return duration;
}

TEST(DurationField, ConvertsAndRefusesWhatIsNotADuration) {
  absl::StatusOr<absl::Duration> ok =
      DurationField(MakeDuration(2, 500000000), "timeout", false, "x");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, absl::Milliseconds(2500));
  EXPECT_EQ(*DurationField(MakeDuration(0, 0), "timeout", true, "x"),
            absl::ZeroDuration());

  absl::StatusOr<absl::Duration> zero =
      DurationField(MakeDuration(0, 0), "idle_timeout", false,
                    "for the server's default");
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(zero.status()), v1::ERROR_REASON_INVALID_REQUEST);
  EXPECT_EQ(zero.status().message(),
            "field 'idle_timeout' must be a positive duration (got 0s 0ns); "
            "leave it unset for the server's default");
  for (const auto& [seconds, nanos] :
       {std::pair<int64_t, int32_t>{-1, 0}, {0, -1}, {1, 1000000000}}) {
    absl::StatusOr<absl::Duration> bad = DurationField(
        MakeDuration(seconds, nanos), "timeout", true, "for no limit");
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
        << seconds << "s " << nanos << "ns";
    EXPECT_THAT(std::string(bad.status().message()),
                ::testing::StartsWith(
                    "field 'timeout' must be a duration of zero or more"));
  }
}

}  // namespace
}  // namespace ffid
