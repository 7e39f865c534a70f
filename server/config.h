// The configuration file: a config::v1::Config (proto/ffid/config/v1/) in
// protobuf text format.
//
// ParseConfig checks the syntax (unknown fields, wrong types, repeated
// singular fields) and the meaning (relative paths, malformed hashes,
// half-configured TLS, ...) and reports the first problem as
// "FILE:LINE:COLUMN: field 'policy[1].allow_library[0]': what is wrong".
// Values are returned to the caller, who owns them; the functions are
// thread-safe (no shared state).
#ifndef FFID_SERVER_CONFIG_H_
#define FFID_SERVER_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ffid/config/v1/config.pb.h"

namespace ffid::server {

// Parses and checks `text`, the contents of the file `file_name` (used in
// messages only). INVALID_ARGUMENT + INVALID_REQUEST with file, line and
// field on any error.
absl::StatusOr<config::v1::Config> ParseConfig(absl::string_view text,
                                               absl::string_view file_name);

// Reads `path` and parses it as ParseConfig does. INVALID_ARGUMENT naming
// the file if it cannot be read.
absl::StatusOr<config::v1::Config> LoadConfigFile(const std::string& path);

// Whether `text` is 64 hexadecimal digits (a SHA-256 as sha256sum prints
// it, either case).
bool IsSha256Hex(absl::string_view text);

}  // namespace ffid::server

#endif  // FFID_SERVER_CONFIG_H_
