#include "clients/cpp/ffictl/options.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::ffictl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseCommandLineTest, Call) {
  absl::StatusOr<Options> options = ParseCommandLine(
      {"call", "libm.so.6", "double cos(double)", "0.5"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->library, "libm.so.6");
  EXPECT_EQ(options->declaration, "double cos(double)");
  EXPECT_THAT(options->arguments, ElementsAre("0.5"));
  EXPECT_TRUE(options->address.empty());
  EXPECT_FALSE(options->json);
  EXPECT_EQ(options->repeat, 1);
}

TEST(ParseCommandLineTest, NegativeNumbersAndDashesAreArguments) {
  absl::StatusOr<Options> options = ParseCommandLine(
      {"call", "libc.so.6", "long labs(long)", "-7", "--json", "-"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_THAT(options->arguments, ElementsAre("-7", "--json", "-"));
  EXPECT_FALSE(options->json);
}

TEST(ParseCommandLineTest, Options) {
  absl::StatusOr<Options> options = ParseCommandLine(
      {"--address", "unix:/x.sock", "--json", "--errno", "--repeat=1000",
       "call", "lib", "void f(void)"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->address, "unix:/x.sock");
  EXPECT_TRUE(options->json);
  EXPECT_TRUE(options->capture_errno);
  EXPECT_EQ(options->repeat, 1000);
  EXPECT_TRUE(options->arguments.empty());
  options = ParseCommandLine(
      {"--address=localhost:1234", "--repeat", "3", "call", "lib", "f"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->address, "localhost:1234");
  EXPECT_EQ(options->repeat, 3);
}

TEST(ParseCommandLineTest, AuthenticationOptions) {
  absl::StatusOr<Options> options = ParseCommandLine(
      {"--address", "db.example:7000", "--token-file", "/run/token",
       "--ca=/etc/ffid/ca.pem", "--cert", "/c.pem", "--key=/c.key", "info"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->token_file, "/run/token");
  EXPECT_EQ(options->ca_file, "/etc/ffid/ca.pem");
  EXPECT_EQ(options->cert_file, "/c.pem");
  EXPECT_EQ(options->key_file, "/c.key");
  EXPECT_FALSE(options->insecure);
  EXPECT_EQ(options->command, "info");
  options = ParseCommandLine({"--insecure", "health"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->insecure);
  EXPECT_TRUE(options->ca_file.empty());
}

TEST(ParseCommandLineTest, Help) {
  EXPECT_TRUE(ParseCommandLine({"--help"})->help);
  EXPECT_TRUE(ParseCommandLine({"-h"})->help);
  EXPECT_TRUE(ParseCommandLine({"--json", "help"})->help);
  EXPECT_THAT(HelpText(), HasSubstr("usage: ffictl"));
}

TEST(ParseCommandLineTest, UsageErrors) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {{}, "missing command"},
           {{"--json"}, "missing command"},
           {{"--bogus", "call", "l", "d"}, "unknown option '--bogus'"},
           {{"-7", "call", "l", "d"}, "unknown option '-7'"},
           {{"frobnicate"}, "unknown command 'frobnicate'"},
           {{"call"}, "needs a LIBRARY"},
           {{"call", "libm.so.6"}, "needs a LIBRARY"},
           {{"--address"}, "--address needs a value"},
           {{"--address="}, "non-empty"},
           {{"--token-file"}, "--token-file needs a value"},
           {{"--ca=", "info"}, "--ca needs a file name"},
           {{"--key", "", "info"}, "--key needs a file name"},
           {{"--insecure=yes", "info"}, "unknown option '--insecure=yes'"},
           {{"--repeat", "0", "call", "l", "d"}, "--repeat needs a count"},
           {{"--repeat=x", "call", "l", "d"}, "--repeat needs a count"},
       }) {
    absl::StatusOr<Options> options = ParseCommandLine(c.args);
    ASSERT_FALSE(options.ok()) << c.message;
    EXPECT_THAT(options.status().message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace ffid::ffictl
