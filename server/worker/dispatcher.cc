#include "server/worker/dispatcher.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ffi/errors.h"

namespace ffid::worker {
namespace {

// The request the current thread is executing (0: none).
thread_local uint64_t current_request = 0;

class RequestScope {
 public:
  explicit RequestScope(uint64_t id) : previous_(current_request) {
    current_request = id;
  }
  ~RequestScope() { current_request = previous_; }
  RequestScope(const RequestScope&) = delete;
  RequestScope& operator=(const RequestScope&) = delete;

 private:
  const uint64_t previous_;
};

absl::Status CallbackFailed(absl::string_view message) {
  return MakeError(absl::StatusCode::kAborted,
                   v1::ERROR_REASON_CALLBACK_FAILED, message);
}

}  // namespace

Dispatcher::Dispatcher(FrameChannel& channel, Executor& executor)
    : channel_(channel), executor_(executor) {
  executor_.set_closure_handler(this);
}

Dispatcher::~Dispatcher() { executor_.set_closure_handler(nullptr); }

absl::Status Dispatcher::Run() {
  std::thread reader([this] { ReaderLoop(); });
  absl::MutexLock lock(&mu_);
  for (;;) {
    // A closed channel ends the session: what is queued is not run.
    if (closed_) break;
    if (!main_queue_.empty()) {
      WorkerRequest request = std::move(main_queue_.front());
      main_queue_.pop_front();
      mu_.Unlock();
      main_request_ = request.id();
      ExecuteAndAnswer(request);
      main_request_ = 0;
      mu_.Lock();
      continue;
    }
    if (reading_) {
      // The reader thread holds the channel; it signals when it lets go.
      main_wake_.Wait(&mu_);
      continue;
    }
    // Idle, and nobody reads: read here, so that a request wakes this
    // thread directly instead of the reader thread, which would have to
    // wake this one (a second cross-core wake-up per request).
    ReadOneLocked();
  }
  reader_wake_.SignalAll();
  mu_.Unlock();
  reader.join();
  mu_.Lock();
  return end_;
}

void Dispatcher::ReaderLoop() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    // Read only while a native thread waits for a callback's reply and
    // nobody else reads: then the main thread may be busy in native code.
    while (!closed_ && (reading_ || waiters_.empty())) {
      reader_wake_.Wait(&mu_);
    }
    if (closed_) return;
    ReadOneLocked();
    // The main thread may have a request now, or want to read.
    main_wake_.Signal();
  }
}

void Dispatcher::ReadOneLocked() {
  reading_ = true;
  mu_.Unlock();
  WorkerRequest request;
  absl::Status received = channel_.Receive(&request);
  std::optional<WorkerResponse> refused;
  mu_.Lock();
  reading_ = false;
  if (!received.ok()) {
    closed_ = true;
    // UNAVAILABLE is the daemon closing the channel: the session is over.
    if (received.code() != absl::StatusCode::kUnavailable) end_ = received;
    main_wake_.Signal();
    reader_wake_.SignalAll();
    for (auto& [id, waiter] : waiters_) waiter->wake.Signal();
    return;
  }
  // A descriptor only ever comes with an attach_arena frame; any other is
  // closed.
  if (request.has_attach_arena()) {
    request.mutable_attach_arena()->set_received_fd(-1);
  }
  for (int fd = channel_.TakeReceivedFd(); fd >= 0;
       fd = channel_.TakeReceivedFd()) {
    if (request.has_attach_arena() &&
        request.attach_arena().received_fd() < 0) {
      request.mutable_attach_arena()->set_received_fd(fd);
    } else {
      ::close(fd);
    }
  }
  if (request.has_attach_arena()) {
    // Mapping is quick and runs no native code: done by the thread that
    // read it, which keeps the channel meanwhile, so that no later frame
    // (an arena Allocate) can run before the arena is mapped.
    reading_ = true;
    mu_.Unlock();
    ExecuteAndAnswer(request);
    mu_.Lock();
    reading_ = false;
    reader_wake_.SignalAll();
    main_wake_.Signal();
    return;
  }
  if (request.has_callback_reply()) {
    auto it = waiters_.find(request.callback_reply().invocation());
    // A reply for an invocation that stopped waiting (timed out) is late
    // and has nobody to go to.
    if (it != waiters_.end()) {
      it->second->reply = std::move(*request.mutable_callback_reply());
      it->second->wake.Signal();
    }
  } else if (request.invocation() != 0) {
    auto it = waiters_.find(request.invocation());
    if (it != waiters_.end()) {
      it->second->nested.push_back(std::move(request));
      it->second->wake.Signal();
    } else {
      refused.emplace();
      refused->set_id(request.id());
      *refused->mutable_status() = StatusToProto(FailedPreconditionError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat("callback invocation ", request.invocation(),
                       " is not waiting for its result any more (it was "
                       "answered, timed out or never existed); a call made "
                       "from inside a callback must be made before the "
                       "callback returns")));
    }
  } else {
    main_queue_.push_back(std::move(request));
  }
  if (refused.has_value()) {
    mu_.Unlock();
    Send(*refused);
    mu_.Lock();
  }
}

void Dispatcher::ExecuteAndAnswer(const WorkerRequest& request) {
  RequestScope scope(request.id());
  WorkerResponse response = executor_.Execute(request);
  // A library's printf output sits in stdio buffers; the worker is usually
  // SIGKILLed at the session's end, which would lose it.
  std::fflush(nullptr);
  Send(response);
}

void Dispatcher::Send(const WorkerResponse& response) {
  absl::Status sent = channel_.Send(response);
  if (!sent.ok() && sent.code() == absl::StatusCode::kResourceExhausted) {
    // The answer itself is too big for a frame: say so instead.
    WorkerResponse too_big;
    too_big.set_id(response.id());
    *too_big.mutable_status() = StatusToProto(sent);
    sent = channel_.Send(too_big);
  }
  if (sent.ok()) return;
  // A daemon that has gone is noticed by the reader (EOF); anything else is
  // worth a line for whoever reads the daemon's log.
  std::fprintf(stderr, "ffid-worker: %s\n", std::string(sent.message()).c_str());
  if (::fcntl(channel_.fd(), F_GETFD) < 0 && errno == EBADF) {
    // A library closed the channel's descriptor: the reader may be blocked
    // on it for ever and no answer can reach the daemon, so end the worker
    // here; the daemon sees EOF and reports it.
    std::fflush(nullptr);
    ::_exit(kExitChannelBroken);
  }
}

uint64_t Dispatcher::CurrentRequest() const {
  return current_request != 0 ? current_request : main_request_.load();
}

void Dispatcher::OnCall(const ffi::Closure& closure, void* result,
                        void** arguments) {
  absl::StatusOr<CallbackInfo> info = executor_.GetCallback(closure);
  if (!info.ok()) {
    // Cannot happen for closures the executor made; answer zero rather
    // than leave the result undefined.
    closure.WriteResultBytes("", result);
    executor_.RecordCallbackFailure(info.status());
    return;
  }
  const std::string what =
      absl::StrCat("callback '", closure.name(), "' (", info->handle, ")");
  if (info->released) {
    Fail(closure, *info,
         CallbackFailed(absl::StrCat(
             what,
             " was called by native code after the client released it")),
         result);
    return;
  }
  absl::StatusOr<std::vector<v1::Value>> values =
      closure.DecodeArguments(arguments, executor_.resolver());
  if (!values.ok()) {
    Fail(closure, *info,
         CallbackFailed(absl::StrCat(what, ": ", values.status().message())),
         result);
    return;
  }

  Waiter waiter;
  WorkerResponse frame;
  CallbackInvocation* invocation = frame.mutable_invocation();
  {
    absl::MutexLock lock(&mu_);
    if (closed_) {
      Fail(closure, *info,
           CallbackFailed(absl::StrCat(
               what, ": the daemon has closed the worker's channel")),
           result);
      return;
    }
    const uint64_t id = next_invocation_++;
    waiters_[id] = &waiter;
    invocation->mutable_invocation()->set_invocation(id);
    // Someone must read the reply: the main thread may be the one waiting
    // here, or busy in the native call that led here.
    reader_wake_.Signal();
  }
  const uint64_t id = invocation->invocation().invocation();
  invocation->mutable_invocation()->set_callback(info->handle);
  for (v1::Value& value : *values) {
    *invocation->mutable_invocation()->add_arguments() = std::move(value);
  }
  invocation->mutable_invocation()->set_native_thread_id(::gettid());
  invocation->set_request_id(CurrentRequest());
  Send(frame);

  const absl::Time deadline = absl::Now() + info->timeout;
  absl::Status failure;
  std::optional<CallbackReply> reply;
  {
    absl::MutexLock lock(&mu_);
    for (;;) {
      while (waiter.nested.empty() && !waiter.reply.has_value() && !closed_ &&
             absl::Now() < deadline) {
        waiter.wake.WaitWithDeadline(&mu_, deadline);
      }
      if (!waiter.nested.empty()) {
        // A call the client makes from inside this callback: it runs here,
        // on the thread that waits.
        WorkerRequest nested = std::move(waiter.nested.front());
        waiter.nested.pop_front();
        mu_.Unlock();
        ExecuteAndAnswer(nested);
        mu_.Lock();
        continue;
      }
      if (waiter.reply.has_value()) {
        reply = std::move(waiter.reply);
      } else if (closed_) {
        failure = CallbackFailed(absl::StrCat(
            what, ": the daemon closed the worker's channel while the native "
                  "caller waited for the client's answer"));
      } else {
        failure = CallbackFailed(absl::StrCat(
            what, ": the client did not answer within the callback's timeout "
                  "of ",
            absl::FormatDuration(info->timeout)));
      }
      break;
    }
    waiters_.erase(id);
  }
  if (reply.has_value()) {
    absl::Status status = StatusFromProto(reply->status());
    if (status.ok()) {
      std::string bytes;
      status = closure.EncodeResult(reply->result(), executor_.resolver(),
                                    &bytes);
      if (status.ok()) {
        closure.WriteResultBytes(bytes, result);
        return;
      }
    }
    failure = CallbackFailed(absl::StrCat(what, " failed: ", status.message()));
  }
  Fail(closure, *info, failure, result);
}

void Dispatcher::Fail(const ffi::Closure& closure, const CallbackInfo& info,
                      const absl::Status& why, void* result) {
  if (info.policy == v1::CALLBACK_FAILURE_POLICY_TERMINATE_WORKER) {
    Terminate(why);
  }
  closure.WriteResultBytes(info.default_result, result);
  executor_.RecordCallbackFailure(why);
}

void Dispatcher::Terminate(const absl::Status& failure) {
  const std::string message = absl::StrCat(
      failure.message(),
      "; the worker was terminated, as the callback's failure policy asks");
  std::fprintf(stderr, "ffid-worker: %s\n", message.c_str());
  std::fflush(nullptr);
  const uint64_t request = CurrentRequest();
  if (request != 0) {
    WorkerResponse response;
    response.set_id(request);
    *response.mutable_status() = StatusToProto(CallbackFailed(message));
    Send(response);
  }
  ::_exit(kExitCallbackPolicy);
}

}  // namespace ffid::worker
