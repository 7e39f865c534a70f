// The daemon's version: CMake's project version (CMakeLists.txt,
// `project(ffid VERSION ...)`), baked into this library when it is built, so
// that `ffid --version`, GetServerInfo and `ffictl info` all report the one
// number the build was made from.
//
// Thread-safe (a constant).
#ifndef FFID_SERVER_VERSION_H_
#define FFID_SERVER_VERSION_H_

#include "absl/strings/string_view.h"

namespace ffid::server {

// "MAJOR.MINOR.PATCH", e.g. "0.1.0". Points at static storage.
absl::string_view Version();

}  // namespace ffid::server

#endif  // FFID_SERVER_VERSION_H_
