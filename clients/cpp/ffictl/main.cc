// ffictl: calls one function of a native library through the ffid daemon.
//
//   ffictl [--address ADDR] [--token-file FILE] [--ca FILE]
//          [--cert FILE --key FILE] [--insecure] [--json] [--errno]
//          [--repeat N] [--cdef FILE] call LIBRARY 'DECLARATION' [ARG...]
//
//   ffictl [--address ADDR] health [SERVICE]
//   ffictl [--address ADDR] info
//
// `call` connects, creates a session, loads LIBRARY, resolves DECLARATION, converts
// the arguments to the resolved parameter types, calls and prints the result.
// Exit status 0 on success, 1 on any failure, 2 on a usage error.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cpp/ffictl/format.h"
#include "clients/cpp/ffictl/literals.h"
#include "clients/cpp/ffictl/options.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/health.h"
#include "google/protobuf/text_format.h"

namespace ffid::ffictl {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
// How long to wait for the daemon to accept the connection.
constexpr absl::Duration kConnectTimeout = absl::Seconds(5);

int Fail(const absl::Status& status) {
  std::string reason = client::ErrorReason(status);
  if (reason.empty()) reason = absl::StatusCodeToString(status.code());
  std::fprintf(stderr, "error: %s: %s\n", reason.c_str(),
               std::string(status.message()).c_str());
  if (std::optional<v1::CrashReport> crash = client::CrashReportOf(status)) {
    for (const std::string& frame : crash->frames()) {
      std::fprintf(stderr, "    %s\n", frame.c_str());
    }
  }
  return kExitFailure;
}

// Prints "N calls: median X us, p99 Y us, mean Z us".
void PrintLatency(std::vector<double> micros) {
  std::sort(micros.begin(), micros.end());
  const size_t n = micros.size();
  const double median = n % 2 == 1
                            ? micros[n / 2]
                            : (micros[n / 2 - 1] + micros[n / 2]) / 2;
  // The smallest sample that at least 99% of the samples do not exceed.
  size_t p99_index = (n * 99 + 99) / 100;
  p99_index = p99_index == 0 ? 0 : p99_index - 1;
  double sum = 0;
  for (double sample : micros) sum += sample;
  std::fprintf(stderr, "%zu calls: median %.1f us, p99 %.1f us, mean %.1f us\n",
               n, median, micros[std::min(p99_index, n - 1)], sum / n);
}

// `ffictl health`: prints the serving status; 0 only for SERVING.
int RunHealth(client::Client& connection, const Options& options) {
  absl::StatusOr<client::ServingStatus> status = client::CheckHealth(
      connection.channel(), options.health_service, kConnectTimeout);
  if (!status.ok()) return Fail(status.status());
  std::printf("%s\n", client::ServingStatusName(*status).c_str());
  return *status == client::ServingStatus::kServing ? 0 : kExitFailure;
}

// `ffictl info`: GetServerInfo in protobuf text format.
int RunInfo(client::Client& connection) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kConnectTimeout));
  v1::GetServerInfoRequest request;
  v1::GetServerInfoResponse response;
  grpc::Status status =
      connection.stub().GetServerInfo(&context, request, &response);
  if (!status.ok()) return Fail(client::StatusFromGrpc(status));
  std::string text;
  google::protobuf::TextFormat::PrintToString(response, &text);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int Run(const Options& options) {
  client::ConnectOptions connect;
  connect.address = options.address;
  connect.timeout = kConnectTimeout;
  connect.token_file = options.token_file;
  connect.ca_file = options.ca_file;
  connect.cert_file = options.cert_file;
  connect.key_file = options.key_file;
  connect.insecure = options.insecure;
  absl::StatusOr<std::unique_ptr<client::Client>> connection =
      client::Client::Connect(connect);
  if (!connection.ok()) return Fail(connection.status());
  if (options.command == "health") return RunHealth(**connection, options);
  if (options.command == "info") return RunInfo(**connection);
  absl::StatusOr<std::unique_ptr<client::Session>> session =
      (*connection)->CreateSession();
  if (!session.ok()) return Fail(session.status());

  absl::StatusOr<client::Library> library =
      (*session)->LoadLibrary(options.library);
  if (!library.ok()) return Fail(library.status());
  if (!options.cdef_file.empty()) {
    std::ifstream in(options.cdef_file);
    if (!in) {
      std::fprintf(stderr, "error: USAGE: cannot read --cdef file %s\n",
                   options.cdef_file.c_str());
      return kExitUsage;
    }
    std::stringstream cdef;
    cdef << in.rdbuf();
    absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
        (*session)->ParseDeclarations(cdef.str());
    if (!parsed.ok()) {
      return Fail(absl::Status(parsed.status().code(),
                               absl::StrCat(options.cdef_file, ": ",
                                            parsed.status().message())));
    }
  }
  // DECLARATION may define types before its prototype; the last function
  // it declares is the one called.
  std::string source(absl::StripAsciiWhitespace(options.declaration));
  if (!source.empty() && source.back() != ';') source += ';';
  absl::StatusOr<v1::ParseDeclarationsResponse> declared =
      (*session)->ParseDeclarations(source);
  if (!declared.ok()) return Fail(declared.status());
  if (declared->functions().empty()) {
    return Fail(client::ErrorWithReason(
        absl::StatusCode::kInvalidArgument, "DECLARATION_INVALID",
        absl::StrCat("'", options.declaration,
                     "' declares no function; end it with a prototype such "
                     "as 'double cos(double)'")));
  }
  const v1::FunctionDeclaration& last =
      declared->functions(declared->functions_size() - 1);
  absl::StatusOr<client::Function> function =
      (*session)->ResolveFunction(*library, last.name(), last.type());
  if (!function.ok()) return Fail(function.status());
  absl::StatusOr<ConvertedArguments> arguments =
      ConvertArguments(function->symbol, function->type, options.arguments);
  if (!arguments.ok()) return Fail(arguments.status());

  client::CallOptions call_options;
  call_options.capture_errno = options.capture_errno;
  call_options.variadic_types = arguments->variadic_types;
  absl::StatusOr<v1::CallResponse> response;
  std::vector<double> micros;
  micros.reserve(static_cast<size_t>(options.repeat));
  for (int64_t i = 0; i < options.repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    response = (*session)->Call(*function, arguments->values, call_options);
    const auto end = std::chrono::steady_clock::now();
    if (!response.ok()) return Fail(response.status());
    micros.push_back(
        std::chrono::duration<double, std::micro>(end - start).count());
  }

  const v1::TypeDescriptor& return_type = function->type.return_type();
  const std::string out =
      options.json
          ? FormatCallJson(*response, return_type, options.capture_errno)
          : FormatCallText(*response, return_type, options.capture_errno);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  if (options.repeat > 1) PrintLatency(std::move(micros));
  return 0;
}

}  // namespace
}  // namespace ffid::ffictl

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<ffid::ffictl::Options> options =
      ffid::ffictl::ParseCommandLine(args);
  if (!options.ok()) {
    std::fprintf(stderr, "error: USAGE: %s\n%s\n",
                 std::string(options.status().message()).c_str(),
                 ffid::ffictl::kUsage);
    return ffid::ffictl::kExitUsage;
  }
  if (options->help) {
    std::fputs(ffid::ffictl::HelpText().c_str(), stdout);
    return 0;
  }
  return ffid::ffictl::Run(*options);
}
