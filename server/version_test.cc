#include "server/version.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::server {
namespace {

TEST(VersionTest, IsTheProjectVersionCMakeWasGiven) {
  EXPECT_EQ(Version(), FFID_EXPECTED_VERSION);
  EXPECT_THAT(std::string(Version()),
              ::testing::MatchesRegex("[0-9]+\\.[0-9]+\\.[0-9]+"));
}

}  // namespace
}  // namespace ffid::server
