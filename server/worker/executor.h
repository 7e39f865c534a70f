// Executor: carries out the daemon's requests inside the worker process.
//
// Each WorkerRequest (load a library, resolve a symbol, call, allocate, read,
// write, free) becomes one WorkerResponse with the same id and a status; the
// handles it issues live in the executor's HandleTable. Native code runs on
// the calling thread: a crash in it takes the whole process down, which is
// the point of running this in a separate process.
//
// Reads and writes of borrowed pointers and raw addresses go through
// process_vm_readv/process_vm_writev on this very process, so a bad address
// is a BAD_ADDRESS error instead of a SIGSEGV.
//
// Callbacks: RegisterCallback makes an ffi::Closure whose calls go to the
// ClosureHandler given to set_closure_handler() (the worker's Dispatcher).
// A released callback keeps its closure until the executor is destroyed, so
// native code that still calls it reaches the handler (which reports it)
// instead of freed memory. While a native Call runs, failures of callbacks
// it triggers are collected (RecordCallbackFailure) and the Call then fails
// with CALLBACK_FAILED and the first failure's message.
//
// The executor owns everything it loads and allocates and releases it when
// destroyed. Thread-safe: Execute() may run on several threads at once (the
// main thread, and native threads that run calls made from inside a
// callback); the handle and callback tables are guarded by a mutex that is
// never held while native code runs. Using a handle on one thread while
// another frees or unloads it is the client's race, as it would be in C.
#ifndef FFID_SERVER_WORKER_EXECUTOR_H_
#define FFID_SERVER_WORKER_EXECUTOR_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ffi/closure.h"
#include "ffi/marshal.h"
#include "server/worker/arena.h"
#include "server/worker/handle_table.h"
#include "server/worker/protocol.pb.h"

namespace ffid::worker {

// The largest single Allocate; bigger requests are RESOURCE_LIMIT.
inline constexpr uint64_t kMaxAllocationBytes = uint64_t{1} << 30;
// The largest Read (it has to fit in one channel frame with room to spare).
inline constexpr uint64_t kMaxReadBytes =
    (uint64_t{1} << 30) - (uint64_t{1} << 20);
// How long a native thread waits for a callback's answer when the
// registration names no timeout.
inline constexpr absl::Duration kDefaultCallbackTimeout = absl::Seconds(60);

// What the Dispatcher needs to know about a callback when it is called.
struct CallbackInfo {
  std::string handle;
  // The return value for failures under RETURN_DEFAULT, encoded; empty means
  // all zeros.
  std::string default_result;
  v1::CallbackFailurePolicy policy = v1::CALLBACK_FAILURE_POLICY_RETURN_DEFAULT;
  absl::Duration timeout = kDefaultCallbackTimeout;
  bool released = false;
};

class Executor {
 public:
  // `session_tag` is embedded in every handle this executor issues.
  explicit Executor(std::string session_tag);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs one request. Never fails as a function: errors are in the
  // response's status (code, message and ErrorInfo reason).
  ffid::worker::WorkerResponse Execute(
      const ffid::worker::WorkerRequest& request);

  // Where calls of registered callbacks go; borrowed, must outlive the
  // executor. Without one, RegisterCallback fails with UNSUPPORTED.
  void set_closure_handler(ffi::ClosureHandler* handler) { handler_ = handler; }

  // The callback `closure` belongs to (a closure this executor made).
  absl::StatusOr<CallbackInfo> GetCallback(const ffi::Closure& closure);

  // Attributes a callback failure to the native Call running on this
  // thread, or if there is none (a thread the library created), to the
  // outermost Call in progress. Dropped, with a line on stderr, when no Call
  // is running at all.
  void RecordCallbackFailure(const absl::Status& failure);

  // The resolver over the handle table (thread-safe), for decoding callback
  // arguments.
  ffi::PointerResolver& resolver() { return resolver_; }

  // For tests and diagnostics; not synchronized.
  HandleTable& handles() { return handles_; }

 private:
  absl::StatusOr<v1::LoadLibraryResponse> LoadLibrary(
      const v1::LoadLibraryRequest& request);
  absl::StatusOr<v1::UnloadLibraryResponse> UnloadLibrary(
      const v1::UnloadLibraryRequest& request);
  absl::StatusOr<v1::ResolveFunctionResponse> ResolveFunction(
      const v1::ResolveFunctionRequest& request);
  absl::StatusOr<v1::CallResponse> Call(const v1::CallRequest& request);
  absl::StatusOr<v1::AllocateResponse> Allocate(
      const v1::AllocateRequest& request);
  absl::StatusOr<v1::ReadResponse> Read(const v1::ReadRequest& request);
  absl::StatusOr<v1::WriteResponse> Write(const v1::WriteRequest& request);
  absl::StatusOr<v1::FreeResponse> Free(const v1::FreeRequest& request);
  absl::StatusOr<v1::RegisterCallbackResponse> RegisterCallback(
      const v1::RegisterCallbackRequest& request);
  absl::StatusOr<v1::ReleaseCallbackResponse> ReleaseCallback(
      const v1::ReleaseCallbackRequest& request);
  absl::StatusOr<v1::AdoptResponse> Adopt(const v1::AdoptRequest& request);
  // Maps the session's arena (the memfd in `received_fd`); again with an
  // arena already mapped, only closes the descriptor.
  absl::StatusOr<AttachArenaResponse> AttachArena(const AttachArena& request);
  // Checks an untyped Read/Write as they would and says where its bytes
  // are (the daemon copies them itself).
  absl::StatusOr<LocateMemoryResponse> LocateMemoryFor(
      const LocateMemory& request);
  absl::StatusOr<v1::ResolveVariableResponse> ResolveVariable(
      const v1::ResolveVariableRequest& request);
  absl::StatusOr<v1::ReadResponse> ReadTyped(const v1::ReadRequest& request);
  absl::StatusOr<v1::WriteResponse> WriteTyped(
      const v1::WriteRequest& request);
  // The release function `symbol` ("free" when empty), looked up in
  // `library` (a handle; may be empty) and then globally.
  absl::StatusOr<void (*)(void*)> FindDestructor(absl::string_view symbol,
                                                 absl::string_view library);
  // Runs the steps in order; the first failure stops the batch and is
  // returned with the step's index (see ffid.v1.Batch).
  absl::StatusOr<v1::BatchResponse> Batch(const v1::BatchRequest& request);
  // Runs one step; `values` holds the referable results of the steps before
  // it, and gets this step's.
  [[nodiscard]] absl::Status RunBatchStep(const v1::BatchStep& step,
                                          std::vector<v1::Value>& values,
                                          v1::BatchStepResult* result);
  // Runs a call_columns step: every call in one loop, no message per call.
  [[nodiscard]] absl::Status RunCallColumns(const v1::CallColumns& request,
                                            v1::CallColumnsResponse* response);
  // The value a reference names, from the results of earlier steps.
  absl::StatusOr<v1::Value> ResolveReference(
      const v1::BatchReference& reference,
      const std::vector<v1::Value>& values);

  // Maps pointer values to addresses over the handle table, and callback
  // handles to their closures' code. Locks the executor's mutex.
  class Resolver : public ffi::PointerResolver {
   public:
    explicit Resolver(Executor& executor) : executor_(executor) {}
    absl::StatusOr<void*> Resolve(const v1::PointerValue& pointer,
                                  absl::string_view param) override;
    v1::Value Wrap(void* address) override;
    absl::StatusOr<void*> ResolveCallback(absl::string_view handle,
                                          const v1::FunctionType& type,
                                          absl::string_view param) override;

   private:
    Executor& executor_;
  };

  struct Callback {
    std::unique_ptr<ffi::Closure> closure;
    CallbackInfo info;
  };

  // The callback failures of one native Call (see RecordCallbackFailure).
  struct CallScope;
  friend struct CallScope;

  // The session's arena once attached; declared before the handle table,
  // whose arena memory it must outlive.
  std::unique_ptr<SharedArena> arena_ ABSL_GUARDED_BY(mu_);
  absl::Mutex mu_;
  HandleTable handles_ ABSL_GUARDED_BY(mu_);
  // By handle; entries stay after release (see the class comment).
  absl::flat_hash_map<std::string, std::unique_ptr<Callback>> callbacks_
      ABSL_GUARDED_BY(mu_);
  // Closure tag -> callback.
  absl::flat_hash_map<uint64_t, Callback*> callbacks_by_tag_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_callback_tag_ ABSL_GUARDED_BY(mu_) = 1;
  ffi::ClosureHandler* handler_ = nullptr;
  Resolver resolver_;

  absl::Mutex failures_mu_;
  // The outermost Call in progress, which takes the failures of callbacks
  // called from threads the library created.
  CallScope* outermost_ ABSL_GUARDED_BY(failures_mu_) = nullptr;
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_EXECUTOR_H_
