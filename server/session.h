// Sessions: one worker process each, kept in a table keyed by an
// unguessable id, deleted explicitly, when their last Connect stream closes,
// or after their idle timeout.
//
// A Session is shared (std::shared_ptr) between the SessionManager's table
// and the RPCs using it, so deleting a session while a call is in flight is
// safe: the worker is stopped, the call fails, and the object goes away with
// its last user. Session and SessionManager are thread-safe. Lock order:
// SessionManager::mu_ before Session::mu_; neither is held while talking to
// a worker.
#ifndef FFID_SERVER_SESSION_H_
#define FFID_SERVER_SESSION_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ffid/v1/ffid.pb.h"
#include "server/declaration_scope.h"
#include "server/session_arena.h"
#include "server/session_policy.h"
#include "server/worker_process.h"

namespace ffid::server {

// The sending side of a Connect stream: where stream results and callback
// invocations for the client go. Implemented by the service over the gRPC
// stream. Push() queues and never blocks; it may be called from any thread.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void Push(v1::ConnectResponse message) = 0;
  // Whether everything pushed so far has been handed to the transport (a
  // drain must not end a stream with answers still queued on it).
  virtual bool Flushed() const { return true; }
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::string id, std::unique_ptr<WorkerProcess> worker,
          absl::Duration idle_timeout, SessionPolicy policy = {});
  // Stops the worker first: its reader thread calls into the session.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // 32 lowercase hex characters from getrandom().
  const std::string& id() const { return id_; }
  // The first 8 characters of the id; embedded in the worker's handles.
  std::string tag() const { return id_.substr(0, 8); }
  // The current worker. After a restart (RESTART policy) this is the new
  // one; the reference to an old one stays valid (dead) until the session
  // is destroyed.
  WorkerProcess& worker();

  // Sends `request` to the current worker (WorkerProcess::Execute), with
  // the restart policy around it: library and function handles issued
  // before a restart are translated to the new worker's; when the worker
  // died during the request (crash, limit, deadline), a RESTART session
  // starts a new worker at once, loads its libraries and resolves its
  // functions again, and the error says so; a memory handle of a dead
  // worker fails with HANDLE_INVALID saying it did not survive the restart.
  // A NEVER session, or one that gave up after a crash loop, just fails.
  absl::StatusOr<worker::WorkerResponse> Execute(
      worker::WorkerRequest request, absl::Time deadline,
      std::string description, std::string function = "",
      const std::function<bool()>& is_cancelled = nullptr,
      OnCancel on_cancel = OnCancel::kKillWorker);

  // Rewrites library and function handles from before a restart to the
  // current worker's (for requests that bypass Execute()).
  void TranslateHandles(worker::WorkerRequest& request) const;

  // For requests that bypass Execute() (calls pipelined on a Connect
  // stream): a RESTART session whose worker has died replaces it first.
  // Blocks for the restart.
  void ReviveIfDead();

  // How many times the worker was restarted.
  int restarts() const;

  // Starts a replacement worker for the RESTART policy; set by the
  // SessionManager. Not thread-safe: call before the session is shared.
  using Spawner =
      std::function<absl::StatusOr<std::unique_ptr<WorkerProcess>>()>;
  void set_spawner(Spawner spawner) { spawner_ = std::move(spawner); }
  // The C declarations made in this session (types usable by name).
  DeclarationScope& declarations() { return declarations_; }
  absl::Duration idle_timeout() const { return idle_timeout_; }
  // The limits, sandbox and restart policy the session runs under.
  const SessionPolicy& policy() const { return policy_; }

  // ACTIVE while the worker runs, CRASHED once it died on its own or was
  // killed for a deadline.
  v1::SessionState state() const;
  // The public view: id, state, worker pid, crash report, idle timeout.
  v1::Session ToProto() const;

  // Function handle -> symbol, so that call and crash messages can say
  // "calling 'cos'" rather than quoting a handle.
  void RememberFunction(const std::string& function_handle,
                        const std::string& symbol,
                        const std::string& library_handle);
  // The symbol of a function handle, or "" if unknown.
  std::string FunctionSymbol(const std::string& function_handle) const;
  // Forgets the functions of an unloaded library.
  void ForgetLibrary(const std::string& library_handle);

  // Registers `on_end`, called once when the session is deleted (by
  // DeleteSession, its idle timeout or the daemon's shutdown), e.g. to end
  // an attached Connect stream. Called at once if the session has already
  // ended. Returns a token for RemoveEndListener. `on_end` runs with the
  // session's lock held: it must be quick and must not call back into the
  // session.
  int AddEndListener(std::function<void()> on_end);
  void RemoveEndListener(int token);

  // A call read from one of the session's Connect streams, counted from
  // before it is checked until its answer has been pushed to the stream
  // (the worker's answer, or the error that refused it): a drain ends no
  // session while one is (SessionManager::EndQuietSessions), not even
  // while its worker is being restarted before the call is sent.
  void StreamCallStarted() ABSL_LOCKS_EXCLUDED(mu_);
  void StreamCallEnded() ABSL_LOCKS_EXCLUDED(mu_);

  // Callback invocations. The worker's invocations go to the stream that
  // sent the request the native thread was executing, else (unary calls,
  // threads the library created) to the session's oldest attached stream;
  // with no stream attached, the invocation fails at once. AddStream
  // returns the stream's id (Route::stream); RemoveStream fails the
  // invocations that stream has not answered ("the client disconnected").
  uint64_t AddStream(std::shared_ptr<StreamSink> sink);
  void RemoveStream(uint64_t stream);
  // Passes a client's CallbackResult to the worker. Results for unknown
  // invocations (answered already, timed out) are dropped.
  void AnswerInvocation(const v1::CallbackResult& result);

  // The session's shared-memory arena (server/session_arena.h): made on
  // first use with `size` bytes, then the same one for the session's life,
  // across worker restarts (each new worker is attached to it by the
  // service on its next arena request).
  absl::StatusOr<std::shared_ptr<SessionArena>> GetOrCreateArena(
      uint64_t size) ABSL_LOCKS_EXCLUDED(arena_mu_);
  // The arena if it was made, else nullptr.
  std::shared_ptr<SessionArena> arena() const ABSL_LOCKS_EXCLUDED(arena_mu_);

 private:
  friend class SessionManager;
  friend class SessionLease;

  struct Function {
    std::string symbol;
    std::string library;
  };

  // From the worker's reader thread.
  void OnInvocation(const Route& route, worker::CallbackInvocation invocation);
  // Answers invocation `id` with a failure on the client's behalf.
  void FailInvocation(uint64_t id, const absl::Status& why);

  const std::string id_;
  // A library or function to load again after a restart, under the
  // handle the client knows.
  struct Loaded {
    std::string handle;
    // For a library: its real path. For a function: the request that
    // resolved it (library handle as the client knows it).
    std::string path;
    worker::WorkerRequest resolve;
  };

  // With the RESTART policy: when `worker` (of generation `generation`)
  // dies, however it dies, a new one is started at once on a thread of its
  // own, without waiting for the next request. Needs the session to be
  // owned by a shared_ptr.
  void WatchWorker(WorkerProcess& worker, uint64_t generation);
  // Replaces a dead worker of generation `generation` (no-op if that was
  // done already). Tells every attached Connect stream (WorkerRestarted).
  // Returns what to tell the client.
  std::string Restart(uint64_t generation, const absl::Status& death)
      ABSL_LOCKS_EXCLUDED(mu_, restart_mu_);
  // The current worker, for const methods.
  WorkerProcess* Current() const ABSL_LOCKS_EXCLUDED(mu_);
  // Records what a successful request loaded or unloaded.
  void Remember(const worker::WorkerRequest& original,
                const worker::WorkerResponse& response);

  std::unique_ptr<WorkerProcess> worker_ ABSL_GUARDED_BY(mu_);
  // Workers that died and were replaced; kept so references stay valid.
  std::vector<std::unique_ptr<WorkerProcess>> retired_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> retired_tags_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int restarts_ ABSL_GUARDED_BY(mu_) = 0;
  // Deaths in a row that came soon after a (re)start; bounds a crash loop.
  int quick_deaths_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time worker_started_ ABSL_GUARDED_BY(mu_);
  // Set when the session stopped restarting (crash loop, failed replay).
  std::string gave_up_ ABSL_GUARDED_BY(mu_);
  // Client-visible handle -> current worker's handle.
  absl::flat_hash_map<std::string, std::string> aliases_ ABSL_GUARDED_BY(mu_);
  std::vector<Loaded> libraries_ ABSL_GUARDED_BY(mu_);
  std::vector<Loaded> resolved_ ABSL_GUARDED_BY(mu_);
  // Serializes restarts.
  absl::Mutex restart_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  Spawner spawner_;
  const absl::Duration idle_timeout_;
  DeclarationScope declarations_;
  const SessionPolicy policy_;

  mutable absl::Mutex arena_mu_;
  std::shared_ptr<SessionArena> arena_ ABSL_GUARDED_BY(arena_mu_);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Function> functions_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::function<void()>> end_listeners_ ABSL_GUARDED_BY(mu_);
  int next_listener_ ABSL_GUARDED_BY(mu_) = 0;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  // Idle bookkeeping, read by the reaper.
  absl::Time last_used_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // Calls read from Connect streams and not answered yet (see
  // StreamCallStarted); a drain leaves the session alone while any is.
  int stream_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int attached_streams_ ABSL_GUARDED_BY(mu_) = 0;
  // Connect streams by id (ascending = oldest first).
  std::map<uint64_t, std::shared_ptr<StreamSink>> streams_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_stream_ ABSL_GUARDED_BY(mu_) = 1;
  // Invocations sent to a client and not answered: invocation -> stream.
  absl::flat_hash_map<uint64_t, uint64_t> invocations_ ABSL_GUARDED_BY(mu_);
};

// Marks a session busy for the lifetime of one request: the reaper never
// deletes a session with a request in flight, and the idle clock restarts
// when the request ends. Movable, not copyable.
class SessionLease {
 public:
  explicit SessionLease(std::shared_ptr<Session> session);
  ~SessionLease();
  SessionLease(SessionLease&& other) noexcept = default;
  SessionLease& operator=(SessionLease&& other) noexcept;
  SessionLease(const SessionLease&) = delete;
  SessionLease& operator=(const SessionLease&) = delete;

  Session* operator->() const { return session_.get(); }
  Session& operator*() const { return *session_; }
  const std::shared_ptr<Session>& get() const { return session_; }

 private:
  void Release();
  std::shared_ptr<Session> session_;
};

struct SessionManagerOptions {
  // The ffid-worker executable.
  std::string worker_path;
  // The idle timeout of sessions that do not ask for one.
  absl::Duration default_idle_timeout = absl::Seconds(300);
  // How often the reaper looks for idle sessions.
  absl::Duration reap_interval = absl::Seconds(1);
};

class SessionManager {
 public:
  explicit SessionManager(SessionManagerOptions options);
  // Calls Shutdown().
  ~SessionManager();
  SessionManager(const SessionManager&) = delete;
  SessionManager& operator=(const SessionManager&) = delete;

  // Starts a session and its worker. A zero `idle_timeout` means the
  // default. UNAVAILABLE + WORKER_START_FAILED if the worker cannot start;
  // UNAVAILABLE + INTERNAL once Shutdown() has begun.
  // `policy` is the session's resolved policy (session_policy.h).
  absl::StatusOr<std::shared_ptr<Session>> Create(
      absl::Duration idle_timeout, SessionPolicy policy = {});

  // Looks a session up without marking it used. NOT_FOUND +
  // SESSION_NOT_FOUND "session 'x' does not exist (...)" if unknown,
  // INVALID_ARGUMENT + INVALID_REQUEST if `id` is empty.
  absl::StatusOr<std::shared_ptr<Session>> Get(absl::string_view id) const;

  // Looks a session up and marks it busy until the lease is dropped.
  absl::StatusOr<SessionLease> Use(absl::string_view id);

  // Removes the session and stops its worker (SIGKILL after closing the
  // channel; calls in flight fail). Errors as Get().
  [[nodiscard]] absl::Status Delete(absl::string_view id);

  // Attaches a Connect stream: the session is not deleted for idleness
  // while a stream is attached. Errors as Get().
  absl::StatusOr<std::shared_ptr<Session>> Attach(absl::string_view id);
  // Detaches a stream; when the last one goes, the session is deleted (the
  // client has gone for good). No-op if the session is already gone.
  void Detach(const std::shared_ptr<Session>& session);

  // For a drain: ends, as Shutdown() would, every session with nothing in
  // flight (no request holding a lease, no Connect-stream call unanswered
  // or answer not yet handed to gRPC, nothing sent to its worker and
  // unanswered, no callback invocation awaiting its client), so that idle
  // sessions' Connect streams do not hold the drain until its grace ends.
  // Busy sessions are left alone. Returns how many sessions remain.
  size_t EndQuietSessions();

  // Stops the reaper and every worker; later Create()s fail. Idempotent.
  void Shutdown();

  // The number of live sessions.
  size_t size() const;

 private:
  // Why a recently ended session ended, to explain a later NOT_FOUND.
  void RecordEndLocked(const std::string& id, std::string why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  [[nodiscard]] absl::Status NotFoundLocked(absl::string_view id) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Removes and returns the session, or null.
  std::shared_ptr<Session> RemoveLocked(absl::string_view id, std::string why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the sessions `why_end` gives a reason for (recorded as why each
  // ended; nullopt keeps the session) and returns them, for the caller to
  // Stop() without mu_.
  std::vector<std::shared_ptr<Session>> RemoveWhereLocked(
      absl::FunctionRef<std::optional<std::string>(Session&)> why_end)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReaperLoop();
  // Tells the session's listeners and stops its worker. Called without mu_.
  static void Stop(Session& session, WorkerProcess::StopCause cause);

  const SessionManagerOptions options_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Session>, std::less<>> sessions_
      ABSL_GUARDED_BY(mu_);
  // The most recent ended sessions (bounded), oldest first.
  std::deque<std::pair<std::string, std::string>> ended_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar reaper_wake_;
  std::thread reaper_;
};

// 32 lowercase hex characters from getrandom().
std::string NewSessionId();

// UNAVAILABLE (INTERNAL) "ffid is shutting down": what a new session, a
// new CallStream or a new call on a Connect stream gets once the daemon has
// begun to stop.
[[nodiscard]] absl::Status ShuttingDownError();

// NOT_FOUND + SESSION_NOT_FOUND for session `id`: what an unknown id gets,
// and what a principal gets for another principal's session (so ids cannot
// be probed).
[[nodiscard]] absl::Status SessionNotFoundError(absl::string_view id);

}  // namespace ffid::server

#endif  // FFID_SERVER_SESSION_H_
