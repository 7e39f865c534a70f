// ffictl end to end: the real binary against the real daemon.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/daemon.h"
#include "tests/testing/subprocess.h"

namespace ffid::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

class FfictlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon).release();
  }

  static void TearDownTestSuite() {
    if (daemon_ == nullptr) return;
    absl::Status stopped = daemon_->Stop();
    EXPECT_TRUE(stopped.ok()) << stopped;
    delete daemon_;
    daemon_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(daemon_, nullptr); }

  // Runs ffictl with `args`, finding the daemon through FFID_ADDRESS.
  ProcessResult Ffictl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {FfictlPath()};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<ProcessResult> result =
        RunProcess(argv, {{"FFID_ADDRESS", daemon_->address()}});
    EXPECT_TRUE(result.ok()) << result.status();
    return result.value_or(ProcessResult{});
  }

  // ffictl call <fixture> DECLARATION ARGS..., expecting success; returns
  // stdout.
  std::string CallFixture(const std::string& declaration,
                          const std::vector<std::string>& args = {},
                          const std::vector<std::string>& options = {}) {
    std::vector<std::string> argv = options;
    argv.push_back("call");
    argv.push_back(FixturePath());
    argv.push_back(declaration);
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult result = Ffictl(argv);
    EXPECT_EQ(result.exit_code, 0) << declaration << ": " << result.err;
    EXPECT_EQ(result.err, "") << declaration;
    return result.out;
  }

  static inline Daemon* daemon_ = nullptr;
};

// The three examples of the README.
TEST_F(FfictlTest, Cosine) {
  ProcessResult result =
      Ffictl({"call", "libm.so.6", "double cos(double)", "0.5"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "0.8775825618903728\n");
  EXPECT_EQ(result.err, "");
}

TEST_F(FfictlTest, Strlen) {
  ProcessResult result =
      Ffictl({"call", "libc.so.6", "size_t strlen(const char *s)", "hello"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "5\n");
}

TEST_F(FfictlTest, LabsOfANegativeNumber) {
  ProcessResult result =
      Ffictl({"call", "libc.so.6", "long labs(long)", "-9000000000"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "9000000000\n");
}

TEST_F(FfictlTest, AddressFlagInsteadOfEnvironment) {
  absl::StatusOr<ProcessResult> result = RunProcess(
      {FfictlPath(), "--address", daemon_->address(), "call", "libm.so.6",
       "double cos(double)", "0.5"},
      {{"FFID_ADDRESS", std::nullopt}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->err;
  EXPECT_EQ(result->out, "0.8775825618903728\n");
  // --address wins over FFID_ADDRESS.
  result = RunProcess({FfictlPath(), "--address=" + daemon_->address(), "call",
                       "libm.so.6", "double cos(double)", "0"},
                      {{"FFID_ADDRESS", "unix:/nonexistent/ffid.sock"}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->err;
  EXPECT_EQ(result->out, "1\n");
}

TEST_F(FfictlTest, Json) {
  EXPECT_EQ(Ffictl({"--json", "call", "libm.so.6", "double cos(double)", "0.5"})
                .out,
            "{\"result\": 0.8775825618903728}\n");
  EXPECT_EQ(CallFixture("const char *fx_greeting(void)", {}, {"--json"}),
            "{\"result\": \"h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93\"}\n");
  EXPECT_EQ(CallFixture("double fx_double_nan(void)", {}, {"--json"}),
            "{\"result\": \"nan\"}\n");
  EXPECT_EQ(CallFixture("double fx_double_neg_inf(void)", {}, {"--json"}),
            "{\"result\": \"-inf\"}\n");
  EXPECT_EQ(CallFixture("const char *fx_null_string(void)", {}, {"--json"}),
            "{\"result\": null}\n");
  EXPECT_EQ(CallFixture("void fx_noop(void)", {}, {"--json"}),
            "{\"result\": null}\n");
  EXPECT_EQ(CallFixture("bool fx_bool_not(bool)", {"true"}, {"--json"}),
            "{\"result\": false}\n");
  EXPECT_EQ(CallFixture("uint64_t fx_uint64_max(void)", {}, {"--json"}),
            "{\"result\": 18446744073709551615}\n");
  EXPECT_EQ(CallFixture("int fx_set_errno(int)", {"34"}, {"--json", "--errno"}),
            "{\"result\": -1, \"errno\": 34}\n");
  EXPECT_EQ(CallFixture("const char *fx_string_id(const char *)",
                        {"\"tab\\there \\\"quoted\\\"\""}, {"--json"}),
            "{\"result\": \"tab\\there \\\"quoted\\\"\"}\n");
  EXPECT_THAT(CallFixture("int *fx_static_ints(void)", {}, {"--json"}),
              MatchesRegex("\\{\"result\": \\{\"address\": \"0x[0-9a-f]+\", "
                           "\"handle\": \"mem_[0-9a-f_]+\"\\}\\}\n"));
}

TEST_F(FfictlTest, ScalarShapes) {
  EXPECT_EQ(CallFixture("int fx_add(int, int)", {"2", "-7"}), "-5\n");
  EXPECT_EQ(CallFixture("int fx_add(int, int)", {"0x10", "0b11"}), "19\n");
  EXPECT_EQ(CallFixture("int fx_add(int, int)", {"010", "'a'"}), "105\n");
  EXPECT_EQ(CallFixture("int64_t fx_int64_id(int64_t)",
                        {"-9223372036854775808"}),
            "-9223372036854775808\n");
  EXPECT_EQ(CallFixture("unsigned long long fx_ullong_id(unsigned long long)",
                        {"0xffffffffffffffffULL"}),
            "18446744073709551615\n");
  EXPECT_EQ(CallFixture("char fx_char_id(char)", {"'A'"}), "65\n");
  EXPECT_EQ(CallFixture("bool fx_bool_not(bool)", {"true"}), "false\n");
  EXPECT_EQ(CallFixture("float fx_float_third(void)"), "0.33333334\n");
  EXPECT_EQ(CallFixture("float fx_float_id(float)", {"0.1"}), "0.1\n");
  EXPECT_EQ(CallFixture("double fx_double_third(void)"),
            "0.3333333333333333\n");
  EXPECT_EQ(CallFixture("double fx_double_id(double)", {"-0.0"}), "-0\n");
  EXPECT_EQ(CallFixture("double fx_double_id(double)", {"inf"}), "inf\n");
  EXPECT_EQ(CallFixture("double fx_double_id(double)", {"-inf"}), "-inf\n");
  EXPECT_EQ(CallFixture("double fx_double_id(double)", {"nan"}), "nan\n");
  EXPECT_EQ(CallFixture("double fx_double_id(double)", {"0x1.8p1"}), "3\n");
  EXPECT_EQ(CallFixture("double fx_double_id(double)", {"1e-3"}), "0.001\n");
}

TEST_F(FfictlTest, StringsAndPointers) {
  EXPECT_EQ(CallFixture("const char *fx_greeting(void)"),
            "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93\n");
  EXPECT_EQ(CallFixture("size_t fx_strlen(const char *)", {"\"a\\tb\""}),
            "3\n");
  EXPECT_EQ(CallFixture("size_t fx_utf8_count(const char *)",
                        {"\"\\u00e9\\u2713\""}),
            "2\n");
  EXPECT_EQ(CallFixture("size_t fx_utf8_count(const char *)",
                        {"h\xc3\xa9llo"}),
            "5\n");
  EXPECT_EQ(CallFixture("const char *fx_null_string(void)"), "NULL\n");
  EXPECT_EQ(CallFixture("void *fx_null_ptr(void)"), "NULL\n");
  EXPECT_EQ(CallFixture("int fx_is_null(const void *)", {"NULL"}), "1\n");
  EXPECT_EQ(CallFixture("int fx_is_null(const void *)", {"0"}), "1\n");
  EXPECT_EQ(CallFixture("int fx_string_is_null(const char *)", {"null"}),
            "1\n");
  EXPECT_THAT(CallFixture("int *fx_static_ints(void)"),
              MatchesRegex("0x[0-9a-f]+ \\(mem_[0-9a-f_]+\\)\n"));
  EXPECT_EQ(CallFixture("void fx_noop(void)"), "");
}

TEST_F(FfictlTest, Errno) {
  EXPECT_EQ(CallFixture("int fx_set_errno(int)", {"2"}, {"--errno"}),
            "-1\nerrno: 2 (ENOENT: No such file or directory)\n");
}

TEST_F(FfictlTest, VariadicArguments) {
  ProcessResult result = Ffictl({"call", FixturePath(),
                                 "int fx_sum_variadic(int n, ...)", "3", "1",
                                 "2", "-10"});
  if (result.exit_code != 0 && absl::StrContains(result.err, "UNSUPPORTED")) {
    GTEST_SKIP() << result.err;
  }
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "-7\n");
}

TEST_F(FfictlTest, RepeatMeasuresLatency) {
  ProcessResult result = Ffictl({"--repeat", "200", "call", FixturePath(),
                                 "int fx_add(int, int)", "20", "22"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "42\n");
  EXPECT_THAT(result.err,
              MatchesRegex("200 calls: median [0-9.]+ us, p99 [0-9.]+ us, "
                           "mean [0-9.]+ us\n"));
}

TEST_F(FfictlTest, ServerErrorsNameTheirReason) {
  struct Case {
    std::vector<std::string> args;
    const char* prefix;
    const char* mentions;
  };
  const std::string fixture = FixturePath();
  for (const Case& c : std::vector<Case>{
           {{"call", "libm.so.6", "double no_such_function(double)", "1"},
            "error: SYMBOL_NOT_FOUND: ",
            "no_such_function"},
           {{"call", "libffid_nothing.so.9", "int f(void)"},
            "error: LIBRARY_NOT_FOUND: ",
            "libffid_nothing.so.9"},
           {{"call", "libm.so.6", "double cos(double"},
            "error: DECLARATION_INVALID: ",
            "column"},
           {{"call", fixture, "int8_t fx_int8_id(int8_t x)", "300"},
            "error: VALUE_OUT_OF_RANGE: ",
            "300"},
           {{"call", fixture, "void fx_crash_null(void)"},
            "error: WORKER_CRASHED: ",
            "SIGSEGV"},
           {{"call", fixture, "void fx_exit3(void)"},
            "error: WORKER_CRASHED: ",
            "3"},
       }) {
    SCOPED_TRACE(c.args[2]);
    ProcessResult result = Ffictl(c.args);
    EXPECT_EQ(result.exit_code, 1);
    EXPECT_EQ(result.out, "");
    EXPECT_THAT(result.err, StartsWith(c.prefix));
    EXPECT_THAT(result.err, HasSubstr(c.mentions));
  }
  EXPECT_TRUE(daemon_->IsRunning());
}

TEST_F(FfictlTest, BadArgumentsAreReportedBeforeCalling) {
  ProcessResult result =
      Ffictl({"call", "libm.so.6", "double cos(double x)", "1", "2"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err,
            "error: ARGUMENT_COUNT: 'cos' takes 1 argument (double) but 2 "
            "were given\n");
  result = Ffictl({"call", "libm.so.6", "double cos(double x)", "abc"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err,
            "error: TYPE_MISMATCH: parameter 1 'x' of 'cos' (double): abc is "
            "not a floating-point literal\n");
  // A crash-prone function is never reached with a bad argument.
  result = Ffictl({"call", FixturePath(), "void fx_crash_null(void)", "1"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, StartsWith("error: ARGUMENT_COUNT: "));
}

// The daemon reports the version it was built as (CMake's project version)
// in GetServerInfo, which ffictl info prints; ffid --version says the same.
TEST_F(FfictlTest, InfoShowsTheDaemonsVersion) {
  ProcessResult info = Ffictl({"info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr(absl::StrCat("version: \"",
                                               FFID_EXPECTED_VERSION, "\"")));
  absl::StatusOr<ProcessResult> version =
      RunProcess({FfidPath(), "--version"});
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->exit_code, 0);
  EXPECT_EQ(version->out, absl::StrCat("ffid ", FFID_EXPECTED_VERSION, "\n"));
  EXPECT_THAT(daemon_->Log(), HasSubstr(absl::StrCat(
                                  "ffid ", FFID_EXPECTED_VERSION, " starting")));
}

TEST_F(FfictlTest, UnreachableDaemon) {
  absl::StatusOr<ProcessResult> result = RunProcess(
      {FfictlPath(), "--address",
       "unix:" + daemon_->temp_dir() + "/nobody-here.sock", "call", "libm.so.6",
       "double cos(double)", "0.5"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 1);
  EXPECT_THAT(result->err, StartsWith("error: UNAVAILABLE: "));
  EXPECT_THAT(result->err, HasSubstr("nobody-here.sock"));
  // A missing socket file is reported at once, not after the connect timeout.
  EXPECT_THAT(result->err, HasSubstr("does not exist: is the daemon running?"));
}

TEST_F(FfictlTest, UsageErrors) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {},
           {"--bogus", "call", "libm.so.6", "double cos(double)"},
           {"call", "libm.so.6"},
           {"frobnicate"},
           {"--repeat", "0", "call", "libm.so.6", "double cos(double)", "1"},
       }) {
    ProcessResult result = Ffictl(args);
    EXPECT_EQ(result.exit_code, 2) << result.err;
    EXPECT_THAT(result.err, StartsWith("error: USAGE: "));
    EXPECT_THAT(result.err, HasSubstr("usage: ffictl"));
    EXPECT_EQ(result.out, "");
  }
  ProcessResult help = Ffictl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, StartsWith("usage: ffictl"));
  EXPECT_THAT(help.out, HasSubstr("--json"));
}


// C initializer syntax for structs, unions, arrays and enums, against the
// type-system fixture (tests/fixtures/types_fixture.h, given with --cdef).
TEST_F(FfictlTest, InitializersInAndDesignatorsOut) {
  const std::vector<std::string> cdef = {"--cdef", FFID_TYPES_FIXTURE_HEADER};
  EXPECT_EQ(CallFixture("struct fxt_point fxt_point_add(struct fxt_point, "
                        "struct fxt_point)",
                        {"{1, 2}", "{.y = 20, .x = 10}"}, cdef),
            "{.x = 11, .y = 22}\n");
  EXPECT_EQ(CallFixture("double fxt_mixed_sum(struct fxt_mixed)",
                        {"{'a', 0.5, {1, 2, 3}, {.x = 4, .y = 5}}"}, cdef),
            "112.5\n");
  EXPECT_EQ(CallFixture("enum fxt_color fxt_color_next(enum fxt_color)",
                        {"FXT_GREEN"}, cdef),
            "FXT_BLUE\n");
  EXPECT_EQ(CallFixture("int fxt_holder_check(struct fxt_holder)",
                        {"{NULL, \"abcd\", FXT_RED}"}, cdef),
            "41\n");
  EXPECT_EQ(CallFixture("struct fxt_bits fxt_bits_bump(struct fxt_bits)",
                        {"{.a = 1, .b = -3, .c = 7, .d = 5}"}, cdef),
            "{.a = 2, .b = 3, .c = 8, .d = 10}\n");
  // Types declared in DECLARATION itself; the last function is called.
  EXPECT_EQ(CallFixture("struct q { int x, y; }; "
                        "struct q fxt_point_scale(struct q p, int k)",
                        {"{3, 4}", "2"}),
            "{.x = 6, .y = 8}\n");
  EXPECT_EQ(CallFixture("struct fxt_point fxt_point_add(struct fxt_point, "
                        "struct fxt_point)",
                        {"{1, 2}", "{3, 4}"}, {"--json", "--cdef",
                                                FFID_TYPES_FIXTURE_HEADER}),
            "{\"result\": {\"x\": 4, \"y\": 6}}\n");
}

TEST_F(FfictlTest, CastsFixVariadicTypes) {
  ProcessResult result = Ffictl({"call", "libc.so.6",
                                 "int snprintf(char *, size_t, const char *, ...)",
                                 "NULL", "0", "\"%.1f %ld %c\"", "(float)1.5",
                                 "(long)7", "(char)'x'"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "7\n");
}

// A cast converts any argument as C would, not only a variadic one.
TEST_F(FfictlTest, CastsOnFixedParameters) {
  EXPECT_EQ(CallFixture("long double fxt_long_double_half(long double)",
                        {"(int)7.9"}),
            "3.5\n");
  ProcessResult result =
      Ffictl({"call", "libm.so.6", "double floor(double)", "(float)0.1"});
  EXPECT_EQ(result.out, "0\n") << result.err;
  result = Ffictl({"call", "libm.so.6", "double sqrt(double)", "(float)2"});
  EXPECT_EQ(result.out, "1.4142135623730951\n") << result.err;
  result = Ffictl({"call", "libc.so.6", "int abs(int)", "(signed char)200"});
  EXPECT_EQ(result.out, "56\n") << result.err;
  result = Ffictl({"call", "libc.so.6", "long labs(long)", "(unsigned)-1"});
  EXPECT_EQ(result.out, "4294967295\n") << result.err;
  // Inside an initializer too.
  EXPECT_EQ(CallFixture("struct fxt_point fxt_point_add(struct fxt_point, "
                        "struct fxt_point)",
                        {"{(int)1.9, (char)258}", "{0, 0}"},
                        {"--cdef", FFID_TYPES_FIXTURE_HEADER}),
            "{.x = 1, .y = 2}\n");
  result = Ffictl({"call", "libc.so.6", "int abs(int)", "(int)1e300"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("VALUE_OUT_OF_RANGE"));
}

// long double at full precision; unions with every member.
TEST_F(FfictlTest, LongDoubleAndUnionResults) {
  const std::vector<std::string> cdef = {"--cdef", FFID_TYPES_FIXTURE_HEADER};
  EXPECT_EQ(CallFixture("long double fxt_long_double_third(long double)",
                        {"1"}),
            "0.33333333333333333334\n");
  EXPECT_EQ(CallFixture("long double fxt_long_double_third(long double)",
                        {"1"}, {"--json"}),
            "{\"result\": 0.33333333333333333334}\n");
  EXPECT_EQ(CallFixture("long double _Complex fxt_complex_scale("
                        "long double _Complex, long double)",
                        {"{1.5, 0.25}", "3"}),
            "{4.5, 0.75}\n");
  EXPECT_EQ(CallFixture("union fxt_number fxt_number_from_float(float)",
                        {"1.5"}, cdef),
            "{.i = 1069547520, .f = 1.5, .d = 5.28426686e-315}\n");
  // As JSON: every member, and the union's bytes under "#bytes".
  std::vector<std::string> json = cdef;
  json.push_back("--json");
  EXPECT_EQ(CallFixture("union fxt_number fxt_number_from_float(float)",
                        {"1.5"}, json),
            "{\"result\": {\"i\": 1069547520, \"f\": 1.5, \"d\": "
            "5.28426686e-315, \"#bytes\": \"0000c03f00000000\"}}\n");
}

TEST_F(FfictlTest, InitializerErrorsAreSpecific) {
  const std::vector<std::string> cdef = {"--cdef", FFID_TYPES_FIXTURE_HEADER};
  auto fails = [&](const std::string& declaration, const std::string& arg) {
    std::vector<std::string> argv = cdef;
    argv.insert(argv.end(), {"call", FixturePath(), declaration, arg});
    ProcessResult result = Ffictl(argv);
    EXPECT_EQ(result.exit_code, 1) << result.out;
    return result.err;
  };
  EXPECT_THAT(fails("int fxt_aligned_twice(struct fxt_aligned)", "{1, 2}"),
              ::testing::HasSubstr("too many initializers for 'struct "
                                   "fxt_aligned': 2 given, it has 1 member"));
  EXPECT_THAT(fails("int fxt_aligned_twice(struct fxt_aligned)", "{.z = 1}"),
              ::testing::HasSubstr("TYPE_MISMATCH"));
  EXPECT_THAT(fails("int fxt_aligned_twice(struct fxt_aligned)", "{.z = 1}"),
              ::testing::HasSubstr("'struct fxt_aligned' has no member 'z'"));
  EXPECT_THAT(fails("enum fxt_color fxt_color_next(enum fxt_color)",
                    "FXT_PURPLE"),
              ::testing::HasSubstr("'FXT_PURPLE' is not a constant of enum "
                                   "fxt_color"));
  EXPECT_THAT(fails("struct fxt_bits fxt_bits_bump(struct fxt_bits)",
                    "{.a = 9}"),
              ::testing::HasSubstr("VALUE_OUT_OF_RANGE"));
}

}  // namespace
}  // namespace ffid::testing
