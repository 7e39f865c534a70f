// How ffictl prints a call's result: as text (the default) or as JSON.
//
// Text: integers in decimal, floating point in the shortest form that reads
// back to the same value (std::to_chars; a float as a float), bool as
// true/false, strings raw, NULL as NULL, pointers as 0x... followed by their
// handle, void as nothing. JSON: {"result": ...} with numbers as numbers,
// non-finite numbers as the strings "nan", "inf" and "-inf", strings
// escaped, NULL and void as null, pointers as {"address": "0x...",
// "handle": "..."}. Pure functions, thread-safe.
#ifndef FFID_CLIENTS_CPP_FFICTL_FORMAT_H_
#define FFID_CLIENTS_CPP_FFICTL_FORMAT_H_

#include <string>

#include "absl/strings/string_view.h"
#include "ffid/v1/ffid.pb.h"
#include "ffid/v1/types.pb.h"

namespace ffid::ffictl {

// The shortest decimal form of `value` that reads back exactly.
std::string FormatDouble(double value);
std::string FormatFloat(float value);

// `value` as a JSON string literal (quotes included). Bytes that are not
// valid UTF-8 are escaped as \u00XX (their Latin-1 reading).
std::string JsonQuote(absl::string_view value);

// `value`, a value of `type`, as text / as JSON.
std::string FormatValueText(const v1::Value& value,
                            const v1::TypeDescriptor& type);
std::string FormatValueJson(const v1::Value& value,
                            const v1::TypeDescriptor& type);

// A struct, union or array value as a C initializer with designators:
// {.x = 1, .inner = {.a = 2.5}, .name = "text"}, {1, 2, 3}.
std::string FormatInitializer(const v1::Value& value,
                              const v1::TypeDescriptor& type);

// The whole output of a call, newline-terminated (empty for a void result
// without errno). `return_type` may be unset for void.
std::string FormatCallText(const v1::CallResponse& response,
                           const v1::TypeDescriptor& return_type,
                           bool with_errno);
std::string FormatCallJson(const v1::CallResponse& response,
                           const v1::TypeDescriptor& return_type,
                           bool with_errno);

}  // namespace ffid::ffictl

#endif  // FFID_CLIENTS_CPP_FFICTL_FORMAT_H_
