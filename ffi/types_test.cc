#include "ffi/types.h"

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

#include "ffi/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::ffi {
namespace {

using ::testing::HasSubstr;

v1::TypeDescriptor Scalar(v1::ScalarKind kind) {
  v1::TypeDescriptor d;
  d.set_scalar(kind);
  return d;
}

v1::TypeDescriptor PointerTo(const v1::TypeDescriptor& pointee) {
  v1::TypeDescriptor d;
  *d.mutable_pointer()->mutable_pointee() = pointee;
  return d;
}

v1::TypeDescriptor ArrayOf(const v1::TypeDescriptor& element,
                           uint64_t length) {
  v1::TypeDescriptor d;
  *d.mutable_array()->mutable_element() = element;
  d.mutable_array()->set_length(length);
  return d;
}

v1::TypeDescriptor Record(
    const std::string& name,
    std::vector<std::pair<std::string, v1::TypeDescriptor>> fields,
    bool is_union = false) {
  v1::TypeDescriptor d;
  d.mutable_record()->set_name(name);
  d.mutable_record()->set_kind(is_union ? v1::RECORD_KIND_UNION
                                        : v1::RECORD_KIND_STRUCT);
  for (auto& [field_name, type] : fields) {
    v1::Field* field = d.mutable_record()->add_fields();
    field->set_name(field_name);
    *field->mutable_type() = type;
  }
  return d;
}

struct ScalarCase {
  v1::ScalarKind kind;
  size_t size;
  size_t alignment;
  bool is_integer;
  bool is_signed;
  ffi_type* ffi;
};

// Names the case in test listings ("unsigned_long").
void PrintTo(const ScalarCase& c, std::ostream* os) {
  std::string name(ScalarKindName(c.kind));
  for (char& ch : name) {
    if (ch == ' ') ch = '_';
  }
  *os << name;
}

class ScalarInfoTest : public ::testing::TestWithParam<ScalarCase> {};

TEST_P(ScalarInfoTest, MatchesThePlatform) {
  const ScalarCase& c = GetParam();
  absl::StatusOr<ScalarInfo> info = GetScalarInfo(c.kind);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, c.size) << ScalarKindName(c.kind);
  EXPECT_EQ(info->alignment, c.alignment) << ScalarKindName(c.kind);
  EXPECT_EQ(info->is_integer, c.is_integer) << ScalarKindName(c.kind);
  if (c.is_integer) {
    EXPECT_EQ(info->is_signed, c.is_signed) << ScalarKindName(c.kind);
  }
  EXPECT_EQ(info->ffi, c.ffi) << ScalarKindName(c.kind);
  if (c.kind != v1::SCALAR_KIND_VOID) {
    EXPECT_EQ(info->ffi->size, c.size) << ScalarKindName(c.kind);
  }
}

#define FFID_INT_CASE(kind, T, ffi_signed, ffi_unsigned)                     \
  ScalarCase {                                                                \
    kind, sizeof(T), alignof(T), true, std::is_signed_v<T>,                   \
        std::is_signed_v<T> ? &ffi_signed : &ffi_unsigned                     \
  }

INSTANTIATE_TEST_SUITE_P(
    AllKinds, ScalarInfoTest,
    ::testing::Values(
        ScalarCase{v1::SCALAR_KIND_VOID, 0, 1, false, false, &ffi_type_void},
        ScalarCase{v1::SCALAR_KIND_BOOL, sizeof(bool), alignof(bool), false,
                   false, &ffi_type_uint8},
        FFID_INT_CASE(v1::SCALAR_KIND_CHAR, char, ffi_type_sint8,
                      ffi_type_uint8),
        FFID_INT_CASE(v1::SCALAR_KIND_SIGNED_CHAR, signed char, ffi_type_sint8,
                      ffi_type_uint8),
        FFID_INT_CASE(v1::SCALAR_KIND_UNSIGNED_CHAR, unsigned char,
                      ffi_type_sint8, ffi_type_uint8),
        FFID_INT_CASE(v1::SCALAR_KIND_SHORT, short, ffi_type_sint16,
                      ffi_type_uint16),
        FFID_INT_CASE(v1::SCALAR_KIND_UNSIGNED_SHORT, unsigned short,
                      ffi_type_sint16, ffi_type_uint16),
        FFID_INT_CASE(v1::SCALAR_KIND_INT, int, ffi_type_sint32,
                      ffi_type_uint32),
        FFID_INT_CASE(v1::SCALAR_KIND_UNSIGNED_INT, unsigned int,
                      ffi_type_sint32, ffi_type_uint32),
        FFID_INT_CASE(v1::SCALAR_KIND_LONG, long, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_UNSIGNED_LONG, unsigned long,
                      ffi_type_sint64, ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_LONG_LONG, long long, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_UNSIGNED_LONG_LONG, unsigned long long,
                      ffi_type_sint64, ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_INT8, int8_t, ffi_type_sint8,
                      ffi_type_uint8),
        FFID_INT_CASE(v1::SCALAR_KIND_UINT8, uint8_t, ffi_type_sint8,
                      ffi_type_uint8),
        FFID_INT_CASE(v1::SCALAR_KIND_INT16, int16_t, ffi_type_sint16,
                      ffi_type_uint16),
        FFID_INT_CASE(v1::SCALAR_KIND_UINT16, uint16_t, ffi_type_sint16,
                      ffi_type_uint16),
        FFID_INT_CASE(v1::SCALAR_KIND_INT32, int32_t, ffi_type_sint32,
                      ffi_type_uint32),
        FFID_INT_CASE(v1::SCALAR_KIND_UINT32, uint32_t, ffi_type_sint32,
                      ffi_type_uint32),
        FFID_INT_CASE(v1::SCALAR_KIND_INT64, int64_t, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_UINT64, uint64_t, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_SIZE_T, size_t, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_SSIZE_T, ssize_t, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_INTPTR_T, intptr_t, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_UINTPTR_T, uintptr_t, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_PTRDIFF_T, ptrdiff_t, ffi_type_sint64,
                      ffi_type_uint64),
        FFID_INT_CASE(v1::SCALAR_KIND_WCHAR_T, wchar_t, ffi_type_sint32,
                      ffi_type_uint32),
        FFID_INT_CASE(v1::SCALAR_KIND_CHAR16_T, char16_t, ffi_type_sint16,
                      ffi_type_uint16),
        FFID_INT_CASE(v1::SCALAR_KIND_CHAR32_T, char32_t, ffi_type_sint32,
                      ffi_type_uint32),
        ScalarCase{v1::SCALAR_KIND_FLOAT, sizeof(float), alignof(float), false,
                   true, &ffi_type_float},
        ScalarCase{v1::SCALAR_KIND_DOUBLE, sizeof(double), alignof(double),
                   false, true, &ffi_type_double},
        ScalarCase{v1::SCALAR_KIND_LONG_DOUBLE, sizeof(long double),
                   alignof(long double), false, true, &ffi_type_longdouble},
        ScalarCase{v1::SCALAR_KIND_COMPLEX_FLOAT, 2 * sizeof(float),
                   alignof(float), false, true, &ffi_type_complex_float},
        ScalarCase{v1::SCALAR_KIND_COMPLEX_DOUBLE, 2 * sizeof(double),
                   alignof(double), false, true, &ffi_type_complex_double}));

TEST(ScalarInfo, UnspecifiedAndUnknownKindsAreTypeMismatches) {
  absl::StatusOr<ScalarInfo> info = GetScalarInfo(v1::SCALAR_KIND_UNSPECIFIED);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(GetErrorReason(info.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  info = GetScalarInfo(static_cast<v1::ScalarKind>(999));
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(GetErrorReason(info.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_THAT(info.status().message(), HasSubstr("999"));
}

TEST(CType, ScalarsPointersStringsAndFunctionPointers) {
  auto int_type = CType::Create(Scalar(v1::SCALAR_KIND_INT));
  ASSERT_TRUE(int_type.ok()) << int_type.status();
  EXPECT_EQ((*int_type)->size(), sizeof(int));
  EXPECT_EQ((*int_type)->ffi(), &ffi_type_sint32);
  ASSERT_NE((*int_type)->scalar(), nullptr);
  EXPECT_TRUE((*int_type)->scalar()->is_signed);
  EXPECT_FALSE((*int_type)->is_void());

  auto void_type = CType::Create(Scalar(v1::SCALAR_KIND_VOID));
  ASSERT_TRUE(void_type.ok());
  EXPECT_TRUE((*void_type)->is_void());
  EXPECT_EQ((*void_type)->ffi(), &ffi_type_void);

  v1::TypeDescriptor void_pointer;
  void_pointer.mutable_pointer();
  auto pointer = CType::Create(void_pointer);
  ASSERT_TRUE(pointer.ok());
  EXPECT_EQ((*pointer)->ffi(), &ffi_type_pointer);
  EXPECT_EQ((*pointer)->size(), sizeof(void*));
  EXPECT_EQ((*pointer)->scalar(), nullptr);

  // A plain pointer to an unresolved (opaque) type is fine.
  v1::TypeDescriptor opaque;
  opaque.set_named("struct sqlite3");
  EXPECT_TRUE(CType::Create(PointerTo(opaque)).ok());

  v1::TypeDescriptor string;
  string.mutable_string()->set_is_const(true);
  auto string_type = CType::Create(string);
  ASSERT_TRUE(string_type.ok());
  EXPECT_EQ((*string_type)->ffi(), &ffi_type_pointer);

  v1::TypeDescriptor function_pointer;
  *function_pointer.mutable_function_pointer()->mutable_return_type() =
      Scalar(v1::SCALAR_KIND_DOUBLE);
  auto fp = CType::Create(function_pointer);
  ASSERT_TRUE(fp.ok());
  EXPECT_EQ((*fp)->ffi(), &ffi_type_pointer);
}

TEST(CType, EnumsUseTheirUnderlyingInteger) {
  v1::TypeDescriptor d;
  d.mutable_enum_type()->set_name("color");
  auto type = CType::Create(d);
  ASSERT_TRUE(type.ok());
  EXPECT_EQ((*type)->size(), sizeof(int));
  EXPECT_EQ((*type)->ffi(), &ffi_type_sint32);

  d.mutable_enum_type()->set_underlying(v1::SCALAR_KIND_UINT8);
  type = CType::Create(d);
  ASSERT_TRUE(type.ok());
  EXPECT_EQ((*type)->ffi(), &ffi_type_uint8);

  d.mutable_enum_type()->set_underlying(v1::SCALAR_KIND_DOUBLE);
  type = CType::Create(d, "parameter 1 'c'");
  ASSERT_FALSE(type.ok());
  EXPECT_EQ(GetErrorReason(type.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(type.status().message(),
            "parameter 1 'c': the underlying type of enum color must be an "
            "integer type, not 'double'");
}

TEST(CType, NamedTypesMustBeResolvedFirst) {
  v1::TypeDescriptor d;
  d.set_named("point_t");
  auto type = CType::Create(d, "parameter 2 'p' of 'f'");
  ASSERT_FALSE(type.ok());
  EXPECT_EQ(GetErrorReason(type.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(type.status().message(),
            "parameter 2 'p' of 'f': unresolved type name 'point_t'");
  EXPECT_FALSE(CType::Create(v1::TypeDescriptor()).ok());
}

struct Mixed {
  char c;
  double d;
  short s;
  int i[3];
  float f;
};

TEST(CType, StructLayoutMatchesTheCompiler) {
  v1::TypeDescriptor d = Record(
      "mixed", {{"c", Scalar(v1::SCALAR_KIND_CHAR)},
                {"d", Scalar(v1::SCALAR_KIND_DOUBLE)},
                {"s", Scalar(v1::SCALAR_KIND_SHORT)},
                {"i", ArrayOf(Scalar(v1::SCALAR_KIND_INT), 3)},
                {"f", Scalar(v1::SCALAR_KIND_FLOAT)}});
  auto type = CType::Create(d);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(Mixed));
  EXPECT_EQ((*type)->alignment(), alignof(Mixed));
  const auto& members = (*type)->members();
  ASSERT_EQ(members.size(), 5u);
  EXPECT_EQ(members[0].offset, offsetof(Mixed, c));
  EXPECT_EQ(members[1].offset, offsetof(Mixed, d));
  EXPECT_EQ(members[2].offset, offsetof(Mixed, s));
  EXPECT_EQ(members[3].offset, offsetof(Mixed, i));
  EXPECT_EQ(members[4].offset, offsetof(Mixed, f));
  // The output-only fields are filled in.
  const v1::RecordType& record = (*type)->descriptor().record();
  EXPECT_EQ(record.size(), sizeof(Mixed));
  EXPECT_EQ(record.computed_alignment(), alignof(Mixed));
  EXPECT_EQ(record.fields(4).offset(), offsetof(Mixed, f));
  EXPECT_TRUE((*type)->by_value_status().ok());
  EXPECT_EQ((*type)->ffi()->type, FFI_TYPE_STRUCT);
  EXPECT_EQ((*type)->ffi()->size, sizeof(Mixed));
}

struct Inner {
  char a;
  long long b;
};
struct Outer {
  char tag;
  Inner inner;
  char tail;
};

TEST(CType, NestedStructs) {
  v1::TypeDescriptor inner = Record("inner", {{"a", Scalar(v1::SCALAR_KIND_CHAR)},
                                              {"b", Scalar(v1::SCALAR_KIND_LONG_LONG)}});
  v1::TypeDescriptor outer = Record("outer", {{"tag", Scalar(v1::SCALAR_KIND_CHAR)},
                                              {"inner", inner},
                                              {"tail", Scalar(v1::SCALAR_KIND_CHAR)}});
  auto type = CType::Create(outer);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(Outer));
  EXPECT_EQ((*type)->members()[1].offset, offsetof(Outer, inner));
  EXPECT_EQ((*type)->members()[2].offset, offsetof(Outer, tail));
  EXPECT_EQ((*type)->descriptor().record().fields(1).type().record().size(),
            sizeof(Inner));
}

struct __attribute__((packed)) Packed {
  char c;
  int i;
};
struct __attribute__((aligned(32))) Aligned {
  int i;
};

TEST(CType, PackedAndAlignedStructsAreLaidOutAndPassedByValue) {
  v1::TypeDescriptor packed = Record("packed", {{"c", Scalar(v1::SCALAR_KIND_CHAR)},
                                                {"i", Scalar(v1::SCALAR_KIND_INT)}});
  packed.mutable_record()->set_packed(true);
  auto type = CType::Create(packed);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(Packed));
  EXPECT_EQ((*type)->alignment(), alignof(Packed));
  EXPECT_EQ((*type)->members()[1].offset, offsetof(Packed, i));
  // libffi cannot lay it out; ffid describes it by its ABI classes.
  EXPECT_TRUE((*type)->by_value_status().ok()) << (*type)->by_value_status();
  EXPECT_FALSE((*type)->native_layout());
  EXPECT_EQ((*type)->ffi()->size, sizeof(Packed));

  v1::TypeDescriptor aligned = Record("aligned", {{"i", Scalar(v1::SCALAR_KIND_INT)}});
  aligned.mutable_record()->set_alignment(32);
  type = CType::Create(aligned);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(Aligned));
  EXPECT_EQ((*type)->alignment(), alignof(Aligned));
  EXPECT_TRUE((*type)->by_value_status().ok()) << (*type)->by_value_status();
  EXPECT_EQ((*type)->ffi()->alignment, alignof(Aligned));

  aligned.mutable_record()->set_alignment(3);
  EXPECT_EQ(GetErrorReason(CType::Create(aligned).status()),
            v1::ERROR_REASON_TYPE_MISMATCH);
}

union Number {
  char c;
  double d;
  int i[3];
};

TEST(CType, UnionsTakeTheLargestMemberAndAlignment) {
  v1::TypeDescriptor d = Record("number", {{"c", Scalar(v1::SCALAR_KIND_CHAR)},
                                           {"d", Scalar(v1::SCALAR_KIND_DOUBLE)},
                                           {"i", ArrayOf(Scalar(v1::SCALAR_KIND_INT), 3)}},
                                /*is_union=*/true);
  auto type = CType::Create(d);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(Number));
  EXPECT_EQ((*type)->alignment(), alignof(Number));
  for (const CTypeMember& member : (*type)->members()) {
    EXPECT_EQ(member.offset, 0u);
  }
  EXPECT_TRUE((*type)->by_value_status().ok()) << (*type)->by_value_status();
  EXPECT_EQ((*type)->ffi()->size, sizeof(Number));
  EXPECT_EQ((*type)->ffi()->alignment, alignof(Number));

  v1::TypeDescriptor with_long_double =
      Record("ld", {{"x", Scalar(v1::SCALAR_KIND_LONG_DOUBLE)},
                    {"i", Scalar(v1::SCALAR_KIND_INT)}},
             /*is_union=*/true);
  type = CType::Create(with_long_double);
  ASSERT_TRUE(type.ok());
  EXPECT_EQ((*type)->size(), sizeof(long double));
  // Classified MEMORY, as GCC does (X87UP after INTEGER).
  EXPECT_TRUE((*type)->by_value_status().ok()) << (*type)->by_value_status();
}

TEST(CType, Arrays) {
  auto type = CType::Create(ArrayOf(Scalar(v1::SCALAR_KIND_SHORT), 5));
  ASSERT_TRUE(type.ok());
  EXPECT_EQ((*type)->size(), 5 * sizeof(short));
  EXPECT_EQ((*type)->alignment(), alignof(short));
  EXPECT_EQ((*type)->length(), 5u);
  ASSERT_NE((*type)->element(), nullptr);
  EXPECT_EQ((*type)->element()->size(), sizeof(short));
  EXPECT_EQ((*type)->ffi()->size, 5 * sizeof(short));

  EXPECT_EQ(GetErrorReason(
                CType::Create(ArrayOf(Scalar(v1::SCALAR_KIND_INT), 0)).status()),
            v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(GetErrorReason(
                CType::Create(ArrayOf(Scalar(v1::SCALAR_KIND_VOID), 2)).status()),
            v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(
      GetErrorReason(
          CType::Create(ArrayOf(Scalar(v1::SCALAR_KIND_INT), uint64_t{1} << 40))
              .status()),
      v1::ERROR_REASON_UNSUPPORTED);
}

TEST(CType, RecordErrors) {
  v1::TypeDescriptor bitfield =
      Record("flags", {{"a", Scalar(v1::SCALAR_KIND_DOUBLE)}});
  bitfield.mutable_record()->mutable_fields(0)->set_bit_width(3);
  auto type = CType::Create(bitfield);
  ASSERT_FALSE(type.ok());
  EXPECT_EQ(GetErrorReason(type.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_EQ(type.status().message(),
            "member 'a' of struct flags: a bitfield must have an integer "
            "type, not 'double'");
  bitfield = Record("wide", {{"a", Scalar(v1::SCALAR_KIND_SHORT)}});
  bitfield.mutable_record()->mutable_fields(0)->set_bit_width(17);
  EXPECT_THAT(CType::Create(bitfield).status().message(),
              HasSubstr("17 bits wide, more than its type 'short' holds"));

  v1::TypeDescriptor duplicate = Record("dup", {{"a", Scalar(v1::SCALAR_KIND_INT)},
                                                {"a", Scalar(v1::SCALAR_KIND_INT)}});
  type = CType::Create(duplicate);
  ASSERT_FALSE(type.ok());
  EXPECT_EQ(GetErrorReason(type.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_THAT(type.status().message(), HasSubstr("two members named 'a'"));

  v1::TypeDescriptor with_void = Record("v", {{"x", Scalar(v1::SCALAR_KIND_VOID)}});
  EXPECT_EQ(GetErrorReason(CType::Create(with_void).status()),
            v1::ERROR_REASON_TYPE_MISMATCH);

  v1::TypeDescriptor unresolved;
  unresolved.set_named("struct other");
  v1::TypeDescriptor holder = Record("holder", {{"o", unresolved}});
  type = CType::Create(holder);
  ASSERT_FALSE(type.ok());
  EXPECT_EQ(type.status().message(),
            "member 'o' of struct holder: unresolved type name 'struct other'");

  v1::TypeDescriptor empty = Record("empty", {});
  type = CType::Create(empty);
  ASSERT_TRUE(type.ok());
  EXPECT_EQ((*type)->size(), 0u);
  EXPECT_FALSE((*type)->by_value_status().ok());
}

TEST(CType, UnnamedAndZeroWidthBitfieldsAsGcc) {
  // struct { char c; int : 3; int : 0; char d; unsigned e : 4;
  //          long long : 0; short f; }: d at 4, f at 8, size 12, align 4.
  v1::TypeDescriptor d = Record("holes", {{"c", Scalar(v1::SCALAR_KIND_CHAR)},
                                          {"", Scalar(v1::SCALAR_KIND_INT)},
                                          {"", Scalar(v1::SCALAR_KIND_INT)},
                                          {"d", Scalar(v1::SCALAR_KIND_CHAR)},
                                          {"e", Scalar(v1::SCALAR_KIND_UNSIGNED_INT)},
                                          {"", Scalar(v1::SCALAR_KIND_LONG_LONG)},
                                          {"f", Scalar(v1::SCALAR_KIND_SHORT)}});
  v1::RecordType& record = *d.mutable_record();
  record.mutable_fields(1)->set_bit_width(3);
  record.mutable_fields(2)->set_zero_width_bitfield(true);
  record.mutable_fields(4)->set_bit_width(4);
  record.mutable_fields(5)->set_zero_width_bitfield(true);
  auto type = CType::Create(d);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), 12u);
  EXPECT_EQ((*type)->alignment(), 4u);
  EXPECT_EQ((*type)->members()[3].offset, 4u);
  EXPECT_EQ((*type)->members()[6].offset, 8u);
  // A zero-width bitfield with a name or a width is malformed.
  record.mutable_fields(2)->set_name("z");
  EXPECT_EQ(GetErrorReason(CType::Create(d).status()),
            v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST(CType, FlexibleArrayMembers) {
  v1::TypeDescriptor d = Record(
      "flex", {{"n", Scalar(v1::SCALAR_KIND_CHAR)},
               {"data", ArrayOf(Scalar(v1::SCALAR_KIND_DOUBLE), 0)}});
  auto type = CType::Create(d);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), 8u);
  EXPECT_EQ((*type)->members()[1].offset, 8u);
  ASSERT_NE((*type)->flexible_member(), nullptr);
  EXPECT_THAT((*type)->by_value_status().message(),
              HasSubstr("ends in the flexible array member 'data'"));
  EXPECT_EQ(TypeName((*type)->descriptor().record().fields(1).type()),
            "double []");

  absl::StatusOr<v1::TypeDescriptor> three = WithFlexibleLength(d, 3);
  ASSERT_TRUE(three.ok());
  auto sized = CType::Create(*three);
  ASSERT_TRUE(sized.ok());
  EXPECT_EQ((*sized)->size(), 32u);
  EXPECT_EQ((*sized)->flexible_member(), nullptr);
  EXPECT_EQ(GetErrorReason(
                WithFlexibleLength(Record("p", {{"x", Scalar(v1::SCALAR_KIND_INT)}}), 2)
                    .status()),
            v1::ERROR_REASON_TYPE_MISMATCH);

  // Only last, only in a struct, not alone, not nested.
  v1::TypeDescriptor first = Record(
      "bad", {{"data", ArrayOf(Scalar(v1::SCALAR_KIND_DOUBLE), 0)},
              {"n", Scalar(v1::SCALAR_KIND_INT)}});
  EXPECT_THAT(CType::Create(first).status().message(),
              HasSubstr("must be the last member"));
  v1::TypeDescriptor in_union = d;
  in_union.mutable_record()->set_kind(v1::RECORD_KIND_UNION);
  EXPECT_FALSE(CType::Create(in_union).ok());
  EXPECT_FALSE(CType::Create(ArrayOf(d, 2)).ok());
  // Nested (a GCC extension) only as the last member of a struct.
  EXPECT_THAT(CType::Create(Record("outer", {{"inner", d},
                                             {"n", Scalar(v1::SCALAR_KIND_INT)}}))
                  .status()
                  .message(),
              HasSubstr("can only be the last member of a struct"));
  v1::TypeDescriptor outer_union =
      Record("outer", {{"i", Scalar(v1::SCALAR_KIND_INT)}, {"inner", d}});
  outer_union.mutable_record()->set_kind(v1::RECORD_KIND_UNION);
  EXPECT_FALSE(CType::Create(outer_union).ok());
}

TEST(CType, FlexibleArrayNestedAtTheEndOfAnotherStruct) {
  v1::TypeDescriptor flex = Record(
      "flex", {{"n", Scalar(v1::SCALAR_KIND_CHAR)},
               {"data", ArrayOf(Scalar(v1::SCALAR_KIND_DOUBLE), 0)}});
  v1::TypeDescriptor outer =
      Record("outer", {{"tag", Scalar(v1::SCALAR_KIND_SHORT)}, {"inner", flex}});
  auto type = CType::Create(outer);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), 16u);
  EXPECT_EQ((*type)->members()[1].offset, 8u);
  ASSERT_NE((*type)->flexible_member(), nullptr);
  EXPECT_EQ((*type)->flexible_member()->name, "data");
  EXPECT_THAT((*type)->by_value_status().message(),
              HasSubstr("flexible array member 'data'"));
  EXPECT_FALSE(CType::Create(ArrayOf(outer, 2)).ok());

  absl::StatusOr<v1::TypeDescriptor> two = WithFlexibleLength(outer, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  auto sized = CType::Create(*two);
  ASSERT_TRUE(sized.ok()) << sized.status();
  EXPECT_EQ((*sized)->size(), 32u);
  EXPECT_EQ((*sized)->flexible_member(), nullptr);
  // Nested twice.
  absl::StatusOr<v1::TypeDescriptor> deeper =
      WithFlexibleLength(Record("deeper", {{"o", outer}}), 1);
  ASSERT_TRUE(deeper.ok()) << deeper.status();
  sized = CType::Create(*deeper);
  ASSERT_TRUE(sized.ok()) << sized.status();
  EXPECT_EQ((*sized)->size(), 24u);
}

TEST(CType, MemberLevelAlignedAndPackedAsGccLaysThemOut) {
  struct Expected {
    char c;
    int x __attribute__((aligned(8)));
    short s;
  };
  v1::TypeDescriptor d = Record("m", {{"c", Scalar(v1::SCALAR_KIND_CHAR)},
                                      {"x", Scalar(v1::SCALAR_KIND_INT)},
                                      {"s", Scalar(v1::SCALAR_KIND_SHORT)}});
  d.mutable_record()->mutable_fields(1)->set_alignment(8);
  auto type = CType::Create(d);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(Expected));
  EXPECT_EQ((*type)->alignment(), alignof(Expected));
  EXPECT_EQ((*type)->members()[1].offset, offsetof(Expected, x));
  EXPECT_EQ((*type)->members()[2].offset, offsetof(Expected, s));
  // Not natively laid out by libffi, but still passable (by its classes).
  EXPECT_TRUE((*type)->by_value_status().ok());
  EXPECT_EQ(EightbyteClasses(**type), "II");

  struct __attribute__((packed)) PackedExpected {
    char c;
    int x __attribute__((aligned(4)));
    short s;
  };
  d.mutable_record()->set_packed(true);
  d.mutable_record()->mutable_fields(1)->set_alignment(4);
  type = CType::Create(d);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(PackedExpected));
  EXPECT_EQ((*type)->alignment(), alignof(PackedExpected));
  EXPECT_EQ((*type)->members()[1].offset, 4u);

  struct MemberPacked {
    char c;
    int x __attribute__((packed));
  };
  d.mutable_record()->set_packed(false);
  d.mutable_record()->mutable_fields(1)->set_alignment(0);
  d.mutable_record()->mutable_fields(1)->set_packed(true);
  d.mutable_record()->mutable_fields()->RemoveLast();
  type = CType::Create(d);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), sizeof(MemberPacked));
  EXPECT_EQ((*type)->members()[1].offset, 1u);
  EXPECT_EQ(EightbyteClasses(**type), "");  // misaligned: in memory

  d.mutable_record()->mutable_fields(1)->set_alignment(3);
  EXPECT_EQ(GetErrorReason(CType::Create(d).status()),
            v1::ERROR_REASON_TYPE_MISMATCH);
}

TEST(CType, ComplexLongDouble) {
  auto type = CType::Create(Scalar(v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE));
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ((*type)->size(), 2 * sizeof(long double));
  EXPECT_EQ((*type)->alignment(), alignof(long double));
  EXPECT_EQ(TypeName((*type)->descriptor()), "long double _Complex");
}

TEST(CType, DirectionalPointersLayOutTheirPointee) {
  v1::TypeDescriptor out = PointerTo(Scalar(v1::SCALAR_KIND_DOUBLE));
  out.mutable_pointer()->set_direction(v1::POINTER_DIRECTION_OUT);
  auto type = CType::Create(out);
  ASSERT_TRUE(type.ok()) << type.status();
  ASSERT_NE((*type)->pointee(), nullptr);
  EXPECT_EQ((*type)->pointee()->size(), sizeof(double));

  v1::TypeDescriptor plain = PointerTo(Scalar(v1::SCALAR_KIND_DOUBLE));
  type = CType::Create(plain);
  ASSERT_TRUE(type.ok());
  EXPECT_EQ((*type)->pointee(), nullptr);

  v1::TypeDescriptor void_out;
  void_out.mutable_pointer()->set_direction(v1::POINTER_DIRECTION_INOUT);
  type = CType::Create(void_out, "parameter 1 'p'");
  ASSERT_FALSE(type.ok());
  EXPECT_EQ(GetErrorReason(type.status()), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_THAT(type.status().message(), HasSubstr("parameter 1 'p': "));
}

TEST(TypeName, SpellsTypesAsC) {
  EXPECT_EQ(TypeName(Scalar(v1::SCALAR_KIND_UNSIGNED_LONG)), "unsigned long");
  EXPECT_EQ(TypeName(Scalar(v1::SCALAR_KIND_INT8)), "int8_t");
  v1::TypeDescriptor const_int = Scalar(v1::SCALAR_KIND_INT);
  const_int.set_is_const(true);
  EXPECT_EQ(TypeName(const_int), "const int");
  v1::TypeDescriptor string;
  string.mutable_string()->set_is_const(true);
  EXPECT_EQ(TypeName(string), "const char *");
  EXPECT_EQ(TypeName(PointerTo(string)), "const char **");
  v1::TypeDescriptor wide;
  wide.mutable_string()->set_encoding(v1::STRING_ENCODING_WCHAR);
  EXPECT_EQ(TypeName(wide), "wchar_t *");
  v1::TypeDescriptor void_pointer;
  void_pointer.mutable_pointer();
  EXPECT_EQ(TypeName(void_pointer), "void *");
  EXPECT_EQ(TypeName(PointerTo(Scalar(v1::SCALAR_KIND_INT))), "int *");
  EXPECT_EQ(TypeName(ArrayOf(Scalar(v1::SCALAR_KIND_INT), 4)), "int [4]");
  EXPECT_EQ(TypeName(PointerTo(ArrayOf(Scalar(v1::SCALAR_KIND_INT), 4))),
            "int (*)[4]");
  v1::TypeDescriptor fp;
  *fp.mutable_function_pointer()->mutable_return_type() =
      Scalar(v1::SCALAR_KIND_DOUBLE);
  *fp.mutable_function_pointer()->add_parameters()->mutable_type() =
      Scalar(v1::SCALAR_KIND_DOUBLE);
  EXPECT_EQ(TypeName(fp), "double (*)(double)");
  v1::TypeDescriptor no_args;
  no_args.mutable_function_pointer();
  EXPECT_EQ(TypeName(no_args), "void (*)(void)");
  EXPECT_EQ(TypeName(Record("point", {})), "struct point");
  EXPECT_EQ(TypeName(Record("", {}, /*is_union=*/true)), "union <anonymous>");
  v1::TypeDescriptor e;
  e.mutable_enum_type()->set_name("color");
  EXPECT_EQ(TypeName(e), "enum color");

  v1::FunctionType printf_type;
  *printf_type.mutable_return_type() = Scalar(v1::SCALAR_KIND_INT);
  *printf_type.add_parameters()->mutable_type() = string;
  printf_type.set_variadic(true);
  EXPECT_EQ(FunctionTypeName(printf_type, "printf"),
            "int printf(const char *, ...)");
}

}  // namespace
}  // namespace ffid::ffi
