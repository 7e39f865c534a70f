// C literals on ffictl's command line, turned into ffid.v1.Value messages.
//
// ffictl takes every argument as text and converts it according to the type
// of the parameter it is for, as a C compiler would convert a literal:
// integers (decimal, 0x hex, 0 octal, 0b binary, a sign, u/l/ll suffixes,
// character literals 'a'), floating point (1.5, 1e-3, 0x1.8p1, inf, nan,
// -0.0, f/l suffixes), strings (a bare word, or a double-quoted C string with
// escapes such as \t, \x41, \u00e9) and NULL for pointers.
//
// Range checks that depend on the width of the parameter's type are left to
// the daemon, which knows the platform the function runs on; only what cannot
// be represented in any value (an integer beyond 64 bits, a float beyond
// float's range) is rejected here.
//
// Everything here is a pure function and thread-safe. Errors carry an
// ErrorInfo reason like the daemon's (TYPE_MISMATCH for text that is not a
// literal of the needed kind, VALUE_OUT_OF_RANGE, ARGUMENT_COUNT,
// UNSUPPORTED).
#ifndef FFID_CLIENTS_CPP_FFICTL_LITERALS_H_
#define FFID_CLIENTS_CPP_FFICTL_LITERALS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ffid/v1/types.pb.h"

namespace ffid::ffictl {

// An integer literal: its magnitude and sign, before any conversion to a
// C type (so that -0x8000000000000000 and 0xffffffffffffffff both fit).
struct IntegerLiteral {
  uint64_t magnitude = 0;
  bool negative = false;
  // The suffix: 'u' given, and 0, 1 or 2 for none, 'l' or 'll'.
  bool unsigned_suffix = false;
  int long_suffix = 0;
};

// Parses a C integer literal or character literal. Fails with TYPE_MISMATCH
// if `text` is not one and VALUE_OUT_OF_RANGE if it needs more than 64 bits.
absl::StatusOr<IntegerLiteral> ParseIntegerLiteral(absl::string_view text);

// Parses a C floating-point literal (or an integer literal, converted).
absl::StatusOr<double> ParseDoubleLiteral(absl::string_view text);
// As ParseDoubleLiteral, rounding to float directly from the text; fails
// with VALUE_OUT_OF_RANGE beyond float's range.
absl::StatusOr<float> ParseFloatLiteral(absl::string_view text);

// Decodes a double-quoted C string literal (quotes included) into UTF-8.
absl::StatusOr<std::string> ParseStringLiteral(absl::string_view text);

// Converts `text` to a value of `type`.
absl::StatusOr<v1::Value> ParseLiteral(absl::string_view text,
                                       const v1::TypeDescriptor& type);

// An argument converted for a call.
struct ConvertedArguments {
  // One value per argument.
  std::vector<v1::Value> values;
  // The C types of the arguments after a variadic function's fixed
  // parameters, inferred from the literals with C's default argument
  // promotions (int or long long, double, const char *, void *).
  std::vector<v1::TypeDescriptor> variadic_types;
};

// Converts `arguments` for a call of `function_name` with signature `type`.
// Errors name the parameter: "parameter 1 'x' of 'cos' (double): ...".
absl::StatusOr<ConvertedArguments> ConvertArguments(
    absl::string_view function_name, const v1::FunctionType& type,
    const std::vector<std::string>& arguments);

// The C spelling of a type: "unsigned long", "const char *", "void *".
std::string TypeName(const v1::TypeDescriptor& type);

}  // namespace ffid::ffictl

#endif  // FFID_CLIENTS_CPP_FFICTL_LITERALS_H_
