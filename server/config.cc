#include "server/config.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace ffid::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::TextFormat;

// One step of a path into the message: a field and, for repeated fields,
// the element's index (-1 for singular fields).
struct Step {
  const char* field;
  int index = -1;
};

// Remembers the first syntax error the text format parser reports.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!seen_) {
      seen_ = true;
      line_ = line;
      column_ = column;
      message_ = message;
    }
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber,
                  const std::string&) override {}

  bool seen_ = false;
  int line_ = 0;
  int column_ = 0;
  std::string message_;
};

// Checks a Config against its meaning, reporting where in the file.
class Checker {
 public:
  Checker(absl::string_view file, const TextFormat::ParseInfoTree& tree)
      : file_(file), tree_(tree) {}

  // INVALID_ARGUMENT "FILE:LINE:COL: field 'a.b[2]': message".
  absl::Status Error(const std::vector<Step>& path,
                     absl::string_view message) const {
    const Descriptor* descriptor = config::v1::Config::descriptor();
    const TextFormat::ParseInfoTree* tree = &tree_;
    std::string name;
    int line = -1;
    int column = -1;
    for (size_t i = 0; i < path.size(); ++i) {
      const FieldDescriptor* field =
          descriptor == nullptr ? nullptr
                                : descriptor->FindFieldByName(path[i].field);
      if (!name.empty()) name += '.';
      name += path[i].field;
      if (path[i].index >= 0) absl::StrAppend(&name, "[", path[i].index, "]");
      if (field == nullptr || tree == nullptr) continue;
      const int index =
          field->is_repeated() ? (path[i].index < 0 ? 0 : path[i].index) : -1;
      TextFormat::ParseLocation location = tree->GetLocation(field, index);
      if (location.line >= 0) {
        line = location.line;
        column = location.column;
      }
      if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
        tree = tree->GetTreeForNested(field, index);
        descriptor = field->message_type();
      } else {
        descriptor = nullptr;
      }
    }
    std::string where = std::string(file_);
    if (line >= 0) absl::StrAppend(&where, ":", line + 1, ":", column + 1);
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat(where, ": field '", name, "': ", message));
  }

  absl::Status Check(const config::v1::Config& config) const {
    if (!config.listen().empty()) {
      RETURN_IF_ERROR(CheckListen(config.listen()));
    }
    for (int i = 0; i < config.allow_library_size(); ++i) {
      RETURN_IF_ERROR(CheckAbsolute({{"allow_library", i}},
                                    config.allow_library(i)));
    }
    if (config.has_idle_timeout() &&
        (config.idle_timeout().seconds() < 0 ||
         (config.idle_timeout().seconds() == 0 &&
          config.idle_timeout().nanos() <= 0))) {
      return Error({{"idle_timeout"}}, "must be positive");
    }
    if (config.has_worker_limits()) {
      RETURN_IF_ERROR(CheckLimits("worker_limits", -1, config.worker_limits()));
    }
    if (config.has_shutdown_grace() &&
        (config.shutdown_grace().seconds() < 0 ||
         config.shutdown_grace().nanos() < 0)) {
      return Error({{"shutdown_grace"}}, "must not be negative");
    }
    if (!config.metrics_listen().empty() &&
        config.metrics_listen().rfind(':') == std::string::npos) {
      return Error({{"metrics_listen"}},
                   "must be host:port such as \"127.0.0.1:9464\"");
    }
    const config::v1::Tls& tls = config.tls();
    if (tls.cert_file().empty() != tls.key_file().empty()) {
      return Error({{"tls"}},
                   "cert_file and key_file must be given together");
    }
    if (!tls.client_ca_file().empty() && tls.cert_file().empty()) {
      return Error({{"tls"}, {"client_ca_file"}},
                   "mutual TLS needs the server's cert_file and key_file too");
    }
    for (int i = 0; i < config.library_size(); ++i) {
      const config::v1::PinnedLibrary& pin = config.library(i);
      RETURN_IF_ERROR(CheckAbsolute({{"library", i}, {"path"}}, pin.path()));
      if (!IsSha256Hex(pin.sha256())) {
        return Error({{"library", i}, {"sha256"}},
                     absl::StrCat("'", pin.sha256(),
                                  "' is not a SHA-256 of 64 hexadecimal "
                                  "digits (as sha256sum prints it)"));
      }
    }
    for (int i = 0; i < config.policy_size(); ++i) {
      const config::v1::Policy& policy = config.policy(i);
      if (policy.principal_size() == 0) {
        return Error({{"policy", i}},
                     "names no principal (add principal: \"unix:1000\", "
                     "\"token:NAME\", \"x509:CN\", \"anonymous\" or a glob)");
      }
      for (int j = 0; j < policy.principal_size(); ++j) {
        if (policy.principal(j).empty()) {
          return Error({{"policy", i}, {"principal", j}}, "is empty");
        }
      }
      for (int j = 0; j < policy.allow_library_size(); ++j) {
        RETURN_IF_ERROR(CheckAbsolute({{"policy", i}, {"allow_library", j}},
                                      policy.allow_library(j)));
      }
      for (int j = 0; j < policy.allow_symbol_size(); ++j) {
        if (policy.allow_symbol(j).empty()) {
          return Error({{"policy", i}, {"allow_symbol", j}}, "is empty");
        }
      }
      if (!std::isfinite(policy.calls_per_second()) ||
          policy.calls_per_second() < 0) {
        return Error({{"policy", i}, {"calls_per_second"}},
                     "must be a finite number >= 0");
      }
      if (policy.has_max_limits()) {
        RETURN_IF_ERROR(CheckLimits("policy", i, policy.max_limits()));
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CheckAbsolute(const std::vector<Step>& path,
                             absl::string_view value) const {
    if (value.empty() || value[0] != '/') {
      return Error(path, absl::StrCat("'", value,
                                      "' must be an absolute path or glob "
                                      "such as '/opt/vendor/lib/*'"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckListen(absl::string_view address) const {
    if (absl::StartsWith(address, "unix:")) {
      if (address.size() == 5) {
        return Error({{"listen"}}, "has no socket path after 'unix:'");
      }
      return absl::OkStatus();
    }
    if (absl::StartsWith(address, "unix-abstract:")) return absl::OkStatus();
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos || colon + 1 == address.size()) {
      return Error({{"listen"}},
                   absl::StrCat("'", address,
                                "' is neither 'unix:/path/to/socket' nor "
                                "'host:port'"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckLimits(const char* field, int index,
                           const v1::ResourceLimits& limits) const {
    const google::protobuf::Duration& duration = limits.max_call_duration();
    if (duration.seconds() < 0 || duration.nanos() < 0 ||
        duration.nanos() >= 1000000000) {
      std::vector<Step> path = {{field, index}};
      if (index >= 0) path.push_back({"max_limits"});
      path.push_back({"max_call_duration"});
      return Error(path, "must be a non-negative duration");
    }
    return absl::OkStatus();
  }

  absl::string_view file_;
  const TextFormat::ParseInfoTree& tree_;
};

}  // namespace

bool IsSha256Hex(absl::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

absl::StatusOr<config::v1::Config> ParseConfig(absl::string_view text,
                                               absl::string_view file_name) {
  config::v1::Config config;
  TextFormat::ParseInfoTree tree;
  FirstError errors;
  TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&tree);
  // Text format from a file may be long; a bound keeps a hostile file from
  // nesting forever (the schema is two levels deep).
  parser.SetRecursionLimit(16);
  if (!parser.ParseFromString(std::string(text), &config)) {
    std::string where(file_name);
    if (errors.seen_) {
      absl::StrAppend(&where, ":", errors.line_ + 1, ":", errors.column_ + 1);
    }
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat(where, ": ",
                     errors.seen_ ? errors.message_
                                  : std::string("cannot parse the file")));
  }
  RETURN_IF_ERROR(Checker(file_name, tree).Check(config));
  return config;
}

absl::StatusOr<config::v1::Config> LoadConfigFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat("cannot read the config file '", path,
                     "': no such file, or not readable"));
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  return ParseConfig(contents.str(), path);
}

}  // namespace ffid::server
