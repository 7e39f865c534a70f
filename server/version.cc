#include "server/version.h"

#ifndef FFID_VERSION
#error "FFID_VERSION must be defined by the build (server/CMakeLists.txt)"
#endif

namespace ffid::server {

absl::string_view Version() { return FFID_VERSION; }

}  // namespace ffid::server
