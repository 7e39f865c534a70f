#include "server/access.h"

#include <fnmatch.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "ffi/errors.h"
#include "grpcpp/security/auth_context.h"
#include "server/config.h"
#include "server/log.h"

namespace ffid::server {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

std::string Hex(const unsigned char* bytes, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 15]);
  }
  return out;
}

const config::v1::Policy* FindPolicy(const AccessSettings& settings,
                                     const std::string& principal) {
  for (const config::v1::Policy& policy : settings.policies) {
    for (const std::string& glob : policy.principal()) {
      if (fnmatch(glob.c_str(), principal.c_str(), 0) == 0) return &policy;
    }
  }
  return nullptr;
}

// The smaller of two limits where 0 means "none".
uint64_t Tighter(uint64_t a, uint64_t b) {
  if (a == 0) return b;
  if (b == 0) return a;
  return std::min(a, b);
}

}  // namespace

void PeerRegistry::Set(int fd, std::string principal) {
  absl::MutexLock lock(&mu_);
  by_fd_[fd] = std::move(principal);
}

std::string PeerRegistry::Find(absl::string_view peer) const {
  int fd = -1;
  if (!absl::ConsumePrefix(&peer, "fd:") || !absl::SimpleAtoi(peer, &fd)) {
    return "";
  }
  absl::MutexLock lock(&mu_);
  auto it = by_fd_.find(fd);
  return it == by_fd_.end() ? "" : it->second;
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  return Hex(digest, size);
}

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read '", path, "' to check its SHA-256"));
  }
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  EVP_DigestInit_ex(context, EVP_sha256(), nullptr);
  char buffer[1 << 16];
  while (file) {
    file.read(buffer, sizeof(buffer));
    if (file.gcount() > 0) {
      EVP_DigestUpdate(context, buffer, static_cast<size_t>(file.gcount()));
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(context, digest, &size);
  EVP_MD_CTX_free(context);
  return Hex(digest, size);
}

bool MatchesAnyGlob(const std::string& name,
                    const std::vector<std::string>& globs) {
  for (const std::string& glob : globs) {
    if (fnmatch(glob.c_str(), name.c_str(), 0) == 0) return true;
  }
  return false;
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> LoadTokenFile(
    const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat("cannot read the token file '", path, "'"));
  }
  absl::flat_hash_map<std::string, std::string> tokens;
  std::string line;
  int number = 0;
  while (std::getline(file, line)) {
    ++number;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(text, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2 || !IsSha256Hex(fields[0])) {
      return InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat(path, ":", number,
                       ": expected 'SHA256HEX NAME' (the SHA-256 of the "
                       "token, as `printf %s TOKEN | sha256sum` prints it, "
                       "then the principal's name)"));
    }
    tokens[absl::AsciiStrToLower(fields[0])] = std::string(fields[1]);
  }
  return tokens;
}

absl::StatusOr<AccessSettings> MakeAccessSettings(
    const config::v1::Config& config, const std::string& token_file,
    bool audit_calls, bool require_authentication) {
  AccessSettings settings;
  settings.policies.assign(config.policy().begin(), config.policy().end());
  settings.pins.assign(config.library().begin(), config.library().end());
  if (!token_file.empty()) {
    ASSIGN_OR_RETURN(settings.tokens, LoadTokenFile(token_file));
  }
  settings.audit_calls = audit_calls;
  settings.require_authentication = require_authentication;
  return settings;
}

AccessControl::AccessControl(AccessSettings settings,
                             std::shared_ptr<PeerRegistry> peers)
    : peers_(std::move(peers)),
      settings_(std::make_shared<const AccessSettings>(std::move(settings))) {}

void AccessControl::Reload(AccessSettings settings) {
  auto fresh = std::make_shared<const AccessSettings>(std::move(settings));
  absl::MutexLock lock(&mu_);
  settings_ = std::move(fresh);
}

std::shared_ptr<const AccessSettings> AccessControl::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return settings_;
}

bool AccessControl::AuditCalls() const { return Snapshot()->audit_calls; }

absl::StatusOr<Caller> AccessControl::Admit(
    const grpc::ServerContextBase& context, bool rate_limited) {
  Caller caller;
  caller.settings = Snapshot();
  const AccessSettings& settings = *caller.settings;
  const auto& metadata = context.client_metadata();
  auto authorization = metadata.find("authorization");
  if (authorization != metadata.end()) {
    absl::string_view value(authorization->second.data(),
                            authorization->second.size());
    if (!absl::ConsumePrefix(&value, kBearer)) {
      return MakeError(absl::StatusCode::kUnauthenticated,
                       v1::ERROR_REASON_UNAUTHENTICATED,
                       "the 'authorization' metadata must be 'Bearer TOKEN'");
    }
    auto token = settings.tokens.find(Sha256Hex(value));
    if (token == settings.tokens.end()) {
      return MakeError(absl::StatusCode::kUnauthenticated,
                       v1::ERROR_REASON_UNAUTHENTICATED,
                       "the bearer token is not one this server accepts "
                       "(not in its token file)");
    }
    caller.principal = absl::StrCat("token:", token->second);
  }
  if (caller.principal.empty()) {
    std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    if (auth != nullptr && auth->IsPeerAuthenticated()) {
      for (const grpc::string_ref& name :
           auth->FindPropertyValues("x509_common_name")) {
        caller.principal =
            absl::StrCat("x509:", absl::string_view(name.data(), name.size()));
        break;
      }
    }
  }
  if (caller.principal.empty() && peers_ != nullptr) {
    caller.principal = peers_->Find(context.peer());
  }
  if (caller.principal.empty()) {
    if (settings.require_authentication) {
      return MakeError(absl::StatusCode::kUnauthenticated,
                       v1::ERROR_REASON_UNAUTHENTICATED,
                       "this server requires an identity: send "
                       "'authorization: Bearer TOKEN', a client certificate, "
                       "or connect over its unix socket");
    }
    caller.principal = "anonymous";
  }
  caller.policy = FindPolicy(settings, caller.principal);
  if (caller.policy != nullptr && caller.policy->deny()) {
    return MakeError(absl::StatusCode::kPermissionDenied,
                     v1::ERROR_REASON_PRINCIPAL_DENIED,
                     absl::StrCat("principal '", caller.principal,
                                  "' is denied by the server's policy"));
  }
  if (rate_limited) RETURN_IF_ERROR(Spend(caller));
  return caller;
}

absl::Status AccessControl::CountCall(const Caller& caller) {
  return Spend(caller);
}

absl::Status AccessControl::Spend(const Caller& caller) {
  if (caller.policy == nullptr || caller.policy->calls_per_second() <= 0) {
    return absl::OkStatus();
  }
  const double rate = caller.policy->calls_per_second();
  const double capacity = std::max(1.0, rate);
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = buckets_.try_emplace(caller.principal);
  Bucket& bucket = it->second;
  if (inserted) {
    bucket.tokens = capacity;
  } else {
    bucket.tokens = std::min(
        capacity, bucket.tokens + absl::ToDoubleSeconds(now - bucket.last) * rate);
  }
  bucket.last = now;
  if (bucket.tokens < 1) {
    return MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RATE_LIMITED,
        absl::StrCat("principal '", caller.principal, "' may make ", rate,
                     " requests per second; slow down and retry"));
  }
  bucket.tokens -= 1;
  return absl::OkStatus();
}

absl::Status AccessControl::CheckLibrary(const Caller& caller,
                                         const std::string& real_path) const {
  if (caller.policy != nullptr && caller.policy->allow_library_size() > 0) {
    std::vector<std::string> globs(caller.policy->allow_library().begin(),
                                   caller.policy->allow_library().end());
    if (!MatchesAnyGlob(real_path, globs)) {
      return MakeError(
          absl::StatusCode::kPermissionDenied,
          v1::ERROR_REASON_LIBRARY_NOT_ALLOWED,
          absl::StrCat("principal '", caller.principal, "' may not load '",
                       real_path, "'; its policy allows only: ",
                       absl::StrJoin(globs, " ")));
    }
  }
  for (const config::v1::PinnedLibrary& pin : caller.settings->pins) {
    if (fnmatch(pin.path().c_str(), real_path.c_str(), 0) != 0) continue;
    absl::StatusOr<std::string> actual = Sha256OfFile(real_path);
    if (!actual.ok()) {
      return MakeError(absl::StatusCode::kPermissionDenied,
                       v1::ERROR_REASON_LIBRARY_PIN_MISMATCH,
                       actual.status().message());
    }
    if (*actual != absl::AsciiStrToLower(pin.sha256())) {
      return MakeError(
          absl::StatusCode::kPermissionDenied,
          v1::ERROR_REASON_LIBRARY_PIN_MISMATCH,
          absl::StrCat("library '", real_path, "' is pinned to SHA-256 ",
                       absl::AsciiStrToLower(pin.sha256()),
                       " but its contents hash to ", *actual,
                       "; it was changed or replaced"));
    }
  }
  return absl::OkStatus();
}

absl::Status AccessControl::CheckSymbol(const Caller& caller,
                                        const std::string& symbol) const {
  if (caller.policy == nullptr || caller.policy->allow_symbol_size() == 0) {
    return absl::OkStatus();
  }
  std::vector<std::string> globs(caller.policy->allow_symbol().begin(),
                                 caller.policy->allow_symbol().end());
  if (MatchesAnyGlob(symbol, globs)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kPermissionDenied,
                   v1::ERROR_REASON_SYMBOL_NOT_ALLOWED,
                   absl::StrCat("principal '", caller.principal,
                                "' may not use symbol '", symbol,
                                "'; its policy allows only: ",
                                absl::StrJoin(globs, " ")));
}

PolicyOptions AccessControl::NarrowPolicy(const Caller& caller,
                                          const PolicyOptions& server) const {
  PolicyOptions narrowed = server;
  if (caller.policy == nullptr) return narrowed;
  const v1::ResourceLimits& mine = caller.policy->max_limits();
  v1::ResourceLimits& limits = narrowed.max_limits;
  limits.set_address_space_bytes(
      Tighter(limits.address_space_bytes(), mine.address_space_bytes()));
  limits.set_cpu_seconds(Tighter(limits.cpu_seconds(), mine.cpu_seconds()));
  limits.set_open_files(Tighter(limits.open_files(), mine.open_files()));
  limits.set_file_size_bytes(
      Tighter(limits.file_size_bytes(), mine.file_size_bytes()));
  if (mine.has_max_call_duration()) {
    const absl::Duration theirs =
        absl::Seconds(limits.max_call_duration().seconds()) +
        absl::Nanoseconds(limits.max_call_duration().nanos());
    const absl::Duration ours =
        absl::Seconds(mine.max_call_duration().seconds()) +
        absl::Nanoseconds(mine.max_call_duration().nanos());
    if (ours > absl::ZeroDuration() &&
        (theirs == absl::ZeroDuration() || ours < theirs)) {
      *limits.mutable_max_call_duration() = mine.max_call_duration();
    }
  }
  narrowed.network_allowed = server.network_allowed && caller.policy->allow_network();
  return narrowed;
}

absl::Status AccessControl::AcquireSession(const Caller& caller) {
  const uint32_t most =
      caller.policy == nullptr ? 0 : caller.policy->max_sessions();
  absl::MutexLock lock(&mu_);
  uint32_t& count = sessions_[caller.principal];
  if (most != 0 && count >= most) {
    return MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_SESSION_QUOTA,
        absl::StrCat("principal '", caller.principal, "' already has ", count,
                     " sessions, the most its policy allows; delete one "
                     "first"));
  }
  ++count;
  return absl::OkStatus();
}

void AccessControl::ReleaseSession(const std::string& principal) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(principal);
  if (it == sessions_.end()) return;
  if (--it->second == 0) sessions_.erase(it);
}

void AccessControl::Audit(const Caller& caller, absl::string_view action,
                          absl::string_view target, const absl::Status& result,
                          absl::string_view trace_id) const {
  std::string reason;
  if (!result.ok()) {
    const v1::ErrorReason code = GetErrorReason(result);
    if (code != v1::ERROR_REASON_UNSPECIFIED) reason = ReasonName(code);
  }
  LogAlways(LogLevel::kInfo, "audit",
            {{"principal", caller.principal},
             {"what", std::string(action)},
             {"target", std::string(target)},
             {"result", result.ok() ? "OK"
                                    : absl::StatusCodeToString(result.code())},
             {"reason", reason},
             {"trace_id", std::string(trace_id)}});
}

}  // namespace ffid::server
