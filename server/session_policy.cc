#include "server/session_policy.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "google/protobuf/duration.pb.h"

namespace ffid::server {
namespace {

absl::Status CheckLimit(uint64_t asked, uint64_t maximum,
                        absl::string_view field, uint64_t* result) {
  if (asked == 0) {
    *result = maximum;
    return absl::OkStatus();
  }
  if (maximum != 0 && asked > maximum) {
    return MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("limits.", field, " = ", asked,
                     " is above this server's maximum of ", maximum,
                     "; ask for less or leave it 0 for the maximum"));
  }
  *result = asked;
  return absl::OkStatus();
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

absl::StatusOr<absl::Duration> ToDuration(
    const google::protobuf::Duration& duration, absl::string_view field) {
  if (duration.seconds() < 0 || duration.nanos() < 0 ||
      duration.nanos() >= 1000000000) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat("field '", field, "' must be a positive duration"));
  }
  return absl::Seconds(duration.seconds()) +
         absl::Nanoseconds(duration.nanos());
}

}  // namespace

std::vector<std::string> ReadOnlyView(
    const std::vector<std::string>& allow_library) {
  std::vector<std::string> paths;
  for (const std::string& glob : allow_library) {
    size_t wildcard = glob.find_first_of("*?[");
    std::string path = glob;
    if (wildcard != std::string::npos) {
      size_t slash = glob.rfind('/', wildcard);
      path = glob.substr(0, slash == 0 ? 1 : slash);
    }
    if (path.size() > 1 && path.back() == '/') path.pop_back();
    paths.push_back(path);
  }
  for (const char* system : {"/lib", "/lib64", "/usr/lib", "/usr/lib64",
                             "/usr/local/lib", "/etc/ld.so.cache"}) {
    paths.emplace_back(system);
  }
  std::vector<std::string> existing;
  for (std::string& path : paths) {
    if (path == "/" || !Exists(path)) continue;
    if (std::find(existing.begin(), existing.end(), path) != existing.end()) {
      continue;
    }
    existing.push_back(std::move(path));
  }
  return existing;
}

v1::ResourceLimits DefaultLimits(const PolicyOptions& options) {
  return options.max_limits;
}

absl::StatusOr<SessionPolicy> ResolveSessionPolicy(
    const PolicyOptions& options, const v1::CreateSessionRequest& request) {
  SessionPolicy policy;
  const v1::ResourceLimits& asked = request.limits();
  const v1::ResourceLimits& maximum = options.max_limits;
  uint64_t value = 0;
  RETURN_IF_ERROR(CheckLimit(asked.address_space_bytes(),
                             maximum.address_space_bytes(),
                             "address_space_bytes", &value));
  policy.limits.set_address_space_bytes(value);
  RETURN_IF_ERROR(CheckLimit(asked.cpu_seconds(), maximum.cpu_seconds(),
                             "cpu_seconds", &value));
  policy.limits.set_cpu_seconds(value);
  RETURN_IF_ERROR(CheckLimit(asked.open_files(), maximum.open_files(),
                             "open_files", &value));
  policy.limits.set_open_files(value);
  RETURN_IF_ERROR(CheckLimit(asked.file_size_bytes(),
                             maximum.file_size_bytes(), "file_size_bytes",
                             &value));
  policy.limits.set_file_size_bytes(value);

  ASSIGN_OR_RETURN(absl::Duration asked_call,
                   ToDuration(asked.max_call_duration(),
                              "limits.max_call_duration"));
  ASSIGN_OR_RETURN(absl::Duration max_call,
                   ToDuration(maximum.max_call_duration(),
                              "max_call_duration"));
  absl::Duration call = max_call;
  if (asked_call > absl::ZeroDuration()) {
    if (max_call > absl::ZeroDuration() && asked_call > max_call) {
      return MakeError(
          absl::StatusCode::kResourceExhausted,
          v1::ERROR_REASON_RESOURCE_LIMIT,
          absl::StrCat("limits.max_call_duration = ",
                       absl::FormatDuration(asked_call),
                       " is above this server's maximum of ",
                       absl::FormatDuration(max_call)));
    }
    call = asked_call;
  }
  if (call > absl::ZeroDuration()) {
    policy.max_call_duration = call;
    *policy.limits.mutable_max_call_duration() = maximum.max_call_duration();
    if (asked_call > absl::ZeroDuration()) {
      *policy.limits.mutable_max_call_duration() = asked.max_call_duration();
    }
  }

  policy.sandbox = request.sandbox();
  if (policy.sandbox.allow_network() && !options.network_allowed) {
    return MakeError(absl::StatusCode::kPermissionDenied,
                     v1::ERROR_REASON_SANDBOX_VIOLATION,
                     "sandbox.allow_network was asked for, but this server "
                     "does not let sessions use the network (start ffid "
                     "with --allow-network)");
  }
  switch (request.restart_policy()) {
    case v1::RESTART_POLICY_UNSPECIFIED:
    case v1::RESTART_POLICY_NEVER:
      policy.restart = v1::RESTART_POLICY_NEVER;
      break;
    case v1::RESTART_POLICY_RESTART:
      policy.restart = v1::RESTART_POLICY_RESTART;
      break;
    default:
      return InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat("restart_policy ", request.restart_policy(),
                       " is not known to this server"));
  }

  worker::WorkerPolicy& worker = policy.worker;
  worker.set_address_space_bytes(policy.limits.address_space_bytes());
  worker.set_cpu_seconds(policy.limits.cpu_seconds());
  worker.set_open_files(policy.limits.open_files());
  worker.set_file_size_bytes(policy.limits.file_size_bytes());
  v1::SandboxStatus& status = policy.status;
  status.set_rlimits(true);
  if (options.sandbox) {
    const v1::SandboxStatus& available = options.available;
    // Without a user namespace the others need root; the probe tried them
    // the same way the worker will.
    worker.set_user_namespace(available.user_namespace());
    worker.set_network_namespace(available.network_namespace() &&
                                 !policy.sandbox.allow_network());
    worker.set_mount_namespace(available.mount_namespace());
    // The view's /proc comes from the PID namespace; both or neither.
    worker.set_pid_namespace(available.pid_namespace() &&
                             available.mount_namespace());
    worker.set_ipc_namespace(available.ipc_namespace());
    worker.set_uts_namespace(available.uts_namespace());
    worker.set_seccomp(available.seccomp());
    worker.set_allow_network(policy.sandbox.allow_network());
    worker.set_landlock_abi(available.landlock_abi());
    for (const std::string& path : ReadOnlyView(options.allow_library)) {
      worker.add_read_only_paths(path);
    }
    status.set_user_namespace(worker.user_namespace());
    status.set_network_namespace(worker.network_namespace());
    status.set_mount_namespace(worker.mount_namespace());
    status.set_pid_namespace(worker.pid_namespace());
    status.set_ipc_namespace(worker.ipc_namespace());
    status.set_uts_namespace(worker.uts_namespace());
    status.set_seccomp(worker.seccomp());
    status.set_landlock_abi(worker.landlock_abi());
    *status.mutable_disabled() = available.disabled();
    if (policy.sandbox.allow_network()) {
      status.add_disabled("network_namespace: the session asked for network "
                          "access");
    }
  } else {
    status.add_disabled("everything but rlimits: ffid runs with --no-sandbox");
  }
  return policy;
}

}  // namespace ffid::server
