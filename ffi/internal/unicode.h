// Small Unicode conversions for C strings in non-UTF-8 encodings.
//
// Pure functions over caller-owned buffers; thread-safe.
#ifndef FFID_FFI_INTERNAL_UNICODE_H_
#define FFID_FFI_INTERNAL_UNICODE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace ffid::ffi::internal {

// Decodes the code point starting at `text[pos]` into `*code_point` and
// returns its length in bytes, or 0 if the bytes there are not well-formed
// UTF-8 (truncated, overlong, a surrogate, or beyond U+10FFFF).
size_t NextCodePoint(absl::string_view text, size_t pos, char32_t* code_point);

// True if `text` is well-formed UTF-8.
bool IsValidUtf8(absl::string_view text);

// Appends `code_point` (a Unicode scalar value) to `out` as UTF-8.
void AppendUtf8(char32_t code_point, std::string& out);

// True for U+0000..U+10FFFF excluding the surrogates.
bool IsScalarValue(char32_t code_point);

}  // namespace ffid::ffi::internal

#endif  // FFID_FFI_INTERNAL_UNICODE_H_
