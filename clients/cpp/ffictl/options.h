// ffictl's command line.
//
// Options come before the subcommand; after `call` every word is positional,
// so "-7" is an argument, not an option. Pure functions, thread-safe.
#ifndef FFID_CLIENTS_CPP_FFICTL_OPTIONS_H_
#define FFID_CLIENTS_CPP_FFICTL_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ffid::ffictl {

inline constexpr char kUsage[] =
    "usage: ffictl [--address ADDR] [--token-file FILE] [--ca FILE] "
    "[--cert FILE --key FILE] [--insecure] [--json] [--errno] [--repeat N] "
    "[--cdef FILE] call LIBRARY 'DECLARATION' [ARG...] | health [SERVICE] | "
    "info";

struct Options {
  // The daemon's address; empty means the default (FFID_ADDRESS, then the
  // daemon's default socket).
  std::string address;
  // How to authenticate (clients/cpp/ffid/connection.h); empty/false means
  // the environment's FFID_TOKEN(_FILE), FFID_CA, FFID_CERT, FFID_KEY,
  // FFID_INSECURE.
  std::string token_file;
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  bool insecure = false;
  bool json = false;
  bool capture_errno = false;
  // How many times to call (for measuring latency); the result is printed
  // once.
  int64_t repeat = 1;
  bool help = false;
  // --cdef: a file of C declarations (structs, typedefs, ...) parsed into
  // the session before DECLARATION.
  std::string cdef_file;
  // "call", "health" or "info".
  std::string command = "call";
  // `health`'s SERVICE ("" for the whole server).
  std::string health_service;
  // The `call` subcommand's operands.
  std::string library;
  std::string declaration;
  std::vector<std::string> arguments;
};

// Parses the words after the program name. Fails with INVALID_ARGUMENT and a
// message for the user on a usage error.
absl::StatusOr<Options> ParseCommandLine(const std::vector<std::string>& args);

// The text --help prints.
std::string HelpText();

}  // namespace ffid::ffictl

#endif  // FFID_CLIENTS_CPP_FFICTL_OPTIONS_H_
