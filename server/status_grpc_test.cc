#include "server/status_grpc.h"

#include <string>

#include "ffi/errors.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"

namespace ffid::server {
namespace {

google::rpc::Status Details(const grpc::Status& status) {
  google::rpc::Status details;
  EXPECT_TRUE(details.ParseFromString(status.error_details()));
  return details;
}

google::rpc::ErrorInfo FindErrorInfo(const google::rpc::Status& details) {
  google::rpc::ErrorInfo info;
  for (const auto& any : details.details()) {
    if (any.type_url() == kErrorInfoTypeUrl) {
      EXPECT_TRUE(info.ParseFromString(any.value()));
    }
  }
  return info;
}

TEST(StatusGrpcTest, OkIsOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusGrpcTest, CodeMessageAndErrorInfo) {
  absl::Status status = NotFoundError(v1::ERROR_REASON_SYMBOL_NOT_FOUND,
                                      "symbol 'nope' not found in libm.so.6");
  grpc::Status converted = ToGrpcStatus(status);
  EXPECT_EQ(converted.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(converted.error_message(), "symbol 'nope' not found in libm.so.6");
  google::rpc::Status details = Details(converted);
  EXPECT_EQ(details.code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(details.message(), converted.error_message());
  google::rpc::ErrorInfo info = FindErrorInfo(details);
  EXPECT_EQ(info.reason(), "SYMBOL_NOT_FOUND");
  EXPECT_EQ(info.domain(), "ffid.dev");
}

TEST(StatusGrpcTest, EveryCanonicalCodeKeepsItsNumber) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status status(static_cast<absl::StatusCode>(code), "x");
    EXPECT_EQ(static_cast<int>(ToGrpcStatus(status).error_code()), code);
  }
}

TEST(StatusGrpcTest, CrashReportTravelsAsAny) {
  absl::Status status = MakeError(absl::StatusCode::kUnavailable,
                                  v1::ERROR_REASON_WORKER_CRASHED,
                                  "worker 12 was killed by SIGSEGV");
  v1::CrashReport report;
  report.set_signal(11);
  report.set_signal_name("SIGSEGV");
  report.set_pid(12);
  report.set_function("crash_null");
  SetCrashReport(status, report);

  grpc::Status converted = ToGrpcStatus(status);
  google::rpc::Status details = Details(converted);
  ASSERT_EQ(details.details_size(), 2);
  bool found = false;
  for (const auto& any : details.details()) {
    v1::CrashReport unpacked;
    if (any.UnpackTo(&unpacked)) {
      found = true;
      EXPECT_EQ(unpacked.signal_name(), "SIGSEGV");
      EXPECT_EQ(unpacked.function(), "crash_null");
    }
  }
  EXPECT_TRUE(found);

  absl::Status back = FromGrpcStatus(converted);
  EXPECT_EQ(back.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(back.message(), "worker 12 was killed by SIGSEGV");
  EXPECT_EQ(GetErrorReason(back), v1::ERROR_REASON_WORKER_CRASHED);
  ASSERT_TRUE(GetCrashReport(back).has_value());
  EXPECT_EQ(GetCrashReport(back)->pid(), 12);
}

TEST(StatusGrpcTest, MissingReasonBecomesInternal) {
  absl::Status status = absl::UnknownError("something odd");
  status.SetPayload("type.googleapis.com/example.Other", absl::Cord("x"));
  grpc::Status converted = ToGrpcStatus(status);
  EXPECT_EQ(converted.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(converted.error_message(), "something odd");
  google::rpc::Status details = Details(converted);
  EXPECT_EQ(FindErrorInfo(details).reason(), "INTERNAL");
  EXPECT_EQ(details.details_size(), 2);  // The other payload survives.
}

TEST(StatusGrpcTest, FromGrpcStatusWithoutDetails) {
  absl::Status back = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"));
  EXPECT_EQ(back.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(back.message(), "connection refused");
  EXPECT_EQ(GetErrorReason(back), v1::ERROR_REASON_UNSPECIFIED);
}

}  // namespace
}  // namespace ffid::server
