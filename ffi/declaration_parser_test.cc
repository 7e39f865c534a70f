#include "ffi/declaration_parser.h"

#include <ostream>
#include <string>

#include "absl/strings/ascii.h"
#include "ffi/errors.h"
#include "ffi/types.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ffid::ffi {
namespace {

using ::testing::HasSubstr;

// The prototype as C would spell it, from what the parser produced.
std::string Spell(absl::string_view source) {
  absl::StatusOr<v1::FunctionDeclaration> declaration =
      ParseFunctionDeclaration(source);
  if (!declaration.ok()) return std::string(declaration.status().message());
  return FunctionTypeName(declaration->type(), declaration->name());
}

absl::Status ErrorOf(absl::string_view source) {
  return ParseFunctionDeclaration(source).status();
}

v1::FunctionDeclaration Parse(absl::string_view source) {
  absl::StatusOr<v1::FunctionDeclaration> declaration =
      ParseFunctionDeclaration(source);
  EXPECT_TRUE(declaration.ok()) << source << ": " << declaration.status();
  return declaration.ok() ? *declaration : v1::FunctionDeclaration();
}

TEST(ParseFunctionDeclaration, TheIssueExamples) {
  v1::FunctionDeclaration cos = Parse("double cos(double)");
  EXPECT_EQ(cos.name(), "cos");
  EXPECT_EQ(cos.type().return_type().scalar(), v1::SCALAR_KIND_DOUBLE);
  ASSERT_EQ(cos.type().parameters_size(), 1);
  EXPECT_EQ(cos.type().parameters(0).type().scalar(), v1::SCALAR_KIND_DOUBLE);
  EXPECT_EQ(cos.type().parameters(0).name(), "");
  EXPECT_FALSE(cos.type().variadic());

  v1::FunctionDeclaration strlen = Parse("size_t strlen(const char *s)");
  EXPECT_EQ(strlen.type().return_type().scalar(), v1::SCALAR_KIND_SIZE_T);
  ASSERT_EQ(strlen.type().parameters_size(), 1);
  EXPECT_EQ(strlen.type().parameters(0).name(), "s");
  const v1::TypeDescriptor& s = strlen.type().parameters(0).type();
  ASSERT_TRUE(s.has_string());
  EXPECT_EQ(s.string().encoding(), v1::STRING_ENCODING_UTF8);
  EXPECT_TRUE(s.string().is_const());

  v1::FunctionDeclaration labs = Parse("long labs(long);");
  EXPECT_EQ(labs.type().return_type().scalar(), v1::SCALAR_KIND_LONG);
}

TEST(ParseFunctionDeclaration, IntegerSpecifiersInAnyOrder) {
  EXPECT_EQ(Spell("unsigned long long f(long long unsigned int a)"),
            "unsigned long long f(unsigned long long)");
  EXPECT_EQ(Spell("long unsigned int f(int long signed, short unsigned)"),
            "unsigned long f(long, unsigned short)");
  EXPECT_EQ(Spell("unsigned f(signed, short int, int short, char, signed char, "
                  "unsigned char)"),
            "unsigned int f(int, short, short, char, signed char, unsigned "
            "char)");
  EXPECT_EQ(Spell("long double f(double, float, _Bool, bool)"),
            "long double f(double, float, bool, bool)");
  EXPECT_EQ(Spell("void f(long int long)"), "void f(long long)");
}

TEST(ParseFunctionDeclaration, NamedIntegerTypes) {
  EXPECT_EQ(Spell("ssize_t f(size_t, intptr_t, uintptr_t, ptrdiff_t)"),
            "ssize_t f(size_t, intptr_t, uintptr_t, ptrdiff_t)");
  EXPECT_EQ(Spell("int8_t f(uint8_t, int16_t, uint16_t, int32_t, uint32_t, "
                  "int64_t, uint64_t)"),
            "int8_t f(uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t, "
            "uint64_t)");
  EXPECT_EQ(Spell("wchar_t f(char16_t, char32_t)"),
            "wchar_t f(char16_t, char32_t)");
  EXPECT_EQ(Spell("double _Complex f(float _Complex)"),
            "double _Complex f(float _Complex)");
}

TEST(ParseFunctionDeclaration, QualifiersAndStorage) {
  v1::FunctionDeclaration f =
      Parse("extern const int f(volatile int x, const char *const restrict s, "
            "char *p);");
  EXPECT_TRUE(f.type().return_type().is_const());
  EXPECT_EQ(f.type().parameters(0).type().scalar(), v1::SCALAR_KIND_INT);
  const v1::TypeDescriptor& s = f.type().parameters(1).type();
  ASSERT_TRUE(s.has_string());
  EXPECT_TRUE(s.string().is_const());
  EXPECT_TRUE(s.is_const());  // the pointer itself
  const v1::TypeDescriptor& p = f.type().parameters(2).type();
  ASSERT_TRUE(p.has_string());
  EXPECT_FALSE(p.string().is_const());
  // `char const *` is the same as `const char *`.
  EXPECT_TRUE(Parse("int g(char const *s)")
                  .type()
                  .parameters(0)
                  .type()
                  .string()
                  .is_const());
}

TEST(ParseFunctionDeclaration, PointersAndStrings) {
  v1::FunctionDeclaration f = Parse(
      "void *f(void *, const void *p, int *, unsigned char *, char **argv, "
      "wchar_t *, const char16_t *, char32_t *, double **)");
  EXPECT_TRUE(f.type().return_type().has_pointer());
  EXPECT_FALSE(f.type().return_type().pointer().has_pointee());
  EXPECT_FALSE(f.type().parameters(0).type().pointer().has_pointee());
  EXPECT_FALSE(f.type().parameters(1).type().pointer().has_pointee());
  EXPECT_EQ(f.type().parameters(2).type().pointer().pointee().scalar(),
            v1::SCALAR_KIND_INT);
  // Only plain char is text.
  EXPECT_EQ(f.type().parameters(3).type().pointer().pointee().scalar(),
            v1::SCALAR_KIND_UNSIGNED_CHAR);
  const v1::TypeDescriptor& argv = f.type().parameters(4).type();
  ASSERT_TRUE(argv.has_pointer());
  EXPECT_TRUE(argv.pointer().pointee().has_string());
  EXPECT_EQ(f.type().parameters(5).type().string().encoding(),
            v1::STRING_ENCODING_WCHAR);
  EXPECT_EQ(f.type().parameters(6).type().string().encoding(),
            v1::STRING_ENCODING_UTF16);
  EXPECT_EQ(f.type().parameters(7).type().string().encoding(),
            v1::STRING_ENCODING_UTF32);
  EXPECT_EQ(TypeName(f.type().parameters(8).type()), "double **");
}

TEST(ParseFunctionDeclaration, VoidParametersAndVariadic) {
  EXPECT_EQ(Parse("int rand(void)").type().parameters_size(), 0);
  EXPECT_EQ(Parse("int rand()").type().parameters_size(), 0);
  v1::FunctionDeclaration printf = Parse("int printf(const char *fmt, ...)");
  EXPECT_TRUE(printf.type().variadic());
  EXPECT_EQ(printf.type().parameters_size(), 1);
  EXPECT_EQ(Spell("int printf(const char *format, ...);"),
            "int printf(const char *, ...)");
  EXPECT_EQ(Spell("void f(void)"), "void f(void)");
  EXPECT_EQ(Parse("void f(void)").type().return_type().scalar(),
            v1::SCALAR_KIND_VOID);
}

TEST(ParseFunctionDeclaration, ArraysDecayToPointers) {
  v1::FunctionDeclaration f =
      Parse("int f(int a[], double b[16], char s[], int m[][3])");
  EXPECT_EQ(TypeName(f.type().parameters(0).type()), "int *");
  EXPECT_EQ(TypeName(f.type().parameters(1).type()), "double *");
  EXPECT_TRUE(f.type().parameters(2).type().has_string());
  EXPECT_EQ(TypeName(f.type().parameters(3).type()), "int (*)[3]");
  EXPECT_EQ(TypeName(Parse("int f(int a[2 * 4 + 1])").type().parameters(0).type()),
            "int *");
}

TEST(ParseFunctionDeclaration, FunctionPointers) {
  v1::FunctionDeclaration qsort = Parse(
      "void qsort(void *base, size_t nmemb, size_t size, "
      "int (*compar)(const void *, const void *));");
  ASSERT_EQ(qsort.type().parameters_size(), 4);
  const v1::Parameter& compar = qsort.type().parameters(3);
  EXPECT_EQ(compar.name(), "compar");
  ASSERT_TRUE(compar.type().has_function_pointer());
  EXPECT_EQ(compar.type().function_pointer().return_type().scalar(),
            v1::SCALAR_KIND_INT);
  EXPECT_EQ(compar.type().function_pointer().parameters_size(), 2);
  EXPECT_EQ(TypeName(compar.type()), "int (*)(void *, void *)");

  // Unnamed, and a function type parameter that decays.
  EXPECT_EQ(Spell("void f(void (*)(int), double g(double))"),
            "void f(void (*)(int), double (*)(double))");

  // signal: a function returning a function pointer.
  v1::FunctionDeclaration signal =
      Parse("void (*signal(int sig, void (*func)(int)))(int)");
  EXPECT_EQ(signal.name(), "signal");
  ASSERT_TRUE(signal.type().return_type().has_function_pointer());
  EXPECT_EQ(TypeName(signal.type().return_type()), "void (*)(int)");
  EXPECT_EQ(signal.type().parameters(0).name(), "sig");
  EXPECT_EQ(signal.type().parameters(1).name(), "func");

  // Parenthesized names are still names.
  EXPECT_EQ(Parse("int (f)(int)").name(), "f");
}

TEST(ParseFunctionDeclaration, CommentsAttributesAndAsmLabels) {
  v1::FunctionDeclaration f = Parse(
      "/* libm */ extern double cos (double __x) "
      "__attribute__ ((__nothrow__ , __leaf__)); // trailing");
  EXPECT_EQ(f.name(), "cos");
  EXPECT_EQ(f.type().parameters(0).name(), "__x");
  EXPECT_EQ(Parse("int stat64(const char *p) __asm__(\"stat\")").name(),
            "stat64");
  EXPECT_EQ(Parse("\n\n  int\n  f\n  (\n  int\n  )\n").name(), "f");
}

TEST(ParseFunctionDeclaration, RealWorldPrototypes) {
  EXPECT_EQ(Spell("int main(int argc, char *argv[])"),
            "int main(int, char **)");
  EXPECT_EQ(Spell("char *strcpy(char *restrict dest, const char *restrict src)"),
            "char *strcpy(char *, const char *)");
  EXPECT_EQ(Spell("int execv(const char *path, char *const argv[]);"),
            "int execv(const char *, char *const *)");
  EXPECT_EQ(Spell("int compress2(unsigned char *dest, unsigned long *destLen, "
                  "const unsigned char *source, unsigned long sourceLen, "
                  "int level)"),
            "int compress2(unsigned char *, unsigned long *, const unsigned "
            "char *, unsigned long, int)");
  EXPECT_EQ(Spell("void *memcpy(void *__restrict __dest, const void "
                  "*__restrict __src, size_t __n) __attribute__ "
                  "((__nothrow__ , __leaf__)) __attribute__ ((__nonnull__ "
                  "(1, 2)));"),
            "void *memcpy(void *, void *, size_t)");
  EXPECT_EQ(Spell("int sqlite3_open(const char *filename, struct sqlite3 "
                  "**ppDb)"),
            "int sqlite3_open(const char *, struct sqlite3 **)");
  EXPECT_EQ(Spell("_Noreturn void abort(void)"), "void abort(void)");
  EXPECT_EQ(Spell("time_t time(time_t *tloc)"), "int64_t time(int64_t *)");
}

TEST(ParseFunctionDeclaration, StructsAreReferencesByTag) {
  v1::FunctionDeclaration f =
      Parse("struct tm *localtime(const time_t *t)");
  const v1::TypeDescriptor& result = f.type().return_type();
  ASSERT_TRUE(result.has_pointer());
  EXPECT_EQ(result.pointer().pointee().named(), "struct tm");
  EXPECT_EQ(Spell("FILE *fopen(const char *, const char *)"),
            "FILE *fopen(const char *, const char *)");
}

struct ErrorCase {
  const char* source;
  const char* message;
};

// A test-listing-safe label: the source with everything but letters and
// digits as '_', shortened.
void PrintTo(const ErrorCase& c, std::ostream* os) {
  std::string label;
  for (const char* p = c.source; *p != '\0' && label.size() < 40; ++p) {
    label += absl::ascii_isalnum(static_cast<unsigned char>(*p)) ? *p : '_';
  }
  *os << label;
}

class ParseErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ParseErrorTest, SaysWhereAndWhatWasExpected) {
  absl::Status status = ErrorOf(GetParam().source);
  ASSERT_FALSE(status.ok()) << GetParam().source;
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_DECLARATION_INVALID);
  EXPECT_EQ(std::string(status.message()), GetParam().message) << GetParam().source;
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ParseErrorTest,
    ::testing::Values(
        ErrorCase{"double cos(double x y)",
                  "line 1, column 21: expected ')' or ',' after parameter 1, "
                  "found 'y'"},
        ErrorCase{"double cos(double", 
                  "line 1, column 18: expected ')' or ',' after parameter 1, "
                  "found end of input"},
        ErrorCase{"foo_t f(int)", "line 1, column 1: unknown type name 'foo_t'"},
        ErrorCase{"int f(foo_t x)", "line 1, column 7: unknown type name 'foo_t'"},
        ErrorCase{"int f(int, foo_t)",
                  "line 1, column 12: unknown type name 'foo_t'"},
        ErrorCase{"", "line 1, column 1: expected a function prototype such as "
                      "'double cos(double)', found end of input"},
        ErrorCase{"int x", "line 1, column 5: expected a function prototype "
                           "such as 'double cos(double)', found a declaration "
                           "of 'x' with type 'int'"},
        ErrorCase{"int f(int); int g(int);",
                  "line 1, column 13: expected end of input after the "
                  "prototype, found 'int'"},
        ErrorCase{"int f(int) int",
                  "line 1, column 12: expected end of input after the "
                  "prototype, found 'int'"},
        ErrorCase{"int f(int) { return 0; }",
                  "line 1, column 12: expected end of input after the "
                  "prototype, found '{'"},
        ErrorCase{"short char f(void)",
                  "line 1, column 7: cannot combine 'char' with 'short'"},
        ErrorCase{"unsigned signed f(void)",
                  "line 1, column 10: cannot combine 'signed' with "
                  "'unsigned'"},
        ErrorCase{"long long long f(void)",
                  "line 1, column 11: cannot combine 'long' with 'long long'"},
        ErrorCase{"int f(void, int)",
                  "line 1, column 7: parameter 1 has type void; only '(void)' "
                  "alone means no parameters"},
        ErrorCase{"int f(int, void)",
                  "line 1, column 12: parameter 2 has type void; only '(void)' "
                  "alone means no parameters"},
        ErrorCase{"int f(int,)",
                  "line 1, column 11: expected parameter 2 after ',', found "
                  "')'"},
        ErrorCase{"int f(..., int)",
                  "line 1, column 10: expected ')' after '...', found ','"},
        ErrorCase{"int (f(int)", "line 1, column 12: expected ')' to close "
                                 "the declarator, found end of input"},
        ErrorCase{"int f(int a[0])",
                  "line 1, column 13: the array size 0 is not positive"},
        ErrorCase{"int f(int a[n])",
                  "line 1, column 13: 'n' is not an enumerator or an integer "
                  "constant"},
        ErrorCase{"int f(int) /* open",
                  "line 1, column 12: unterminated comment: expected '*/'"},
        ErrorCase{"int f(int @)", "line 1, column 11: unexpected character '@'"},
        ErrorCase{"#include <math.h>\ndouble cos(double);",
                  "line 1, column 1: preprocessor directives are not "
                  "supported: pass declarations after preprocessing (no "
                  "#include or #define)"},
        ErrorCase{"int\n  f(int,\n    double d e)",
                  "line 3, column 14: expected ')' or ',' after parameter 2, "
                  "found 'e'"},
        ErrorCase{"int f(int)(int)",
                  "line 1, column 6: a function cannot return a function; "
                  "return a function pointer"},
        ErrorCase{"int f(int)[3]",
                  "line 1, column 6: a function cannot return an array"},
        ErrorCase{"typedef int myint;",
                  "line 1, column 1: 'typedef' is not allowed here"},
        ErrorCase{"(int)", "line 1, column 1: expected a type, found '('"},
        ErrorCase{"int 3f(int)", "line 1, column 5: expected a name, found "
                                 "'3f'"}));

TEST(ParseFunctionDeclaration, UnsupportedFormsSaySo) {
  absl::Status status = ErrorOf("struct point { int x; } f(void)");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_UNSUPPORTED);
  EXPECT_THAT(status.message(), HasSubstr("line 1, column 1: struct "
                                          "definitions cannot appear in a "
                                          "prototype"));
  status = ErrorOf("static int f(int)");
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_UNSUPPORTED);
}

TEST(ParseFunctionDeclaration, KnownTypesComeIntoScope) {
  absl::StatusOr<Declarations> known = ParseDeclarations(
      "typedef struct point { int x, y; } point_t;"
      "enum color { RED, GREEN };");
  ASSERT_TRUE(known.ok()) << known.status();
  absl::StatusOr<v1::FunctionDeclaration> f = ParseFunctionDeclaration(
      "int f(point_t p, struct point *q, enum color c)", known->types);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->type().parameters(0).type().has_record());
  EXPECT_EQ(f->type().parameters(0).type().record().size(), 8u);
  EXPECT_TRUE(f->type().parameters(1).type().pointer().pointee().has_record());
  EXPECT_TRUE(f->type().parameters(2).type().has_enum_type());
  // Without them, point_t is unknown.
  EXPECT_THAT(ErrorOf("int f(point_t p)").message(),
              HasSubstr("unknown type name 'point_t'"));
}

// --- ParseDeclarations -----------------------------------------------------

TEST(ParseDeclarations, SeveralFunctions) {
  absl::StatusOr<Declarations> d = ParseDeclarations(
      "double cos(double);\n"
      "double sin(double), tan(double);\n"
      "int printf(const char *, ...);\n");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->functions.size(), 4u);
  EXPECT_EQ(d->functions[0].name(), "cos");
  EXPECT_EQ(d->functions[1].name(), "sin");
  EXPECT_EQ(d->functions[2].name(), "tan");
  EXPECT_TRUE(d->functions[3].type().variadic());
  EXPECT_TRUE(d->types.empty());
}

TEST(ParseDeclarations, StructsWithLayout) {
  absl::StatusOr<Declarations> d = ParseDeclarations(
      "struct point { int x, y; };\n"
      "struct rect { struct point min; struct point max; const char *name; "
      "double w[2]; };\n"
      "double area(struct rect r);\n"
      "void move(struct point *p, int dx);\n");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->types.size(), 2u);
  EXPECT_EQ(d->types[0].name(), "struct point");
  const v1::RecordType& point = d->types[0].type().record();
  EXPECT_EQ(point.name(), "point");
  ASSERT_EQ(point.fields_size(), 2);
  EXPECT_EQ(point.fields(1).name(), "y");
  EXPECT_EQ(point.fields(1).offset(), 4u);
  EXPECT_EQ(point.size(), 8u);
  const v1::RecordType& rect = d->types[1].type().record();
  EXPECT_EQ(rect.size(), 40u);
  EXPECT_EQ(rect.fields(2).offset(), 16u);
  EXPECT_EQ(rect.fields(3).offset(), 24u);
  EXPECT_EQ(rect.fields(3).type().array().length(), 2u);
  ASSERT_EQ(d->functions.size(), 2u);
  // By-value uses are the full definition, so they can be called directly.
  EXPECT_EQ(d->functions[0].type().parameters(0).type().record().size(), 40u);
  EXPECT_TRUE(CType::Create(d->functions[0].type().parameters(0).type()).ok());
  EXPECT_EQ(d->functions[1]
                .type()
                .parameters(0)
                .type()
                .pointer()
                .pointee()
                .record()
                .name(),
            "point");
}

TEST(ParseDeclarations, SelfReferentialStructs) {
  absl::StatusOr<Declarations> d = ParseDeclarations(
      "struct node { int value; struct node *next; };\n"
      "int sum(struct node *list);\n");
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::RecordType& node = d->types[0].type().record();
  EXPECT_EQ(node.fields(1).type().pointer().pointee().named(), "struct node");
  EXPECT_EQ(node.size(), 16u);
}

TEST(ParseDeclarations, TypedefsUnionsAndEnums) {
  absl::StatusOr<Declarations> d = ParseDeclarations(
      "typedef unsigned long ulong;\n"
      "typedef struct { float re, im; } complex_t;\n"
      "typedef union value { int i; double d; char *s; } value_t;\n"
      "enum color { RED, GREEN = 5, BLUE, ALPHA = 1 << 4 | GREEN };\n"
      "typedef enum color color_t;\n"
      "typedef int (*compare_fn)(const void *, const void *);\n"
      "typedef struct sqlite3 sqlite3;\n"
      "ulong f(complex_t c, value_t v, color_t k, compare_fn cmp, sqlite3 **db);\n");
  ASSERT_TRUE(d.ok()) << d.status();
  std::vector<std::string> names;
  for (const v1::TypeDeclaration& t : d->types) names.push_back(t.name());
  EXPECT_THAT(names, ::testing::ElementsAre("ulong", "complex_t", "union value",
                                            "value_t", "enum color", "color_t",
                                            "compare_fn", "sqlite3"));
  EXPECT_EQ(d->types[0].type().scalar(), v1::SCALAR_KIND_UNSIGNED_LONG);
  EXPECT_EQ(d->types[1].type().record().size(), 8u);
  const v1::RecordType& value = d->types[2].type().record();
  EXPECT_EQ(value.kind(), v1::RECORD_KIND_UNION);
  EXPECT_EQ(value.size(), 8u);
  const v1::EnumType& color = d->types[4].type().enum_type();
  ASSERT_EQ(color.constants_size(), 4);
  EXPECT_EQ(color.constants(1).value(), 5);
  EXPECT_EQ(color.constants(2).name(), "BLUE");
  EXPECT_EQ(color.constants(2).value(), 6);
  EXPECT_EQ(color.constants(3).value(), 21);
  EXPECT_EQ(color.underlying(), v1::SCALAR_KIND_INT);

  ASSERT_EQ(d->functions.size(), 1u);
  const v1::FunctionType& f = d->functions[0].type();
  EXPECT_EQ(f.return_type().scalar(), v1::SCALAR_KIND_UNSIGNED_LONG);
  EXPECT_TRUE(f.parameters(0).type().has_record());
  EXPECT_TRUE(f.parameters(1).type().has_record());
  EXPECT_TRUE(f.parameters(2).type().has_enum_type());
  EXPECT_TRUE(f.parameters(3).type().has_function_pointer());
  EXPECT_EQ(TypeName(f.parameters(4).type()), "struct sqlite3 **");
}

TEST(ParseDeclarations, PackedAlignedAndAnonymousMembers) {
  absl::StatusOr<Declarations> d = ParseDeclarations(
      "struct __attribute__((packed)) p { char c; int i; };\n"
      "struct a { char c; } __attribute__((aligned(16)));\n"
      "struct tagged { int kind; union { int i; float f; }; };\n");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->types[0].type().record().size(), 5u);
  EXPECT_TRUE(d->types[0].type().record().packed());
  EXPECT_EQ(d->types[1].type().record().size(), 16u);
  EXPECT_EQ(d->types[1].type().record().computed_alignment(), 16u);
  const v1::RecordType& tagged = d->types[2].type().record();
  ASSERT_EQ(tagged.fields_size(), 2);
  EXPECT_EQ(tagged.fields(1).name(), "");
  EXPECT_EQ(tagged.fields(1).offset(), 4u);
}

TEST(ParseDeclarations, MemberLevelAlignedPackedAndAlignas) {
  absl::StatusOr<Declarations> d = ParseDeclarations(
      "struct a { char c; int x __attribute__((aligned(8))), y; };\n"
      "struct b { char c; __attribute__((aligned(8))) int x, y; };\n"
      "struct c { char c; _Alignas(16) char t; int p __attribute__((packed)); };\n"
      "struct d { char c; int b : 3 __attribute__((aligned(4))); "
      "int : 2 __attribute__((aligned(2))); int e : 1; };\n");
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::RecordType& a = d->types[0].type().record();
  EXPECT_EQ(a.fields(1).alignment(), 8u);
  EXPECT_EQ(a.fields(1).offset(), 8u);
  EXPECT_EQ(a.fields(2).alignment(), 0u);  // only the declarator it follows
  EXPECT_EQ(a.fields(2).offset(), 12u);
  EXPECT_EQ(a.size(), 16u);
  const v1::RecordType& b = d->types[1].type().record();
  EXPECT_EQ(b.fields(2).offset(), 16u);  // before the type: every declarator
  EXPECT_EQ(b.size(), 24u);
  const v1::RecordType& c = d->types[2].type().record();
  EXPECT_EQ(c.fields(1).offset(), 16u);
  EXPECT_TRUE(c.fields(2).packed());
  EXPECT_EQ(c.fields(2).offset(), 17u);
  EXPECT_EQ(c.size(), 32u);
  const v1::RecordType& bits = d->types[3].type().record();
  EXPECT_EQ(bits.fields(1).offset() * 8 + bits.fields(1).bit_offset(), 32u);
  EXPECT_EQ(bits.fields(2).offset() * 8 + bits.fields(2).bit_offset(), 48u);
  EXPECT_EQ(bits.fields(3).offset() * 8 + bits.fields(3).bit_offset(), 50u);

  absl::Status status =
      ParseDeclarations("typedef int wide __attribute__((aligned(8)));")
          .status();
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_UNSUPPORTED);
  EXPECT_THAT(status.message(), HasSubstr("put it on the struct member"));
  status = ParseDeclarations("struct e { _Alignas(double) char c; };").status();
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_UNSUPPORTED);
  EXPECT_THAT(status.message(), HasSubstr("_Alignas(8)"));
  status = ParseDeclarations("struct e { int x __attribute__((aligned(3))); };")
               .status();
  EXPECT_THAT(status.message(), HasSubstr("not a power of two"));
}

TEST(ParseDeclarations, UnnamedBitfieldsFlexibleArraysComplexLongDouble) {
  absl::StatusOr<Declarations> d = ParseDeclarations(
      "struct h { char c; int : 3, : 0; char d; };"
      "struct f { int n; double data[]; };"
      "long double _Complex g(long double _Complex);");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->types.size(), 2u);
  const v1::RecordType& h = d->types[0].type().record();
  ASSERT_EQ(h.fields_size(), 4);
  EXPECT_EQ(h.fields(1).bit_width(), 3u);
  EXPECT_TRUE(h.fields(2).zero_width_bitfield());
  EXPECT_EQ(h.fields(3).offset(), 4u);
  EXPECT_EQ(h.size(), 5u);
  const v1::RecordType& f = d->types[1].type().record();
  EXPECT_EQ(f.fields(1).type().array().length(), 0u);
  EXPECT_EQ(f.fields(1).offset(), 8u);
  EXPECT_EQ(f.size(), 8u);
  EXPECT_EQ(d->functions[0].type().return_type().scalar(),
            v1::SCALAR_KIND_COMPLEX_LONG_DOUBLE);
  absl::Status status =
      ParseDeclarations("struct b { int n : 0; };").status();
  EXPECT_THAT(status.message(),
              HasSubstr("only an unnamed bitfield may have width 0"));
  status = ParseDeclarations("struct b { double d[]; int n; };").status();
  EXPECT_THAT(status.message(), HasSubstr("must be the last member"));
}

TEST(ParseDeclarations, Errors) {
  auto error = [](absl::string_view source) {
    return ParseDeclarations(source).status();
  };
  absl::Status status = error("double cos(double)\ndouble sin(double);");
  EXPECT_EQ(std::string(status.message()),
            "line 2, column 1: expected ';' after declaration, found 'double'");
  status = error("struct p { int x };");
  EXPECT_EQ(std::string(status.message()),
            "line 1, column 18: expected ';' after member 'x', found '}'");
  status = error("struct p { int x; }; struct p { int y; };");
  EXPECT_EQ(std::string(status.message()), "line 1, column 29: redefinition of 'struct p'");
  status = error("struct q { struct p inner; };");
  EXPECT_EQ(std::string(status.message()),
            "line 1, column 21: member 'inner' has incomplete type 'struct p'");
  status = error("void nothing_here;");
  EXPECT_THAT(status.message(),
              HasSubstr("line 1, column 6: variable 'nothing_here' has "
                        "incomplete type 'void'"));
  status = error("struct bits { double a : 3; };");
  EXPECT_THAT(status.message(),
              HasSubstr("a bitfield must have an integer type"));
  status = error("enum e { A, A };");
  EXPECT_EQ(std::string(status.message()), "line 1, column 13: redefinition of enumerator 'A'");
  EXPECT_TRUE(ParseDeclarations("typedef int t; typedef int t;").ok());
  status = error("typedef int t; typedef long t;");
  EXPECT_EQ(std::string(status.message()),
            "line 1, column 29: conflicting types for typedef 't'");
  status = error("int;");
  EXPECT_EQ(std::string(status.message()),
            "line 1, column 1: the declaration declares nothing: expected a "
            "name");
  status = error("int f(int) { return 1; }");
  EXPECT_THAT(status.message(),
              HasSubstr("line 1, column 12: expected ';' after declaration, "
                        "found '{'"));
  EXPECT_EQ(GetErrorReason(error("enum e { A = 1 / 0 };")),
            v1::ERROR_REASON_DECLARATION_INVALID);
}

TEST(ParseDeclarations, HostileNestingIsRefusedNotCrashed) {
  const std::string parentheses = "int f(int " + std::string(100000, '(') +
                                  "x" + std::string(100000, ')') + ")";
  EXPECT_THAT(std::string(ErrorOf(parentheses).message()),
              HasSubstr("nests more than 64 levels deep"));
  std::string callbacks = "void f(int)";
  for (int i = 0; i < 10000; ++i) callbacks = "void (*)(" + callbacks + ")";
  EXPECT_FALSE(ErrorOf("void g(" + callbacks + ")").ok());
  const std::string stars = "int " + std::string(100000, '*') + "f(void)";
  EXPECT_THAT(std::string(ErrorOf(stars).message()),
              HasSubstr("derives more than 64 types"));
  const std::string minus =
      "enum e { A = " + std::string(100000, '-') + "1 };";
  EXPECT_THAT(std::string(ParseDeclarations(minus).status().message()),
              HasSubstr("nests more than 64 levels deep"));
  std::string structs;
  for (int i = 0; i < 100; ++i) {
    structs += "struct s" + std::to_string(i + 1) + " { struct s" +
               std::to_string(i) + " *p; struct s" + std::to_string(i) +
               " *q; };";
  }
  // Pointers to structs stay references, so this chain is shallow.
  EXPECT_TRUE(ParseDeclarations("struct s0 { int x; };" + structs).ok());
  std::string nested = "struct n0 { int x; };";
  for (int i = 0; i < 40; ++i) {
    nested += "struct n" + std::to_string(i + 1) + " { struct n" +
              std::to_string(i) + " inner; };";
  }
  absl::Status status = ParseDeclarations(nested).status();
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_UNSUPPORTED);
  EXPECT_THAT(std::string(status.message()), HasSubstr("levels deep"));
  std::string typedefs = "typedef int *t0;";
  for (int i = 0; i < 40; ++i) {
    typedefs += "typedef t" + std::to_string(i) + " *t" +
                std::to_string(i + 1) + ";";
  }
  EXPECT_EQ(GetErrorReason(ParseDeclarations(typedefs).status()),
            v1::ERROR_REASON_UNSUPPORTED);
}

TEST(ParseDeclarations, EmptySourceIsNothing) {
  absl::StatusOr<Declarations> d = ParseDeclarations("  // nothing\n ; ");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->functions.empty());
  EXPECT_TRUE(d->types.empty());
}

}  // namespace
}  // namespace ffid::ffi

namespace ffid::ffi {
namespace {

TEST(ParseDeclarations, VariablesAndBitfields) {
  absl::StatusOr<Declarations> parsed = ParseDeclarations(
      "struct flags { unsigned a : 3; int b : 5; long long c : 40; };\n"
      "extern int counter; extern struct flags settings, *current;\n"
      "const char *names[4];");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->variables.size(), 4u);
  EXPECT_EQ(parsed->variables[0].name(), "counter");
  EXPECT_EQ(parsed->variables[0].type().scalar(), v1::SCALAR_KIND_INT);
  EXPECT_EQ(parsed->variables[1].type().record().size(), 8u);
  EXPECT_TRUE(parsed->variables[2].type().has_pointer());
  EXPECT_EQ(parsed->variables[3].type().array().length(), 4u);
  const v1::RecordType& flags = parsed->types[0].type().record();
  EXPECT_EQ(flags.fields(0).bit_width(), 3u);
  EXPECT_EQ(flags.fields(1).offset(), 0u);
  EXPECT_EQ(flags.fields(1).bit_offset(), 3u);
  // 40 bits do not fit after bit 8 of a long long unit? They do: 8 + 40 <= 64.
  EXPECT_EQ(flags.fields(2).offset(), 0u);
  EXPECT_EQ(flags.fields(2).bit_offset(), 8u);
}

TEST(ParseTypeName, NamesOverKnownTypes) {
  absl::StatusOr<Declarations> parsed =
      ParseDeclarations("struct point { int x, y; }; typedef struct point pt;");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  absl::StatusOr<v1::TypeDescriptor> type =
      ParseTypeName("struct point[3]", parsed->types);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ(type->array().length(), 3u);
  EXPECT_EQ(type->array().element().record().size(), 8u);
  type = ParseTypeName("pt *", parsed->types);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_TRUE(type->has_pointer());
  type = ParseTypeName("int[16]", {});
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ(type->array().length(), 16u);
  EXPECT_FALSE(ParseTypeName("int x", {}).ok());
}

TEST(ResolveNamedTypes, ReplacesNamesByTheirDefinitions) {
  absl::StatusOr<Declarations> parsed = ParseDeclarations(
      "struct point { int x, y; }; typedef struct point pt; "
      "enum color { RED, GREEN };");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  v1::TypeDescriptor d;
  d.mutable_array()->mutable_element()->set_named("pt");
  d.mutable_array()->set_length(2);
  ASSERT_TRUE(ResolveNamedTypes(d, parsed->types).ok());
  EXPECT_EQ(d.array().element().record().name(), "point");
  v1::TypeDescriptor e;
  e.set_named("enum color");
  ASSERT_TRUE(ResolveNamedTypes(e, parsed->types).ok());
  EXPECT_EQ(e.enum_type().constants_size(), 2);
  v1::TypeDescriptor spelled;
  spelled.set_named("unsigned long[2]");
  ASSERT_TRUE(ResolveNamedTypes(spelled, {}).ok());
  EXPECT_EQ(spelled.array().element().scalar(),
            v1::SCALAR_KIND_UNSIGNED_LONG);
  v1::TypeDescriptor unknown;
  unknown.set_named("struct nowhere");
  absl::Status status = ResolveNamedTypes(unknown, parsed->types);
  EXPECT_EQ(GetErrorReason(status), v1::ERROR_REASON_TYPE_MISMATCH);
  EXPECT_THAT(std::string(status.message()),
              ::testing::HasSubstr("unknown type 'struct nowhere'"));
  // A plain pointer's pointee stays opaque.
  v1::TypeDescriptor pointer;
  pointer.mutable_pointer()->mutable_pointee()->set_named("struct nowhere");
  EXPECT_TRUE(ResolveNamedTypes(pointer, {}).ok());
}

}  // namespace
}  // namespace ffid::ffi
