#include "server/health.h"

#include <stdlib.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace ffid::server {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

// A real gRPC server on a unix socket serving only the health service,
// and a stub for it.
class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ffid-health-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    const std::string address = "unix:" + dir_ + "/health.sock";
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(&health_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = Health::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    health_.Shutdown();
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    unlink((dir_ + "/health.sock").c_str());
    rmdir(dir_.c_str());
  }

  grpc::Status Check(const std::string& service,
                     HealthCheckResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    HealthCheckRequest request;
    request.set_service(service);
    return stub_->Check(&context, request, response);
  }

  std::string dir_;
  HealthService health_{{"ffid.v1.Ffi"}};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST_F(HealthServiceTest, CheckFollowsSetServingForTheServerAndItsService) {
  HealthCheckResponse response;
  ASSERT_TRUE(Check("", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);

  health_.SetServing(true);
  for (const std::string service : {"", "ffid.v1.Ffi"}) {
    ASSERT_TRUE(Check(service, &response).ok()) << service;
    EXPECT_EQ(response.status(), HealthCheckResponse::SERVING) << service;
  }
  health_.SetServing(false);
  ASSERT_TRUE(Check("ffid.v1.Ffi", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthServiceTest, CheckOfAnUnknownServiceIsNotFound) {
  HealthCheckResponse response;
  grpc::Status status = Check("no.such.Service", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("'no.such.Service'"));
}

TEST_F(HealthServiceTest, ShutdownIsNotServingForGood) {
  health_.SetServing(true);
  health_.Shutdown();
  health_.SetServing(true);
  HealthCheckResponse response;
  ASSERT_TRUE(Check("", &response).ok());
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
}

// Watch sends the status at once, then every change; Shutdown() sends the
// last NOT_SERVING and ends the stream with OK.
TEST_F(HealthServiceTest, WatchSendsEachChangeAndEndsAtShutdown) {
  health_.SetServing(true);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  HealthCheckRequest request;
  request.set_service("ffid.v1.Ffi");
  auto reader = stub_->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  health_.SetServing(false);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health_.SetServing(true);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  health_.Shutdown();
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
}

// An unknown service is SERVICE_UNKNOWN for Watch, which stays open.
TEST_F(HealthServiceTest, WatchOfAnUnknownServiceStaysOpen) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  HealthCheckRequest request;
  request.set_service("no.such.Service");
  auto reader = stub_->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  health_.SetServing(true);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// Each Watch holds a server thread, and health needs no identity: past
// kMaxWatches at once, a Watch is refused (Check still answers).
TEST_F(HealthServiceTest, WatchesPastTheLimitAreRefused) {
  health_.SetServing(true);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<HealthCheckResponse>>>
      readers;
  HealthCheckRequest request;
  HealthCheckResponse response;
  for (int i = 0; i < HealthService::kMaxWatches; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->Watch(contexts.back().get(), request));
    // Read the first answer: the Watch is counted by then.
    ASSERT_TRUE(readers.back()->Read(&response)) << i;
  }
  grpc::ClientContext context;
  auto refused = stub_->Watch(&context, request);
  EXPECT_FALSE(refused->Read(&response));
  grpc::Status status = refused->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("poll with Check instead"));
  ASSERT_TRUE(Check("", &response).ok());

  // A watcher that leaves makes room for another.
  contexts.front()->TryCancel();
  while (readers.front()->Read(&response)) {
  }
  (void)readers.front()->Finish();
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  bool admitted = false;
  while (!admitted && absl::Now() < give_up) {
    grpc::ClientContext again;
    auto reader = stub_->Watch(&again, request);
    admitted = reader->Read(&response);
    again.TryCancel();
    while (reader->Read(&response)) {
    }
    (void)reader->Finish();
    if (!admitted) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(admitted);
  health_.Shutdown();
  for (auto& reader : readers) {
    while (reader->Read(&response)) {
    }
  }
}

}  // namespace
}  // namespace ffid::server
