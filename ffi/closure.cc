#include "ffi/closure.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "ffi/errors.h"

namespace ffid::ffi {
namespace {

absl::Status Mismatch(absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_TYPE_MISMATCH, message);
}

absl::Status Unsupported(absl::string_view message) {
  return MakeError(absl::StatusCode::kUnimplemented,
                   v1::ERROR_REASON_UNSUPPORTED, message);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Closure>> Closure::Create(
    std::string name, const v1::FunctionType& type, ClosureHandler& handler,
    uint64_t tag) {
  auto closure = absl::WrapUnique(new Closure());
  closure->name_ = std::move(name);
  closure->type_ = type;
  closure->tag_ = tag;
  closure->handler_ = &handler;
  const std::string& fn = closure->name_;
  if (type.variadic()) {
    return Unsupported(absl::StrCat(
        "callback '", fn,
        "' is variadic; a callback must have a fixed parameter list"));
  }
  v1::TypeDescriptor return_descriptor;
  if (type.has_return_type()) {
    return_descriptor = type.return_type();
  } else {
    return_descriptor.set_scalar(v1::SCALAR_KIND_VOID);
  }
  const std::string return_context =
      absl::StrCat("the return type of callback '", fn, "'");
  if (return_descriptor.has_array()) {
    return Mismatch(absl::StrCat(return_context,
                                 " is an array; C functions cannot return "
                                 "arrays"));
  }
  if (return_descriptor.has_string()) {
    return Unsupported(absl::StrCat(
        return_context,
        " is a string: its characters would not outlive the callback; return "
        "a pointer ('char *' as a pointer type) to memory from Allocate"));
  }
  ASSIGN_OR_RETURN(closure->return_type_,
                   CType::Create(return_descriptor, return_context));
  RETURN_IF_ERROR(
      WithContext(closure->return_type_->by_value_status(), return_context));
  if (type.has_return_type()) {
    *closure->type_.mutable_return_type() =
        closure->return_type_->descriptor();
  }
  for (int i = 0; i < type.parameters_size(); ++i) {
    const v1::Parameter& parameter = type.parameters(i);
    const std::string context =
        parameter.name().empty()
            ? absl::StrCat("parameter ", i + 1, " of callback '", fn, "'")
            : absl::StrCat("parameter ", i + 1, " '", parameter.name(),
                           "' of callback '", fn, "'");
    if (!parameter.has_type()) {
      return Mismatch(absl::StrCat(context, ": the parameter has no type"));
    }
    ASSIGN_OR_RETURN(std::shared_ptr<const CType> parameter_type,
                     CType::Create(DecayArray(parameter.type()), context));
    if (parameter_type->is_void()) {
      return Mismatch(
          absl::StrCat(context, ": a parameter cannot have type void"));
    }
    RETURN_IF_ERROR(WithContext(parameter_type->by_value_status(), context));
    *closure->type_.mutable_parameters(i)->mutable_type() =
        parameter_type->descriptor();
    closure->ffi_parameter_types_.push_back(parameter_type->ffi());
    closure->parameter_types_.push_back(std::move(parameter_type));
  }
  const ffi_status prepared = ffi_prep_cif(
      &closure->cif_, FFI_DEFAULT_ABI,
      static_cast<unsigned int>(closure->ffi_parameter_types_.size()),
      closure->return_type_->ffi(), closure->ffi_parameter_types_.data());
  if (prepared != FFI_OK) {
    return Unsupported(absl::StrCat("libffi cannot prepare callback '",
                                    FunctionTypeName(type, fn), "' (status ",
                                    static_cast<int>(prepared), ")"));
  }
  closure->closure_ = static_cast<ffi_closure*>(
      ffi_closure_alloc(sizeof(ffi_closure), &closure->code_));
  if (closure->closure_ == nullptr) {
    return MakeError(absl::StatusCode::kResourceExhausted,
                     v1::ERROR_REASON_RESOURCE_LIMIT,
                     absl::StrCat("cannot allocate executable memory for "
                                  "callback '",
                                  fn, "'"));
  }
  if (ffi_prep_closure_loc(closure->closure_, &closure->cif_, &Trampoline,
                           closure.get(), closure->code_) != FFI_OK) {
    return Unsupported(absl::StrCat("libffi cannot make a closure for '",
                                    FunctionTypeName(type, fn), "'"));
  }
  return closure;
}

Closure::~Closure() {
  if (closure_ != nullptr) ffi_closure_free(closure_);
}

void Closure::Trampoline(ffi_cif* /*cif*/, void* result, void** arguments,
                         void* self) {
  const Closure& closure = *static_cast<const Closure*>(self);
  closure.handler_->OnCall(closure, result, arguments);
}

absl::StatusOr<std::vector<v1::Value>> Closure::DecodeArguments(
    void** arguments, PointerResolver& resolver) const {
  std::vector<v1::Value> values;
  values.reserve(parameter_types_.size());
  for (size_t i = 0; i < parameter_types_.size(); ++i) {
    absl::StatusOr<v1::Value> value =
        DecodeValue(*parameter_types_[i], arguments[i], resolver);
    if (!value.ok()) {
      return WithContext(value.status(), absl::StrCat("argument ", i + 1,
                                                   " of callback '", name_,
                                                   "'"));
    }
    values.push_back(*std::move(value));
  }
  return values;
}

absl::Status Closure::EncodeResult(const v1::Value& value,
                                   PointerResolver& resolver,
                                   std::string* bytes) const {
  bytes->clear();
  const std::string context =
      absl::StrCat("the result of callback '", name_, "'");
  if (return_type_->is_void()) {
    if (value.kind_case() != v1::Value::KIND_NOT_SET) {
      return Mismatch(absl::StrCat(context,
                                   ": the callback returns void, but a value "
                                   "was given"));
    }
    return absl::OkStatus();
  }
  // Aligned scratch: EncodeValue writes at the type's alignment.
  CallArena arena;
  void* scratch = arena.Allocate(return_type_->size(),
                                 std::max<size_t>(return_type_->alignment(),
                                                  alignof(ffi_arg)));
  RETURN_IF_ERROR(
      EncodeValue(*return_type_, value, scratch, resolver, arena, context));
  bytes->assign(static_cast<const char*>(scratch), return_type_->size());
  return absl::OkStatus();
}

void Closure::WriteResultBytes(const std::string& bytes, void* result) const {
  if (return_type_->is_void()) return;
  const size_t size = return_type_->size();
  std::string value = bytes;
  value.resize(size, '\0');
  const ScalarInfo* info = return_type_->scalar();
  const bool integral =
      info != nullptr && !info->is_floating && size < sizeof(ffi_arg);
  if (!integral) {
    std::memcpy(result, value.data(), size);
    return;
  }
  // libffi reads integers narrower than a register as a whole ffi_arg,
  // extended by the type's signedness.
  ffi_arg widened = 0;
  switch (size) {
    case 1: {
      uint8_t v;
      std::memcpy(&v, value.data(), 1);
      widened = info->is_signed ? static_cast<ffi_arg>(static_cast<int8_t>(v))
                                : v;
      break;
    }
    case 2: {
      uint16_t v;
      std::memcpy(&v, value.data(), 2);
      widened = info->is_signed
                    ? static_cast<ffi_arg>(static_cast<int16_t>(v))
                    : v;
      break;
    }
    default: {
      uint32_t v;
      std::memcpy(&v, value.data(), 4);
      widened = info->is_signed
                    ? static_cast<ffi_arg>(static_cast<int32_t>(v))
                    : v;
      break;
    }
  }
  std::memcpy(result, &widened, sizeof(widened));
}

}  // namespace ffid::ffi
