#include "server/worker/executor.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::worker {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

constexpr char kTag[] = "5e551017";

// The real path of a system library, as the daemon would forward it.
std::string RealPathOf(const char* soname) {
  void* dl = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (dl == nullptr) return "";
  link_map* map = nullptr;
  std::string path;
  if (::dlinfo(dl, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr) {
    char* real = ::realpath(map->l_name, nullptr);
    if (real != nullptr) {
      path = real;
      std::free(real);
    }
  }
  ::dlclose(dl);
  return path;
}

v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor type;
  type.set_scalar(kind);
  return type;
}

v1::TypeDescriptor VoidPointer() {
  v1::TypeDescriptor type;
  type.mutable_pointer();
  return type;
}

v1::TypeDescriptor ConstString() {
  v1::TypeDescriptor type;
  type.mutable_string()->set_is_const(true);
  return type;
}

v1::FunctionType Signature(v1::TypeDescriptor result,
                           std::vector<v1::TypeDescriptor> parameters) {
  v1::FunctionType type;
  *type.mutable_return_type() = std::move(result);
  int index = 0;
  for (auto& parameter : parameters) {
    v1::Parameter* p = type.add_parameters();
    p->set_name(absl::StrCat("p", index++));
    *p->mutable_type() = std::move(parameter);
  }
  return type;
}

v1::Value Double(double d) {
  v1::Value v;
  v.set_double_value(d);
  return v;
}
v1::Value Int(int64_t i) {
  v1::Value v;
  v.set_int_value(i);
  return v;
}
v1::Value Uint(uint64_t u) {
  v1::Value v;
  v.set_uint_value(u);
  return v;
}
v1::Value String(std::string s) {
  v1::Value v;
  v.set_string_value(std::move(s));
  return v;
}
v1::Value Null() {
  v1::Value v;
  v.set_null_value(v1::NULL_VALUE_UNSPECIFIED);
  return v;
}
v1::Value Pointer(const std::string& handle, uint64_t offset = 0) {
  v1::Value v;
  v.mutable_pointer_value()->set_handle(handle);
  v.mutable_pointer_value()->set_offset(offset);
  return v;
}
v1::PointerValue At(const std::string& handle, uint64_t offset = 0) {
  v1::PointerValue p;
  p.set_handle(handle);
  p.set_offset(offset);
  return p;
}
v1::PointerValue AtAddress(uint64_t address) {
  v1::PointerValue p;
  p.set_address(address);
  return p;
}

// An integer result, whichever of int_value / uint_value it came as.
int64_t AsInt(const v1::Value& v) {
  return v.has_uint_value() ? static_cast<int64_t>(v.uint_value())
                            : v.int_value();
}

MATCHER_P2(IsError, code, reason,
           absl::StrCat("fails with ", absl::StatusCodeToString(code), " ",
                        ReasonName(reason))) {
  if (arg.code() != code || GetErrorReason(arg) != reason) {
    *result_listener << "status is " << arg;
    return false;
  }
  return true;
}

class ExecutorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    libm_path_ = new std::string(RealPathOf("libm.so.6"));
    libc_path_ = new std::string(RealPathOf("libc.so.6"));
  }
  static void TearDownTestSuite() {
    delete libm_path_;
    delete libc_path_;
  }
  void SetUp() override {
    ASSERT_THAT(*libm_path_, StartsWith("/"));
    ASSERT_THAT(*libc_path_, StartsWith("/"));
  }

  WorkerResponse Run(WorkerRequest request) {
    request.set_id(++next_id_);
    WorkerResponse response = executor_.Execute(request);
    EXPECT_EQ(response.id(), next_id_);
    EXPECT_TRUE(response.has_status());
    if (response.status().code() != 0) {
      EXPECT_EQ(response.result_case(), WorkerResponse::RESULT_NOT_SET);
    }
    return response;
  }
  static absl::Status StatusOf(const WorkerResponse& response) {
    return StatusFromProto(response.status());
  }

  WorkerResponse LoadResponse(const std::string& path) {
    WorkerRequest request;
    request.mutable_load_library()->set_name(path);
    return Run(request);
  }
  std::string Load(const std::string& path) {
    WorkerResponse response = LoadResponse(path);
    EXPECT_TRUE(StatusOf(response).ok()) << StatusOf(response);
    return response.load_library().library();
  }
  WorkerResponse ResolveResponse(const std::string& library,
                                 const std::string& symbol,
                                 const v1::FunctionType& type) {
    WorkerRequest request;
    request.mutable_resolve_function()->set_library(library);
    request.mutable_resolve_function()->set_symbol(symbol);
    *request.mutable_resolve_function()->mutable_type() = type;
    return Run(request);
  }
  std::string Resolve(const std::string& library, const std::string& symbol,
                      const v1::FunctionType& type) {
    WorkerResponse response = ResolveResponse(library, symbol, type);
    EXPECT_TRUE(StatusOf(response).ok()) << StatusOf(response);
    return response.resolve_function().function();
  }
  WorkerResponse CallResponse(const std::string& function,
                              std::vector<v1::Value> arguments,
                              bool capture_errno = false) {
    WorkerRequest request;
    request.mutable_call()->set_function(function);
    for (auto& argument : arguments) {
      *request.mutable_call()->add_arguments() = std::move(argument);
    }
    request.mutable_call()->set_capture_errno(capture_errno);
    return Run(request);
  }
  v1::CallResponse CallOk(const std::string& function,
                          std::vector<v1::Value> arguments) {
    WorkerResponse response = CallResponse(function, std::move(arguments));
    EXPECT_TRUE(StatusOf(response).ok()) << StatusOf(response);
    return response.call();
  }
  WorkerResponse AllocateResponse(v1::AllocateRequest allocate) {
    WorkerRequest request;
    *request.mutable_allocate() = std::move(allocate);
    return Run(request);
  }
  v1::AllocateResponse Allocate(uint64_t size, std::string initial = "") {
    v1::AllocateRequest allocate;
    allocate.set_size(size);
    allocate.set_initial_bytes(std::move(initial));
    WorkerResponse response = AllocateResponse(allocate);
    EXPECT_TRUE(StatusOf(response).ok()) << StatusOf(response);
    return response.allocate();
  }
  WorkerResponse ReadResponse(const v1::PointerValue& pointer,
                              uint64_t length) {
    WorkerRequest request;
    *request.mutable_read()->mutable_pointer() = pointer;
    request.mutable_read()->set_length(length);
    return Run(request);
  }
  std::string ReadOk(const v1::PointerValue& pointer, uint64_t length) {
    WorkerResponse response = ReadResponse(pointer, length);
    EXPECT_TRUE(StatusOf(response).ok()) << StatusOf(response);
    return response.read().data();
  }
  WorkerResponse WriteResponse(const v1::PointerValue& pointer,
                               std::string data) {
    WorkerRequest request;
    *request.mutable_write()->mutable_pointer() = pointer;
    request.mutable_write()->set_data(std::move(data));
    return Run(request);
  }
  WorkerResponse FreeResponse(const std::string& memory) {
    WorkerRequest request;
    request.mutable_free()->set_memory(memory);
    return Run(request);
  }

  static std::string* libm_path_;
  static std::string* libc_path_;
  Executor executor_{kTag};
  uint64_t next_id_ = 100;
};

std::string* ExecutorTest::libm_path_ = nullptr;
std::string* ExecutorTest::libc_path_ = nullptr;

// --- load_library / unload_library ---------------------------------------

TEST_F(ExecutorTest, LoadsALibraryByRealPath) {
  WorkerResponse response = LoadResponse(*libm_path_);
  ASSERT_TRUE(StatusOf(response).ok()) << StatusOf(response);
  EXPECT_THAT(response.load_library().library(),
              MatchesRegex("lib_5e551017_[0-9a-f]{32}"));
  EXPECT_EQ(response.load_library().path(), *libm_path_);
  EXPECT_EQ(response.status().code(), 0);
}

TEST_F(ExecutorTest, RefusesRelativeLibraryNames) {
  absl::Status status = StatusOf(LoadResponse("libm.so.6"));
  EXPECT_THAT(status, IsError(absl::StatusCode::kInvalidArgument,
                              v1::ERROR_REASON_INVALID_REQUEST));
  EXPECT_THAT(std::string(status.message()), HasSubstr("absolute path"));
}

TEST_F(ExecutorTest, MissingLibraryIsNotFound) {
  absl::Status status = StatusOf(LoadResponse("/nonexistent/libnope.so"));
  EXPECT_THAT(status, IsError(absl::StatusCode::kNotFound,
                              v1::ERROR_REASON_LIBRARY_NOT_FOUND));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("/nonexistent/libnope.so"));
}

TEST_F(ExecutorTest, UnloadableFileIsLibraryLoadFailedWithDlerror) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/not_a_library.so");
  std::ofstream(path) << "this is not an ELF file\n";
  absl::Status status = StatusOf(LoadResponse(path));
  EXPECT_THAT(status, IsError(absl::StatusCode::kFailedPrecondition,
                              v1::ERROR_REASON_LIBRARY_LOAD_FAILED));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("cannot load " + path + ": "));
  // dlerror's text follows, e.g. "invalid ELF header" or "file too short".
  EXPECT_GT(status.message().size(), path.size() + 20);
  std::remove(path.c_str());
}

TEST_F(ExecutorTest, UnloadRetiresTheLibraryAndItsFunctions) {
  const std::string lib = Load(*libm_path_);
  const std::string fn =
      Resolve(lib, "cos", Signature(Scalar(v1::SCALAR_KIND_DOUBLE),
                                    {Scalar(v1::SCALAR_KIND_DOUBLE)}));
  WorkerRequest unload;
  unload.mutable_unload_library()->set_library(lib);
  WorkerResponse response = Run(unload);
  ASSERT_TRUE(StatusOf(response).ok()) << StatusOf(response);
  EXPECT_TRUE(response.has_unload_library());

  absl::Status call = StatusOf(CallResponse(fn, {Double(0.5)}));
  EXPECT_THAT(call, IsError(absl::StatusCode::kInvalidArgument,
                            v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(call.message()), HasSubstr("was unloaded"));
  absl::Status again = StatusOf(Run(unload));
  EXPECT_THAT(again, IsError(absl::StatusCode::kInvalidArgument,
                             v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(again.message()),
              HasSubstr("library handle " + lib + " was unloaded"));
  absl::Status resolve = StatusOf(ResolveResponse(
      lib, "sin", Signature(Scalar(v1::SCALAR_KIND_DOUBLE),
                            {Scalar(v1::SCALAR_KIND_DOUBLE)})));
  EXPECT_THAT(resolve, IsError(absl::StatusCode::kInvalidArgument,
                               v1::ERROR_REASON_HANDLE_INVALID));
}

// --- resolve_function ------------------------------------------------------

TEST_F(ExecutorTest, ResolvesASymbol) {
  const std::string lib = Load(*libm_path_);
  const v1::FunctionType type = Signature(Scalar(v1::SCALAR_KIND_DOUBLE),
                                          {Scalar(v1::SCALAR_KIND_DOUBLE)});
  WorkerResponse response = ResolveResponse(lib, "cos", type);
  ASSERT_TRUE(StatusOf(response).ok()) << StatusOf(response);
  const v1::ResolveFunctionResponse& resolved = response.resolve_function();
  EXPECT_THAT(resolved.function(), MatchesRegex("fn_5e551017_[0-9a-f]{32}"));
  EXPECT_EQ(resolved.symbol(), "cos");
  EXPECT_EQ(resolved.type().parameters_size(), 1);
  EXPECT_EQ(resolved.type().return_type().scalar(), v1::SCALAR_KIND_DOUBLE);
  void* dl = ::dlopen(libm_path_->c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(dl, nullptr);
  EXPECT_EQ(resolved.address(),
            reinterpret_cast<uintptr_t>(::dlsym(dl, "cos")));
  ::dlclose(dl);
}

TEST_F(ExecutorTest, ResolvesFromADeclaration) {
  const std::string lib = Load(*libm_path_);
  WorkerRequest request;
  request.mutable_resolve_function()->set_library(lib);
  request.mutable_resolve_function()->set_declaration("double sqrt(double x)");
  WorkerResponse response = Run(request);
  ASSERT_TRUE(StatusOf(response).ok()) << StatusOf(response);
  EXPECT_EQ(response.resolve_function().symbol(), "sqrt");
  v1::CallResponse call =
      CallOk(response.resolve_function().function(), {Double(2.25)});
  EXPECT_EQ(call.result().double_value(), 1.5);
}

TEST_F(ExecutorTest, MissingSymbolIsSymbolNotFound) {
  const std::string lib = Load(*libm_path_);
  absl::Status status = StatusOf(ResolveResponse(
      lib, "nope", Signature(Scalar(v1::SCALAR_KIND_INT), {})));
  EXPECT_THAT(status, IsError(absl::StatusCode::kNotFound,
                              v1::ERROR_REASON_SYMBOL_NOT_FOUND));
  EXPECT_EQ(status.message(), "symbol 'nope' not found in " + *libm_path_);
}

TEST_F(ExecutorTest, ResolveNeedsASignatureAndASymbol) {
  const std::string lib = Load(*libm_path_);
  WorkerRequest request;
  request.mutable_resolve_function()->set_library(lib);
  request.mutable_resolve_function()->set_symbol("cos");
  EXPECT_THAT(StatusOf(Run(request)),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_INVALID_REQUEST));
  EXPECT_THAT(StatusOf(ResolveResponse(lib, "",
                                       Signature(Scalar(v1::SCALAR_KIND_INT),
                                                 {}))),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_INVALID_REQUEST));
}

TEST_F(ExecutorTest, RefusesToResolveAVariableAsAFunction) {
  const std::string lib = Load(*libc_path_);
  absl::Status status = StatusOf(ResolveResponse(
      lib, "environ", Signature(Scalar(v1::SCALAR_KIND_INT), {})));
  EXPECT_THAT(status, IsError(absl::StatusCode::kInvalidArgument,
                              v1::ERROR_REASON_TYPE_MISMATCH));
  EXPECT_THAT(std::string(status.message()), HasSubstr("is a variable"));
}

TEST_F(ExecutorTest, ResolveWithAMemoryHandleAsLibraryNamesBothKinds) {
  const std::string memory = Allocate(8).memory();
  absl::Status status = StatusOf(ResolveResponse(
      memory, "cos", Signature(Scalar(v1::SCALAR_KIND_INT), {})));
  EXPECT_THAT(status, IsError(absl::StatusCode::kInvalidArgument,
                              v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("is a memory handle, not a library handle"));
}

// --- call ------------------------------------------------------------------

TEST_F(ExecutorTest, CallsCos) {
  const std::string lib = Load(*libm_path_);
  const std::string cos_fn =
      Resolve(lib, "cos", Signature(Scalar(v1::SCALAR_KIND_DOUBLE),
                                    {Scalar(v1::SCALAR_KIND_DOUBLE)}));
  v1::CallResponse call = CallOk(cos_fn, {Double(0.5)});
  ASSERT_TRUE(call.has_result());
  EXPECT_EQ(call.result().double_value(), std::cos(0.5));
}

TEST_F(ExecutorTest, CallsStrlenAndLabs) {
  const std::string lib = Load(*libc_path_);
  const std::string strlen_fn =
      Resolve(lib, "strlen",
              Signature(Scalar(v1::SCALAR_KIND_SIZE_T), {ConstString()}));
  EXPECT_EQ(AsInt(CallOk(strlen_fn, {String("hello")}).result()), 5);
  EXPECT_EQ(AsInt(CallOk(strlen_fn, {String("h\xc3\xa9llo")}).result()), 6);

  const std::string labs_fn =
      Resolve(lib, "labs", Signature(Scalar(v1::SCALAR_KIND_LONG),
                                     {Scalar(v1::SCALAR_KIND_LONG)}));
  EXPECT_EQ(AsInt(CallOk(labs_fn, {Int(-9000000000)}).result()), 9000000000);
}

TEST_F(ExecutorTest, BadArgumentsAreRejectedBeforeTheCall) {
  const std::string lib = Load(*libm_path_);
  const std::string cos_fn =
      Resolve(lib, "cos", Signature(Scalar(v1::SCALAR_KIND_DOUBLE),
                                    {Scalar(v1::SCALAR_KIND_DOUBLE)}));
  EXPECT_THAT(StatusOf(CallResponse(cos_fn, {})),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_ARGUMENT_COUNT));
  EXPECT_THAT(StatusOf(CallResponse(cos_fn, {Double(1), Double(2)})),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_ARGUMENT_COUNT));
  EXPECT_THAT(StatusOf(CallResponse(cos_fn, {String("x")})),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_TYPE_MISMATCH));
}

TEST_F(ExecutorTest, CallWithBadFunctionHandles) {
  absl::Status never = StatusOf(CallResponse(
      absl::StrCat("fn_", kTag, "_", std::string(32, '0')), {}));
  EXPECT_THAT(never, IsError(absl::StatusCode::kInvalidArgument,
                             v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(never.message()),
              HasSubstr("does not exist in this session"));

  absl::Status foreign = StatusOf(
      CallResponse(absl::StrCat("fn_ffffffff_", std::string(32, '0')), {}));
  EXPECT_THAT(std::string(foreign.message()),
              HasSubstr("belongs to another session"));

  const std::string memory = Allocate(8).memory();
  absl::Status wrong_kind = StatusOf(CallResponse(memory, {}));
  EXPECT_THAT(wrong_kind, IsError(absl::StatusCode::kInvalidArgument,
                                  v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(wrong_kind.message()),
              HasSubstr("is a memory handle, not a function handle"));
}

TEST_F(ExecutorTest, CapturesErrno) {
  const std::string lib = Load(*libc_path_);
  v1::TypeDescriptor char_pp;
  *char_pp.mutable_pointer()->mutable_pointee() = VoidPointer();
  const std::string strtol_fn =
      Resolve(lib, "strtol",
              Signature(Scalar(v1::SCALAR_KIND_LONG),
                        {ConstString(), char_pp, Scalar(v1::SCALAR_KIND_INT)}));
  WorkerResponse response = CallResponse(
      strtol_fn, {String("99999999999999999999999"), Null(), Int(10)},
      /*capture_errno=*/true);
  ASSERT_TRUE(StatusOf(response).ok()) << StatusOf(response);
  EXPECT_EQ(AsInt(response.call().result()), LONG_MAX);
  EXPECT_EQ(response.call().errno_value(), ERANGE);
}

TEST_F(ExecutorTest, ReturnedPointersBecomeBorrowedHandles) {
  const std::string lib = Load(*libc_path_);
  const std::string malloc_fn =
      Resolve(lib, "malloc",
              Signature(VoidPointer(), {Scalar(v1::SCALAR_KIND_SIZE_T)}));
  const std::string free_fn = Resolve(
      lib, "free", Signature(Scalar(v1::SCALAR_KIND_VOID), {VoidPointer()}));
  v1::CallResponse call = CallOk(malloc_fn, {Uint(32)});
  ASSERT_TRUE(call.result().has_pointer_value());
  const v1::PointerValue returned = call.result().pointer_value();
  EXPECT_THAT(returned.handle(), MatchesRegex("mem_5e551017_[0-9a-f]{32}"));
  EXPECT_NE(returned.address(), 0u);

  // Borrowed memory: explicit lengths, no bounds known.
  ASSERT_TRUE(StatusOf(WriteResponse(At(returned.handle(), 4), "abcd")).ok());
  EXPECT_EQ(ReadOk(At(returned.handle(), 4), 4), "abcd");
  EXPECT_EQ(ReadOk(AtAddress(returned.address() + 5), 2), "bc");
  absl::Status no_length = StatusOf(ReadResponse(At(returned.handle()), 0));
  EXPECT_THAT(no_length, IsError(absl::StatusCode::kInvalidArgument,
                                 v1::ERROR_REASON_INVALID_REQUEST));
  EXPECT_THAT(std::string(no_length.message()),
              HasSubstr("needs an explicit length"));

  absl::Status free_borrowed = StatusOf(FreeResponse(returned.handle()));
  EXPECT_THAT(free_borrowed, IsError(absl::StatusCode::kFailedPrecondition,
                                     v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(free_borrowed.message()),
              HasSubstr("is borrowed; ffid does not own it"));

  // The library's own free releases it; void has no result.
  v1::CallResponse freed = CallOk(free_fn, {Pointer(returned.handle())});
  EXPECT_FALSE(freed.has_result());
}

TEST_F(ExecutorTest, OwnedMemoryAsAPointerArgument) {
  const std::string lib = Load(*libc_path_);
  const std::string memset_fn = Resolve(
      lib, "memset",
      Signature(VoidPointer(), {VoidPointer(), Scalar(v1::SCALAR_KIND_INT),
                                Scalar(v1::SCALAR_KIND_SIZE_T)}));
  const v1::AllocateResponse block = Allocate(16);
  v1::CallResponse call =
      CallOk(memset_fn, {Pointer(block.memory(), 4), Int('A'), Uint(8)});
  EXPECT_EQ(call.result().pointer_value().address(), block.address() + 4);
  EXPECT_EQ(ReadOk(At(block.memory()), 0),
            std::string(4, '\0') + std::string(8, 'A') + std::string(4, '\0'));
  // A pointer at the start of owned memory maps back to its owned handle.
  v1::CallResponse again =
      CallOk(memset_fn, {Pointer(block.memory()), Int('B'), Uint(1)});
  EXPECT_EQ(again.result().pointer_value().handle(), block.memory());

  // Offsets past the allocation are refused before memset runs.
  absl::Status past = StatusOf(
      CallResponse(memset_fn, {Pointer(block.memory(), 17), Int(0), Uint(1)}));
  EXPECT_THAT(past, IsError(absl::StatusCode::kOutOfRange,
                            v1::ERROR_REASON_OUT_OF_BOUNDS));
  EXPECT_THAT(std::string(past.message()),
              HasSubstr("offset 17 is past the end of the 16-byte allocation"));

  ASSERT_TRUE(StatusOf(FreeResponse(block.memory())).ok());
  absl::Status freed = StatusOf(
      CallResponse(memset_fn, {Pointer(block.memory()), Int(0), Uint(1)}));
  EXPECT_THAT(freed, IsError(absl::StatusCode::kInvalidArgument,
                             v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(freed.message()), HasSubstr("was freed"));
}

// --- allocate ----------------------------------------------------------------

TEST_F(ExecutorTest, AllocateIsZeroedAndTakesInitialBytes) {
  const v1::AllocateResponse block = Allocate(64);
  EXPECT_THAT(block.memory(), MatchesRegex("mem_5e551017_[0-9a-f]{32}"));
  EXPECT_EQ(block.size(), 64u);
  EXPECT_NE(block.address(), 0u);
  EXPECT_EQ(ReadOk(At(block.memory()), 0), std::string(64, '\0'));

  const v1::AllocateResponse initial = Allocate(8, "hey");
  EXPECT_EQ(ReadOk(At(initial.memory()), 0), std::string("hey\0\0\0\0\0", 8));
}

TEST_F(ExecutorTest, AllocateByType) {
  v1::AllocateRequest request;
  *request.mutable_type() = Scalar(v1::SCALAR_KIND_INT);
  request.set_size(4);
  WorkerResponse ints = AllocateResponse(request);
  ASSERT_TRUE(StatusOf(ints).ok()) << StatusOf(ints);
  EXPECT_EQ(ints.allocate().size(), 4 * sizeof(int));

  v1::AllocateRequest one_double;
  *one_double.mutable_type() = Scalar(v1::SCALAR_KIND_DOUBLE);
  *one_double.mutable_initial_value() = Double(1.5);
  WorkerResponse response = AllocateResponse(one_double);
  ASSERT_TRUE(StatusOf(response).ok()) << StatusOf(response);
  EXPECT_EQ(response.allocate().size(), sizeof(double));
  const std::string bytes = ReadOk(At(response.allocate().memory()), 0);
  double value = 0;
  ASSERT_EQ(bytes.size(), sizeof(value));
  std::memcpy(&value, bytes.data(), sizeof(value));
  EXPECT_EQ(value, 1.5);
}

TEST_F(ExecutorTest, AllocatedStringValueOutlivesTheRequest) {
  v1::AllocateRequest request;
  *request.mutable_type() = ConstString();
  *request.mutable_initial_value() = String("kept alive");
  WorkerResponse response = AllocateResponse(request);
  ASSERT_TRUE(StatusOf(response).ok()) << StatusOf(response);
  const std::string slot = ReadOk(At(response.allocate().memory()), 0);
  uint64_t address = 0;
  ASSERT_EQ(slot.size(), sizeof(void*));
  std::memcpy(&address, slot.data(), sizeof(address));
  ASSERT_NE(address, 0u);
  // Let the request and anything else transient go away first.
  Allocate(1 << 16);
  EXPECT_EQ(ReadOk(AtAddress(address), 11), std::string("kept alive\0", 11));
}

TEST_F(ExecutorTest, AllocateErrors) {
  v1::AllocateRequest zero;
  EXPECT_THAT(StatusOf(AllocateResponse(zero)),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_INVALID_REQUEST));

  v1::AllocateRequest too_long;
  too_long.set_size(4);
  too_long.set_initial_bytes("12345");
  absl::Status status = StatusOf(AllocateResponse(too_long));
  EXPECT_THAT(status, IsError(absl::StatusCode::kInvalidArgument,
                              v1::ERROR_REASON_OUT_OF_BOUNDS));
  EXPECT_THAT(std::string(status.message()), HasSubstr("5 bytes"));

  v1::AllocateRequest huge;
  huge.set_size(kMaxAllocationBytes + 1);
  status = StatusOf(AllocateResponse(huge));
  EXPECT_THAT(status, IsError(absl::StatusCode::kResourceExhausted,
                              v1::ERROR_REASON_RESOURCE_LIMIT));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("per-allocation limit"));

  v1::AllocateRequest huge_typed;
  *huge_typed.mutable_type() = Scalar(v1::SCALAR_KIND_DOUBLE);
  huge_typed.set_size(uint64_t{1} << 62);
  EXPECT_THAT(StatusOf(AllocateResponse(huge_typed)),
              IsError(absl::StatusCode::kResourceExhausted,
                      v1::ERROR_REASON_RESOURCE_LIMIT));

  v1::AllocateRequest value_without_type;
  value_without_type.set_size(8);
  *value_without_type.mutable_initial_value() = Double(1);
  EXPECT_THAT(StatusOf(AllocateResponse(value_without_type)),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_INVALID_REQUEST));

  v1::AllocateRequest void_type;
  *void_type.mutable_type() = Scalar(v1::SCALAR_KIND_VOID);
  EXPECT_EQ(StatusOf(AllocateResponse(void_type)).code(),
            absl::StatusCode::kInvalidArgument);

  v1::AllocateRequest bad_value;
  *bad_value.mutable_type() = Scalar(v1::SCALAR_KIND_INT);
  *bad_value.mutable_initial_value() = String("not an int");
  EXPECT_EQ(StatusOf(AllocateResponse(bad_value)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(executor_.handles().memory_count(), 0u);
}

// --- read / write ------------------------------------------------------------

TEST_F(ExecutorTest, OwnedReadWriteRoundTripAndBounds) {
  const v1::AllocateResponse block = Allocate(64);
  const std::string& mem = block.memory();
  ASSERT_TRUE(StatusOf(WriteResponse(At(mem, 2), "hello")).ok());
  EXPECT_EQ(ReadOk(At(mem, 2), 5), "hello");
  EXPECT_EQ(ReadOk(At(mem, 60), 0), std::string(4, '\0'));
  EXPECT_EQ(ReadOk(At(mem, 64), 0), "");
  ASSERT_TRUE(StatusOf(WriteResponse(At(mem, 60), "1234")).ok());

  absl::Status read = StatusOf(ReadResponse(At(mem, 60), 16));
  EXPECT_THAT(read, IsError(absl::StatusCode::kOutOfRange,
                            v1::ERROR_REASON_OUT_OF_BOUNDS));
  EXPECT_EQ(read.message(), "read of 16 bytes at offset 60 exceeds the "
                            "64-byte allocation " + mem);
  absl::Status write = StatusOf(WriteResponse(At(mem, 62), "abc"));
  EXPECT_THAT(write, IsError(absl::StatusCode::kOutOfRange,
                             v1::ERROR_REASON_OUT_OF_BOUNDS));
  EXPECT_EQ(write.message(), "write of 3 bytes at offset 62 exceeds the "
                             "64-byte allocation " + mem);
  absl::Status past = StatusOf(ReadResponse(At(mem, 65), 0));
  EXPECT_THAT(past, IsError(absl::StatusCode::kOutOfRange,
                            v1::ERROR_REASON_OUT_OF_BOUNDS));
  EXPECT_THAT(std::string(past.message()), HasSubstr("past the end"));
  absl::Status huge_offset =
      StatusOf(ReadResponse(At(mem, ~uint64_t{0}), 1));
  EXPECT_EQ(huge_offset.code(), absl::StatusCode::kOutOfRange);
}

TEST_F(ExecutorTest, LargeOwnedRoundTrip) {
  const uint64_t size = 64u << 20;
  const v1::AllocateResponse block = Allocate(size);
  std::string data(size, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(StatusOf(WriteResponse(At(block.memory()), data)).ok());
  EXPECT_TRUE(ReadOk(At(block.memory()), 0) == data);
}

TEST_F(ExecutorTest, RawAddressesAreCheckedNotDereferenced) {
  const v1::AllocateResponse block = Allocate(8, "abcdefgh");
  EXPECT_EQ(ReadOk(AtAddress(block.address() + 2), 3), "cde");
  ASSERT_TRUE(StatusOf(WriteResponse(AtAddress(block.address()), "X")).ok());
  EXPECT_EQ(ReadOk(At(block.memory()), 1), "X");

  absl::Status no_length =
      StatusOf(ReadResponse(AtAddress(block.address()), 0));
  EXPECT_THAT(no_length, IsError(absl::StatusCode::kInvalidArgument,
                                 v1::ERROR_REASON_INVALID_REQUEST));

  absl::Status null = StatusOf(ReadResponse(AtAddress(0), 4));
  EXPECT_THAT(null, IsError(absl::StatusCode::kInvalidArgument,
                            v1::ERROR_REASON_BAD_ADDRESS));

  // Unmapped: the first page is never mapped on Linux.
  absl::Status unmapped = StatusOf(ReadResponse(AtAddress(16), 4));
  EXPECT_THAT(unmapped, IsError(absl::StatusCode::kInvalidArgument,
                                v1::ERROR_REASON_BAD_ADDRESS));
  EXPECT_THAT(std::string(unmapped.message()), HasSubstr("0x10"));
  EXPECT_THAT(StatusOf(WriteResponse(AtAddress(16), "x")),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_BAD_ADDRESS));

  // Read-only: this function's code.
  const uint64_t code = reinterpret_cast<uintptr_t>(&RealPathOf);
  EXPECT_EQ(ReadOk(AtAddress(code), 4).size(), 4u);
  EXPECT_THAT(StatusOf(WriteResponse(AtAddress(code), "\xcc")),
              IsError(absl::StatusCode::kInvalidArgument,
                      v1::ERROR_REASON_BAD_ADDRESS));
  // Still alive, and the code is intact.
  EXPECT_NE(RealPathOf("libm.so.6"), "");
}

TEST_F(ExecutorTest, ReadAcrossTheEndOfAMappingIsBadAddress) {
  // A readable page followed by an unmapped one.
  const long page = ::sysconf(_SC_PAGESIZE);
  void* pages = ::mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(pages, MAP_FAILED);
  ASSERT_EQ(::munmap(static_cast<char*>(pages) + page, page), 0);
  const uint64_t tail = reinterpret_cast<uintptr_t>(pages) + page - 4;
  absl::Status status = StatusOf(ReadResponse(AtAddress(tail), 8));
  EXPECT_THAT(status, IsError(absl::StatusCode::kInvalidArgument,
                              v1::ERROR_REASON_BAD_ADDRESS));
  EXPECT_EQ(ReadOk(AtAddress(tail), 4), std::string(4, '\0'));
  ::munmap(pages, page);
}

TEST_F(ExecutorTest, ReadWithAFunctionHandleNamesBothKinds) {
  const std::string lib = Load(*libm_path_);
  absl::Status status = StatusOf(ReadResponse(At(lib), 4));
  EXPECT_THAT(status, IsError(absl::StatusCode::kInvalidArgument,
                              v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("is a library handle, not a memory handle"));
}

TEST_F(ExecutorTest, ReadTooLargeIsResourceLimit) {
  const v1::AllocateResponse block = Allocate(8);
  EXPECT_THAT(StatusOf(ReadResponse(AtAddress(block.address()),
                                    kMaxReadBytes + 1)),
              IsError(absl::StatusCode::kResourceExhausted,
                      v1::ERROR_REASON_RESOURCE_LIMIT));
}

// --- free ------------------------------------------------------------------

TEST_F(ExecutorTest, FreeAndItsErrors) {
  const v1::AllocateResponse block = Allocate(8);
  WorkerResponse freed = FreeResponse(block.memory());
  ASSERT_TRUE(StatusOf(freed).ok()) << StatusOf(freed);
  EXPECT_TRUE(freed.has_free());

  absl::Status twice = StatusOf(FreeResponse(block.memory()));
  EXPECT_THAT(twice, IsError(absl::StatusCode::kInvalidArgument,
                             v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_EQ(twice.message(), "memory handle " + block.memory() + " was freed");

  absl::Status read = StatusOf(ReadResponse(At(block.memory()), 1));
  EXPECT_THAT(std::string(read.message()), HasSubstr("was freed"));

  absl::Status never = StatusOf(
      FreeResponse(absl::StrCat("mem_", kTag, "_", std::string(32, 'a'))));
  EXPECT_THAT(std::string(never.message()),
              HasSubstr("does not exist in this session"));

  absl::Status foreign = StatusOf(
      FreeResponse(absl::StrCat("mem_12345678_", std::string(32, 'a'))));
  EXPECT_THAT(foreign, IsError(absl::StatusCode::kInvalidArgument,
                               v1::ERROR_REASON_HANDLE_INVALID));
  EXPECT_THAT(std::string(foreign.message()),
              HasSubstr("belongs to another session"));
}

// --- dispatch ----------------------------------------------------------------

TEST_F(ExecutorTest, RequestWithoutAnOperation) {
  WorkerResponse response = Run(WorkerRequest());
  EXPECT_THAT(StatusOf(response), IsError(absl::StatusCode::kInvalidArgument,
                                          v1::ERROR_REASON_INVALID_REQUEST));
}

TEST_F(ExecutorTest, DestructionReleasesEverything) {
  // Run under the asan preset, a leak here fails the test binary.
  auto executor = std::make_unique<Executor>(kTag);
  WorkerRequest load;
  load.mutable_load_library()->set_name(*libm_path_);
  WorkerResponse loaded = executor->Execute(load);
  ASSERT_EQ(loaded.status().code(), 0);
  WorkerRequest allocate;
  allocate.mutable_allocate()->set_size(1024);
  ASSERT_EQ(executor->Execute(allocate).status().code(), 0);
  EXPECT_EQ(executor->handles().memory_count(), 1u);
  executor.reset();
}

}  // namespace
}  // namespace ffid::worker
