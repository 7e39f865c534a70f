#include "server/rpc_observer.h"

#include "gtest/gtest.h"

namespace ffid::server {
namespace {

TEST(ParseTraceparentTest, TakesTheTraceAndParentIds) {
  TraceContext trace;
  ASSERT_TRUE(ParseTraceparent(
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &trace));
  EXPECT_EQ(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(trace.span_id, "00f067aa0ba902b7");
  // A later version may append fields.
  EXPECT_TRUE(ParseTraceparent(
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
      &trace));
}

TEST(ParseTraceparentTest, RefusesMalformedHeaders) {
  TraceContext trace;
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
           "00-4bf92f35-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(ParseTraceparent(bad, &trace)) << bad;
  }
  EXPECT_TRUE(trace.trace_id.empty());
}

}  // namespace
}  // namespace ffid::server
