#include "server/reflection_guard.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "server/log.h"

namespace ffid::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

class ReflectionGuard : public grpc::experimental::Interceptor {
 public:
  ReflectionGuard(grpc::experimental::ServerRpcInfo* info,
                  AccessControl* access)
      : info_(info), access_(access) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      grpc::ServerContextBase* context = info_->server_context();
      absl::StatusOr<Caller> caller = access_->Admit(*context, false);
      std::string refusal;
      if (!caller.ok()) {
        refusal = std::string(caller.status().message());
      } else if (caller->principal == "anonymous") {
        refusal =
            "the caller has no identity (no unix peer, bearer token or "
            "client certificate)";
      }
      if (!refusal.empty()) {
        Log(LogLevel::kWarning, "server reflection refused",
            {{"method", info_->method()}, {"why", refusal}});
        context->TryCancel();
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* const info_;
  AccessControl* const access_;
};

class ReflectionGuardFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ReflectionGuardFactory(std::shared_ptr<AccessControl> access)
      : access_(std::move(access)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (!IsReflectionMethod(info->method())) return nullptr;
    return new ReflectionGuard(info, access_.get());
  }

 private:
  const std::shared_ptr<AccessControl> access_;
};

class WithoutReflectionOption : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* /*arguments*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const std::unique_ptr<grpc::ServerBuilderPlugin>&
                              plugin) {
                         return plugin->name() == "proto_server_reflection";
                       }),
        plugins->end());
  }
};

}  // namespace

std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection() {
  return std::make_unique<WithoutReflectionOption>();
}

bool IsReflectionMethod(absl::string_view method) {
  return absl::StartsWith(method, "/grpc.reflection.");
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeReflectionGuardFactory(std::shared_ptr<AccessControl> access) {
  return std::make_unique<ReflectionGuardFactory>(std::move(access));
}

}  // namespace ffid::server
