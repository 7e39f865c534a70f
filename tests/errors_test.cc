// Every bad input of the API gets its specific reason and a message that
// names the thing at fault, and the session keeps working afterwards.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clients/cpp/ffid/client.h"
#include "clients/cpp/ffid/values.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ffid_test.h"

namespace ffid::testing {
namespace {

using client::MakeDouble;
using client::MakeInt;
using client::MakeNull;
using client::MakePointer;
using client::MakeString;
using client::MakeUint;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

class ErrorsTest : public FfidTest {
 protected:
  void TearDown() override {
    // Whatever a test did wrong, the session still serves.
    if (session_ != nullptr && !session_broken_) {
      EXPECT_THAT(CallOk("int fx_add(int a, int b)", {MakeInt(1), MakeInt(2)}),
                  IsInteger(3))
          << "the session stopped working after the bad input";
    }
    FfidTest::TearDown();
  }

  // Copies the fixture library to `path`.
  void CopyFixture(const std::string& path) {
    std::ifstream in(FixturePath(), std::ios::binary);
    std::ofstream out(path, std::ios::binary);
    out << in.rdbuf();
    ASSERT_TRUE(out.good()) << path;
  }

  std::string OutsideDir() {
    const std::string dir = daemon().temp_dir() + "/outside";
    mkdir(dir.c_str(), 0700);
    return dir;
  }

  bool session_broken_ = false;
};

TEST_F(ErrorsTest, LibraryNotFound) {
  absl::StatusOr<client::Library> library =
      session_->LoadLibrary("libffid_does_not_exist.so.42");
  EXPECT_THAT(library, HasReason("LIBRARY_NOT_FOUND"));
  EXPECT_THAT(MessageOf(library), HasSubstr("libffid_does_not_exist.so.42"));
  EXPECT_THAT(library, HasCode(absl::StatusCode::kNotFound));

  library = session_->LoadLibrary(daemon().allowed_dir() + "/libnothere.so");
  EXPECT_THAT(library, HasReason("LIBRARY_NOT_FOUND"));
  EXPECT_THAT(MessageOf(library), HasSubstr("libnothere.so"));
}

TEST_F(ErrorsTest, LibraryOutsideTheAllowlist) {
  const std::string outside = OutsideDir() + "/libffid_copy.so";
  CopyFixture(outside);
  absl::StatusOr<client::Library> library = session_->LoadLibrary(outside);
  EXPECT_THAT(library, HasReason("LIBRARY_NOT_ALLOWED"));
  EXPECT_THAT(library, HasCode(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(MessageOf(library), HasSubstr(outside));
}

TEST_F(ErrorsTest, SymlinkInAnAllowedDirectoryCannotSmuggleInAnotherFile) {
  const std::string outside = OutsideDir() + "/libffid_copy.so";
  CopyFixture(outside);
  const std::string link = daemon().allowed_dir() + "/libsmuggled.so";
  ASSERT_EQ(symlink(outside.c_str(), link.c_str()), 0);
  absl::StatusOr<client::Library> library = session_->LoadLibrary(link);
  EXPECT_THAT(library, HasReason("LIBRARY_NOT_ALLOWED"));
  // The message names the real path that was refused.
  EXPECT_THAT(MessageOf(library), HasSubstr(outside));
}

TEST_F(ErrorsTest, DotDotCannotLeaveAnAllowedDirectory) {
  const std::string outside = OutsideDir() + "/libffid_copy.so";
  CopyFixture(outside);
  const std::string sneaky =
      daemon().allowed_dir() + "/../outside/libffid_copy.so";
  EXPECT_THAT(session_->LoadLibrary(sneaky), HasReason("LIBRARY_NOT_ALLOWED"));
  EXPECT_THAT(session_->LoadLibrary("/usr/lib/../.." + outside),
              HasReason("LIBRARY_NOT_ALLOWED"));
}

TEST_F(ErrorsTest, FilesInsideTheAllowlistLoadWhateverTheirPath) {
  // A copy in the allowed directory, and a symlink in it to an allowed file.
  const std::string copy = daemon().allowed_dir() + "/libffid_copy.so";
  CopyFixture(copy);
  absl::StatusOr<client::Library> library = session_->LoadLibrary(copy);
  ASSERT_TRUE(library.ok()) << library.status();
  EXPECT_EQ(library->path, copy);
  const std::string link = daemon().allowed_dir() + "/liblink.so";
  ASSERT_EQ(symlink(FixturePath().c_str(), link.c_str()), 0);
  library = session_->LoadLibrary(link);
  ASSERT_TRUE(library.ok()) << library.status();
  char real[PATH_MAX];
  ASSERT_NE(realpath(FixturePath().c_str(), real), nullptr);
  EXPECT_EQ(library->path, real);
}

TEST_F(ErrorsTest, FileThatIsNotALibrary) {
  const std::string path = daemon().allowed_dir() + "/libtext.so";
  std::ofstream(path) << "not an ELF file\n";
  absl::StatusOr<client::Library> library = session_->LoadLibrary(path);
  EXPECT_THAT(library, HasReason("LIBRARY_LOAD_FAILED"));
  EXPECT_THAT(MessageOf(library), HasSubstr("libtext.so"));
}

TEST_F(ErrorsTest, SymbolNotFound) {
  absl::StatusOr<client::Function> function =
      session_->ResolveFunction(fixture_, "int fx_does_not_exist(int)");
  EXPECT_THAT(function, HasReason("SYMBOL_NOT_FOUND"));
  EXPECT_THAT(function, HasCode(absl::StatusCode::kNotFound));
  EXPECT_THAT(MessageOf(function), HasSubstr("fx_does_not_exist"));
}

TEST_F(ErrorsTest, ThreadLocalVariableIsNotCalled) {
  // dlsym of a TLS symbol returns this thread's copy, outside any object:
  // calling it would jump into data.
  absl::StatusOr<client::Library> libc = session_->LoadLibrary("libc.so.6");
  ASSERT_TRUE(libc.ok()) << libc.status();
  absl::StatusOr<client::Function> function =
      session_->ResolveFunction(*libc, "int errno(void)");
  EXPECT_THAT(function, HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(MessageOf(function), HasSubstr("thread-local variable"));
}

TEST_F(ErrorsTest, HugeInputStillGivesTheRealError) {
  // The message quotes the declaration; it is cut so that it still fits in
  // gRPC's headers and the client sees DECLARATION_INVALID.
  const std::string declaration =
      "int fx_add(int " + std::string(20000, '*') + ")";
  absl::StatusOr<client::Function> function =
      session_->ResolveFunction(fixture_, declaration);
  EXPECT_THAT(function, HasReason("DECLARATION_INVALID"));
  EXPECT_THAT(MessageOf(function), HasSubstr("more bytes cut"));
}

TEST_F(ErrorsTest, MalformedDeclarationsGiveTheColumn) {
  for (const char* declaration :
       {"int fx_add(int, ", "int fx_add(int int)", "double cos(double",
        "fx_add(int, int)", "int (int a, int b)", "int fx_add(int a,, int b)",
        "", "int fx_add(int a) extra"}) {
    SCOPED_TRACE(declaration);
    absl::StatusOr<client::Function> function =
        session_->ResolveFunction(fixture_, declaration);
    EXPECT_THAT(function, HasReason("DECLARATION_INVALID"));
    EXPECT_THAT(function, HasCode(absl::StatusCode::kInvalidArgument));
    if (*declaration != '\0') {
      EXPECT_THAT(MessageOf(function), HasSubstr("column"));
    }
  }
  absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
      session_->ParseDeclarations("int ok(void);\ndouble broken(double;\n");
  EXPECT_THAT(parsed, HasReason("DECLARATION_INVALID"));
  EXPECT_THAT(MessageOf(parsed), AllOf(HasSubstr("line 2"), HasSubstr("column")));
  EXPECT_THAT(MessageOf(parsed), HasSubstr("expected"));
}

TEST_F(ErrorsTest, TooFewAndTooManyArguments) {
  const std::string add = "int fx_add(int a, int b)";
  absl::StatusOr<v1::CallResponse> response = Call(add, {MakeInt(1)});
  EXPECT_THAT(response, HasReason("ARGUMENT_COUNT"));
  EXPECT_THAT(response, HasCode(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MessageOf(response), HasSubstr("fx_add"));
  EXPECT_THAT(Call(add, {MakeInt(1), MakeInt(2), MakeInt(3)}),
              HasReason("ARGUMENT_COUNT"));
  EXPECT_THAT(Call(add, {}), HasReason("ARGUMENT_COUNT"));
  EXPECT_THAT(Call("void fx_noop(void)", {MakeInt(1)}),
              HasReason("ARGUMENT_COUNT"));
}

TEST_F(ErrorsTest, ValuesOfTheWrongKind) {
  struct Case {
    std::string declaration;
    v1::Value argument;
  };
  for (const Case& c : std::vector<Case>{
           {"int fx_int_id(int x)", MakeString("12")},
           {"int fx_int_id(int x)", MakeDouble(1.5)},
           {"int fx_int_id(int x)", MakeNull()},
           {"size_t fx_strlen(const char *s)", MakeInt(5)},
           {"size_t fx_strlen(const char *s)", MakeDouble(5)},
           {"double fx_double_id(double x)", MakeString("0.5")},
           {"bool fx_bool_id(bool x)", MakeString("true")},
           {"int fx_is_null(const void *p)", MakeDouble(0)},
           {"int fx_is_null(const void *p)", client::MakeBool(true)},
       }) {
    SCOPED_TRACE(c.declaration + " <- " + c.argument.ShortDebugString());
    absl::StatusOr<v1::CallResponse> response =
        Call(c.declaration, {c.argument});
    EXPECT_THAT(response, HasReason("TYPE_MISMATCH"));
    EXPECT_THAT(response, HasCode(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(MessageOf(response), HasSubstr("parameter 1"));
  }
}

TEST_F(ErrorsTest, ValuesOutOfRange) {
  struct Case {
    std::string declaration;
    v1::Value argument;
  };
  for (const Case& c : std::vector<Case>{
           {"int8_t fx_int8_id(int8_t x)", MakeInt(128)},
           {"int8_t fx_int8_id(int8_t x)", MakeInt(-129)},
           {"uint8_t fx_uint8_id(uint8_t x)", MakeInt(256)},
           {"uint8_t fx_uint8_id(uint8_t x)", MakeInt(-1)},
           {"char fx_char_id(char x)", MakeInt(200)},
           {"short fx_short_id(short x)", MakeInt(40000)},
           {"unsigned short fx_ushort_id(unsigned short x)", MakeInt(65536)},
           {"int fx_int_id(int x)", MakeInt(3000000000)},
           {"int fx_int_id(int x)", MakeUint(3000000000)},
           {"unsigned int fx_uint_id(unsigned int x)", MakeInt(-1)},
           {"unsigned int fx_uint_id(unsigned int x)", MakeUint(1ull << 32)},
           {"int64_t fx_int64_id(int64_t x)", MakeUint(1ull << 63)},
           {"uint64_t fx_uint64_id(uint64_t x)", MakeInt(-1)},
           {"size_t fx_size_id(size_t x)", MakeInt(-5)},
           {"float fx_float_id(float x)", MakeDouble(1e39)},
           {"float fx_float_id(float x)", MakeDouble(-1e39)},
       }) {
    SCOPED_TRACE(c.declaration + " <- " + c.argument.ShortDebugString());
    absl::StatusOr<v1::CallResponse> response =
        Call(c.declaration, {c.argument});
    EXPECT_THAT(response, HasReason("VALUE_OUT_OF_RANGE"));
    EXPECT_THAT(response, HasCode(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(MessageOf(response), AllOf(HasSubstr("parameter 1"),
                                           HasSubstr("'x'")));
  }
  // The message names the value and the type's range.
  absl::StatusOr<v1::CallResponse> response =
      Call("int fx_int_id(int x)", {MakeInt(3000000000)});
  EXPECT_THAT(MessageOf(response),
              AllOf(HasSubstr("3000000000"), HasSubstr("int"),
                    HasSubstr("2147483647")));
}

TEST_F(ErrorsTest, FreedMemoryHandle) {
  absl::StatusOr<client::Memory> memory = session_->Allocate(16);
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_TRUE(session_->Free(memory->handle).ok());
  for (const absl::Status& status :
       {session_->Read(memory->handle, 0, 4).status(),
        session_->Write(memory->handle, 0, "abcd"),
        session_->Free(memory->handle),
        Call("int fx_sum_ints(const int *values, size_t count)",
             {MakePointer(memory->handle), MakeUint(1)})
            .status()}) {
    EXPECT_THAT(status, HasReason("HANDLE_INVALID"));
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr(memory->handle), HasSubstr("freed")));
  }
}

// A handle in the right format that was never issued: same kind and session
// tag as `real`, different random part.
std::string NeverIssued(const std::string& real) {
  std::string fake = real;
  for (size_t i = fake.rfind('_') + 1; i < fake.size(); ++i) {
    fake[i] = fake[i] == '0' ? '1' : '0';
  }
  return fake;
}

TEST_F(ErrorsTest, HandlesThatNeverExisted) {
  absl::StatusOr<client::Memory> memory = session_->Allocate(8);
  ASSERT_TRUE(memory.ok()) << memory.status();
  const std::string fake_memory = NeverIssued(memory->handle);
  absl::StatusOr<std::string> read = session_->Read(fake_memory, 0, 4);
  EXPECT_THAT(read, HasReason("HANDLE_INVALID"));
  EXPECT_THAT(MessageOf(read), AllOf(HasSubstr(fake_memory),
                                     HasSubstr("does not exist")));
  EXPECT_THAT(session_->Free(fake_memory), HasReason("HANDLE_INVALID"));

  client::Function fake_function;
  absl::StatusOr<client::Function> real = Resolve("int fx_add(int a, int b)");
  ASSERT_TRUE(real.ok()) << real.status();
  fake_function.handle = NeverIssued(real->handle);
  EXPECT_THAT(session_->Call(fake_function, {MakeInt(1), MakeInt(2)}),
              HasReason("HANDLE_INVALID"));

  client::Library fake_library{NeverIssued(fixture_.handle), ""};
  EXPECT_THAT(session_->ResolveFunction(fake_library, "int fx_add(int, int)"),
              HasReason("HANDLE_INVALID"));

  // Garbage that is not a handle at all.
  EXPECT_THAT(session_->Read("not-a-handle", 0, 1), HasReason("HANDLE_INVALID"));
}

TEST_F(ErrorsTest, AnotherSessionsHandles) {
  std::unique_ptr<client::Session> other = NewSession();
  ASSERT_NE(other, nullptr);
  absl::StatusOr<client::Memory> memory = other->Allocate(8);
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::StatusOr<client::Library> library = other->LoadLibrary(FixturePath());
  ASSERT_TRUE(library.ok()) << library.status();
  absl::StatusOr<client::Function> function =
      other->ResolveFunction(*library, "int fx_add(int a, int b)");
  ASSERT_TRUE(function.ok()) << function.status();

  absl::StatusOr<std::string> read = session_->Read(memory->handle, 0, 4);
  EXPECT_THAT(read, HasReason("HANDLE_INVALID"));
  EXPECT_THAT(MessageOf(read), AllOf(HasSubstr(memory->handle),
                                     HasSubstr("another session")));
  EXPECT_THAT(session_->Write(memory->handle, 0, "x"),
              HasReason("HANDLE_INVALID"));
  EXPECT_THAT(session_->Free(memory->handle), HasReason("HANDLE_INVALID"));
  EXPECT_THAT(session_->Call(*function, {MakeInt(1), MakeInt(2)}),
              HasReason("HANDLE_INVALID"));
  EXPECT_THAT(session_->ResolveFunction(*library, "int fx_add(int, int)"),
              HasReason("HANDLE_INVALID"));
  EXPECT_THAT(Call("int fx_sum_ints(const int *values, size_t count)",
                   {MakePointer(memory->handle), MakeUint(1)}),
              HasReason("HANDLE_INVALID"));
  // The owner still has them.
  EXPECT_TRUE(other->Read(memory->handle, 0, 8).ok());
}

TEST_F(ErrorsTest, ReadAndWriteOutOfBounds) {
  absl::StatusOr<client::Memory> memory = session_->Allocate(16);
  ASSERT_TRUE(memory.ok()) << memory.status();
  const std::string& handle = memory->handle;
  for (const absl::Status& status : {
           session_->Read(handle, 8, 16).status(),
           session_->Read(handle, 17, 0).status(),
           session_->Read(handle, 16, 1).status(),
           session_->Read(handle, UINT64_MAX, 2).status(),
           session_->Read(handle, 1, UINT64_MAX).status(),
           session_->Write(handle, 10, "12345678"),
           session_->Write(handle, 16, "x"),
           session_->Write(handle, UINT64_MAX - 1, "xyz"),
       }) {
    EXPECT_THAT(status, HasReason("OUT_OF_BOUNDS"));
    EXPECT_THAT(status, HasCode(absl::StatusCode::kOutOfRange));
    EXPECT_THAT(std::string(status.message()), HasSubstr(handle));
  }
  // The edges themselves are fine.
  EXPECT_TRUE(session_->Write(handle, 8, "12345678").ok());
  absl::StatusOr<std::string> tail = session_->Read(handle, 8, 8);
  ASSERT_TRUE(tail.ok()) << tail.status();
  EXPECT_EQ(*tail, "12345678");
}

TEST_F(ErrorsTest, AllocationLargerThanItsInitialBytesAllows) {
  EXPECT_FALSE(session_->Allocate(2, "abcd").ok());
}

TEST_F(ErrorsTest, BadBorrowedAddressDoesNotCrashTheWorker) {
  v1::PointerValue pointer;
  pointer.set_address(8);
  absl::StatusOr<std::string> read = session_->Read(pointer, 4);
  EXPECT_THAT(read, HasReason("BAD_ADDRESS"));
  EXPECT_THAT(session_->Write(pointer, "abcd"), HasReason("BAD_ADDRESS"));
}

// The same for accesses big enough that the daemon copies them itself:
// bounds are checked, and unmapped or read-only memory is an error, not a
// crash of the worker or the daemon.
TEST_F(ErrorsTest, LargeAccessesOutOfBoundsOrToBadAddressesFail) {
  const std::string big(128 << 10, 'x');
  absl::StatusOr<client::Memory> memory = session_->Allocate(big.size());
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_THAT(session_->Read(memory->handle, 1, big.size()),
              HasReason("OUT_OF_BOUNDS"));
  EXPECT_THAT(session_->Write(memory->handle, 1, big),
              HasReason("OUT_OF_BOUNDS"));
  v1::PointerValue unmapped;
  unmapped.set_address(8);
  EXPECT_THAT(session_->Read(unmapped, big.size()), HasReason("BAD_ADDRESS"));
  EXPECT_THAT(session_->Write(unmapped, big), HasReason("BAD_ADDRESS"));
  // A string literal lives in read-only pages of the library.
  absl::StatusOr<v1::CallResponse> greeting =
      Call("const char *fx_greeting(void)", {});
  ASSERT_TRUE(greeting.ok()) << greeting.status();
  v1::PointerValue literal;
  literal.set_address(greeting->result_pointer().address());
  ASSERT_NE(literal.address(), 0u);
  EXPECT_THAT(session_->Write(literal, big), HasReason("BAD_ADDRESS"));
  // The worker is fine, and so is the memory.
  absl::StatusOr<std::string> bytes =
      session_->Read(memory->handle, 0, big.size());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, std::string(big.size(), '\0'));
}

// The C++ client sends transfers over 1 MiB on WriteStream/ReadStream; one
// that runs past the end of owned memory still fails as a whole, writing
// nothing.
TEST_F(ErrorsTest, BigWritePastTheEndWritesNothing) {
  const uint64_t size = (5 << 20) / 2;
  absl::StatusOr<client::Memory> memory = session_->Allocate(size);
  ASSERT_TRUE(memory.ok()) << memory.status();
  // The WriteStream's whole range is checked before its first byte: the
  // error is the bounds check's, as for one Write.
  const absl::Status written =
      session_->Write(memory->handle, 0, std::string(3 << 20, 'y'));
  EXPECT_THAT(written, HasReason("OUT_OF_BOUNDS"));
  EXPECT_THAT(std::string(written.message()),
              HasSubstr("write of 3145728 bytes at offset 0 exceeds"));
  const absl::StatusOr<std::string> read =
      session_->Read(memory->handle, 0, 3 << 20);
  EXPECT_THAT(read, HasReason("OUT_OF_BOUNDS"));
  EXPECT_THAT(std::string(read.status().message()),
              HasSubstr("read of 3145728 bytes at offset 0 exceeds"));
  absl::StatusOr<std::string> bytes = session_->Read(memory->handle, 0, size);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, std::string(size, '\0'));
  // Within bounds, every piece lands where it belongs.
  std::string data(size - 7, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i / 4093);
  ASSERT_TRUE(session_->Write(memory->handle, 7, data).ok());
  bytes = session_->Read(memory->handle, 7, data.size());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(*bytes == data);
}

TEST_F(ErrorsTest, UnknownAndDeletedSessions) {
  v1::CallRequest request;
  request.set_session("00000000000000000000000000000000");
  request.set_function("fn_00000000_00000000000000000000000000000000");
  v1::CallResponse response;
  grpc::ClientContext context;
  absl::Status status =
      client::StatusFromGrpc(client_->stub().Call(&context, request, &response));
  EXPECT_THAT(status, HasReason("SESSION_NOT_FOUND"));
  EXPECT_THAT(status, HasCode(absl::StatusCode::kNotFound));

  std::unique_ptr<client::Session> doomed = NewSession();
  ASSERT_NE(doomed, nullptr);
  ASSERT_TRUE(doomed->Delete().ok());
  absl::StatusOr<client::Library> library = doomed->LoadLibrary(FixturePath());
  EXPECT_THAT(library, HasReason("SESSION_NOT_FOUND"));
  EXPECT_THAT(MessageOf(library), HasSubstr(doomed->id()));
  EXPECT_THAT(doomed->Delete(), HasReason("SESSION_NOT_FOUND"));
}

TEST_F(ErrorsTest, MissingRequestFields) {
  v1::LoadLibraryRequest request;
  request.set_session(session_->id());
  v1::LoadLibraryResponse response;
  grpc::ClientContext context;
  absl::Status status = client::StatusFromGrpc(
      client_->stub().LoadLibrary(&context, request, &response));
  EXPECT_THAT(status, HasCode(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client::ErrorReason(status), Not(""));
}

}  // namespace
}  // namespace ffid::testing
