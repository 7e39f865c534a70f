#include "server/health.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ffid::server {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// How often a Watch with nothing to say checks whether its client left:
// gRPC's synchronous API has no wake-up for that.
constexpr absl::Duration kWatchCancelPoll = absl::Milliseconds(200);

}  // namespace

HealthService::HealthService(std::vector<std::string> services)
    : services_(std::move(services)) {}

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || serving_ == serving) return;
  serving_ = serving;
  ++version_;
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  serving_ = false;
  ++version_;
}

HealthService::ServingStatus HealthService::StatusLocked(
    const std::string& service) const {
  if (!service.empty() &&
      std::find(services_.begin(), services_.end(), service) ==
          services_.end()) {
    return HealthCheckResponse::SERVICE_UNKNOWN;
  }
  return serving_ ? HealthCheckResponse::SERVING
                  : HealthCheckResponse::NOT_SERVING;
}

grpc::Status HealthService::Check(grpc::ServerContext* /*context*/,
                                  const HealthCheckRequest* request,
                                  HealthCheckResponse* response) {
  absl::ReaderMutexLock lock(&mu_);
  const ServingStatus status = StatusLocked(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("ffid serves no service named '", request->service(),
                     "'"));
  }
  response->set_status(status);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(
    grpc::ServerContext* context, const HealthCheckRequest* request,
    grpc::ServerWriter<HealthCheckResponse>* writer) {
  {
    absl::MutexLock lock(&mu_);
    if (watches_ >= kMaxWatches) {
      return grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("ffid serves at most ", kMaxWatches,
                       " health watches at once; poll with Check instead"));
    }
    ++watches_;
  }
  absl::Cleanup unwatch = [this] {
    absl::MutexLock lock(&mu_);
    --watches_;
  };
  uint64_t seen = 0;
  bool first = true;
  for (;;) {
    HealthCheckResponse response;
    bool last;
    {
      absl::MutexLock lock(&mu_);
      auto news = [this, &seen, first]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return first || version_ != seen;
      };
      while (!news() && !context->IsCancelled()) {
        mu_.AwaitWithTimeout(absl::Condition(&news), kWatchCancelPoll);
      }
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED,
                            "the watcher went away");
      }
      seen = version_;
      response.set_status(StatusLocked(request->service()));
      last = shut_down_;
    }
    first = false;
    // Written without the lock: a slow watcher must not hold up the others.
    if (!writer->Write(response)) {
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          "the watcher went away");
    }
    if (last) return grpc::Status::OK;
  }
}

}  // namespace ffid::server
