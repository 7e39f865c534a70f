// Unit tests of the client's pure parts; calls against a real daemon are in
// tests/.
#include "clients/cpp/ffid/client.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"

namespace ffid::client {
namespace {

using ::testing::HasSubstr;

TEST(StatusFromGrpcTest, KeepsCodeMessageReasonAndCrashReport) {
  google::rpc::Status details;
  details.set_code(grpc::StatusCode::UNAVAILABLE);
  details.set_message("worker 12 was killed by SIGSEGV");
  google::rpc::ErrorInfo info;
  info.set_reason("WORKER_CRASHED");
  info.set_domain("ffid.dev");
  details.add_details()->PackFrom(info);
  v1::CrashReport report;
  report.set_signal(11);
  report.set_signal_name("SIGSEGV");
  report.set_pid(12);
  details.add_details()->PackFrom(report);
  grpc::Status grpc_status(grpc::StatusCode::UNAVAILABLE,
                           "worker 12 was killed by SIGSEGV",
                           details.SerializeAsString());

  absl::Status status = StatusFromGrpc(grpc_status);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "worker 12 was killed by SIGSEGV");
  EXPECT_EQ(ErrorReason(status), "WORKER_CRASHED");
  std::optional<v1::CrashReport> crash = CrashReportOf(status);
  ASSERT_TRUE(crash.has_value());
  EXPECT_EQ(crash->signal_name(), "SIGSEGV");
  EXPECT_EQ(crash->pid(), 12);
}

TEST(StatusFromGrpcTest, PlainStatuses) {
  EXPECT_TRUE(StatusFromGrpc(grpc::Status::OK).ok());
  absl::Status status =
      StatusFromGrpc(grpc::Status(grpc::StatusCode::NOT_FOUND, "gone"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorReason(status), "");
  EXPECT_FALSE(CrashReportOf(status).has_value());
  // Undecodable details are ignored, not fatal.
  status = StatusFromGrpc(
      grpc::Status(grpc::StatusCode::INTERNAL, "x", std::string("\xff\xff", 2)));
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ErrorReason(status), "");
}

TEST(ErrorWithReasonTest, ReasonIsReadBack) {
  absl::Status status = ErrorWithReason(absl::StatusCode::kInvalidArgument,
                                        "TYPE_MISMATCH", "parameter 1: no");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "parameter 1: no");
  EXPECT_EQ(ErrorReason(status), "TYPE_MISMATCH");
}

TEST(ConnectTest, NobodyListening) {
  const std::string address =
      absl::StrCat("unix:/tmp/ffid-client-test-", getpid(), "-none.sock");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(address, absl::Milliseconds(300));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(client.status().message()), HasSubstr(address));
}

TEST(ConnectTest, EmptyAddress) {
  EXPECT_EQ(Client::Connect("", absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ffid::client
