#include "server/rpc_observer.h"

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ffi/errors.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/interceptor.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/status_grpc.h"

namespace ffid::server {
namespace {

constexpr absl::string_view kUnaryCallMethod = "/ffid.v1.Ffi/Call";
constexpr size_t kMaxRequestIdBytes = 128;

bool IsLowerHex(absl::string_view text, size_t length) {
  if (text.size() != length) return false;
  bool all_zero = true;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    if (c != '0') all_zero = false;
  }
  return !all_zero;
}

bool IsPrintable(absl::string_view text) {
  for (char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

absl::string_view CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

TraceContext TraceFromMetadata(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  TraceContext trace;
  auto parent = metadata.find("traceparent");
  if (parent != metadata.end() &&
      ParseTraceparent(absl::string_view(parent->second.data(),
                                         parent->second.size()),
                       &trace)) {
    return trace;
  }
  auto request_id = metadata.find("x-request-id");
  if (request_id != metadata.end()) {
    absl::string_view id(request_id->second.data(),
                         request_id->second.size());
    if (!id.empty() && id.size() <= kMaxRequestIdBytes && IsPrintable(id)) {
      trace.trace_id = std::string(id);
    }
  }
  return trace;
}

std::atomic<int64_t>& InFlight() {
  static std::atomic<int64_t> in_flight{0};
  return in_flight;
}

class RpcObserver final : public grpc::experimental::Interceptor {
 public:
  // gRPC makes one per RPC as it starts and deletes it once the RPC is
  // over, which is what RpcsInFlight() counts.
  explicit RpcObserver(grpc::experimental::ServerRpcInfo* info)
      : method_(info->method() == nullptr ? "" : info->method()),
        started_(absl::Now()) {
    InFlight().fetch_add(1, std::memory_order_relaxed);
  }
  ~RpcObserver() override {
    InFlight().fetch_sub(1, std::memory_order_relaxed);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods)
      override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      if (auto* metadata = methods->GetRecvInitialMetadata()) {
        trace_ = TraceFromMetadata(*metadata);
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      Finish(methods->GetSendStatus());
    }
    methods->Proceed();
  }

 private:
  void Finish(const grpc::Status& status) {
    const absl::Duration elapsed = absl::Now() - started_;
    std::string reason;
    if (!status.ok()) {
      v1::ErrorReason code = GetErrorReason(FromGrpcStatus(status));
      if (code != v1::ERROR_REASON_UNSPECIFIED) reason = ReasonName(code);
    }
    absl::string_view method = method_;
    if (!method.empty() && method[0] == '/') method.remove_prefix(1);
    const absl::string_view code = CodeName(status.error_code());
    Metrics& metrics = Metrics::Get();
    metrics.RecordRpc(method, code, reason, elapsed);
    if (method_ == kUnaryCallMethod) {
      metrics.RecordCall("unary", status.ok() ? "OK" : reason, elapsed);
    }
    const LogLevel level =
        !status.ok() && IsServerSideFailure(status.error_code())
            ? LogLevel::kWarning
            : LogLevel::kDebug;
    if (!LogEnabled(level)) return;
    LogRpc(level,
           status.ok() ? "rpc" : "rpc failed: " + status.error_message(),
           method, code, reason, elapsed, trace_);
  }

  std::string method_;
  absl::Time started_;
  TraceContext trace_;
};

class RpcObserverFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcObserver(info);
  }
};

}  // namespace

bool ParseTraceparent(absl::string_view value, TraceContext* out) {
  std::vector<absl::string_view> parts = absl::StrSplit(value, '-');
  if (parts.size() < 4) return false;
  // Version ff is forbidden; version 00 has exactly four parts; later
  // versions may append more, which we ignore.
  if (!IsLowerHex(parts[0], 2) && parts[0] != "00") return false;
  if (parts[0] == "ff" || (parts[0] == "00" && parts.size() != 4)) {
    return false;
  }
  if (!IsLowerHex(parts[1], 32) || !IsLowerHex(parts[2], 16)) return false;
  if (parts[3].size() != 2) return false;
  out->trace_id = std::string(parts[1]);
  out->span_id = std::string(parts[2]);
  return true;
}

int64_t RpcsInFlight() {
  return InFlight().load(std::memory_order_relaxed);
}

TraceContext TraceOf(const grpc::ServerContextBase& context) {
  return TraceFromMetadata(context.client_metadata());
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcObserverFactory() {
  return std::make_unique<RpcObserverFactory>();
}

bool IsServerSideFailure(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::INTERNAL ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::UNKNOWN ||
         code == grpc::StatusCode::DATA_LOSS;
}

void LogRpc(LogLevel level, absl::string_view message,
            absl::string_view method, absl::string_view code,
            absl::string_view reason, absl::Duration elapsed,
            const TraceContext& trace) {
  if (!LogEnabled(level)) return;
  Log(level, message,
      {{"method", std::string(method)},
       {"code", std::string(code)},
       {"reason", std::string(reason)},
       {"duration_ms", std::to_string(absl::ToDoubleMilliseconds(elapsed))},
       {"trace_id", trace.trace_id},
       {"span_id", trace.span_id}});
}

}  // namespace ffid::server
