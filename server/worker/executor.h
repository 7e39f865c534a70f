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
// The executor owns everything it loads and allocates and releases it when
// destroyed. Not thread-safe: one thread calls Execute(), one request at a
// time.
#ifndef FFID_SERVER_WORKER_EXECUTOR_H_
#define FFID_SERVER_WORKER_EXECUTOR_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ffi/marshal.h"
#include "server/worker/handle_table.h"
#include "server/worker/protocol.pb.h"

namespace ffid::worker {

// The largest single Allocate; bigger requests are RESOURCE_LIMIT.
inline constexpr uint64_t kMaxAllocationBytes = uint64_t{1} << 30;
// The largest Read (it has to fit in one channel frame with room to spare).
inline constexpr uint64_t kMaxReadBytes =
    (uint64_t{1} << 30) - (uint64_t{1} << 20);

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

  // For tests and diagnostics.
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

  // Maps pointer values to addresses over the handle table.
  class Resolver : public ffi::PointerResolver {
   public:
    explicit Resolver(HandleTable& handles) : handles_(handles) {}
    absl::StatusOr<void*> Resolve(const v1::PointerValue& pointer,
                                  absl::string_view param) override;
    v1::Value Wrap(void* address) override;

   private:
    HandleTable& handles_;
  };

  HandleTable handles_;
  Resolver resolver_;
};

}  // namespace ffid::worker

#endif  // FFID_SERVER_WORKER_EXECUTOR_H_
