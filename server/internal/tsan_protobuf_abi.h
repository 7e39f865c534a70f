// Force-included into every C++ file of ThreadSanitizer builds (see the
// top-level CMakeLists.txt); not for use otherwise.
//
// protobuf's map_field.h gives MapFieldBase two more members, ahead of its
// others, when __SANITIZE_THREAD__ is defined. Debian's libprotobuf was
// built without ThreadSanitizer, so in a tsan build the inline code of every
// map field (ffid's own Record.fields and CallResponse.out_values, and
// google.protobuf.Struct, which conformance_test reads) disagreed with the
// library's about where the map's members are: conformance_test crashed
// while listing its tests, and anything of libprotobuf's that walks a map
// by reflection (ShortDebugString) would have read the wrong words. Parsing
// map_field.h once with the macro hidden lays the class out as the library
// does. The headers that read the macro for their own purposes
// (libstdc++'s _GLIBCXX_TSAN, abseil's ABSL_HAVE_THREAD_SANITIZER) are
// included first, with it visible; it is visible again afterwards.
#ifndef FFID_SERVER_INTERNAL_TSAN_PROTOBUF_ABI_H_
#define FFID_SERVER_INTERNAL_TSAN_PROTOBUF_ABI_H_

#include <cstddef>

#include "absl/base/config.h"

#pragma push_macro("__SANITIZE_THREAD__")
#undef __SANITIZE_THREAD__
#include "google/protobuf/map_field.h"
#pragma pop_macro("__SANITIZE_THREAD__")

#endif  // FFID_SERVER_INTERNAL_TSAN_PROTOBUF_ABI_H_
