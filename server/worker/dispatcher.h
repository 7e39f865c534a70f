// Dispatcher: the worker's threads, and callbacks across the channel.
//
// Frames from the daemon are read by the main thread while it is idle (so
// that a request wakes the thread that executes it, with no hand-off), and
// by a reader thread while a native thread waits for a callback's reply
// (the main thread may be the one waiting, or busy in native code); one
// reads at a time. Each frame is routed:
//   - an ordinary request (invocation 0) goes to the main thread's queue;
//     the main thread (Run()) executes them one at a time, in order;
//   - a request tagged with an invocation (a call the client makes from
//     inside a callback) goes to the native thread waiting for that
//     invocation, which executes it, answers it, and goes on waiting;
//   - a callback reply wakes the thread waiting for it.
//
// As the Executor's ClosureHandler, OnCall runs on whatever native thread
// called a callback: it decodes the arguments, sends a CallbackInvocation
// (id, callback, arguments, the native thread's tid, and the request this
// thread, or else the main thread, is executing) and blocks until the reply,
// a nested request, the callback's timeout or the channel's end. Nested
// requests can call callbacks again, to any depth. When the callback fails
// (the client's error, no answer in time, the daemon gone, a released
// callback) the native caller gets the callback's default result and the
// failure is reported to the Executor, which fails the Call it happened in
// with CALLBACK_FAILED; under the TERMINATE_WORKER policy the worker instead
// answers that Call with CALLBACK_FAILED and exits with status
// kExitCallbackPolicy. No native thread waits forever.
//
// Thread-safe. The channel and executor are borrowed and must outlive the
// dispatcher; Run() is called once, from the worker's main thread.
#ifndef FFID_SERVER_WORKER_DISPATCHER_H_
#define FFID_SERVER_WORKER_DISPATCHER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "ffi/closure.h"
#include "server/worker/channel.h"
#include "server/worker/executor.h"
#include "server/worker/protocol.pb.h"

namespace ffid::worker {

// The exit status of a worker terminated by a callback's TERMINATE_WORKER
// failure policy.
inline constexpr int kExitCallbackPolicy = 5;
// The exit status of a worker whose channel broke while it sent an answer
// (same as ffid-worker's own channel failures).
inline constexpr int kExitChannelBroken = 4;

class Dispatcher : public ffi::ClosureHandler {
 public:
  // Makes itself `executor`'s closure handler.
  Dispatcher(FrameChannel& channel, Executor& executor);
  ~Dispatcher() override;
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Serves requests until the daemon closes the channel: OK then, or the
  // channel's error if it failed otherwise.
  [[nodiscard]] absl::Status Run();

  void OnCall(const ffi::Closure& closure, void* result,
              void** arguments) override;

 private:
  // A native thread waiting for the reply to one invocation.
  struct Waiter {
    absl::CondVar wake;
    // Requests made from inside the invocation, to run on this thread.
    std::deque<WorkerRequest> nested;
    std::optional<CallbackReply> reply;
  };

  void ReaderLoop();
  // Receives one frame (mu_ released meanwhile) and routes it; on the
  // channel's end, closes.
  void ReadOneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Executes `request` on this thread and sends the response.
  void ExecuteAndAnswer(const WorkerRequest& request);
  void Send(const WorkerResponse& response);
  // Handles a failed invocation: default result or termination.
  void Fail(const ffi::Closure& closure, const CallbackInfo& info,
            const absl::Status& why, void* result);
  [[noreturn]] void Terminate(const absl::Status& failure);
  // The request this thread executes, else the main thread's.
  uint64_t CurrentRequest() const;

  FrameChannel& channel_;
  Executor& executor_;
  std::atomic<uint64_t> main_request_{0};

  absl::Mutex mu_;
  absl::CondVar main_wake_;
  // Wakes the reader thread: a waiter appeared, or the channel closed.
  absl::CondVar reader_wake_;
  // Someone is in channel_.Receive().
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<WorkerRequest> main_queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Waiter*> waiters_ ABSL_GUARDED_BY(mu_);
  uint64_t next_invocation_ ABSL_GUARDED_BY(mu_) = 1;
  // Set when the channel ended; `end_` says how.
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_DISPATCHER_H_
