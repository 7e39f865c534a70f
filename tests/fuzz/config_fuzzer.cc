// libFuzzer target for the config file parser (server/config.h).
//
// Any input must either parse, or fail with INVALID_ARGUMENT whose message
// starts with the file name (file, line and field for the user). A config
// that parses must print and parse again to the same message, and its
// access settings must build (no token file).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/access.h"
#include "server/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ffid::config::v1::Config> config =
      ffid::server::ParseConfig(text, "fuzz.conf");
  if (!config.ok()) {
    if (config.status().code() != absl::StatusCode::kInvalidArgument ||
        !absl::StartsWith(config.status().message(), "fuzz.conf")) {
      abort();
    }
    return 0;
  }
  std::string printed;
  if (!google::protobuf::TextFormat::PrintToString(*config, &printed)) abort();
  absl::StatusOr<ffid::config::v1::Config> again =
      ffid::server::ParseConfig(printed, "printed.conf");
  if (!again.ok() ||
      !google::protobuf::util::MessageDifferencer::Equals(*config, *again)) {
    abort();
  }
  absl::StatusOr<ffid::server::AccessSettings> settings =
      ffid::server::MakeAccessSettings(*config, "", false, false);
  if (!settings.ok()) abort();
  return 0;
}
