// Server reflection for callers with an identity only: a gRPC server
// interceptor that, for the reflection service's methods
// (/grpc.reflection.*), identifies the caller the way every ffid.v1.Ffi
// request is identified (AccessControl::Admit, server/access.h) and cancels
// the RPC when the caller is anonymous, unknown (a bad token) or denied by
// its policy. Reflection describes the whole API; a client that can call it
// can also learn it, and an anonymous one (TCP with --insecure, TLS without a
// client certificate or token) gets nothing. The refused client sees
// CANCELLED (an interceptor cannot answer with a status of its own); the
// daemon logs a warning with the reason.
//
// Health checking (grpc.health.v1.Health) is not guarded on purpose:
// orchestrators' probes carry no credentials, and it says only SERVING or
// NOT_SERVING.
//
// The factory holds a shared reference to the AccessControl; it is
// thread-safe, and gRPC creates one interceptor per reflection RPC (none for
// other methods).
#ifndef FFID_SERVER_REFLECTION_GUARD_H_
#define FFID_SERVER_REFLECTION_GUARD_H_

#include <memory>

#include "absl/strings/string_view.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/access.h"

namespace ffid::server {

// Whether `method` ("/package.Service/Method") belongs to gRPC server
// reflection (v1 or v1alpha).
bool IsReflectionMethod(absl::string_view method);

// A ServerBuilder option that removes the reflection plugin from the
// builder: libgrpc++_reflection registers it for every ServerBuilder at
// load time, so not calling InitProtoReflectionServerBuilderPlugin() is not
// enough to leave reflection out (--no-reflection, the health-only
// listener). For grpc::ServerBuilder::SetOption.
std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection();

// For grpc::ServerBuilder::experimental().SetInterceptorCreators.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeReflectionGuardFactory(std::shared_ptr<AccessControl> access);

}  // namespace ffid::server

#endif  // FFID_SERVER_REFLECTION_GUARD_H_
