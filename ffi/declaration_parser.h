// The C declaration parser: one parser for every client (cffi's `cdef`).
//
// Turns C source into type descriptors. This version parses function
// prototypes over scalars, pointers and strings; its grammar (declaration
// specifiers, declarators with pointers, arrays and function pointers) is the
// one the struct/union/enum/typedef support extends. Stateless and
// thread-safe. Errors are DECLARATION_INVALID with "line L, column C:
// expected X, found Y".
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
};

// Parses a sequence of declarations, each ending in ';'.
absl::StatusOr<Declarations> ParseDeclarations(absl::string_view source);

// Parses exactly one function prototype; the trailing ';' is optional.
absl::StatusOr<v1::FunctionDeclaration> ParseFunctionDeclaration(
    absl::string_view source);

}  // namespace ffid::ffi

#endif  // FFID_FFI_DECLARATION_PARSER_H_
