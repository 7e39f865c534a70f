// The type system end to end: declarations remembered by the session, their
// layout against the compiler's, every type kind by value through the real
// daemon and worker, typed memory, variables, ownership, and the specific
// error for each kind of bad input. Fixture: tests/fixtures/types_fixture.c.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
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
using client::MakeString;
using ::testing::HasSubstr;

std::string FixtureHeader() {
  std::ifstream in(FFID_TYPES_FIXTURE_HEADER);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

v1::Value Record(std::vector<std::pair<std::string, v1::Value>> fields) {
  v1::Value value;
  for (auto& [name, field] : fields) {
    (*value.mutable_record_value()->mutable_fields())[name] = field;
  }
  return value;
}

v1::Value Enum(const std::string& name) {
  v1::Value value;
  value.set_enum_value(name);
  return value;
}

v1::TypeDescriptor Named(const std::string& name) {
  v1::TypeDescriptor type;
  type.set_named(name);
  return type;
}

const v1::Value& Field(const v1::Value& value, const std::string& name) {
  static const v1::Value* const kMissing = new v1::Value();
  auto it = value.record_value().fields().find(name);
  return it == value.record_value().fields().end() ? *kMissing : it->second;
}

class TypesTest : public FfidTest {
 protected:
  void SetUp() override {
    FfidTest::SetUp();
    absl::StatusOr<v1::ParseDeclarationsResponse> parsed =
        session_->ParseDeclarations(FixtureHeader());
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    declarations_ = *parsed;
  }

  v1::Ffi::Stub& stub() { return client_->stub(); }

  // Resolves a function the session declared, by its symbol alone.
  absl::StatusOr<std::string> ResolveDeclared(const std::string& symbol) {
    v1::ResolveFunctionRequest request;
    request.set_session(session_->id());
    request.set_library(fixture_.handle);
    request.set_symbol(symbol);
    v1::ResolveFunctionResponse response;
    grpc::ClientContext context;
    absl::Status status = client::StatusFromGrpc(
        stub().ResolveFunction(&context, request, &response));
    if (!status.ok()) return status;
    return response.function();
  }

  absl::StatusOr<v1::CallResponse> CallDeclared(
      const std::string& symbol, std::vector<v1::Value> arguments,
      v1::ResultOwnership ownership = v1::RESULT_OWNERSHIP_UNSPECIFIED,
      const std::string& destructor = "") {
    absl::StatusOr<std::string> function = ResolveDeclared(symbol);
    if (!function.ok()) return function.status();
    v1::CallRequest request;
    request.set_session(session_->id());
    request.set_function(*function);
    for (v1::Value& argument : arguments) {
      *request.add_arguments() = std::move(argument);
    }
    request.set_result_ownership(ownership);
    request.set_result_destructor(destructor);
    v1::CallResponse response;
    grpc::ClientContext context;
    absl::Status status =
        client::StatusFromGrpc(stub().Call(&context, request, &response));
    if (!status.ok()) return status;
    return response;
  }

  v1::Value CallValue(const std::string& symbol,
                      std::vector<v1::Value> arguments) {
    absl::StatusOr<v1::CallResponse> response =
        CallDeclared(symbol, std::move(arguments));
    EXPECT_TRUE(response.ok()) << symbol << ": " << response.status();
    return response.ok() ? response->result() : v1::Value();
  }

  absl::StatusOr<v1::AllocateResponse> Allocate(
      const std::string& type, uint64_t count = 0,
      const v1::Value* initial = nullptr) {
    v1::AllocateRequest request;
    request.set_session(session_->id());
    *request.mutable_type() = Named(type);
    request.set_size(count);
    if (initial != nullptr) *request.mutable_initial_value() = *initial;
    v1::AllocateResponse response;
    grpc::ClientContext context;
    absl::Status status =
        client::StatusFromGrpc(stub().Allocate(&context, request, &response));
    if (!status.ok()) return status;
    return response;
  }

  absl::StatusOr<v1::Value> ReadTyped(const std::string& memory,
                                      uint64_t offset,
                                      const std::string& type) {
    v1::ReadRequest request;
    request.set_session(session_->id());
    request.mutable_pointer()->set_handle(memory);
    request.mutable_pointer()->set_offset(offset);
    *request.mutable_type() = Named(type);
    v1::ReadResponse response;
    grpc::ClientContext context;
    absl::Status status =
        client::StatusFromGrpc(stub().Read(&context, request, &response));
    if (!status.ok()) return status;
    return response.value();
  }

  absl::Status WriteTyped(const std::string& memory, uint64_t offset,
                          const std::string& type, const v1::Value& value) {
    v1::WriteRequest request;
    request.set_session(session_->id());
    request.mutable_pointer()->set_handle(memory);
    request.mutable_pointer()->set_offset(offset);
    *request.mutable_type() = Named(type);
    *request.mutable_value() = value;
    v1::WriteResponse response;
    grpc::ClientContext context;
    return client::StatusFromGrpc(stub().Write(&context, request, &response));
  }

  absl::StatusOr<v1::ResolveVariableResponse> Variable(
      const std::string& symbol) {
    v1::ResolveVariableRequest request;
    request.set_session(session_->id());
    request.set_library(fixture_.handle);
    request.set_symbol(symbol);
    v1::ResolveVariableResponse response;
    grpc::ClientContext context;
    absl::Status status = client::StatusFromGrpc(
        stub().ResolveVariable(&context, request, &response));
    if (!status.ok()) return status;
    return response;
  }

  int64_t Layout(const std::string& type, const std::string& member) {
    v1::Value value = CallValue("fxt_layout",
                                {MakeString(type), MakeString(member)});
    return value.int_value();
  }

  v1::ParseDeclarationsResponse declarations_;
};

TEST_F(TypesTest, ReportedLayoutEqualsTheCompilers) {
  int records = 0;
  int bitfields = 0;
  for (const v1::TypeDeclaration& declaration : declarations_.types()) {
    if (!declaration.type().has_record() ||
        absl::StartsWith(declaration.name(), "fxt_")) {
      continue;  // typedef names repeat their struct
    }
    const v1::RecordType& record = declaration.type().record();
    SCOPED_TRACE(declaration.name());
    ++records;
    EXPECT_EQ(static_cast<int64_t>(record.size()),
              Layout(declaration.name(), ""));
    EXPECT_EQ(static_cast<int64_t>(record.computed_alignment()),
              Layout(declaration.name(), "#align"));
    for (const v1::Field& field : record.fields()) {
      if (field.name().empty()) continue;
      if (field.bit_width() != 0) {
        // offsetof cannot say for a bitfield: the fixture finds its first
        // bit (-2 when it does not know the member).
        const int64_t bit = Layout(declaration.name(), "#bit:" + field.name());
        if (bit == -2) continue;
        EXPECT_EQ(static_cast<int64_t>(field.offset() * 8 + field.bit_offset()),
                  bit)
            << "bitfield " << field.name();
        ++bitfields;
        continue;
      }
      EXPECT_EQ(static_cast<int64_t>(field.offset()),
                Layout(declaration.name(), field.name()))
          << "member " << field.name();
    }
  }
  EXPECT_EQ(records, 19);
  EXPECT_EQ(bitfields, 10);
  EXPECT_EQ(declarations_.variables_size(), 3);
}

TEST_F(TypesTest, StructsByValueUseSessionTypesByName) {
  v1::Value sum = CallValue(
      "fxt_point_add", {Record({{"x", MakeInt(1)}, {"y", MakeInt(2)}}),
                        Record({{"x", MakeInt(10)}, {"y", MakeInt(-20)}})});
  EXPECT_THAT(Field(sum, "x"), IsInteger(11));
  EXPECT_THAT(Field(sum, "y"), IsInteger(-18));
  v1::Value scaled = CallValue(
      "fxt_point_scale",
      {Record({{"x", MakeInt(3)}, {"y", MakeInt(4)}}), MakeInt(5)});
  EXPECT_THAT(Field(scaled, "y"), IsInteger(20));

  v1::Value mixed = CallValue("fxt_mixed_make", {MakeInt(7), MakeDouble(0.5)});
  EXPECT_THAT(Field(mixed, "c"), IsInteger(7));
  EXPECT_EQ(Field(Field(mixed, "p"), "y").int_value(), 5);
  EXPECT_EQ(Field(mixed, "s").array_value().elements_size(), 3);
  EXPECT_DOUBLE_EQ(CallValue("fxt_mixed_sum", {mixed}).double_value(),
                   7 + 0.5 + 1 + 2 + 3 + 4 + 5);
}

TEST_F(TypesTest, UnionsPackedAlignedAndNestedByValue) {
  v1::Value number;
  number.mutable_record_value()->mutable_fields()->insert(
      {"d", MakeDouble(2.25)});
  EXPECT_DOUBLE_EQ(
      CallValue("fxt_number_as_double", {number, MakeInt(2)}).double_value(),
      2.25);
  v1::Value from_float =
      CallValue("fxt_number_from_float", {MakeDouble(1.5)});
  EXPECT_EQ(Field(from_float, "f").double_value(), 1.5);

  v1::Value packed =
      CallValue("fxt_packed_make", {MakeInt(1), MakeInt(100000), MakeInt(-7)});
  EXPECT_THAT(Field(packed, "i"), IsInteger(100000));
  EXPECT_THAT(CallValue("fxt_packed_sum", {packed}), IsInteger(1 + 100000 - 7));
  EXPECT_THAT(CallValue("fxt_aligned_twice", {Record({{"i", MakeInt(21)}})}),
              IsInteger(42));

  v1::Value nested = Record({{"inner", packed},
                             {"f", MakeDouble(0.25)},
                             {"n", number}});
  EXPECT_DOUBLE_EQ(CallValue("fxt_nested_sum", {nested}).double_value(),
                   1 + 100000 - 7 + 0.25 + 2.25);
}

TEST_F(TypesTest, BitfieldsByValue) {
  v1::Value bits = CallValue(
      "fxt_bits_bump", {Record({{"a", MakeInt(7)},
                                {"b", MakeInt(-16)},
                                {"c", MakeInt(0xfffffe)},
                                {"d", MakeInt(-(int64_t{1} << 37))}})});
  EXPECT_THAT(Field(bits, "a"), IsInteger(0));
  EXPECT_THAT(Field(bits, "b"), IsInteger(-16));  // -(-16) wraps in 5 bits
  EXPECT_THAT(Field(bits, "c"), IsInteger(0xffffff));
  EXPECT_THAT(Field(bits, "d"), IsInteger(-(int64_t{1} << 38)));
}

TEST_F(TypesTest, MemberLevelAlignedAndPackedByValueAndInMemory) {
  // int x __attribute__((aligned(8))) sits at 8, _Alignas(16) char t at 16.
  EXPECT_EQ(Layout("struct fxt_member_aligned", "x"), 8);
  EXPECT_EQ(Layout("struct fxt_member_aligned", "t"), 16);
  v1::Value made = CallValue("fxt_member_aligned_make",
                             {MakeInt(1), MakeInt(20), MakeInt(300),
                              MakeInt(-4)});
  EXPECT_THAT(Field(made, "x"), IsInteger(20));
  EXPECT_THAT(Field(made, "s"), IsInteger(300));
  EXPECT_THAT(Field(made, "t"), IsInteger(-4));
  EXPECT_THAT(CallValue("fxt_member_aligned_sum", {made}),
              IsInteger(1 + 20 + 300 - 4));
  // In a packed struct, aligned(4) still moves x to 4.
  EXPECT_THAT(CallValue("fxt_packed_aligned_sum",
                        {Record({{"c", MakeInt(1)},
                                 {"x", MakeInt(20)},
                                 {"s", MakeInt(300)},
                                 {"y", MakeInt(4000)}})}),
              IsInteger(4321));
  // A packed member is misaligned: the struct travels in memory.
  EXPECT_THAT(CallValue("fxt_member_packed_sum",
                        {Record({{"c", MakeInt(1)},
                                 {"x", MakeInt(-20)},
                                 {"s", MakeInt(300)}})}),
              IsInteger(281));
  v1::Value bits = CallValue(
      "fxt_aligned_bits_bump",
      {Record({{"c", MakeInt(1)}, {"a", MakeInt(2)}, {"b", MakeInt(-3)},
               {"d", MakeInt(2)}, {"e", MakeInt(0)}, {"f", MakeInt(0)},
               {"g", MakeInt(1)}})});
  EXPECT_THAT(Field(bits, "c"), IsInteger(2));
  EXPECT_THAT(Field(bits, "a"), IsInteger(3));
  EXPECT_THAT(Field(bits, "b"), IsInteger(-2));
  EXPECT_THAT(Field(bits, "d"), IsInteger(3));
  EXPECT_THAT(Field(bits, "e"), IsInteger(1));
  EXPECT_THAT(Field(bits, "f"), IsInteger(-1));  // a signed 1-bit char
  EXPECT_THAT(Field(bits, "g"), IsInteger(-2));  // 1 + 1 wraps in 2 bits
  // In memory, at the offsets the compiler uses.
  absl::StatusOr<v1::AllocateResponse> memory =
      Allocate("struct fxt_member_aligned", 0, &made);
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::StatusOr<v1::Value> x = ReadTyped(memory->memory(), 8, "int");
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_THAT(*x, IsInteger(20));
}

TEST_F(TypesTest, EnumsByNameOrNumberAndReturnedByName) {
  EXPECT_EQ(CallValue("fxt_color_next", {Enum("FXT_RED")}).enum_value(),
            "FXT_GREEN");
  EXPECT_EQ(CallValue("fxt_color_next", {MakeInt(2)}).enum_value(),
            "FXT_BLUE");
  // A value that is no constant comes back as a number.
  v1::Value other = CallValue("fxt_color_next", {MakeInt(4)});
  EXPECT_EQ(other.enum_value(), "FXT_RED");
}

TEST_F(TypesTest, FunctionPointersTakeNull) {
  EXPECT_THAT(CallValue("fxt_apply", {MakeNull(), MakeInt(5)}), IsInteger(-5));
  EXPECT_THAT(CallValue("fxt_holder_check",
                        {Record({{"f", MakeNull()},
                                 {"name", MakeString("abc")},
                                 {"color", Enum("FXT_BLUE")}})}),
              IsInteger(34));
}

TEST_F(TypesTest, LongDoubleResultsKeepEveryBit) {
  v1::Value half = CallValue("fxt_long_double_half", {MakeDouble(5.0)});
  ASSERT_TRUE(half.has_long_double()) << half.DebugString();
  EXPECT_EQ(half.long_double().approximate(), 2.5);
  EXPECT_EQ(half.long_double().decimal(), "2.5");
  EXPECT_EQ(half.long_double().bytes().size(), sizeof(long double));

  // 1/3 needs the 64-bit mantissa: the double nearest is a different number.
  v1::Value third =
      CallValue("fxt_long_double_third", {client::MakeLongDouble(1.0L)});
  ASSERT_TRUE(third.has_long_double()) << third.DebugString();
  EXPECT_EQ(client::LongDoubleOf(third), 1.0L / 3.0L);
  EXPECT_NE(static_cast<long double>(third.long_double().approximate()),
            1.0L / 3.0L);
  EXPECT_EQ(third.long_double().decimal(), "0.33333333333333333334");
  EXPECT_EQ(std::strtold(third.long_double().decimal().c_str(), nullptr),
            1.0L / 3.0L);
  // A result passed back as it came loses nothing; a decimal is read at
  // full precision.
  v1::Value ninth = CallValue("fxt_long_double_third", {third});
  EXPECT_EQ(client::LongDoubleOf(ninth), (1.0L / 3.0L) / 3.0L);
  v1::Value decimal;
  decimal.mutable_long_double()->set_decimal("0.1");
  EXPECT_EQ(client::LongDoubleOf(CallValue("fxt_long_double_third", {decimal})),
            0.1L / 3.0L);
  decimal.mutable_long_double()->set_decimal("zero");
  EXPECT_THAT(CallDeclared("fxt_long_double_third", {decimal}),
              HasReason("TYPE_MISMATCH"));

  // long double _Complex: two long double parts.
  v1::Value z;
  z.mutable_array_value()->add_elements()->set_double_value(1.5);
  *z.mutable_array_value()->add_elements() = client::MakeLongDouble(1.0L / 3);
  v1::Value scaled =
      CallValue("fxt_complex_scale", {z, client::MakeLongDouble(3.0L)});
  ASSERT_EQ(scaled.array_value().elements_size(), 2) << scaled.DebugString();
  EXPECT_EQ(client::LongDoubleOf(scaled.array_value().elements(0)), 4.5L);
  EXPECT_EQ(client::LongDoubleOf(scaled.array_value().elements(1)),
            (1.0L / 3) * 3.0L);
}

TEST_F(TypesTest, UnionResultsHaveEveryMemberAndTheirBytes) {
  v1::Value number = CallValue("fxt_number_from_float", {MakeDouble(1.5)});
  ASSERT_TRUE(number.has_record_value()) << number.DebugString();
  EXPECT_EQ(Field(number, "f").double_value(), 1.5);
  EXPECT_THAT(Field(number, "i"), IsInteger(0x3fc00000));
  EXPECT_TRUE(Field(number, "d").has_double_value());
  ASSERT_EQ(number.record_value().union_bytes().size(), 8u);
  float f;
  std::memcpy(&f, number.record_value().union_bytes().data(), sizeof(f));
  EXPECT_EQ(f, 1.5f);
  // Passed back as it came: its bytes.
  EXPECT_EQ(CallValue("fxt_number_as_double", {number, MakeInt(1)})
                .double_value(),
            1.5);

  // A pointer member of a union is not followed: 65 is no string.
  v1::Value tagged = CallValue("fxt_tagged_from_int", {MakeInt(65)});
  EXPECT_THAT(Field(tagged, "i"), IsInteger(65));
  ASSERT_TRUE(Field(tagged, "s").has_pointer_value()) << tagged.DebugString();
  EXPECT_EQ(Field(tagged, "s").pointer_value().address(), 65u);
  EXPECT_EQ(Field(tagged, "bytes").bytes_value(),
            std::string("A\0\0\0\0\0\0\0", 8));

  // An anonymous union inside a struct: its members read as the struct's.
  v1::Value with =
      CallValue("fxt_with_union_make", {MakeInt(2), MakeDouble(0.5)});
  EXPECT_THAT(Field(with, "kind"), IsInteger(2));
  EXPECT_EQ(Field(with, "f").double_value(), 0.5);
  EXPECT_THAT(Field(with, "i"), IsInteger(0x3f000000));

  // Typed reads of a union in memory give the same.
  v1::Value initial = Record({{"d", MakeDouble(2.25)}});
  absl::StatusOr<v1::AllocateResponse> memory =
      Allocate("union fxt_number", 0, &initial);
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::StatusOr<v1::Value> read =
      ReadTyped(memory->memory(), 0, "union fxt_number");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Field(*read, "d").double_value(), 2.25);
  EXPECT_EQ(read->record_value().union_bytes().size(), 8u);
  EXPECT_EQ(read->record_value().fields_size(), 3);
}

TEST_F(TypesTest, UnnamedBitfieldsArePaddingAsGccLaysThemOut) {
  // Layout (offsets of c, d, f; size) is compared with the compiler's in
  // ReportedLayoutEqualsTheCompilers; here values cross by value.
  v1::Value holes = CallValue(
      "fxt_holes_make", {MakeInt('a'), MakeInt('b'), MakeInt(9), MakeInt(-5)});
  EXPECT_THAT(Field(holes, "c"), IsInteger('a'));
  EXPECT_THAT(Field(holes, "d"), IsInteger('b'));
  EXPECT_THAT(Field(holes, "e"), IsInteger(9));
  EXPECT_THAT(Field(holes, "f"), IsInteger(-5));
  EXPECT_EQ(holes.record_value().fields_size(), 4);
  EXPECT_THAT(CallValue("fxt_holes_sum", {holes}),
              IsInteger('a' + 'b' + 9 - 5));
  const v1::TypeDeclaration* declared = nullptr;
  for (const v1::TypeDeclaration& type : declarations_.types()) {
    if (type.name() == "struct fxt_holes") declared = &type;
  }
  ASSERT_NE(declared, nullptr);
  const v1::RecordType& record = declared->type().record();
  ASSERT_EQ(record.fields_size(), 7);
  EXPECT_EQ(record.fields(1).bit_width(), 3u);
  EXPECT_TRUE(record.fields(2).zero_width_bitfield());
  EXPECT_EQ(record.fields(3).offset(), 4u);  // after `int : 0`
  EXPECT_EQ(record.fields(6).offset(), 8u);  // after `long long : 0`
}

TEST_F(TypesTest, MisalignedNestedStructInAPackedStruct) {
  v1::Value made = CallValue("fxt_misaligned_make",
                             {MakeInt(1), MakeInt(2), MakeInt(3), MakeInt(4)});
  EXPECT_THAT(Field(Field(made, "p"), "x"), IsInteger(2));
  EXPECT_THAT(Field(Field(made, "p"), "y"), IsInteger(3));
  EXPECT_THAT(Field(made, "s"), IsInteger(4));
  EXPECT_THAT(CallValue("fxt_misaligned_sum", {made}),
              IsInteger(1 + 20 + 300 + 4000));
  EXPECT_EQ(Layout("struct fxt_misaligned", "p"), 1);
  // In memory too: the inner struct sits at offset 1.
  absl::StatusOr<v1::AllocateResponse> memory =
      Allocate("struct fxt_misaligned", 0, &made);
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::StatusOr<v1::Value> read =
      ReadTyped(memory->memory(), 0, "struct fxt_misaligned");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(Field(Field(*read, "p"), "y"), IsInteger(3));
  // But a typed read of the inner struct where it lies is misaligned.
  EXPECT_THAT(ReadTyped(memory->memory(), 1, "struct fxt_point"),
              HasReason("MISALIGNED_ACCESS"));
}

TEST_F(TypesTest, FlexibleArrayMembersInMemoryNotByValue) {
  // By value: refused when the function is resolved, naming the member.
  v1::ResolveFunctionRequest request;
  request.set_session(session_->id());
  request.set_library(fixture_.handle);
  request.set_declaration("double fxt_flex_sum(struct fxt_flex f)");
  v1::ResolveFunctionResponse response;
  {
    grpc::ClientContext context;
    absl::Status status = client::StatusFromGrpc(
        stub().ResolveFunction(&context, request, &response));
    EXPECT_THAT(status, HasReason("UNSUPPORTED"));
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("flexible array member 'data'"));
  }

  // Allocated with room for 4 elements, initialized, passed by pointer.
  v1::Value initial;
  (*initial.mutable_record_value()->mutable_fields())["n"] = MakeInt(4);
  v1::Value* data =
      &(*initial.mutable_record_value()->mutable_fields())["data"];
  for (double d : {0.5, 1.0, 1.5, 2.0}) {
    data->mutable_array_value()->add_elements()->set_double_value(d);
  }
  client::TypedAllocation with_four;
  with_four.initial_value = initial;
  with_four.flexible_length = 4;
  absl::StatusOr<client::Memory> flex = session_->AllocateValue(
      client::NamedType("struct fxt_flex"), with_four);
  ASSERT_TRUE(flex.ok()) << flex.status();
  EXPECT_EQ(flex->size, 8u + 4 * sizeof(double));
  v1::Value pointer;
  pointer.mutable_pointer_value()->set_handle(flex->handle);
  EXPECT_EQ(CallValue("fxt_flex_sum", {pointer}).double_value(), 5.0);

  v1::PointerValue at;
  at.set_handle(flex->handle);
  absl::StatusOr<v1::Value> read = session_->ReadValue(
      at, client::NamedType("struct fxt_flex"), /*flexible_length=*/4);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Field(*read, "data").array_value().elements(3).double_value(), 2.0);
  // Without flexible_length only the fixed part is read.
  read = session_->ReadValue(at, client::NamedType("struct fxt_flex"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(Field(*read, "n"), IsInteger(4));
  EXPECT_EQ(read->record_value().fields().count("data"), 0u);
  // Written with a length, bounds-checked against the allocation.
  data->mutable_array_value()->mutable_elements(0)->set_double_value(10);
  ASSERT_TRUE(session_
                  ->WriteValue(at, client::NamedType("struct fxt_flex"),
                               initial, 4)
                  .ok());
  EXPECT_EQ(CallValue("fxt_flex_sum", {pointer}).double_value(), 14.5);
  EXPECT_THAT(session_->ReadValue(at, client::NamedType("struct fxt_flex"), 5),
              HasReason("OUT_OF_BOUNDS"));

  // One the library made: read through the borrowed pointer it returned.
  v1::Value made = CallValue("fxt_flex_new", {MakeInt(3)});
  ASSERT_TRUE(made.has_pointer_value());
  read = session_->ReadValue(made.pointer_value(),
                             client::NamedType("struct fxt_flex"), 3);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Field(*read, "data").array_value().elements(2).double_value(), 1.0);
  ASSERT_TRUE(session_->Adopt(made.pointer_value(), "free").ok());

  // Errors: elements without a length; a length for a type without one.
  client::TypedAllocation no_length;
  no_length.initial_value = initial;
  EXPECT_THAT(session_->AllocateValue(client::NamedType("struct fxt_flex"),
                                      no_length),
              HasReason("TYPE_MISMATCH"));
  client::TypedAllocation a_length;
  a_length.flexible_length = 2;
  EXPECT_THAT(session_->AllocateValue(client::NamedType("struct fxt_point"),
                                      a_length),
              HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(session_->ParseDeclarations("struct bad { double d[]; int n; };"),
              HasReason("TYPE_MISMATCH"));
}

TEST_F(TypesTest, AStructEndingInAFlexibleArrayNestedLastInAnother) {
  // GCC's extension: struct fxt_flex_outer { char tag; struct fxt_flex
  // inner; }: the inner flexible array ends the outer struct too.
  EXPECT_EQ(Layout("struct fxt_flex_outer", "inner"), 8);
  const int64_t data_offset = Layout("struct fxt_flex_outer", "inner.data");
  EXPECT_EQ(data_offset, 16);
  v1::Value initial = Record(
      {{"tag", MakeInt(100)},
       {"inner", Record({{"n", MakeInt(3)}})}});
  v1::Value* data = &(*(*initial.mutable_record_value()
                             ->mutable_fields())["inner"]
                           .mutable_record_value()
                           ->mutable_fields())["data"];
  for (double d : {0.5, 1.0, 1.5}) {
    data->mutable_array_value()->add_elements()->set_double_value(d);
  }
  client::TypedAllocation with_three;
  with_three.initial_value = initial;
  with_three.flexible_length = 3;
  absl::StatusOr<client::Memory> outer = session_->AllocateValue(
      client::NamedType("struct fxt_flex_outer"), with_three);
  ASSERT_TRUE(outer.ok()) << outer.status();
  EXPECT_EQ(outer->size, static_cast<uint64_t>(data_offset) +
                             3 * sizeof(double));
  v1::Value pointer;
  pointer.mutable_pointer_value()->set_handle(outer->handle);
  EXPECT_EQ(CallValue("fxt_flex_outer_sum", {pointer}).double_value(),
            100 + 3.0);
  // The third element is where the compiler puts it.
  absl::StatusOr<v1::Value> third =
      ReadTyped(outer->handle, data_offset + 2 * sizeof(double), "double");
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->double_value(), 1.5);
  v1::PointerValue at;
  at.set_handle(outer->handle);
  data->mutable_array_value()->mutable_elements(1)->set_double_value(-1);
  ASSERT_TRUE(session_
                  ->WriteValue(at, client::NamedType("struct fxt_flex_outer"),
                               initial, 3)
                  .ok());
  absl::StatusOr<v1::Value> read = session_->ReadValue(
      at, client::NamedType("struct fxt_flex_outer"), 3);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Field(Field(*read, "inner"), "data")
                .array_value()
                .elements(1)
                .double_value(),
            -1.0);
  EXPECT_EQ(CallValue("fxt_flex_outer_sum", {pointer}).double_value(), 101.0);
  // Without a length: the fixed members only.
  read = session_->ReadValue(at, client::NamedType("struct fxt_flex_outer"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(Field(Field(*read, "inner"), "n"), IsInteger(3));
  EXPECT_EQ(Field(*read, "inner").record_value().fields().count("data"), 0u);

  // By value, in the middle of a struct, in a union or an array: refused.
  v1::ResolveFunctionRequest request;
  request.set_session(session_->id());
  request.set_library(fixture_.handle);
  request.set_declaration("double fxt_flex_outer_sum(struct fxt_flex_outer o)");
  v1::ResolveFunctionResponse response;
  {
    grpc::ClientContext context;
    absl::Status status = client::StatusFromGrpc(
        stub().ResolveFunction(&context, request, &response));
    EXPECT_THAT(status, HasReason("UNSUPPORTED"));
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("flexible array member 'data'"));
  }
  absl::Status middle = session_->ParseDeclarations(
      "struct bad_middle { struct fxt_flex f; int after; };").status();
  EXPECT_THAT(middle, HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(std::string(middle.message()),
              HasSubstr("can only be the last member of a struct"));
  EXPECT_THAT(session_->ParseDeclarations(
                  "union bad_union { struct fxt_flex f; int i; };"),
              HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(session_->ParseDeclarations(
                  "struct bad_array { int n; struct fxt_flex_outer a[2]; };"),
              HasReason("TYPE_MISMATCH"));
}

TEST_F(TypesTest, ClientWrappersForTypedMemoryVariablesAndOwnership) {
  absl::StatusOr<client::Variable> counter =
      session_->ResolveVariable(fixture_, "fxt_counter");
  ASSERT_TRUE(counter.ok()) << counter.status();
  EXPECT_TRUE(counter->type.has_scalar());
  ASSERT_TRUE(session_
                  ->WriteValue(counter->pointer(), client::NamedType("int"),
                               MakeInt(11))
                  .ok());
  EXPECT_THAT(CallValue("fxt_counter_get", {}), IsInteger(11));
  absl::StatusOr<client::Variable> origin =
      session_->ResolveVariable(fixture_, "extern struct fxt_point fxt_origin;");
  ASSERT_TRUE(origin.ok()) << origin.status();
  absl::StatusOr<v1::Value> value =
      session_->ReadValue(origin->pointer(), origin->type);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_THAT(Field(*value, "x"), IsInteger(3));
  absl::StatusOr<client::Variable> typed = session_->ResolveVariable(
      fixture_, "fxt_released", client::ScalarType(v1::SCALAR_KIND_INT));
  ASSERT_TRUE(typed.ok()) << typed.status();

  client::TypedAllocation three;
  three.count = 3;
  absl::StatusOr<client::Memory> points = session_->AllocateValue(
      client::NamedType("struct fxt_point"), three);
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_EQ(points->size, 24u);

  absl::StatusOr<client::Function> strdup_function =
      session_->ResolveFunction(fixture_, "char *fxt_strdup(const char *)");
  ASSERT_TRUE(strdup_function.ok()) << strdup_function.status();
  client::CallOptions adopt;
  adopt.result_ownership = v1::RESULT_OWNERSHIP_ADOPT;
  absl::StatusOr<v1::CallResponse> adopted =
      session_->Call(*strdup_function, {MakeString("mine")}, adopt);
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_TRUE(session_->Free(adopted->result_pointer().handle()).ok());
  client::CallOptions release;
  release.result_ownership = v1::RESULT_OWNERSHIP_RELEASE;
  absl::StatusOr<v1::CallResponse> released =
      session_->Call(*strdup_function, {MakeString("gone")}, release);
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->result().string_value(), "gone");
  EXPECT_FALSE(released->has_result_pointer());

  absl::StatusOr<client::Function> object_new =
      session_->ResolveFunction(fixture_, "void *fxt_object_new(int)");
  ASSERT_TRUE(object_new.ok());
  absl::StatusOr<v1::CallResponse> object =
      session_->Call(*object_new, {MakeInt(5)});
  ASSERT_TRUE(object.ok());
  absl::StatusOr<client::Memory> owned =
      session_->Adopt(object->result().pointer_value(), "fxt_object_release",
                      &fixture_, sizeof(int));
  ASSERT_TRUE(owned.ok()) << owned.status();
  ASSERT_TRUE(session_->Free(owned->handle).ok());
  EXPECT_THAT(*session_->ReadValue(typed->pointer(), typed->type),
              IsInteger(1));
}

TEST_F(TypesTest, AllocateByTypeAndTypedReadWrite) {
  v1::Value origin = Record({{"x", MakeInt(5)}, {"y", MakeInt(6)}});
  absl::StatusOr<v1::AllocateResponse> point =
      Allocate("struct fxt_point", 0, &origin);
  ASSERT_TRUE(point.ok()) << point.status();
  EXPECT_EQ(point->size(), 8u);
  absl::StatusOr<v1::Value> read =
      ReadTyped(point->memory(), 0, "fxt_point_t");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(Field(*read, "y"), IsInteger(6));
  ASSERT_TRUE(WriteTyped(point->memory(), 4, "int", MakeInt(-1)).ok());
  read = ReadTyped(point->memory(), 0, "struct fxt_point");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(Field(*read, "y"), IsInteger(-1));
  EXPECT_THAT(Field(*read, "x"), IsInteger(5));
  // As in a C initializer, the members a record value leaves out are 0.
  ASSERT_TRUE(WriteTyped(point->memory(), 0, "struct fxt_point",
                         Record({{"x", MakeInt(9)}}))
                  .ok());
  read = ReadTyped(point->memory(), 0, "struct fxt_point");
  EXPECT_THAT(Field(*read, "x"), IsInteger(9));
  EXPECT_THAT(Field(*read, "y"), IsInteger(0));

  absl::StatusOr<v1::AllocateResponse> ints = Allocate("int[16]");
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_EQ(ints->size(), 64u);
  ASSERT_TRUE(WriteTyped(ints->memory(), 60, "int", MakeInt(77)).ok());
  absl::StatusOr<v1::Value> all = ReadTyped(ints->memory(), 0, "int[16]");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(all->array_value().elements(15), IsInteger(77));

  absl::StatusOr<v1::AllocateResponse> bits = Allocate("struct fxt_bits", 3);
  ASSERT_TRUE(bits.ok()) << bits.status();
  EXPECT_EQ(bits->size(), 3 * 16u);
}

TEST_F(TypesTest, ExternVariablesAreReadAndWrittenThroughAHandle) {
  absl::StatusOr<v1::ResolveVariableResponse> counter = Variable("fxt_counter");
  ASSERT_TRUE(counter.ok()) << counter.status();
  absl::StatusOr<v1::Value> value = ReadTyped(counter->memory(), 0, "int");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_THAT(*value, IsInteger(7));
  ASSERT_TRUE(WriteTyped(counter->memory(), 0, "int", MakeInt(42)).ok());
  EXPECT_THAT(CallValue("fxt_counter_get", {}), IsInteger(42));

  absl::StatusOr<v1::ResolveVariableResponse> origin = Variable("fxt_origin");
  ASSERT_TRUE(origin.ok()) << origin.status();
  value = ReadTyped(origin->memory(), 0, "struct fxt_point");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_THAT(Field(*value, "y"), IsInteger(-4));
  // The handle knows the variable's size.
  EXPECT_THAT(ReadTyped(origin->memory(), 4, "struct fxt_point"),
              HasReason("OUT_OF_BOUNDS"));
  // And it is borrowed: not ffid's to free.
  EXPECT_THAT(session_->Free(origin->memory()), HasReason("HANDLE_INVALID"));
  EXPECT_THAT(Variable("fxt_point_add"), HasReason("INVALID_REQUEST"));
}

TEST_F(TypesTest, AdoptReleasesWithTheNamedDestructor) {
  absl::StatusOr<v1::CallResponse> made =
      CallDeclared("fxt_object_new", {MakeInt(9)});
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_TRUE(made->result().has_pointer_value());
  v1::AdoptRequest request;
  request.set_session(session_->id());
  *request.mutable_pointer() = made->result().pointer_value();
  request.set_destructor("fxt_object_release");
  request.set_library(fixture_.handle);
  request.set_size(sizeof(int));
  v1::AdoptResponse response;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(client::StatusFromGrpc(
                    stub().Adopt(&context, request, &response))
                    .ok());
  }
  absl::StatusOr<v1::Value> tag = ReadTyped(response.memory(), 0, "int");
  ASSERT_TRUE(tag.ok()) << tag.status();
  EXPECT_THAT(*tag, IsInteger(9));
  absl::StatusOr<v1::ResolveVariableResponse> released =
      Variable("fxt_released");
  ASSERT_TRUE(released.ok());
  EXPECT_THAT(*ReadTyped(released->memory(), 0, "int"), IsInteger(0));
  ASSERT_TRUE(session_->Free(response.memory()).ok());
  EXPECT_THAT(*ReadTyped(released->memory(), 0, "int"), IsInteger(1));
  EXPECT_THAT(session_->Free(response.memory()), HasReason("HANDLE_INVALID"));

  // A destructor that does not exist is refused before anything changes.
  {
    grpc::ClientContext context;
    request.set_destructor("no_such_release");
    EXPECT_THAT(client::StatusFromGrpc(
                    stub().Adopt(&context, request, &response)),
                HasReason("SYMBOL_NOT_FOUND"));
  }
}

TEST_F(TypesTest, ReturnedStringsAreBorrowedAdoptedOrReleased) {
  absl::StatusOr<v1::CallResponse> borrowed =
      CallDeclared("fxt_strdup", {MakeString("one")});
  ASSERT_TRUE(borrowed.ok()) << borrowed.status();
  EXPECT_EQ(borrowed->result().string_value(), "one");
  EXPECT_FALSE(borrowed->result_pointer().handle().empty());
  EXPECT_THAT(session_->Free(borrowed->result_pointer().handle()),
              HasReason("HANDLE_INVALID"));

  absl::StatusOr<v1::CallResponse> adopted = CallDeclared(
      "fxt_strdup", {MakeString("two")}, v1::RESULT_OWNERSHIP_ADOPT, "free");
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ(adopted->result().string_value(), "two");
  EXPECT_TRUE(session_->Free(adopted->result_pointer().handle()).ok());

  absl::StatusOr<v1::CallResponse> released = CallDeclared(
      "fxt_strdup", {MakeString("three")}, v1::RESULT_OWNERSHIP_RELEASE);
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ(released->result().string_value(), "three");
  EXPECT_FALSE(released->has_result_pointer());

  EXPECT_THAT(CallDeclared("fxt_strdup", {MakeString("x")},
                           v1::RESULT_OWNERSHIP_ADOPT, "no_such_free"),
              HasReason("SYMBOL_NOT_FOUND"));
  EXPECT_THAT(CallDeclared("fxt_counter_get", {}, v1::RESULT_OWNERSHIP_ADOPT),
              HasReason("INVALID_REQUEST"));
}

TEST_F(TypesTest, EachBadInputHasASpecificError) {
  // Wrong field name.
  absl::StatusOr<v1::CallResponse> response = CallDeclared(
      "fxt_point_add", {Record({{"x", MakeInt(1)}, {"z", MakeInt(2)}}),
                        Record({{"x", MakeInt(1)}})});
  EXPECT_THAT(response, HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(MessageOf(response),
              HasSubstr("'struct fxt_point' has no member 'z'"));
  // Enum name not in the enum.
  response = CallDeclared("fxt_color_next", {Enum("FXT_PURPLE")});
  EXPECT_THAT(response, HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(MessageOf(response),
              HasSubstr("'FXT_PURPLE' is not a constant of enum fxt_color "
                        "(its constants: FXT_RED, FXT_GREEN, FXT_BLUE)"));
  // Bitfield overflow.
  response = CallDeclared("fxt_bits_bump", {Record({{"a", MakeInt(8)}})});
  EXPECT_THAT(response, HasReason("VALUE_OUT_OF_RANGE"));
  EXPECT_THAT(MessageOf(response),
              HasSubstr("bitfield 'a' of 'struct fxt_bits' is 3 bits wide: 8 "
                        "does not fit (range 0..7)"));
  // Misaligned typed read and write.
  absl::StatusOr<v1::AllocateResponse> ints = Allocate("int[4]");
  ASSERT_TRUE(ints.ok());
  absl::StatusOr<v1::Value> read = ReadTyped(ints->memory(), 2, "int");
  EXPECT_THAT(read, HasReason("MISALIGNED_ACCESS"));
  EXPECT_THAT(MessageOf(read), HasSubstr("not a multiple of the type's "
                                         "alignment 4"));
  EXPECT_THAT(WriteTyped(ints->memory(), 1, "short", MakeInt(1)),
              HasReason("MISALIGNED_ACCESS"));
  // Unknown type names.
  EXPECT_THAT(Allocate("struct nowhere"), HasReason("TYPE_MISMATCH"));
  EXPECT_THAT(MessageOf(Allocate("struct nowhere")),
              HasSubstr("unknown type 'struct nowhere'"));
  // A union value sets exactly one member.
  response = CallDeclared("fxt_number_as_double",
                          {Record({{"i", MakeInt(1)}, {"d", MakeDouble(2)}}),
                           MakeInt(0)});
  EXPECT_THAT(response, HasReason("TYPE_MISMATCH"));
  // A typed read past the end of the allocation.
  EXPECT_THAT(ReadTyped(ints->memory(), 16, "int"), HasReason("OUT_OF_BOUNDS"));
}

TEST_F(TypesTest, TypesAreScopedToTheirSession) {
  std::unique_ptr<client::Session> other = NewSession();
  ASSERT_NE(other, nullptr);
  v1::AllocateRequest request;
  request.set_session(other->id());
  *request.mutable_type() = Named("struct fxt_point");
  v1::AllocateResponse response;
  grpc::ClientContext context;
  EXPECT_THAT(
      client::StatusFromGrpc(stub().Allocate(&context, request, &response)),
      HasReason("TYPE_MISMATCH"));
  // Later declarations see earlier ones.
  absl::StatusOr<v1::ParseDeclarationsResponse> more =
      session_->ParseDeclarations(
          "struct fxt_line { struct fxt_point from, to; };");
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_EQ(more->types(0).type().record().size(), 16u);
}

}  // namespace
}  // namespace ffid::testing
