// DeclarationScope: the C declarations a session has made.
//
// ParseDeclarations with a session adds its struct, union, enum and typedef
// definitions, function prototypes and `extern` variables here; later
// requests of the session use them by name: `named` type descriptors are
// resolved against them before anything reaches the worker, ResolveFunction
// and ResolveVariable find prototypes and variable types by symbol, and
// later ParseDeclarations see the types. A newer declaration of a name
// shadows an older one. The scope is bounded (kMaxDeclarations) so a client
// cannot grow the daemon without limit. Thread-safe.
#ifndef FFID_SERVER_DECLARATION_SCOPE_H_
#define FFID_SERVER_DECLARATION_SCOPE_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "ffi/declaration_parser.h"
#include "ffid/v1/types.pb.h"

namespace ffid::server {

class DeclarationScope {
 public:
  // The most declarations one session keeps (types, functions, variables).
  static constexpr size_t kMaxDeclarations = 100000;

  DeclarationScope() = default;
  DeclarationScope(const DeclarationScope&) = delete;
  DeclarationScope& operator=(const DeclarationScope&) = delete;

  // A copy of the type declarations, oldest first (the parser's `known`).
  std::vector<v1::TypeDeclaration> types() const;

  // Remembers `declarations`. RESOURCE_LIMIT (and nothing is added) when
  // the scope would exceed kMaxDeclarations.
  [[nodiscard]] absl::Status Add(const ffi::Declarations& declarations);

  // The newest prototype / variable declared with `name`, if any.
  std::optional<v1::FunctionDeclaration> Function(const std::string& name) const;
  std::optional<v1::VariableDeclaration> Variable(const std::string& name) const;

  // Resolves the `named` types in a descriptor or signature against the
  // scope (ffi::ResolveNamedTypes); TYPE_MISMATCH naming an unknown type.
  [[nodiscard]] absl::Status Resolve(v1::TypeDescriptor& descriptor) const;
  [[nodiscard]] absl::Status Resolve(v1::FunctionType& function) const;

 private:
  mutable absl::Mutex mu_;
  std::vector<v1::TypeDeclaration> types_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, v1::FunctionDeclaration> functions_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, v1::VariableDeclaration> variables_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace ffid::server

#endif  // FFID_SERVER_DECLARATION_SCOPE_H_
