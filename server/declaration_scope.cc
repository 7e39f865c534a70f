#include "server/declaration_scope.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "ffi/errors.h"

namespace ffid::server {

std::vector<v1::TypeDeclaration> DeclarationScope::types() const {
  absl::MutexLock lock(&mu_);
  return types_;
}

absl::Status DeclarationScope::Add(const ffi::Declarations& declarations) {
  absl::MutexLock lock(&mu_);
  const size_t adding = declarations.types.size() +
                        declarations.functions.size() +
                        declarations.variables.size();
  const size_t held = types_.size() + functions_.size() + variables_.size();
  if (held + adding > kMaxDeclarations) {
    return MakeError(absl::StatusCode::kResourceExhausted,
                     v1::ERROR_REASON_RESOURCE_LIMIT,
                     absl::StrCat("the session holds ", held,
                                  " declarations; adding ", adding,
                                  " would exceed the limit of ",
                                  kMaxDeclarations));
  }
  types_.insert(types_.end(), declarations.types.begin(),
                declarations.types.end());
  for (const v1::FunctionDeclaration& function : declarations.functions) {
    functions_[function.name()] = function;
  }
  for (const v1::VariableDeclaration& variable : declarations.variables) {
    variables_[variable.name()] = variable;
  }
  return absl::OkStatus();
}

std::optional<v1::FunctionDeclaration> DeclarationScope::Function(
    const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = functions_.find(name);
  if (it == functions_.end()) return std::nullopt;
  return it->second;
}

std::optional<v1::VariableDeclaration> DeclarationScope::Variable(
    const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = variables_.find(name);
  if (it == variables_.end()) return std::nullopt;
  return it->second;
}

absl::Status DeclarationScope::Resolve(v1::TypeDescriptor& descriptor) const {
  absl::MutexLock lock(&mu_);
  return ffi::ResolveNamedTypes(descriptor, types_);
}

absl::Status DeclarationScope::Resolve(v1::FunctionType& function) const {
  absl::MutexLock lock(&mu_);
  return ffi::ResolveNamedTypes(function, types_);
}

}  // namespace ffid::server
