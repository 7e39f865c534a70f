#include "clients/cpp/ffictl/options.h"

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ffid::ffictl {
namespace {

constexpr int64_t kMaxRepeat = 1000000000;

}  // namespace

absl::StatusOr<Options> ParseCommandLine(const std::vector<std::string>& args) {
  Options options;
  size_t i = 0;
  // Returns the value of an option given as "--name value" or
  // "--name=value", advancing past it.
  auto take_value = [&](absl::string_view name,
                        absl::string_view word) -> absl::StatusOr<std::string> {
    if (word.size() > name.size() && word[name.size()] == '=') {
      return std::string(word.substr(name.size() + 1));
    }
    if (i + 1 >= args.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("option ", name, " needs a value"));
    }
    return args[++i];
  };
  auto is_option = [](absl::string_view word, absl::string_view name) {
    return word == name ||
           (word.size() > name.size() && word.substr(0, name.size()) == name &&
            word[name.size()] == '=');
  };
  for (; i < args.size(); ++i) {
    const absl::string_view word = args[i];
    if (word == "--help" || word == "-h") {
      options.help = true;
      return options;
    }
    if (word == "--json") {
      options.json = true;
    } else if (word == "--errno") {
      options.capture_errno = true;
    } else if (is_option(word, "--address")) {
      absl::StatusOr<std::string> value = take_value("--address", word);
      if (!value.ok()) return value.status();
      if (value->empty()) {
        return absl::InvalidArgumentError("--address needs a non-empty value");
      }
      options.address = *value;
    } else if (word == "--insecure") {
      options.insecure = true;
    } else if (is_option(word, "--token-file") || is_option(word, "--ca") ||
               is_option(word, "--cert") || is_option(word, "--key")) {
      const absl::string_view name = word.substr(0, word.find('='));
      absl::StatusOr<std::string> value = take_value(name, word);
      if (!value.ok()) return value.status();
      if (value->empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " needs a file name"));
      }
      std::string& field = name == "--token-file" ? options.token_file
                           : name == "--ca"       ? options.ca_file
                           : name == "--cert"     ? options.cert_file
                                                  : options.key_file;
      field = *value;
    } else if (is_option(word, "--repeat")) {
      absl::StatusOr<std::string> value = take_value("--repeat", word);
      if (!value.ok()) return value.status();
      if (!absl::SimpleAtoi(*value, &options.repeat) || options.repeat < 1 ||
          options.repeat > kMaxRepeat) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--repeat needs a count from 1 to ", kMaxRepeat, ", not '", *value,
            "'"));
      }
    } else if (is_option(word, "--cdef")) {
      absl::StatusOr<std::string> value = take_value("--cdef", word);
      if (!value.ok()) return value.status();
      if (value->empty()) {
        return absl::InvalidArgumentError("--cdef needs a file name");
      }
      options.cdef_file = *value;
    } else if (word == "--") {
      ++i;
      break;
    } else if (!word.empty() && word[0] == '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", word, "'"));
    } else {
      break;
    }
  }
  if (i >= args.size()) {
    return absl::InvalidArgumentError("missing command (call, health or info)");
  }
  const std::string& command = args[i++];
  if (command == "help") {
    options.help = true;
    return options;
  }
  if (command == "health" || command == "info") {
    options.command = command;
    if (command == "health" && i < args.size()) {
      options.health_service = args[i++];
    }
    if (i < args.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          command, " takes ", command == "health" ? "at most one SERVICE" : "nothing",
          ", not '", args[i], "'"));
    }
    return options;
  }
  if (command != "call") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown command '", command, "' (expected call, health or info)"));
  }
  if (args.size() - i < 2) {
    return absl::InvalidArgumentError(
        "call needs a LIBRARY and a 'DECLARATION'");
  }
  options.library = args[i++];
  options.declaration = args[i++];
  options.arguments.assign(args.begin() + static_cast<std::ptrdiff_t>(i),
                           args.end());
  return options;
}

std::string HelpText() {
  return absl::StrCat(kUsage, R"(

Calls one function of a native library through the ffid daemon and prints
its result.

  ffictl call libm.so.6 'double cos(double)' 0.5
  ffictl call libc.so.6 'size_t strlen(const char *s)' hello
  ffictl call libc.so.6 'long labs(long)' -9000000000

  ffictl health          exit 0 if the daemon is SERVING (gRPC health
                         check; NOT_SERVING while it drains), else 1
  ffictl health ffid.v1.Ffi   the same for one service
  ffictl info            the daemon's sandbox layers and limits

Options (before the command):
  --address ADDR  the daemon: unix:/path or host:port (default: $FFID_ADDRESS,
                  else unix:$XDG_RUNTIME_DIR/ffid/ffid.sock, else
                  unix:/tmp/ffid-$UID/ffid.sock)
  --token-file FILE  send the bearer token in FILE (default: $FFID_TOKEN,
                  else the file $FFID_TOKEN_FILE)
  --ca FILE       TLS: the CA certificates (PEM) that signed the daemon's
                  certificate (default: $FFID_CA, else the system's roots).
                  A host:port address uses TLS unless --insecure is given
  --cert FILE, --key FILE  mutual TLS: the client certificate chain and its
                  private key, PEM (default: $FFID_CERT, $FFID_KEY)
  --insecure      plaintext TCP, for a daemon started with --insecure
                  (default: $FFID_INSECURE=1)
  --json          print {"result": ...} as JSON
  --errno         capture errno right after the call and print it
  --repeat N      call N times; print the result once and the round-trip
                  latency (median, p99, mean) on stderr
  --cdef FILE     C declarations (structs, unions, enums, typedefs) to parse
                  into the session first
  --help          this text

DECLARATION may itself hold declarations before the function's prototype,
e.g. 'struct p { int x, y; }; int norm(struct p)'; the last function it
declares is the one called.

Arguments are C literals, converted to each parameter's type: integers
(42, -7, 0x2a, 052, 0b101010, 10u, 9000000000ll, 'a'), floating point (1.5,
1e-3, 0x1.8p1, inf, nan, -0.0), strings (a bare word, or "quoted" with C
escapes such as \t, \x41, \u00e9), bool (true, false), and NULL (or 0) for
pointers. Structs, unions and arrays take C initializers: {1, 2.5},
{.x = 1, .y = 2.5}, nested braces; enums a constant's name or a number. A
cast fixes a variadic argument's type: (float)1.5, (long)3, (char)'a'.
Results print as initializers with designators ({.x = 1, .y = 2}).
Everything after 'call' is an argument, so negative numbers need no
escaping.

Exit status: 0 on success, 1 on failure (stderr: "error: REASON: message"),
2 on a usage error.
)");
}

}  // namespace ffid::ffictl
