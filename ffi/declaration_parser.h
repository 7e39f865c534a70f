// The C declaration parser: one parser for every client (cffi's `cdef`).
//
// Turns C source (after preprocessing) into type descriptors: function
// prototypes over every scalar, pointers, strings, arrays, function pointers
// and `...`; struct, union and enum definitions laid out for this platform
// (records carry their sizes and offsets); typedefs. `char *` becomes a
// UTF-8 StringType, `wchar_t *` / `char16_t *` / `char32_t *` wide ones, and
// array and function parameters decay to pointers. A by-value use of a
// complete struct carries its whole definition; a pointer to a struct, or a
// struct not yet defined, refers to it by tag (`named: "struct node"`).
// Nesting is bounded so hostile input cannot exhaust the stack. Stateless and
// thread-safe. Syntax errors are DECLARATION_INVALID with "line L, column C:
// expected X, found 'Y'"; valid C that ffid cannot represent yet (flexible
// array members, `static` declarations) is UNSUPPORTED, also with a position.
// Variables (with or without `extern`) are declarations of globals.
#ifndef FFID_FFI_DECLARATION_PARSER_H_
#define FFID_FFI_DECLARATION_PARSER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ffid/v1/types.pb.h"

namespace ffid::ffi {

struct Declarations {
  std::vector<v1::FunctionDeclaration> functions;
  std::vector<v1::TypeDeclaration> types;
  std::vector<v1::VariableDeclaration> variables;
};

// Parses a sequence of declarations, each ending in ';'.
absl::StatusOr<Declarations> ParseDeclarations(absl::string_view source);

// Parses exactly one function prototype; the trailing ';' is optional.
absl::StatusOr<v1::FunctionDeclaration> ParseFunctionDeclaration(
    absl::string_view source);

// As above, with the types of earlier declarations in scope: typedef names
// become type names and "struct X" / "union X" / "enum X" complete the tags,
// e.g. the `types` a session's earlier ParseDeclarations returned.
absl::StatusOr<Declarations> ParseDeclarations(
    absl::string_view source, const std::vector<v1::TypeDeclaration>& known);
absl::StatusOr<v1::FunctionDeclaration> ParseFunctionDeclaration(
    absl::string_view source, const std::vector<v1::TypeDeclaration>& known);

// Parses a C type name over `known` types: "int[16]", "struct point *",
// "point_t". DECLARATION_INVALID with a position when it is not one.
absl::StatusOr<v1::TypeDescriptor> ParseTypeName(
    absl::string_view source, const std::vector<v1::TypeDeclaration>& known);

// Replaces every `named` reference that needs its definition (by value, in
// arrays and records, behind IN/OUT/INOUT pointers) by the newest of `known`
// with that name, or else by the type the name spells as a C type name
// ("int[4]"). Plain pointers keep their pointees as they are (opaque).
// TYPE_MISMATCH naming the type when a name is unknown.
[[nodiscard]] absl::Status ResolveNamedTypes(
    v1::TypeDescriptor& descriptor,
    const std::vector<v1::TypeDeclaration>& known);
[[nodiscard]] absl::Status ResolveNamedTypes(
    v1::FunctionType& function, const std::vector<v1::TypeDeclaration>& known);

}  // namespace ffid::ffi

#endif  // FFID_FFI_DECLARATION_PARSER_H_
