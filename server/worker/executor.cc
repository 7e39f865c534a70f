#include "server/worker/executor.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/rpc/error_details.pb.h"
#include "ffi/declaration_parser.h"
#include "ffi/errors.h"
#include "ffi/function.h"
#include "ffi/types.h"

namespace ffid::worker {
namespace {

std::string Hex(uintptr_t address) { return absl::StrFormat("0x%x", address); }

absl::Status InvalidRequest(absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_INVALID_REQUEST, message);
}

absl::Status OutOfBounds(absl::string_view message) {
  return MakeError(absl::StatusCode::kOutOfRange,
                   v1::ERROR_REASON_OUT_OF_BOUNDS, message);
}

absl::Status BadAddress(absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_BAD_ADDRESS, message);
}

// Copies between this process's memory and `remote` (an address that may be
// unmapped or protected) with process_vm_readv/writev on ourselves: the
// kernel reports EFAULT instead of delivering SIGSEGV.
absl::Status CopyUnchecked(bool write, void* local, uintptr_t remote,
                           size_t length) {
  const char* verb = write ? "write" : "read";
  size_t done = 0;
  while (done < length) {
    iovec local_iov{static_cast<char*>(local) + done, length - done};
    iovec remote_iov{reinterpret_cast<void*>(remote + done), length - done};
    ssize_t n =
        write ? ::process_vm_writev(::getpid(), &local_iov, 1, &remote_iov, 1,
                                    0)
              : ::process_vm_readv(::getpid(), &local_iov, 1, &remote_iov, 1,
                                   0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EFAULT) {
      return MakeError(
          absl::StatusCode::kInternal, v1::ERROR_REASON_INTERNAL,
          absl::StrCat("cannot ", verb, " ", length, " bytes at ",
                       Hex(remote), ": process_vm_", write ? "writev" : "readv",
                       " failed: ", std::strerror(errno)));
    }
    if (n <= 0) {
      std::string partial;
      if (done > 0) {
        partial = absl::StrCat(" (only the first ", done, " bytes could be ",
                               write ? "written" : "read", ")");
      }
      return BadAddress(absl::StrCat(
          "cannot ", verb, " ", length, " bytes at ", Hex(remote),
          ": the memory at ", Hex(remote + done), " is not ",
          write ? "writable" : "readable", " in the worker", partial));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Where a Read or Write lands.
struct Target {
  char* address = nullptr;
  // Memory of known size (allocated by ffid, a variable): bounds are known
  // and access is a plain memcpy.
  bool owned = false;
  // For such memory: its size and the offset into it.
  size_t size = 0;
  uint64_t offset = 0;
  std::string handle;
};

template <typename T>
absl::Status Store(absl::StatusOr<T> result, T* out) {
  if (!result.ok()) return result.status();
  *out = std::move(result).value();
  return absl::OkStatus();
}

// `status` as the failure of batch step `index`: the same code, reason and
// payloads, the message prefixed with the step, and "batch_step" in the
// ErrorInfo metadata.
absl::Status BatchStepFailure(const absl::Status& status, int index,
                              absl::string_view what) {
  return WithMetadata(
      WithMessage(status, absl::StrCat("batch step ", index, " (", what,
                                       "): ", status.message())),
      "batch_step", absl::StrCat(index));
}

// What a batch step does, for messages.
std::string DescribeStep(const v1::BatchStep& step) {
  switch (step.request_case()) {
    case v1::BatchStep::kCall:
      return absl::StrCat("call of ", step.call().function());
    case v1::BatchStep::kAllocate:
      return "allocate";
    case v1::BatchStep::kRead:
      return "read";
    case v1::BatchStep::kWrite:
      return "write";
    case v1::BatchStep::kFree:
      return "free";
    case v1::BatchStep::kCallColumns:
      return absl::StrCat(step.call_columns().count(), " calls of ",
                          step.call_columns().function());
    case v1::BatchStep::REQUEST_NOT_SET:
      break;
  }
  return "empty step";
}

// A call that ran into a resource limit without dying carries its
// ffid.v1.CallResponse (result, out values, errno) under this URL.
constexpr absl::string_view kCallResponseTypeUrl =
    "type.googleapis.com/ffid.v1.CallResponse";

std::string LimitBytes(uint64_t bytes) {
  if (bytes % (1024 * 1024) == 0) return absl::StrCat(bytes >> 20, " MiB");
  return absl::StrCat(bytes, " bytes");
}

// The worker's address space in bytes (/proc/self/statm), or 0 if /proc is
// not in its view.
uint64_t AddressSpaceInUse() {
  FILE* statm = std::fopen("/proc/self/statm", "re");
  if (statm == nullptr) return 0;
  unsigned long long pages = 0;
  const bool read = std::fscanf(statm, "%llu", &pages) == 1;
  std::fclose(statm);
  return read ? pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

// Whether a native call that returned with `error` in errno ran into one of
// the worker's rlimits without dying of it. errno is zeroed right before
// the call, so a nonzero value was set inside it: EMFILE only ever means
// the process's open-files limit (RLIMIT_NOFILE) was reached; ENOMEM with
// an address-space limit (RLIMIT_AS) in force means an allocation or
// mapping was refused under it. OK if neither; otherwise RESOURCE_EXHAUSTED
// + RESOURCE_LIMIT naming the limit in the ErrorInfo metadata ("limit":
// "open_files" / "address_space_bytes"), with `response` (the call's
// result, out values and errno) attached under kCallResponseTypeUrl.
absl::Status LimitReached(const std::string& function, int error,
                          const v1::CallResponse& response) {
  if (error != EMFILE && error != ENOMEM) return absl::OkStatus();
  struct rlimit limit;
  std::string name;
  std::string message;
  if (error == EMFILE) {
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return absl::OkStatus();
    name = "open_files";
    message = absl::StrCat(
        "calling '", function, "' reached the session's open-files limit of ",
        limit.rlim_cur,
        " (RLIMIT_NOFILE): a call inside it failed with EMFILE (too many open "
        "files)");
  } else {
    if (getrlimit(RLIMIT_AS, &limit) != 0 ||
        limit.rlim_cur == RLIM_INFINITY) {
      return absl::OkStatus();
    }
    name = "address_space_bytes";
    message = absl::StrCat(
        "calling '", function, "' reached the session's address-space limit of ",
        LimitBytes(limit.rlim_cur),
        " (RLIMIT_AS): an allocation inside it failed with ENOMEM");
    if (const uint64_t in_use = AddressSpaceInUse(); in_use != 0) {
      absl::StrAppend(&message, " (", LimitBytes(in_use & ~uint64_t{0xfffff}),
                      " of address space in use after the call)");
    }
  }
  absl::StrAppend(&message,
                  "; the function returned and the worker lives on: its "
                  "result travels with this error; raise the session's '",
                  name, "' limit, or ask for errno (capture_errno) to handle "
                  "it yourself");
  absl::Status status = MakeError(absl::StatusCode::kResourceExhausted,
                                  v1::ERROR_REASON_RESOURCE_LIMIT, message);
  status = WithMetadata(std::move(status), "limit", name);
  v1::CallResponse attached = response;
  attached.set_errno_value(error);
  status.SetPayload(kCallResponseTypeUrl,
                    absl::Cord(attached.SerializeAsString()));
  return status;
}

}  // namespace

absl::StatusOr<void*> Executor::Resolver::Resolve(
    const v1::PointerValue& pointer, absl::string_view param) {
  if (pointer.handle().empty()) {
    return reinterpret_cast<void*>(static_cast<uintptr_t>(pointer.address()));
  }
  absl::MutexLock lock(&executor_.mu_);
  absl::StatusOr<MemoryEntry*> entry =
      executor_.handles_.GetMemory(pointer.handle());
  if (!entry.ok()) return WithContext(entry.status(), param);
  const MemoryEntry& memory = **entry;
  if (memory.sized && pointer.offset() > memory.size) {
    return WithContext(
        OutOfBounds(absl::StrCat("offset ", pointer.offset(),
                                 " is past the end of the ", memory.size,
                                 "-byte allocation ", pointer.handle())),
        param);
  }
  const uintptr_t base = reinterpret_cast<uintptr_t>(memory.address);
  if (pointer.offset() > UINTPTR_MAX - base) {
    return WithContext(
        BadAddress(absl::StrCat("offset ", pointer.offset(), " added to ",
                                pointer.handle(), " at ", Hex(base),
                                " overflows the address space")),
        param);
  }
  return reinterpret_cast<void*>(base + pointer.offset());
}

v1::Value Executor::Resolver::Wrap(void* address) {
  v1::Value value;
  if (address == nullptr) {
    value.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
    return value;
  }
  v1::PointerValue* pointer = value.mutable_pointer_value();
  {
    absl::MutexLock lock(&executor_.mu_);
    pointer->set_handle(executor_.handles_.AddBorrowedMemory(address));
  }
  pointer->set_address(reinterpret_cast<uintptr_t>(address));
  return value;
}

namespace {

// `descriptor` without `const` and parameter names anywhere: what matters
// for calling through a function pointer.
void StripQualifiers(v1::TypeDescriptor& descriptor);

void StripQualifiers(v1::FunctionType& function) {
  if (function.has_return_type()) {
    StripQualifiers(*function.mutable_return_type());
  }
  for (v1::Parameter& parameter : *function.mutable_parameters()) {
    parameter.clear_name();
    StripQualifiers(*parameter.mutable_type());
  }
}

void StripQualifiers(v1::TypeDescriptor& descriptor) {
  descriptor.set_is_const(false);
  switch (descriptor.kind_case()) {
    case v1::TypeDescriptor::kPointer:
      if (descriptor.pointer().has_pointee()) {
        StripQualifiers(*descriptor.mutable_pointer()->mutable_pointee());
      }
      break;
    case v1::TypeDescriptor::kString:
      descriptor.mutable_string()->set_is_const(false);
      break;
    case v1::TypeDescriptor::kArray:
      StripQualifiers(*descriptor.mutable_array()->mutable_element());
      break;
    case v1::TypeDescriptor::kFunctionPointer:
      StripQualifiers(*descriptor.mutable_function_pointer());
      break;
    default:
      break;
  }
}

std::string CallableSignature(v1::FunctionType function) {
  StripQualifiers(function);
  return ffi::FunctionTypeName(function, "");
}

}  // namespace

absl::StatusOr<void*> Executor::Resolver::ResolveCallback(
    absl::string_view handle, const v1::FunctionType& type,
    absl::string_view param) {
  absl::MutexLock lock(&executor_.mu_);
  RETURN_IF_ERROR(WithContext(
      executor_.handles_.CheckHandle(handle, HandleKind::kCallback), param));
  auto it = executor_.callbacks_.find(handle);
  if (it == executor_.callbacks_.end()) {
    return WithContext(
        InvalidArgumentError(
            v1::ERROR_REASON_HANDLE_INVALID,
            absl::StrCat("callback handle ", handle,
                         " does not exist in this session")),
        param);
  }
  const Callback& callback = *it->second;
  if (callback.info.released) {
    return WithContext(
        InvalidArgumentError(v1::ERROR_REASON_HANDLE_INVALID,
                             absl::StrCat("callback handle ", handle,
                                          " was released")),
        param);
  }
  const std::string expected = CallableSignature(type);
  const std::string actual = CallableSignature(callback.closure->type());
  if (expected != actual) {
    return WithContext(
        InvalidArgumentError(
            v1::ERROR_REASON_TYPE_MISMATCH,
            absl::StrCat("callback ", handle, " has the signature '", actual,
                         "', but a function pointer of type '", expected,
                         "' is expected")),
        param);
  }
  return callback.closure->code();
}

// The callback failures of one native Call. Scopes nest on a thread (a
// callback's nested call runs on the thread that waits for the callback).
struct Executor::CallScope {
  explicit CallScope(Executor& owner) : executor(owner), previous(current) {
    current = this;
    absl::MutexLock lock(&executor.failures_mu_);
    if (executor.outermost_ == nullptr) {
      executor.outermost_ = this;
      outermost = true;
    }
  }
  ~CallScope() {
    absl::MutexLock lock(&executor.failures_mu_);
    if (outermost) executor.outermost_ = nullptr;
    current = previous;
  }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

  // The failures recorded so far, as one status (OK if none).
  absl::Status Failure() {
    absl::MutexLock lock(&executor.failures_mu_);
    if (count <= 1) return first;
    return MakeError(first.code(), GetErrorReason(first),
                     absl::StrCat(first.message(), " (and ", count - 1,
                                  " more callback failure",
                                  count == 2 ? "" : "s", " in this call)"));
  }

  Executor& executor;
  CallScope* const previous;
  bool outermost = false;
  absl::Status first;
  int count = 0;

  static thread_local CallScope* current;
};

thread_local Executor::CallScope* Executor::CallScope::current = nullptr;

Executor::Executor(std::string session_tag)
    : handles_(std::move(session_tag)), resolver_(*this) {}

Executor::~Executor() = default;

absl::StatusOr<CallbackInfo> Executor::GetCallback(
    const ffi::Closure& closure) {
  absl::MutexLock lock(&mu_);
  auto it = callbacks_by_tag_.find(closure.tag());
  if (it == callbacks_by_tag_.end() || it->second->closure.get() != &closure) {
    return MakeError(absl::StatusCode::kInternal, v1::ERROR_REASON_INTERNAL,
                     absl::StrCat("native code called closure '",
                                  closure.name(),
                                  "', which this worker does not know"));
  }
  return it->second->info;
}

void Executor::RecordCallbackFailure(const absl::Status& failure) {
  absl::MutexLock lock(&failures_mu_);
  CallScope* scope = CallScope::current;
  if (scope == nullptr || &scope->executor != this) scope = outermost_;
  if (scope == nullptr) {
    std::fprintf(stderr,
                 "ffid-worker: %s (no native call was running to report it "
                 "to)\n",
                 std::string(failure.message()).c_str());
    return;
  }
  if (scope->count++ == 0) scope->first = failure;
}

WorkerResponse Executor::Execute(const WorkerRequest& request) {
  WorkerResponse response;
  response.set_id(request.id());
  absl::Status status;
  switch (request.op_case()) {
    case WorkerRequest::kLoadLibrary:
      status = Store(LoadLibrary(request.load_library()),
                     response.mutable_load_library());
      break;
    case WorkerRequest::kUnloadLibrary:
      status = Store(UnloadLibrary(request.unload_library()),
                     response.mutable_unload_library());
      break;
    case WorkerRequest::kResolveFunction:
      status = Store(ResolveFunction(request.resolve_function()),
                     response.mutable_resolve_function());
      break;
    case WorkerRequest::kCall:
      status = Store(Call(request.call()), response.mutable_call());
      break;
    case WorkerRequest::kAllocate:
      status = Store(Allocate(request.allocate()), response.mutable_allocate());
      break;
    case WorkerRequest::kRead:
      status = Store(Read(request.read()), response.mutable_read());
      break;
    case WorkerRequest::kWrite:
      status = Store(Write(request.write()), response.mutable_write());
      break;
    case WorkerRequest::kFree:
      status = Store(Free(request.free()), response.mutable_free());
      break;
    case WorkerRequest::kRegisterCallback:
      status = Store(RegisterCallback(request.register_callback()),
                     response.mutable_register_callback());
      break;
    case WorkerRequest::kReleaseCallback:
      status = Store(ReleaseCallback(request.release_callback()),
                     response.mutable_release_callback());
      break;
    case WorkerRequest::kBatch:
      status = Store(Batch(request.batch()), response.mutable_batch());
      break;
    case WorkerRequest::kCallbackReply:
      status = InvalidRequest(absl::StrCat(
          "worker request ", request.id(),
          " is a callback reply, which only the dispatcher takes"));
      break;
    case WorkerRequest::kAdopt:
      status = Store(Adopt(request.adopt()), response.mutable_adopt());
      break;
    case WorkerRequest::kAttachArena:
      status = Store(AttachArena(request.attach_arena()),
                     response.mutable_attach_arena());
      break;
    case WorkerRequest::kLocateMemory:
      status = Store(LocateMemoryFor(request.locate_memory()),
                     response.mutable_locate_memory());
      break;
    case WorkerRequest::kResolveVariable:
      status = Store(ResolveVariable(request.resolve_variable()),
                     response.mutable_resolve_variable());
      break;
    case WorkerRequest::OP_NOT_SET:
      status = InvalidRequest(absl::StrCat(
          "worker request ", request.id(),
          " names no operation (is the daemon newer than the worker?)"));
      break;
  }
  if (!status.ok()) response.clear_result();
  *response.mutable_status() = StatusToProto(status);
  return response;
}

absl::StatusOr<v1::LoadLibraryResponse> Executor::LoadLibrary(
    const v1::LoadLibraryRequest& request) {
  const std::string& path = request.name();
  // The daemon resolved the name and checked it against the allowlist; a
  // relative name here would let the loader search again and bypass that.
  if (path.empty() || path[0] != '/') {
    return InvalidRequest(absl::StrCat(
        "the worker loads libraries by absolute path only, got '", path, "'"));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
    return NotFoundError(v1::ERROR_REASON_LIBRARY_NOT_FOUND,
                         absl::StrCat("library ", path, " does not exist"));
  }
  ::dlerror();
  void* dl = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (dl == nullptr) {
    const char* error = ::dlerror();
    return FailedPreconditionError(
        v1::ERROR_REASON_LIBRARY_LOAD_FAILED,
        absl::StrCat("cannot load ", path, ": ",
                     error != nullptr ? error : "dlopen failed"));
  }
  v1::LoadLibraryResponse response;
  absl::MutexLock lock(&mu_);
  response.set_library(handles_.AddLibrary(dl, path));
  response.set_path(path);
  return response;
}

absl::StatusOr<v1::UnloadLibraryResponse> Executor::UnloadLibrary(
    const v1::UnloadLibraryRequest& request) {
  LibraryEntry entry;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(entry, handles_.RemoveLibrary(request.library()));
  }
  // The handle is gone either way; a dlclose error only means the loader
  // keeps the object mapped, which is harmless.
  ::dlclose(entry.dl_handle);
  return v1::UnloadLibraryResponse();
}

absl::StatusOr<v1::ResolveFunctionResponse> Executor::ResolveFunction(
    const v1::ResolveFunctionRequest& request) {
  LibraryEntry library_entry;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(const LibraryEntry* found,
                     handles_.GetLibrary(request.library()));
    library_entry = *found;
  }
  const LibraryEntry* library = &library_entry;
  std::string symbol = request.symbol();
  v1::FunctionType type;
  switch (request.signature_case()) {
    case v1::ResolveFunctionRequest::kType:
      type = request.type();
      break;
    case v1::ResolveFunctionRequest::kDeclaration: {
      // The daemon normally parses; accepting a declaration keeps the worker
      // usable on its own.
      ASSIGN_OR_RETURN(v1::FunctionDeclaration declaration,
                       ffi::ParseFunctionDeclaration(request.declaration()));
      if (symbol.empty()) symbol = declaration.name();
      type = std::move(*declaration.mutable_type());
      break;
    }
    case v1::ResolveFunctionRequest::SIGNATURE_NOT_SET:
      return InvalidRequest(
          absl::StrCat("ResolveFunction of '", symbol,
                       "' needs a signature: set `type` or `declaration`"));
  }
  if (symbol.empty()) {
    return InvalidRequest("ResolveFunction needs a symbol name");
  }
  ::dlerror();
  void* address = ::dlsym(library->dl_handle, symbol.c_str());
  const char* error = ::dlerror();
  if (address == nullptr) {
    return NotFoundError(
        v1::ERROR_REASON_SYMBOL_NOT_FOUND,
        error != nullptr
            ? absl::StrCat("symbol '", symbol, "' not found in ",
                           library->path)
            : absl::StrCat("symbol '", symbol, "' in ", library->path,
                           " has address NULL and cannot be called"));
  }
  // Calling a data object would jump into data; refuse when the loader says
  // that is what the symbol is.
  Dl_info info;
  void* extra = nullptr;
  if (::dladdr1(address, &info, &extra, RTLD_DL_SYMENT) == 0) {
    // dladdr finds no object containing the address: dlsym returned the
    // address of a thread-local variable (in this thread's TLS block), not
    // code in the library.
    return InvalidArgumentError(
        v1::ERROR_REASON_TYPE_MISMATCH,
        absl::StrCat("symbol '", symbol, "' in ", library->path,
                     " is a thread-local variable, not a function"));
  }
  if (extra != nullptr && info.dli_saddr == address) {
    const auto* elf_symbol = static_cast<const ElfW(Sym)*>(extra);
    // ELF32_ST_TYPE and ELF64_ST_TYPE are the same bit operation.
    const int kind = ELF64_ST_TYPE(elf_symbol->st_info);
    if (kind == STT_OBJECT || kind == STT_TLS) {
      return InvalidArgumentError(
          v1::ERROR_REASON_TYPE_MISMATCH,
          absl::StrCat("symbol '", symbol, "' in ", library->path,
                       " is a variable, not a function"));
    }
  }
  ASSIGN_OR_RETURN(
      std::unique_ptr<ffi::PreparedFunction> function,
      ffi::PreparedFunction::Create(symbol, type,
                                    reinterpret_cast<void (*)()>(address)));
  v1::ResolveFunctionResponse response;
  *response.mutable_type() = function->type();
  response.set_symbol(symbol);
  response.set_address(reinterpret_cast<uintptr_t>(address));
  absl::MutexLock lock(&mu_);
  response.set_function(
      handles_.AddFunction(request.library(), std::move(function)));
  return response;
}

absl::StatusOr<v1::CallResponse> Executor::Call(
    const v1::CallRequest& request) {
  const ffi::PreparedFunction* function;
  // Only needed to find a result destructor.
  std::string library;
  const bool owns_result =
      request.result_ownership() == v1::RESULT_OWNERSHIP_ADOPT ||
      request.result_ownership() == v1::RESULT_OWNERSHIP_RELEASE;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(const FunctionEntry* entry,
                     handles_.GetFunction(request.function()));
    function = entry->function.get();
    if (owns_result) library = entry->library;
  }
  if (owns_result) {
    const v1::TypeDescriptor& returned = function->type().return_type();
    if (!returned.has_string() && !returned.has_pointer()) {
      return InvalidRequest(absl::StrCat(
          "result_ownership ADOPT/RELEASE needs a function that returns a "
          "pointer or string; '", function->name(), "' returns '",
          ffi::TypeName(returned), "'"));
    }
    RETURN_IF_ERROR(
        FindDestructor(request.result_destructor(), library).status());
  }
  ffi::CallOptions options;
  // Always: errno tells a call that ran into a resource limit
  // (LimitReached); the response carries it only when the client asked.
  options.capture_errno = true;
  CallScope scope(*this);
  absl::StatusOr<ffi::CallResult> called =
      function->Call(request.arguments(), request.variadic_types(),
                     resolver_, options);
  // A failed callback makes the whole call fail: its result was computed
  // with a made-up answer.
  absl::Status failure = scope.Failure();
  if (!failure.ok()) {
    return MakeError(failure.code(), v1::ERROR_REASON_CALLBACK_FAILED,
                     absl::StrCat("calling '", function->name(),
                                  "': ", failure.message()));
  }
  if (!called.ok()) return called.status();
  ffi::CallResult result = *std::move(called);
  v1::CallResponse response;
  if (result.has_result) *response.mutable_result() = std::move(result.result);
  const v1::ResultOwnership ownership = request.result_ownership();
  if (result.result_address != nullptr) {
    const bool is_string = function->type().return_type().has_string();
    if (ownership == v1::RESULT_OWNERSHIP_ADOPT ||
        ownership == v1::RESULT_OWNERSHIP_RELEASE) {
      // The destructor was checked before the call (below would be too
      // late to refuse); a lookup failure here cannot happen.
      ASSIGN_OR_RETURN(auto destructor,
                       FindDestructor(request.result_destructor(), library));
      if (ownership == v1::RESULT_OWNERSHIP_RELEASE) {
        destructor(result.result_address);
      } else {
        absl::MutexLock lock(&mu_);
        const std::string handle =
            handles_.AddBorrowedMemory(result.result_address);
        RETURN_IF_ERROR(handles_.Adopt(handle, destructor, 0));
        v1::PointerValue* pointer = response.mutable_result_pointer();
        pointer->set_handle(handle);
        pointer->set_address(
            reinterpret_cast<uintptr_t>(result.result_address));
        if (!is_string) *response.mutable_result()->mutable_pointer_value() =
            *pointer;
      }
    } else if (is_string) {
      absl::MutexLock lock(&mu_);
      v1::PointerValue* pointer = response.mutable_result_pointer();
      pointer->set_handle(handles_.AddBorrowedMemory(result.result_address));
      pointer->set_address(reinterpret_cast<uintptr_t>(result.result_address));
    }
  }
  if (request.capture_errno()) response.set_errno_value(result.errno_value);
  for (auto& [index, value] : result.out_values) {
    (*response.mutable_out_values())[index] = std::move(value);
  }
  // A limit reached without a crash: the caller who asked for errno sees
  // it there and decides; anyone else gets RESOURCE_LIMIT.
  if (!request.capture_errno()) {
    RETURN_IF_ERROR(
        LimitReached(function->name(), result.errno_value, response));
  }
  return response;
}

absl::StatusOr<v1::AllocateResponse> Executor::Allocate(
    const v1::AllocateRequest& request) {
  uint64_t size = request.size();
  std::shared_ptr<const ffi::CType> type;
  if (request.has_type()) {
    v1::TypeDescriptor descriptor = request.type();
    if (request.flexible_length() != 0) {
      ASSIGN_OR_RETURN(descriptor, ffi::WithFlexibleLength(
                                       request.type(),
                                       request.flexible_length()));
    }
    ASSIGN_OR_RETURN(type, ffi::CType::Create(descriptor, "allocate type"));
    if (type->size() == 0) {
      return InvalidArgumentError(
          v1::ERROR_REASON_TYPE_MISMATCH,
          absl::StrCat("cannot allocate memory for '",
                       ffi::TypeName(request.type()),
                       "': the type has size 0"));
    }
    const uint64_t count = size == 0 ? 1 : size;
    if (count > kMaxAllocationBytes / type->size()) {
      return MakeError(
          absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
          absl::StrCat("allocation of ", count, " x ", type->size(),
                       " bytes exceeds the per-allocation limit of ",
                       kMaxAllocationBytes, " bytes"));
    }
    size = count * type->size();
  } else {
    if (request.flexible_length() != 0) {
      return InvalidRequest("Allocate: flexible_length needs a type");
    }
    if (size == 0) {
      return InvalidRequest(
          "Allocate needs a size in bytes (or a type); size 0 was given");
    }
    if (request.has_initial_value()) {
      return InvalidRequest(
          "Allocate: initial_value needs a type to encode it as");
    }
  }
  if (size > kMaxAllocationBytes) {
    return MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("allocation of ", size,
                     " bytes exceeds the per-allocation limit of ",
                     kMaxAllocationBytes, " bytes"));
  }
  if (request.initial_bytes().size() > size) {
    return InvalidArgumentError(v1::ERROR_REASON_OUT_OF_BOUNDS, absl::StrCat(
        "initial_bytes holds ", request.initial_bytes().size(),
        " bytes, more than the ", size, "-byte allocation"));
  }
  if (!request.initial_bytes().empty() && request.has_initial_value()) {
    return InvalidRequest(
        "Allocate takes initial_bytes or initial_value, not both");
  }
  const bool in_arena =
      request.placement() == v1::ALLOCATION_PLACEMENT_ARENA;
  void* memory = nullptr;
  SharedArena* arena_used = nullptr;
  if (in_arena) {
    absl::MutexLock lock(&mu_);
    if (arena_ == nullptr) {
      return FailedPreconditionError(
          v1::ERROR_REASON_UNSUPPORTED,
          "the session has no shared-memory arena attached to this worker");
    }
    ASSIGN_OR_RETURN(memory, arena_->Allocate(size));
    arena_used = arena_.get();
  } else {
    memory = std::calloc(1, size);
  }
  if (memory == nullptr) {
    return MakeError(absl::StatusCode::kResourceExhausted,
                     v1::ERROR_REASON_RESOURCE_LIMIT,
                     absl::StrCat("out of memory allocating ", size,
                                  " bytes in the worker"));
  }
  // Releases `memory` where it came from.
  auto release = [arena_used](void* block) {
    if (arena_used != nullptr) {
      arena_used->Free(block);
    } else {
      std::free(block);
    }
  };
  std::shared_ptr<ffi::CallArena> arena;
  if (!request.initial_bytes().empty()) {
    std::memcpy(memory, request.initial_bytes().data(),
                request.initial_bytes().size());
  } else if (request.has_initial_value()) {
    // Strings in the value are copied into the arena, which must live as
    // long as the memory that points at them.
    arena = std::make_shared<ffi::CallArena>();
    absl::Status encoded = ffi::EncodeValue(*type, request.initial_value(),
                                            memory, resolver_, *arena,
                                            "initial_value");
    if (!encoded.ok()) {
      release(memory);
      return encoded;
    }
  }
  v1::AllocateResponse response;
  absl::MutexLock lock(&mu_);
  if (arena_used != nullptr) {
    const std::string handle =
        handles_.AddOwnedMemory(memory, size, std::function<void(void*)>(release));
    if (arena != nullptr) handles_.KeepAlive(handle, std::move(arena));
    response.set_memory(handle);
    response.set_in_arena(true);
    response.set_arena_offset(static_cast<uint64_t>(
        static_cast<char*>(memory) - arena_used->base()));
  } else {
    response.set_memory(
        handles_.AddOwnedMemory(memory, size, std::move(arena)));
  }
  response.set_size(size);
  response.set_address(reinterpret_cast<uintptr_t>(memory));
  return response;
}

absl::StatusOr<AttachArenaResponse> Executor::AttachArena(
    const worker::AttachArena& request) {
  absl::MutexLock lock(&mu_);
  if (arena_ != nullptr) {
    if (request.received_fd() >= 0) ::close(request.received_fd());
    if (arena_->size() != request.size()) {
      return InvalidRequest(absl::StrCat(
          "an arena of ", arena_->size(), " bytes is attached already; "
          "cannot attach one of ", request.size(), " bytes"));
    }
  } else {
    ASSIGN_OR_RETURN(arena_,
                     SharedArena::Map(request.received_fd(), request.size()));
  }
  AttachArenaResponse response;
  response.set_address(reinterpret_cast<uintptr_t>(arena_->base()));
  return response;
}

namespace {

// Resolves a Read/Write pointer to a Target.
absl::StatusOr<Target> Locate(HandleTable& handles,
                              const v1::PointerValue& pointer) {
  Target target;
  if (pointer.handle().empty()) {
    if (pointer.address() == 0) {
      return BadAddress(
          "no memory handle and address 0 (NULL) were given; name a memory "
          "handle or a non-NULL address");
    }
    target.address =
        reinterpret_cast<char*>(static_cast<uintptr_t>(pointer.address()));
    return target;
  }
  ASSIGN_OR_RETURN(MemoryEntry * entry, handles.GetMemory(pointer.handle()));
  target.handle = pointer.handle();
  target.offset = pointer.offset();
  target.owned = entry->sized;
  target.size = entry->size;
  const uintptr_t base = reinterpret_cast<uintptr_t>(entry->address);
  if (!entry->sized && pointer.offset() > UINTPTR_MAX - base) {
    return BadAddress(absl::StrCat("offset ", pointer.offset(), " added to ",
                                   pointer.handle(), " at ", Hex(base),
                                   " overflows the address space"));
  }
  // For owned memory the bounds check comes first, so the sum is in range.
  target.address = reinterpret_cast<char*>(base + pointer.offset());
  return target;
}

// Bounds of an owned access: `length` bytes at target.offset.
absl::Status CheckBounds(const Target& target, uint64_t length,
                         absl::string_view verb) {
  if (target.offset > target.size) {
    return OutOfBounds(absl::StrCat(verb, " at offset ", target.offset,
                                    " is past the end of the ", target.size,
                                    "-byte allocation ", target.handle));
  }
  if (length > target.size - target.offset) {
    return OutOfBounds(absl::StrCat(verb, " of ", length, " bytes at offset ",
                                    target.offset, " exceeds the ",
                                    target.size, "-byte allocation ",
                                    target.handle));
  }
  return absl::OkStatus();
}

std::string Describe(const Target& target) {
  if (target.handle.empty()) {
    return absl::StrCat("address ",
                        Hex(reinterpret_cast<uintptr_t>(target.address)));
  }
  return absl::StrCat("borrowed memory ", target.handle);
}

}  // namespace

absl::StatusOr<v1::ReadResponse> Executor::Read(
    const v1::ReadRequest& request) {
  if (request.has_type()) return ReadTyped(request);
  Target target;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(target, Locate(handles_, request.pointer()));
  }
  uint64_t length = request.length();
  if (target.owned) {
    if (length == 0 && target.offset <= target.size) {
      length = target.size - target.offset;
    }
    RETURN_IF_ERROR(CheckBounds(target, length, "read"));
  } else if (length == 0) {
    return InvalidRequest(absl::StrCat(
        "reading ", Describe(target),
        " needs an explicit length: ffid does not know the size of memory it "
        "did not allocate"));
  }
  if (length > kMaxReadBytes) {
    return MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("read of ", length,
                     " bytes exceeds the per-read limit of ", kMaxReadBytes,
                     " bytes; read in smaller pieces"));
  }
  v1::ReadResponse response;
  std::string* data = response.mutable_data();
  data->resize(length);
  if (target.owned) {
    if (length > 0) std::memcpy(data->data(), target.address, length);
  } else {
    RETURN_IF_ERROR(CopyUnchecked(/*write=*/false, data->data(),
                                  reinterpret_cast<uintptr_t>(target.address),
                                  length));
  }
  return response;
}

absl::StatusOr<LocateMemoryResponse> Executor::LocateMemoryFor(
    const LocateMemory& request) {
  Target target;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(target, Locate(handles_, request.pointer()));
  }
  const char* verb = request.write() ? "write" : "read";
  uint64_t length = request.length();
  if (target.owned) {
    if (!request.write() && length == 0 && target.offset <= target.size) {
      length = target.size - target.offset;
    }
    RETURN_IF_ERROR(CheckBounds(target, length, verb));
  } else if (!request.write() && length == 0) {
    return InvalidRequest(absl::StrCat(
        "reading ", Describe(target),
        " needs an explicit length: ffid does not know the size of memory it "
        "did not allocate"));
  }
  if (!request.write() && length > kMaxReadBytes) {
    return MakeError(
        absl::StatusCode::kResourceExhausted, v1::ERROR_REASON_RESOURCE_LIMIT,
        absl::StrCat("read of ", length,
                     " bytes exceeds the per-read limit of ", kMaxReadBytes,
                     " bytes; read in smaller pieces"));
  }
  LocateMemoryResponse response;
  response.set_address(reinterpret_cast<uintptr_t>(target.address));
  response.set_length(length);
  response.set_owned(target.owned);
  return response;
}

absl::StatusOr<v1::WriteResponse> Executor::Write(
    const v1::WriteRequest& request) {
  if (request.has_type()) return WriteTyped(request);
  if (request.has_value()) {
    return InvalidRequest("Write: `value` needs a `type` to encode it as");
  }
  Target target;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(target, Locate(handles_, request.pointer()));
  }
  const std::string& data = request.data();
  if (target.owned) {
    RETURN_IF_ERROR(CheckBounds(target, data.size(), "write"));
    if (!data.empty()) std::memcpy(target.address, data.data(), data.size());
  } else if (!data.empty()) {
    RETURN_IF_ERROR(CopyUnchecked(/*write=*/true,
                                  const_cast<char*>(data.data()),
                                  reinterpret_cast<uintptr_t>(target.address),
                                  data.size()));
  }
  return v1::WriteResponse();
}

namespace {

// A typed access's type, laid out; `verb` is "read" or "write".
absl::StatusOr<std::shared_ptr<const ffi::CType>> AccessType(
    const v1::TypeDescriptor& requested, absl::string_view verb,
    uint64_t flexible_length = 0) {
  v1::TypeDescriptor descriptor = requested;
  if (flexible_length != 0) {
    ASSIGN_OR_RETURN(descriptor,
                     ffi::WithFlexibleLength(requested, flexible_length));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const ffi::CType> type,
                   ffi::CType::Create(descriptor, absl::StrCat(verb, " type")));
  if (type->size() == 0) {
    return InvalidArgumentError(
        v1::ERROR_REASON_TYPE_MISMATCH,
        absl::StrCat("cannot ", verb, " a value of '",
                     ffi::TypeName(descriptor), "': the type has size 0"));
  }
  return type;
}

absl::Status CheckAlignment(const Target& target, const ffi::CType& type,
                            absl::string_view verb) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(target.address);
  if (address % type.alignment() == 0) return absl::OkStatus();
  return InvalidArgumentError(
      v1::ERROR_REASON_MISALIGNED_ACCESS,
      absl::StrCat("typed ", verb, " of '", ffi::TypeName(type.descriptor()),
                   "' at ",
                   target.handle.empty()
                       ? Hex(address)
                       : absl::StrCat(target.handle, "+", target.offset, " (",
                                      Hex(address), ")"),
                   ": the address is not a multiple of the type's alignment ",
                   type.alignment()));
}

}  // namespace

absl::StatusOr<v1::ReadResponse> Executor::ReadTyped(
    const v1::ReadRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<const ffi::CType> type,
                   AccessType(request.type(), "read",
                              request.flexible_length()));
  Target target;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(target, Locate(handles_, request.pointer()));
  }
  if (target.owned) RETURN_IF_ERROR(CheckBounds(target, type->size(), "read"));
  RETURN_IF_ERROR(CheckAlignment(target, *type, "read"));
  v1::ReadResponse response;
  std::string* data = response.mutable_data();
  data->resize(type->size());
  if (target.owned) {
    std::memcpy(data->data(), target.address, type->size());
  } else {
    RETURN_IF_ERROR(CopyUnchecked(/*write=*/false, data->data(),
                                  reinterpret_cast<uintptr_t>(target.address),
                                  type->size()));
  }
  // Decoded from an aligned copy: a string member is followed in place.
  ffi::CallArena scratch;
  void* aligned = scratch.Allocate(type->size(), type->alignment());
  std::memcpy(aligned, data->data(), type->size());
  ASSIGN_OR_RETURN(*response.mutable_value(),
                   ffi::DecodeValue(*type, aligned, resolver_));
  return response;
}

absl::StatusOr<v1::WriteResponse> Executor::WriteTyped(
    const v1::WriteRequest& request) {
  if (!request.data().empty()) {
    return InvalidRequest("Write takes `data` or `type` and `value`, not both");
  }
  if (!request.has_value()) {
    return InvalidRequest("Write with a `type` needs a `value`");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const ffi::CType> type,
                   AccessType(request.type(), "write",
                              request.flexible_length()));
  Target target;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(target, Locate(handles_, request.pointer()));
  }
  if (target.owned) {
    RETURN_IF_ERROR(CheckBounds(target, type->size(), "write"));
  }
  RETURN_IF_ERROR(CheckAlignment(target, *type, "write"));
  auto arena = std::make_shared<ffi::CallArena>();
  void* encoded = arena->Allocate(type->size(), type->alignment());
  RETURN_IF_ERROR(ffi::EncodeValue(*type, request.value(), encoded, resolver_,
                                   *arena, "value"));
  if (target.owned) {
    std::memcpy(target.address, encoded, type->size());
  } else {
    RETURN_IF_ERROR(CopyUnchecked(/*write=*/true, encoded,
                                  reinterpret_cast<uintptr_t>(target.address),
                                  type->size()));
  }
  // Strings the value holds were copied into the arena; they live as long
  // as the memory that now points at them.
  if (!target.handle.empty()) {
    absl::MutexLock lock(&mu_);
    handles_.KeepAlive(target.handle, arena);
  }
  return v1::WriteResponse();
}

absl::StatusOr<void (*)(void*)> Executor::FindDestructor(
    absl::string_view symbol, absl::string_view library) {
  const std::string name = symbol.empty() ? "free" : std::string(symbol);
  void* address = nullptr;
  std::string where = "the worker's global scope";
  if (!library.empty()) {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(const LibraryEntry* entry, handles_.GetLibrary(library));
    ::dlerror();
    address = ::dlsym(entry->dl_handle, name.c_str());
    where = entry->path;
  }
  if (address == nullptr) {
    ::dlerror();
    address = ::dlsym(RTLD_DEFAULT, name.c_str());
  }
  if (address == nullptr) {
    return NotFoundError(v1::ERROR_REASON_SYMBOL_NOT_FOUND,
                         absl::StrCat("destructor '", name, "' not found in ",
                                      where, " nor globally"));
  }
  return reinterpret_cast<void (*)(void*)>(address);
}

absl::StatusOr<v1::AdoptResponse> Executor::Adopt(
    const v1::AdoptRequest& request) {
  const v1::PointerValue& pointer = request.pointer();
  if (pointer.handle().empty() && pointer.address() == 0) {
    return InvalidRequest(
        "Adopt needs a memory handle or a non-NULL address to adopt");
  }
  if (!pointer.handle().empty() && pointer.offset() != 0) {
    return InvalidRequest(
        "Adopt takes the start of a block (offset 0): a destructor releases "
        "what an allocation returned");
  }
  if (request.size() > kMaxAllocationBytes) {
    return InvalidRequest(absl::StrCat("Adopt: size ", request.size(),
                                       " is larger than any allocation"));
  }
  ASSIGN_OR_RETURN(auto destructor,
                   FindDestructor(request.destructor(), request.library()));
  absl::MutexLock lock(&mu_);
  std::string handle = pointer.handle();
  if (handle.empty()) {
    handle = handles_.AddBorrowedMemory(
        reinterpret_cast<void*>(static_cast<uintptr_t>(pointer.address())));
  }
  ASSIGN_OR_RETURN(MemoryEntry * entry, handles_.GetMemory(handle));
  RETURN_IF_ERROR(handles_.Adopt(handle, destructor, request.size()));
  v1::AdoptResponse response;
  response.set_memory(handle);
  response.set_address(reinterpret_cast<uintptr_t>(entry->address));
  return response;
}

absl::StatusOr<v1::ResolveVariableResponse> Executor::ResolveVariable(
    const v1::ResolveVariableRequest& request) {
  if (request.symbol().empty()) {
    return InvalidRequest("ResolveVariable needs a symbol name");
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(const LibraryEntry* library,
                   handles_.GetLibrary(request.library()));
  if (!request.has_type()) {
    return InvalidRequest(absl::StrCat("ResolveVariable of '",
                                       request.symbol(), "' needs a type"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const ffi::CType> type,
                   AccessType(request.type(), "variable"));
  ::dlerror();
  void* address = ::dlsym(library->dl_handle, request.symbol().c_str());
  if (address == nullptr) {
    return NotFoundError(v1::ERROR_REASON_SYMBOL_NOT_FOUND,
                         absl::StrCat("symbol '", request.symbol(),
                                      "' not found in ", library->path));
  }
  Dl_info info;
  void* extra = nullptr;
  if (::dladdr1(address, &info, &extra, RTLD_DL_SYMENT) == 0) {
    return InvalidArgumentError(
        v1::ERROR_REASON_TYPE_MISMATCH,
        absl::StrCat("symbol '", request.symbol(), "' in ", library->path,
                     " is a thread-local variable; only globals are "
                     "supported"));
  }
  if (extra != nullptr && info.dli_saddr == address) {
    const auto* elf_symbol = static_cast<const ElfW(Sym)*>(extra);
    const int kind = ELF64_ST_TYPE(elf_symbol->st_info);
    if (kind == STT_FUNC || kind == STT_GNU_IFUNC) {
      return InvalidArgumentError(
          v1::ERROR_REASON_TYPE_MISMATCH,
          absl::StrCat("symbol '", request.symbol(), "' in ", library->path,
                       " is a function, not a variable"));
    }
    if (elf_symbol->st_size != 0 && elf_symbol->st_size < type->size()) {
      return InvalidArgumentError(
          v1::ERROR_REASON_TYPE_MISMATCH,
          absl::StrCat("variable '", request.symbol(), "' in ", library->path,
                       " is ", elf_symbol->st_size, " bytes, smaller than '",
                       ffi::TypeName(type->descriptor()), "' (",
                       type->size(), " bytes)"));
    }
  }
  v1::ResolveVariableResponse response;
  response.set_memory(handles_.AddSizedBorrowedMemory(address, type->size()));
  response.set_symbol(request.symbol());
  *response.mutable_type() = type->descriptor();
  response.set_address(reinterpret_cast<uintptr_t>(address));
  return response;
}

absl::StatusOr<v1::FreeResponse> Executor::Free(
    const v1::FreeRequest& request) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(handles_.FreeMemory(request.memory()));
  return v1::FreeResponse();
}

absl::StatusOr<v1::RegisterCallbackResponse> Executor::RegisterCallback(
    const v1::RegisterCallbackRequest& request) {
  if (handler_ == nullptr) {
    return MakeError(absl::StatusCode::kUnimplemented,
                     v1::ERROR_REASON_UNSUPPORTED,
                     "this executor has no callback dispatcher");
  }
  v1::FunctionType type;
  std::string name = request.name();
  switch (request.signature_case()) {
    case v1::RegisterCallbackRequest::kType:
      type = request.type();
      break;
    case v1::RegisterCallbackRequest::kDeclaration: {
      ASSIGN_OR_RETURN(v1::FunctionDeclaration declaration,
                       ffi::ParseFunctionDeclaration(request.declaration()));
      if (name.empty()) name = declaration.name();
      type = std::move(*declaration.mutable_type());
      break;
    }
    case v1::RegisterCallbackRequest::SIGNATURE_NOT_SET:
      return InvalidRequest(
          "RegisterCallback needs a signature: set `type` or `declaration`");
  }
  if (name.empty()) name = "callback";
  CallbackInfo info;
  switch (request.failure_policy()) {
    case v1::CALLBACK_FAILURE_POLICY_UNSPECIFIED:
    case v1::CALLBACK_FAILURE_POLICY_RETURN_DEFAULT:
      info.policy = v1::CALLBACK_FAILURE_POLICY_RETURN_DEFAULT;
      break;
    case v1::CALLBACK_FAILURE_POLICY_TERMINATE_WORKER:
      info.policy = v1::CALLBACK_FAILURE_POLICY_TERMINATE_WORKER;
      break;
    default:
      return InvalidRequest(absl::StrCat("unknown failure_policy ",
                                         request.failure_policy()));
  }
  if (request.has_timeout()) {
    ASSIGN_OR_RETURN(
        info.timeout,
        DurationField(
            request.timeout(), "timeout", /*zero_allowed=*/false,
            absl::StrCat("for the default of ",
                         absl::FormatDuration(kDefaultCallbackTimeout))));
  }
  uint64_t tag;
  {
    absl::MutexLock lock(&mu_);
    tag = next_callback_tag_++;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ffi::Closure> closure,
                   ffi::Closure::Create(name, type, *handler_, tag));
  if (request.has_default_result()) {
    absl::Status encoded = closure->EncodeResult(
        request.default_result(), resolver_, &info.default_result);
    if (!encoded.ok()) {
      return WithContext(encoded, "default_result");
    }
  }
  auto callback = std::make_unique<Callback>();
  v1::RegisterCallbackResponse response;
  *response.mutable_type() = closure->type();
  response.set_address(reinterpret_cast<uintptr_t>(closure->code()));
  callback->closure = std::move(closure);
  absl::MutexLock lock(&mu_);
  info.handle = handles_.NewHandle(HandleKind::kCallback);
  callback->info = info;
  response.set_callback(info.handle);
  callbacks_by_tag_[tag] = callback.get();
  callbacks_.emplace(info.handle, std::move(callback));
  return response;
}

absl::StatusOr<v1::ReleaseCallbackResponse> Executor::ReleaseCallback(
    const v1::ReleaseCallbackRequest& request) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(handles_.CheckHandle(request.callback(),
                                       HandleKind::kCallback));
  auto it = callbacks_.find(request.callback());
  if (it == callbacks_.end()) {
    return InvalidArgumentError(
        v1::ERROR_REASON_HANDLE_INVALID,
        absl::StrCat("callback handle ", request.callback(),
                     " does not exist in this session"));
  }
  if (it->second->info.released) {
    return InvalidArgumentError(
        v1::ERROR_REASON_HANDLE_INVALID,
        absl::StrCat("callback handle ", request.callback(),
                     " was released"));
  }
  // The closure stays: native code may still hold the pointer, and a call
  // through it must reach the dispatcher (which reports it), not freed
  // memory.
  it->second->info.released = true;
  return v1::ReleaseCallbackResponse();
}

}  // namespace ffid::worker

namespace ffid::worker {

absl::StatusOr<v1::BatchResponse> Executor::Batch(
    const v1::BatchRequest& request) {
  v1::BatchResponse response;
  std::vector<v1::Value> values;
  values.reserve(request.steps_size());
  response.mutable_results()->Reserve(request.steps_size());
  for (int i = 0; i < request.steps_size(); ++i) {
    const v1::BatchStep& step = request.steps(i);
    v1::BatchStepResult* result = response.add_results();
    absl::Status status = RunBatchStep(step, values, result);
    if (!status.ok()) return BatchStepFailure(status, i, DescribeStep(step));
    if (step.discard_result()) result->clear_response();
  }
  return response;
}

absl::Status Executor::RunBatchStep(const v1::BatchStep& step,
                                    std::vector<v1::Value>& values,
                                    v1::BatchStepResult* result) {
  v1::Value& value = values.emplace_back();
  if (step.request_case() != v1::BatchStep::kCall &&
      step.references_size() > 1) {
    return InvalidRequest(
        "only a call step takes more than one reference");
  }
  switch (step.request_case()) {
    case v1::BatchStep::kCall: {
      absl::StatusOr<v1::CallResponse> called;
      if (step.references().empty()) {
        called = Call(step.call());
      } else {
        v1::CallRequest call = step.call();
        for (const v1::BatchReference& reference : step.references()) {
          if (reference.argument() >=
              static_cast<uint32_t>(call.arguments_size())) {
            return InvalidRequest(absl::StrCat(
                "a reference fills argument ", reference.argument(),
                " but the call has ", call.arguments_size(),
                " arguments; put a placeholder Value there"));
          }
          ASSIGN_OR_RETURN(*call.mutable_arguments(reference.argument()),
                           ResolveReference(reference, values));
        }
        called = Call(call);
      }
      RETURN_IF_ERROR(called.status());
      if (called->has_result()) value = called->result();
      *result->mutable_call() = *std::move(called);
      return absl::OkStatus();
    }
    case v1::BatchStep::kAllocate: {
      ASSIGN_OR_RETURN(v1::AllocateResponse allocated,
                       Allocate(step.allocate()));
      v1::PointerValue* pointer = value.mutable_pointer_value();
      pointer->set_handle(allocated.memory());
      pointer->set_address(allocated.address());
      *result->mutable_allocate() = std::move(allocated);
      return absl::OkStatus();
    }
    case v1::BatchStep::kRead: {
      absl::StatusOr<v1::ReadResponse> read;
      if (step.references().empty()) {
        read = Read(step.read());
      } else {
        v1::ReadRequest request = step.read();
        ASSIGN_OR_RETURN(v1::Value pointer,
                         ResolveReference(step.references(0), values));
        if (!pointer.has_pointer_value()) {
          return InvalidRequest("the reference of a read must be a pointer");
        }
        *request.mutable_pointer() = pointer.pointer_value();
        read = Read(request);
      }
      RETURN_IF_ERROR(read.status());
      value.set_bytes_value(read->data());
      *result->mutable_read() = *std::move(read);
      return absl::OkStatus();
    }
    case v1::BatchStep::kWrite: {
      absl::StatusOr<v1::WriteResponse> written;
      if (step.references().empty()) {
        written = Write(step.write());
      } else {
        v1::WriteRequest request = step.write();
        ASSIGN_OR_RETURN(v1::Value pointer,
                         ResolveReference(step.references(0), values));
        if (!pointer.has_pointer_value()) {
          return InvalidRequest("the reference of a write must be a pointer");
        }
        *request.mutable_pointer() = pointer.pointer_value();
        written = Write(request);
      }
      RETURN_IF_ERROR(written.status());
      *result->mutable_write() = *std::move(written);
      return absl::OkStatus();
    }
    case v1::BatchStep::kFree: {
      absl::StatusOr<v1::FreeResponse> freed;
      if (step.references().empty()) {
        freed = Free(step.free());
      } else {
        v1::FreeRequest request = step.free();
        ASSIGN_OR_RETURN(v1::Value pointer,
                         ResolveReference(step.references(0), values));
        if (!pointer.has_pointer_value() ||
            pointer.pointer_value().handle().empty() ||
            pointer.pointer_value().offset() != 0) {
          return InvalidRequest(
              "the reference of a free must be a pointer to the start of "
              "memory the session owns (the result of an allocate step)");
        }
        request.set_memory(pointer.pointer_value().handle());
        freed = Free(request);
      }
      RETURN_IF_ERROR(freed.status());
      *result->mutable_free() = *std::move(freed);
      return absl::OkStatus();
    }
    case v1::BatchStep::kCallColumns:
      if (!step.references().empty()) {
        return InvalidRequest(
            "a call_columns step takes no references (its arguments are "
            "values given in the request)");
      }
      return RunCallColumns(step.call_columns(),
                            result->mutable_call_columns());
    case v1::BatchStep::REQUEST_NOT_SET:
      break;
  }
  return InvalidRequest(
      "a batch step names no request (call, allocate, read, write, free or "
      "call_columns)");
}

absl::Status Executor::RunCallColumns(const v1::CallColumns& request,
                                      v1::CallColumnsResponse* response) {
  const ffi::PreparedFunction* function;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(const FunctionEntry* entry,
                     handles_.GetFunction(request.function()));
    function = entry->function.get();
  }
  absl::InlinedVector<const v1::ValueColumn*, 8> columns;
  for (const v1::ValueColumn& column : request.arguments()) {
    columns.push_back(&column);
  }
  uint32_t failed_call = request.count();
  // One scope for all the calls: a callback failure in any of them fails
  // the step.
  CallScope scope(*this);
  absl::Status status = function->CallColumns(
      columns, request.count(), *response->mutable_results(), failed_call);
  absl::Status failure = scope.Failure();
  if (!failure.ok()) {
    return MakeError(failure.code(), v1::ERROR_REASON_CALLBACK_FAILED,
                     absl::StrCat("calling '", function->name(),
                                  "': ", failure.message()));
  }
  if (status.ok() || failed_call >= request.count()) return status;
  return WithMetadata(
      WithMessage(status,
                  absl::StrCat("call ", failed_call, ": ", status.message())),
      "batch_call", absl::StrCat(failed_call));
}

absl::StatusOr<v1::Value> Executor::ResolveReference(
    const v1::BatchReference& reference,
    const std::vector<v1::Value>& values) {
  // `values` holds the steps before this one, and this step's own slot.
  const size_t current = values.size() - 1;
  if (reference.step() >= current) {
    return InvalidRequest(absl::StrCat(
        "a reference names step ", reference.step(),
        ", which does not run before this step (", current, ")"));
  }
  const v1::Value* value = &values[reference.step()];
  if (value->kind_case() == v1::Value::KIND_NOT_SET) {
    return InvalidRequest(absl::StrCat(
        "step ", reference.step(),
        " has no result to refer to (a void call, a write, a free or "
        "call_columns)"));
  }
  std::string path = absl::StrCat("step ", reference.step(), "'s result");
  for (const std::string& field : reference.field_path()) {
    if (value->has_record_value()) {
      auto it = value->record_value().fields().find(field);
      if (it == value->record_value().fields().end()) {
        return InvalidRequest(
            absl::StrCat(path, " has no member '", field, "'"));
      }
      value = &it->second;
    } else if (value->has_array_value()) {
      int index = 0;
      if (!absl::SimpleAtoi(field, &index) || index < 0 ||
          index >= value->array_value().elements_size()) {
        return InvalidRequest(absl::StrCat(
            path, " is an array of ", value->array_value().elements_size(),
            " elements; '", field, "' is not an index of it"));
      }
      value = &value->array_value().elements(index);
    } else {
      return InvalidRequest(absl::StrCat(
          path, " is not a struct, union or array; cannot take '", field,
          "' of it"));
    }
    absl::StrAppend(&path, ".", field);
  }
  v1::Value out = *value;
  if (reference.offset() == 0 && !reference.has_load_type()) return out;
  if (!out.has_pointer_value()) {
    return InvalidRequest(absl::StrCat(
        path, " is not a pointer; an offset or load_type needs one"));
  }
  v1::PointerValue* pointer = out.mutable_pointer_value();
  const int64_t offset = reference.offset();
  if (!pointer->handle().empty()) {
    if (offset < 0 && static_cast<uint64_t>(-offset) > pointer->offset()) {
      return OutOfBounds(absl::StrCat(
          "offset ", offset, " from ", path, " points before its memory"));
    }
    pointer->set_offset(pointer->offset() + offset);
  }
  pointer->set_address(pointer->address() + offset);
  if (!reference.has_load_type()) return out;
  ASSIGN_OR_RETURN(std::shared_ptr<const ffi::CType> type,
                   ffi::CType::Create(reference.load_type(), "load_type"));
  if (type->size() == 0) {
    return InvalidRequest("load_type has size 0; nothing to load");
  }
  v1::ReadRequest read;
  *read.mutable_pointer() = *pointer;
  read.set_length(type->size());
  ASSIGN_OR_RETURN(v1::ReadResponse bytes, Read(read));
  // Copy into aligned storage before decoding.
  std::vector<std::max_align_t> aligned(
      (type->size() + sizeof(std::max_align_t) - 1) /
          sizeof(std::max_align_t) + 1);
  std::memcpy(aligned.data(), bytes.data().data(), bytes.data().size());
  return ffi::DecodeValue(*type, aligned.data(), resolver_);
}

}  // namespace ffid::worker
