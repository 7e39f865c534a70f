#include "server/session.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "ffi/errors.h"
#include "google/protobuf/duration.pb.h"
#include "server/log.h"
#include "server/metrics.h"

namespace ffid::server {
namespace {

// How many ended sessions are remembered to explain a later NOT_FOUND.
constexpr size_t kEndedSessionsKept = 1024;
// A worker that dies sooner than this after its start counts towards a
// crash loop; after kMaxQuickDeaths such deaths in a row the session stops
// restarting. Restarts after the first quick death wait kFirstBackoff,
// doubling up to kMaxBackoff.
constexpr absl::Duration kQuickDeath = absl::Seconds(1);
constexpr int kMaxQuickDeaths = 5;
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(10);
constexpr absl::Duration kMaxBackoff = absl::Milliseconds(500);
// How long reloading libraries and resolving functions may take.
constexpr absl::Duration kReplayTimeout = absl::Seconds(30);

}  // namespace

std::string NewSessionId() {
  unsigned char bytes[16];
  size_t filled = 0;
  while (filled < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + filled, sizeof(bytes) - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // getrandom() cannot fail on Linux >= 3.17 with these arguments; an
      // id that might be guessable is worse than stopping.
      abort();
    }
    filled += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

absl::Status ShuttingDownError() {
  return MakeError(absl::StatusCode::kUnavailable, v1::ERROR_REASON_INTERNAL,
                   "ffid is shutting down");
}

Session::Session(std::string id, std::unique_ptr<WorkerProcess> worker,
                 absl::Duration idle_timeout, SessionPolicy policy)
    : id_(std::move(id)),
      worker_(std::move(worker)),
      idle_timeout_(idle_timeout),
      policy_(std::move(policy)),
      last_used_(absl::Now()) {
  worker_started_ = absl::Now();
  if (worker_ != nullptr) {
    worker_->SetInvocationHandler(
        [this](const Route& route, worker::CallbackInvocation invocation) {
          OnInvocation(route, std::move(invocation));
        });
  }
}

Session::~Session() {
  std::vector<WorkerProcess*> workers;
  {
    absl::MutexLock lock(&mu_);
    if (worker_ != nullptr) workers.push_back(worker_.get());
    for (const auto& old : retired_) workers.push_back(old.get());
  }
  for (WorkerProcess* worker : workers) worker->Shutdown();
}

WorkerProcess& Session::worker() {
  absl::MutexLock lock(&mu_);
  return *worker_;
}

WorkerProcess* Session::Current() const {
  absl::MutexLock lock(&mu_);
  return worker_.get();
}

int Session::restarts() const {
  absl::MutexLock lock(&mu_);
  return restarts_;
}

void Session::TranslateHandles(worker::WorkerRequest& request) const {
  absl::MutexLock lock(&mu_);
  if (aliases_.empty()) return;
  auto translate = [this](std::string* handle) {
    mu_.AssertHeld();
    auto it = aliases_.find(*handle);
    if (it != aliases_.end()) *handle = it->second;
  };
  switch (request.op_case()) {
    case worker::WorkerRequest::kCall:
      translate(request.mutable_call()->mutable_function());
      break;
    case worker::WorkerRequest::kResolveFunction:
      translate(request.mutable_resolve_function()->mutable_library());
      break;
    case worker::WorkerRequest::kUnloadLibrary:
      translate(request.mutable_unload_library()->mutable_library());
      break;
    default:
      break;
  }
}

void Session::Remember(const worker::WorkerRequest& original,
                       const worker::WorkerResponse& response) {
  if (policy_.restart != v1::RESTART_POLICY_RESTART) return;
  absl::MutexLock lock(&mu_);
  switch (original.op_case()) {
    case worker::WorkerRequest::kLoadLibrary:
      if (response.has_load_library()) {
        libraries_.push_back({response.load_library().library(),
                              original.load_library().name(), {}});
      }
      break;
    case worker::WorkerRequest::kResolveFunction:
      if (response.has_resolve_function()) {
        resolved_.push_back(
            {response.resolve_function().function(), "", original});
      }
      break;
    case worker::WorkerRequest::kUnloadLibrary: {
      const std::string& library = original.unload_library().library();
      libraries_.erase(
          std::remove_if(libraries_.begin(), libraries_.end(),
                         [&library](const Loaded& loaded) {
                           return loaded.handle == library;
                         }),
          libraries_.end());
      resolved_.erase(
          std::remove_if(resolved_.begin(), resolved_.end(),
                         [&library](const Loaded& loaded) {
                           return loaded.resolve.resolve_function().library() ==
                                  library;
                         }),
          resolved_.end());
      break;
    }
    default:
      break;
  }
}

absl::StatusOr<worker::WorkerResponse> Session::Execute(
    worker::WorkerRequest request, absl::Time deadline,
    std::string description, std::string function,
    const std::function<bool()>& is_cancelled, OnCancel on_cancel) {
  const bool restartable = policy_.restart == v1::RESTART_POLICY_RESTART;
  WorkerProcess* worker;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    worker = worker_.get();
    generation = generation_;
  }
  if (restartable && worker->doomed()) {
    // Died outside a request (killed from outside, a pipelined call):
    // replace it before going on.
    Restart(generation, absl::UnavailableError("the worker had died"));
    absl::MutexLock lock(&mu_);
    worker = worker_.get();
    generation = generation_;
  }
  worker::WorkerRequest original;
  if (restartable) original = request;
  TranslateHandles(request);
  absl::StatusOr<worker::WorkerResponse> result =
      worker->Execute(std::move(request), deadline, std::move(description),
                      std::move(function), is_cancelled, Route(),
                      /*pass_fd=*/-1, on_cancel);
  if (result.ok()) {
    if (restartable) Remember(original, *result);
    return result;
  }
  if (restartable && worker->doomed()) {
    std::string note = Restart(generation, result.status());
    // The worker's own message assumes the session is over; it is not.
    std::string message = absl::StrReplaceAll(
        result.status().message(),
        {{", so this session can no longer be used: create a new one", ""},
         {", so this session can no longer be used", ""}});
    return WithMessage(result.status(), absl::StrCat(message, note));
  }
  if (restartable && GetErrorReason(result.status()) ==
                         v1::ERROR_REASON_HANDLE_INVALID) {
    absl::MutexLock lock(&mu_);
    const std::string text = original.ShortDebugString();
    for (const std::string& tag : retired_tags_) {
      if (text.find(absl::StrCat("_", tag, "_")) != std::string::npos) {
        return MakeError(
            absl::StatusCode::kFailedPrecondition,
            v1::ERROR_REASON_HANDLE_INVALID,
            absl::StrCat("a handle in this request was issued by a worker "
                         "of this session that died and was restarted; "
                         "memory and callback handles do not survive a "
                         "restart (library and function handles do): "
                         "allocate or register again (",
                         result.status().message(), ")"));
      }
    }
  }
  return result;
}

void Session::ReviveIfDead() {
  if (policy_.restart != v1::RESTART_POLICY_RESTART) return;
  WorkerProcess* worker;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    worker = worker_.get();
    generation = generation_;
  }
  if (worker->doomed()) {
    Restart(generation, absl::UnavailableError("the worker had died"));
  }
}

namespace {

// What a call that met a worker's death is told once the worker was
// restarted, whichever caller did the restart.
std::string RestartedNote(int restarts, pid_t pid) {
  return absl::StrCat(
      "; the session's worker was restarted (restart policy RESTART, "
      "restart ",
      restarts, ", new worker ", pid,
      "): its libraries were loaded and its functions resolved again, so "
      "library and function handles stay valid; memory and callback "
      "handles of the old worker are gone");
}

}  // namespace

void Session::WatchWorker(WorkerProcess& worker, uint64_t generation) {
  if (policy_.restart != v1::RESTART_POLICY_RESTART || spawner_ == nullptr) {
    return;
  }
  std::weak_ptr<Session> weak = weak_from_this();
  worker.SetDeathHandler([weak, generation] {
    // Not on the dying worker's reader thread: a restart waits for the new
    // worker's answers.
    std::thread([weak, generation] {
      if (std::shared_ptr<Session> session = weak.lock()) {
        session->Restart(generation,
                         absl::UnavailableError("the worker died"));
      }
    }).detach();
  });
}

std::string Session::Restart(uint64_t generation, const absl::Status& death) {
  absl::MutexLock restart_lock(&restart_mu_);
  absl::Duration backoff = absl::ZeroDuration();
  {
    absl::MutexLock lock(&mu_);
    if (generation_ != generation) {
      // Another caller (or the death watcher) restarted it first: the same
      // sentence, so a client sees one wording whoever won the race.
      return RestartedNote(restarts_, worker_->pid());
    }
    if (!gave_up_.empty()) return absl::StrCat("; ", gave_up_);
    if (spawner_ == nullptr || ended_) return "";
    // A worker that dies soon after starting is a crash loop in the
    // making: back off, then give up.
    if (absl::Now() - worker_started_ < kQuickDeath) {
      ++quick_deaths_;
    } else {
      quick_deaths_ = 0;
    }
    if (quick_deaths_ > kMaxQuickDeaths) {
      gave_up_ = absl::StrCat(
          "the session gave up restarting its worker after ", quick_deaths_,
          " deaths in a row, each within ", absl::FormatDuration(kQuickDeath),
          " of its start; delete the session and create a new one");
      return absl::StrCat("; ", gave_up_);
    }
    if (quick_deaths_ > 1) {
      backoff = std::min(kFirstBackoff * (1 << (quick_deaths_ - 2)),
                         kMaxBackoff);
    }
  }
  if (backoff > absl::ZeroDuration()) absl::SleepFor(backoff);

  auto fail = [this](const std::string& why) {
    absl::MutexLock lock(&mu_);
    gave_up_ = absl::StrCat("restarting the worker failed: ", why,
                            "; delete the session and create a new one");
    return absl::StrCat("; ", gave_up_);
  };
  absl::StatusOr<std::unique_ptr<WorkerProcess>> fresh = spawner_();
  if (!fresh.ok()) return fail(std::string(fresh.status().message()));
  WorkerProcess& next = **fresh;
  next.SetInvocationHandler(
      [this](const Route& route, worker::CallbackInvocation invocation) {
        OnInvocation(route, std::move(invocation));
      });
  std::vector<Loaded> libraries;
  std::vector<Loaded> resolved;
  {
    absl::MutexLock lock(&mu_);
    libraries = libraries_;
    resolved = resolved_;
  }
  // Load again, under the handles the client knows.
  absl::flat_hash_map<std::string, std::string> aliases;
  const absl::Time replay_deadline = absl::Now() + kReplayTimeout;
  for (const Loaded& library : libraries) {
    worker::WorkerRequest load;
    load.mutable_load_library()->set_name(library.path);
    absl::StatusOr<worker::WorkerResponse> loaded =
        next.Execute(std::move(load), replay_deadline,
                     absl::StrCat("reloading '", library.path, "'"));
    if (!loaded.ok()) return fail(std::string(loaded.status().message()));
    aliases[library.handle] = loaded->load_library().library();
  }
  for (const Loaded& function : resolved) {
    worker::WorkerRequest resolve = function.resolve;
    std::string* library = resolve.mutable_resolve_function()->mutable_library();
    auto alias = aliases.find(*library);
    if (alias != aliases.end()) *library = alias->second;
    absl::StatusOr<worker::WorkerResponse> answer = next.Execute(
        std::move(resolve), replay_deadline,
        absl::StrCat("resolving '", function.resolve.resolve_function().symbol(),
                     "' again"));
    if (!answer.ok()) return fail(std::string(answer.status().message()));
    aliases[function.handle] = answer->resolve_function().function();
  }
  std::string note;
  std::optional<v1::CrashReport> previous;
  std::vector<std::shared_ptr<StreamSink>> sinks;
  {
    absl::MutexLock lock(&mu_);
    if (ended_) {
      // Deleted meanwhile: the new worker goes with it.
      mu_.Unlock();
      (*fresh)->Shutdown();
      mu_.Lock();
      return "";
    }
    previous = worker_->crash_report();
    retired_tags_.push_back(worker_->session_tag());
    retired_.push_back(std::move(worker_));
    worker_ = std::move(*fresh);
    aliases_ = std::move(aliases);
    ++generation_;
    ++restarts_;
    worker_started_ = absl::Now();
    Metrics::Get().WorkerRestarted();
    Log(LogLevel::kInfo, "worker restarted",
        {{"session", id_.substr(0, 8)},
         {"pid", absl::StrCat(worker_->pid())},
         {"restart", absl::StrCat(restarts_)}});
    note = RestartedNote(restarts_, worker_->pid());
    WatchWorker(*worker_, generation_);
    for (const auto& [id, sink] : streams_) sinks.push_back(sink);
  }
  if (!sinks.empty()) {
    v1::ConnectResponse event;
    v1::WorkerRestarted* restarted = event.mutable_restarted();
    *restarted->mutable_session() = ToProto();
    if (previous.has_value()) *restarted->mutable_previous_crash() = *previous;
    restarted->set_message(note.substr(2));
    for (const std::shared_ptr<StreamSink>& sink : sinks) sink->Push(event);
  }
  return note;
}

void Session::StreamCallStarted() {
  absl::MutexLock lock(&mu_);
  ++stream_calls_;
}

void Session::StreamCallEnded() {
  absl::MutexLock lock(&mu_);
  --stream_calls_;
}

uint64_t Session::AddStream(std::shared_ptr<StreamSink> sink) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_stream_++;
  streams_.emplace(id, std::move(sink));
  return id;
}

void Session::RemoveStream(uint64_t stream) {
  std::vector<uint64_t> orphaned;
  {
    absl::MutexLock lock(&mu_);
    streams_.erase(stream);
    for (auto it = invocations_.begin(); it != invocations_.end();) {
      if (it->second == stream) {
        orphaned.push_back(it->first);
        invocations_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (uint64_t id : orphaned) {
    FailInvocation(id, MakeError(absl::StatusCode::kUnavailable,
                                 v1::ERROR_REASON_CALLBACK_FAILED,
                                 "the client disconnected (its Connect "
                                 "stream closed) before it answered"));
  }
}

void Session::AnswerInvocation(const v1::CallbackResult& result) {
  {
    absl::MutexLock lock(&mu_);
    if (invocations_.erase(result.invocation()) == 0) return;
  }
  worker::WorkerRequest reply;
  worker::CallbackReply* answer = reply.mutable_callback_reply();
  answer->set_invocation(result.invocation());
  if (result.has_error()) {
    *answer->mutable_status() = StatusToProto(MakeError(
        absl::StatusCode::kAborted, v1::ERROR_REASON_CALLBACK_FAILED,
        absl::StrCat("the client's callback failed: ",
                     result.error().message())));
  } else if (result.has_result()) {
    *answer->mutable_result() = result.result();
  }
  worker().Post(reply);
}

void Session::FailInvocation(uint64_t id, const absl::Status& why) {
  worker::WorkerRequest reply;
  reply.mutable_callback_reply()->set_invocation(id);
  *reply.mutable_callback_reply()->mutable_status() = StatusToProto(why);
  worker().Post(reply);
}

void Session::OnInvocation(const Route& route,
                           worker::CallbackInvocation invocation) {
  Metrics::Get().CallbackInvoked();
  const uint64_t id = invocation.invocation().invocation();
  {
    absl::MutexLock lock(&mu_);
    auto stream = streams_.find(route.stream);
    const bool own_stream = stream != streams_.end();
    if (!own_stream) stream = streams_.begin();
    if (stream != streams_.end()) {
      invocations_[id] = stream->first;
      v1::ConnectResponse message;
      *message.mutable_invocation() =
          std::move(*invocation.mutable_invocation());
      if (own_stream) message.mutable_invocation()->set_call_tag(route.tag);
      stream->second->Push(std::move(message));
      return;
    }
  }
  FailInvocation(
      id, MakeError(absl::StatusCode::kFailedPrecondition,
                    v1::ERROR_REASON_CALLBACK_FAILED,
                    "no Connect stream is attached to the session to deliver "
                    "the invocation to; a client that registers callbacks "
                    "must keep a Connect stream open"));
}

v1::SessionState Session::state() const {
  return Current()->crash_report().has_value() ? v1::SESSION_STATE_CRASHED
                                               : v1::SESSION_STATE_ACTIVE;
}

v1::Session Session::ToProto() const {
  v1::Session proto;
  proto.set_id(id_);
  WorkerProcess* current = Current();
  proto.set_worker_pid(current->pid());
  std::optional<v1::CrashReport> crash = current->crash_report();
  proto.set_state(crash.has_value() ? v1::SESSION_STATE_CRASHED
                                    : v1::SESSION_STATE_ACTIVE);
  if (crash.has_value()) *proto.mutable_crash() = *crash;
  int64_t nanos = absl::ToInt64Nanoseconds(idle_timeout_);
  proto.mutable_idle_timeout()->set_seconds(nanos / 1000000000);
  proto.mutable_idle_timeout()->set_nanos(
      static_cast<int32_t>(nanos % 1000000000));
  *proto.mutable_limits() = policy_.limits;
  *proto.mutable_sandbox() = policy_.sandbox;
  proto.set_restart_policy(policy_.restart);
  *proto.mutable_sandbox_status() = policy_.status;
  proto.set_restarts(restarts());
  return proto;
}

void Session::RememberFunction(const std::string& function_handle,
                               const std::string& symbol,
                               const std::string& library_handle) {
  absl::MutexLock lock(&mu_);
  functions_[function_handle] = Function{symbol, library_handle};
}

std::string Session::FunctionSymbol(const std::string& function_handle) const {
  absl::MutexLock lock(&mu_);
  auto it = functions_.find(function_handle);
  return it == functions_.end() ? "" : it->second.symbol;
}

void Session::ForgetLibrary(const std::string& library_handle) {
  absl::MutexLock lock(&mu_);
  absl::erase_if(functions_, [&library_handle](const auto& entry) {
    return entry.second.library == library_handle;
  });
}

int Session::AddEndListener(std::function<void()> on_end) {
  absl::MutexLock lock(&mu_);
  if (ended_) {
    on_end();
    return -1;
  }
  int token = next_listener_++;
  end_listeners_.emplace(token, std::move(on_end));
  return token;
}

void Session::RemoveEndListener(int token) {
  absl::MutexLock lock(&mu_);
  end_listeners_.erase(token);
}

SessionLease::SessionLease(std::shared_ptr<Session> session)
    : session_(std::move(session)) {
  absl::MutexLock lock(&session_->mu_);
  ++session_->in_flight_;
  session_->last_used_ = absl::Now();
}

SessionLease::~SessionLease() { Release(); }

SessionLease& SessionLease::operator=(SessionLease&& other) noexcept {
  if (this != &other) {
    Release();
    session_ = std::move(other.session_);
  }
  return *this;
}

void SessionLease::Release() {
  if (session_ == nullptr) return;
  {
    absl::MutexLock lock(&session_->mu_);
    --session_->in_flight_;
    session_->last_used_ = absl::Now();
  }
  session_.reset();
}

SessionManager::SessionManager(SessionManagerOptions options)
    : options_(std::move(options)) {
  // Start the zygote now, so the first session does not wait for it.
  if (!options_.worker_path.empty()) {
    absl::StatusOr<std::shared_ptr<Zygote>> zygote =
        Zygote::Get(options_.worker_path);
    if (!zygote.ok()) {
      Log(LogLevel::kError, zygote.status().message());
    }
  }
  reaper_ = std::thread(&SessionManager::ReaperLoop, this);
}

SessionManager::~SessionManager() { Shutdown(); }

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Create(
    absl::Duration idle_timeout, SessionPolicy policy) {
  if (idle_timeout <= absl::ZeroDuration()) {
    idle_timeout = options_.default_idle_timeout;
  }
  std::string id = NewSessionId();
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return ShuttingDownError();
    }
  }
  // Spawning takes milliseconds; no lock is held meanwhile.
  ASSIGN_OR_RETURN(std::unique_ptr<WorkerProcess> worker,
                   WorkerProcess::Start(options_.worker_path,
                                        // Its own random bits: a handle must
                                        // not reveal part of the session id.
                                        NewSessionId().substr(0, 8),
                                        policy.worker));
  const worker::WorkerPolicy worker_policy = policy.worker;
  const bool restartable = policy.restart == v1::RESTART_POLICY_RESTART;
  auto session = std::make_shared<Session>(id, std::move(worker),
                                           idle_timeout, std::move(policy));
  if (restartable) {
    session->set_spawner([path = options_.worker_path, worker_policy] {
      return WorkerProcess::Start(path, NewSessionId().substr(0, 8),
                                  worker_policy);
    });
    session->WatchWorker(session->worker(), 0);
  }
  absl::MutexLock lock(&mu_);
  if (shutting_down_) {
    Stop(*session, WorkerProcess::StopCause::kServerShutdown);
    return ShuttingDownError();
  }
  sessions_.emplace(id, session);
  Metrics::Get().SessionOpened();
  return session;
}

absl::Status SessionManager::NotFoundLocked(absl::string_view id) const {
  if (id.empty()) {
    return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST,
                                "field 'session' is required: the id "
                                "returned by CreateSession");
  }
  for (auto it = ended_.rbegin(); it != ended_.rend(); ++it) {
    if (it->first == id) {
      return NotFoundError(
          v1::ERROR_REASON_SESSION_NOT_FOUND,
          absl::StrCat("session '", id, "' does not exist any more: ",
                       it->second, "; create a new session"));
    }
  }
  return SessionNotFoundError(id);
}

absl::Status SessionNotFoundError(absl::string_view id) {
  return NotFoundError(
      v1::ERROR_REASON_SESSION_NOT_FOUND,
      absl::StrCat("session '", id,
                   "' does not exist (it may have been deleted or timed "
                   "out); create a new session"));
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Get(
    absl::string_view id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return NotFoundLocked(id);
  return it->second;
}

absl::StatusOr<SessionLease> SessionManager::Use(absl::string_view id) {
  absl::ReaderMutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return NotFoundLocked(id);
  // Taken under mu_ so the reaper cannot pick the session in between.
  return SessionLease(it->second);
}

void SessionManager::RecordEndLocked(const std::string& id, std::string why) {
  Metrics::Get().SessionClosed();
  ended_.emplace_back(id, std::move(why));
  if (ended_.size() > kEndedSessionsKept) ended_.pop_front();
}

std::shared_ptr<Session> SessionManager::RemoveLocked(absl::string_view id,
                                                      std::string why) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  std::shared_ptr<Session> session = std::move(it->second);
  sessions_.erase(it);
  RecordEndLocked(session->id(), std::move(why));
  return session;
}

absl::Status SessionManager::Delete(absl::string_view id) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mu_);
    session = RemoveLocked(id, "it was deleted by DeleteSession");
    if (session == nullptr) return NotFoundLocked(id);
  }
  Stop(*session, WorkerProcess::StopCause::kSessionDeleted);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Attach(
    absl::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return NotFoundLocked(id);
  absl::MutexLock session_lock(&it->second->mu_);
  ++it->second->attached_streams_;
  it->second->last_used_ = absl::Now();
  return it->second;
}

void SessionManager::Detach(const std::shared_ptr<Session>& session) {
  std::shared_ptr<Session> removed;
  {
    absl::MutexLock lock(&mu_);
    bool last;
    {
      absl::MutexLock session_lock(&session->mu_);
      last = --session->attached_streams_ == 0;
      session->last_used_ = absl::Now();
    }
    auto it = sessions_.find(session->id());
    if (last && it != sessions_.end() && it->second == session) {
      removed = RemoveLocked(session->id(),
                             "its last Connect stream closed, so it was "
                             "deleted");
    }
  }
  if (removed != nullptr) {
    Stop(*removed, WorkerProcess::StopCause::kSessionDeleted);
  }
}

void SessionManager::Stop(Session& session, WorkerProcess::StopCause cause) {
  {
    absl::MutexLock lock(&session.mu_);
    session.ended_ = true;
    for (auto& [token, on_end] : session.end_listeners_) on_end();
    session.end_listeners_.clear();
  }
  session.worker().Shutdown(cause);
}

void SessionManager::ReaperLoop() {
  absl::MutexLock lock(&mu_);
  while (!shutting_down_) {
    reaper_wake_.WaitWithTimeout(&mu_, options_.reap_interval);
    if (shutting_down_) break;
    const absl::Time now = absl::Now();
    std::vector<std::shared_ptr<Session>> expired =
        RemoveWhereLocked([now](Session& session) -> std::optional<std::string> {
          {
            absl::MutexLock session_lock(&session.mu_);
            if (session.in_flight_ != 0 || session.attached_streams_ != 0 ||
                now - session.last_used_ < session.idle_timeout_) {
              return std::nullopt;
            }
          }
          return absl::StrCat("it was deleted after ",
                              absl::FormatDuration(session.idle_timeout_),
                              " without requests (its idle timeout)");
        });
    if (expired.empty()) continue;
    // Stopping workers takes a little while; do it without the lock.
    mu_.Unlock();
    for (const auto& session : expired) {
      Stop(*session, WorkerProcess::StopCause::kSessionDeleted);
    }
    expired.clear();
    mu_.Lock();
  }
}

void SessionManager::Shutdown() {
  std::map<std::string, std::shared_ptr<Session>, std::less<>> sessions;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    reaper_wake_.SignalAll();
    sessions.swap(sessions_);
    for (const auto& [id, session] : sessions) {
      RecordEndLocked(id, "ffid shut down");
    }
  }
  if (reaper_.joinable()) reaper_.join();
  for (const auto& [id, session] : sessions) {
    Stop(*session, WorkerProcess::StopCause::kServerShutdown);
  }
}

size_t SessionManager::EndQuietSessions() {
  std::vector<std::shared_ptr<Session>> quiet;
  size_t remaining;
  {
    absl::MutexLock lock(&mu_);
    quiet = RemoveWhereLocked([](Session& session) -> std::optional<std::string> {
      {
        absl::MutexLock session_lock(&session.mu_);
        if (session.in_flight_ != 0 || session.stream_calls_ != 0 ||
            !session.invocations_.empty()) {
          return std::nullopt;
        }
        for (const auto& [id, sink] : session.streams_) {
          if (!sink->Flushed()) return std::nullopt;
        }
      }
      // Checked after the counts: whatever the worker still owes an answer
      // for (a callback's nested request, a request no count covers).
      if (session.worker().busy()) return std::nullopt;
      return std::string("ffid shut down");
    });
    remaining = sessions_.size();
  }
  for (const auto& session : quiet) {
    Stop(*session, WorkerProcess::StopCause::kServerShutdown);
  }
  return remaining;
}

std::vector<std::shared_ptr<Session>> SessionManager::RemoveWhereLocked(
    absl::FunctionRef<std::optional<std::string>(Session&)> why_end) {
  std::vector<std::shared_ptr<Session>> removed;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    std::optional<std::string> why = why_end(*it->second);
    if (!why.has_value()) {
      ++it;
      continue;
    }
    RecordEndLocked(it->first, *std::move(why));
    removed.push_back(std::move(it->second));
    it = sessions_.erase(it);
  }
  return removed;
}

size_t SessionManager::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return sessions_.size();
}

absl::StatusOr<std::shared_ptr<SessionArena>> Session::GetOrCreateArena(
    uint64_t size) {
  absl::MutexLock lock(&arena_mu_);
  if (arena_ == nullptr) {
    ASSIGN_OR_RETURN(std::unique_ptr<SessionArena> made,
                     SessionArena::Create(size, tag()));
    arena_ = std::move(made);
  }
  return arena_;
}

std::shared_ptr<SessionArena> Session::arena() const {
  absl::MutexLock lock(&arena_mu_);
  return arena_;
}

}  // namespace ffid::server
