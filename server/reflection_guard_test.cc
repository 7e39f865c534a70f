#include "server/reflection_guard.h"

#include "gtest/gtest.h"

namespace ffid::server {
namespace {

TEST(ReflectionGuardTest, KnowsTheReflectionMethodsAndNoOthers) {
  EXPECT_TRUE(IsReflectionMethod(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
  EXPECT_TRUE(IsReflectionMethod(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
  EXPECT_FALSE(IsReflectionMethod("/grpc.health.v1.Health/Check"));
  EXPECT_FALSE(IsReflectionMethod("/ffid.v1.Ffi/GetServerInfo"));
  EXPECT_FALSE(IsReflectionMethod(""));
}

}  // namespace
}  // namespace ffid::server
