#include "ffi/function.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
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

absl::Status ArgumentCount(absl::string_view message) {
  return InvalidArgumentError(v1::ERROR_REASON_ARGUMENT_COUNT, message);
}

std::string Plural(size_t count, absl::string_view noun) {
  return absl::StrCat(count, " ", noun, count == 1 ? "" : "s");
}

std::string ParameterContext(size_t index, const std::string& parameter,
                             const std::string& function) {
  if (parameter.empty()) {
    return absl::StrCat("parameter ", index + 1, " of '", function, "'");
  }
  return absl::StrCat("parameter ", index + 1, " '", parameter, "' of '",
                      function, "'");
}

const char* FfiStatusName(ffi_status status) {
  switch (status) {
    case FFI_OK:
      return "FFI_OK";
    case FFI_BAD_TYPEDEF:
      return "FFI_BAD_TYPEDEF";
    case FFI_BAD_ABI:
      return "FFI_BAD_ABI";
    case FFI_BAD_ARGTYPE:
      return "FFI_BAD_ARGTYPE";
  }
  return "unknown ffi_status";
}

std::shared_ptr<const CType> BuiltinType(v1::ScalarKind kind) {
  v1::TypeDescriptor descriptor;
  descriptor.set_scalar(kind);
  return *CType::Create(descriptor);
}

// C's default argument promotions, which a variadic callee expects: float
// becomes double and integers narrower than int become int. Returns nullptr
// when `type` is passed as it is.
std::shared_ptr<const CType> PromotedType(const CType& type) {
  static const std::shared_ptr<const CType>* const kInt =
      new std::shared_ptr<const CType>(BuiltinType(v1::SCALAR_KIND_INT));
  static const std::shared_ptr<const CType>* const kDouble =
      new std::shared_ptr<const CType>(BuiltinType(v1::SCALAR_KIND_DOUBLE));
  const ScalarInfo* info = type.scalar();
  if (info == nullptr) return nullptr;
  if (type.descriptor().has_scalar() &&
      type.descriptor().scalar() == v1::SCALAR_KIND_FLOAT) {
    return *kDouble;
  }
  const bool is_bool = type.descriptor().has_scalar() &&
                       type.descriptor().scalar() == v1::SCALAR_KIND_BOOL;
  if ((info->is_integer || is_bool) && info->size < sizeof(int)) return *kInt;
  return nullptr;
}

int64_t LoadSmallInteger(const void* src, const ScalarInfo& info) {
  switch (info.size) {
    case 1: {
      uint8_t v;
      std::memcpy(&v, src, 1);
      return info.is_signed ? static_cast<int8_t>(v) : v;
    }
    case 2: {
      uint16_t v;
      std::memcpy(&v, src, 2);
      return info.is_signed ? static_cast<int16_t>(v) : v;
    }
    default: {
      uint32_t v;
      std::memcpy(&v, src, 4);
      return info.is_signed ? static_cast<int32_t>(v) : v;
    }
  }
}

void Promote(const CType& from, const void* src, void* dest) {
  if (from.scalar()->is_floating) {
    float f;
    std::memcpy(&f, src, sizeof(f));
    double d = f;
    std::memcpy(dest, &d, sizeof(d));
    return;
  }
  int i = static_cast<int>(LoadSmallInteger(src, *from.scalar()));
  std::memcpy(dest, &i, sizeof(i));
}

// libffi returns integers narrower than ffi_arg widened to a whole ffi_arg.
bool IsWidenedReturn(const CType& type) {
  const ScalarInfo* info = type.scalar();
  if (info == nullptr || info->is_floating || type.is_void()) return false;
  return info->size < sizeof(ffi_arg);
}

// Narrows a widened return value to the type's own width by value, not by
// byte position, so it is right on either byte order.
void NarrowReturn(const void* widened, size_t size, void* dest) {
  ffi_arg raw;
  std::memcpy(&raw, widened, sizeof(raw));
  switch (size) {
    case 1: {
      uint8_t v = static_cast<uint8_t>(raw);
      std::memcpy(dest, &v, 1);
      break;
    }
    case 2: {
      uint16_t v = static_cast<uint16_t>(raw);
      std::memcpy(dest, &v, 2);
      break;
    }
    case 4: {
      uint32_t v = static_cast<uint32_t>(raw);
      std::memcpy(dest, &v, 4);
      break;
    }
    default:
      std::memcpy(dest, &raw, size);
      break;
  }
}

// Room for a value of `type` that libffi may also read or write as a whole
// ffi_arg.
void* ArgumentSlot(const CType& type, CallArena& arena) {
  // Rounded up to whole eightbytes: libffi moves a register-passed
  // aggregate 8 bytes at a time.
  const size_t size = std::max(type.size(), sizeof(ffi_arg));
  return arena.Allocate((size + 7) / 8 * 8,
                        std::max<size_t>(type.alignment(), alignof(ffi_arg)));
}

// libffi 3.4 copies a register-passed struct whose first eightbyte is
// INTEGER with one memcpy of its whole size; when that eightbyte gets the
// last general register (r9) the copy runs into the first SSE register's
// slot and overwrites an argument already there. Such an argument is
// passed as its eightbytes instead, which the ABI treats identically as
// long as all of them get registers (they do: that is why it was r9).
struct SplitPlan {
  bool split = false;
  // The arguments libffi is given, and where each comes from: (argument
  // index, byte offset into that argument's slot).
  std::vector<ffi_type*> types;
  std::vector<std::pair<size_t, size_t>> sources;
  // How many of `types` are fixed (for ffi_prep_cif_var).
  size_t fixed = 0;
};

// `types` are all arguments' types; the first `fixed_ffi.size()` are the
// fixed parameters, passed to libffi as `fixed_ffi` says.
SplitPlan PlanSplit(const CType& return_type,
                    const std::vector<const CType*>& types,
                    const std::vector<ffi_type*>& fixed_ffi) {
  SplitPlan plan;
  const size_t fixed = fixed_ffi.size();
  int gpr = 0, sse = 0;
  if (return_type.ffi()->type == FFI_TYPE_STRUCT &&
      EightbyteClasses(return_type).empty()) {
    gpr = 1;  // the hidden pointer to the result
  }
  for (size_t i = 0; i < types.size(); ++i) {
    const CType& t = *types[i];
    const std::string classes = EightbyteClasses(t);
    const int ngpr =
        static_cast<int>(std::count(classes.begin(), classes.end(), 'I'));
    const int nsse =
        static_cast<int>(std::count(classes.begin(), classes.end(), 'S'));
    const bool in_registers =
        !classes.empty() && gpr + ngpr <= 6 && sse + nsse <= 8;
    ffi_type* ffi = i < fixed ? fixed_ffi[i] : t.ffi();
    if (in_registers && t.descriptor().has_record() && classes[0] == 'I' &&
        t.size() > 8 && gpr == 5) {
      plan.split = true;
      plan.types.push_back(&ffi_type_uint64);
      plan.sources.emplace_back(i, 0);
      if (classes.size() > 1 && classes[1] == 'S') {
        // Always a double: libffi refuses float as a variadic argument,
        // and the slot is whole eightbytes, so reading 8 bytes is safe.
        plan.types.push_back(&ffi_type_double);
        plan.sources.emplace_back(i, 8);
      }
    } else {
      plan.types.push_back(ffi);
      plan.sources.emplace_back(i, 0);
    }
    if (i + 1 == fixed) plan.fixed = plan.types.size();
    if (in_registers) {
      gpr += ngpr;
      sse += nsse;
    }
  }
  return plan;
}

// The type of a variadic argument given without one, from its value's kind
// as C's default promotions would leave it: int (long long when it does not
// fit), unsigned int (unsigned long long), double, long double, const char *
// for text, void * for pointers and NULL.
absl::StatusOr<v1::TypeDescriptor> InferVariadicType(const v1::Value& value,
                                                     absl::string_view context) {
  v1::TypeDescriptor type;
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      type.set_scalar(v1::SCALAR_KIND_INT);
      return type;
    case v1::Value::kIntValue:
      type.set_scalar(value.int_value() >= INT32_MIN &&
                              value.int_value() <= INT32_MAX
                          ? v1::SCALAR_KIND_INT
                          : v1::SCALAR_KIND_LONG_LONG);
      return type;
    case v1::Value::kUintValue:
      type.set_scalar(value.uint_value() <= UINT32_MAX
                          ? v1::SCALAR_KIND_UNSIGNED_INT
                          : v1::SCALAR_KIND_UNSIGNED_LONG_LONG);
      return type;
    case v1::Value::kDoubleValue:
      type.set_scalar(v1::SCALAR_KIND_DOUBLE);
      return type;
    case v1::Value::kLongDoubleValue:
    case v1::Value::kLongDouble:
      type.set_scalar(v1::SCALAR_KIND_LONG_DOUBLE);
      return type;
    case v1::Value::kStringValue:
    case v1::Value::kBytesValue:
      type.mutable_string()->set_is_const(true);
      return type;
    case v1::Value::kPointerValue:
    case v1::Value::kNullValue:
      type.mutable_pointer();
      return type;
    default:
      break;
  }
  return InvalidArgumentError(
      v1::ERROR_REASON_TYPE_MISMATCH,
      absl::StrCat(context,
                   ": the type of this variadic argument cannot be inferred "
                   "from its value; give it in variadic_types"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreparedFunction>> PreparedFunction::Create(
    std::string name, const v1::FunctionType& type, void (*address)()) {
  if (address == nullptr) {
    return InvalidArgumentError(
        v1::ERROR_REASON_INVALID_REQUEST,
        absl::StrCat("function '", name, "' has a NULL address"));
  }
  auto function = absl::WrapUnique(new PreparedFunction());
  function->name_ = std::move(name);
  function->type_ = type;
  function->address_ = address;
  const std::string& fn = function->name_;

  v1::TypeDescriptor return_descriptor;
  if (type.has_return_type()) {
    return_descriptor = type.return_type();
  } else {
    return_descriptor.set_scalar(v1::SCALAR_KIND_VOID);
  }
  const std::string return_context =
      absl::StrCat("the return type of '", fn, "'");
  if (return_descriptor.has_array()) {
    return Mismatch(absl::StrCat(return_context, " is the array '",
                                 TypeName(return_descriptor),
                                 "'; C functions cannot return arrays"));
  }
  ASSIGN_OR_RETURN(function->return_type_,
                   CType::Create(return_descriptor, return_context));
  RETURN_IF_ERROR(
      WithContext(function->return_type_->by_value_status(), return_context));
  if (type.has_return_type()) {
    *function->type_.mutable_return_type() =
        function->return_type_->descriptor();
  }

  for (int i = 0; i < type.parameters_size(); ++i) {
    const v1::Parameter& parameter = type.parameters(i);
    const std::string context = ParameterContext(i, parameter.name(), fn);
    if (!parameter.has_type()) {
      return Mismatch(absl::StrCat(context, ": the parameter has no type"));
    }
    ASSIGN_OR_RETURN(std::shared_ptr<const CType> parameter_type,
                     CType::Create(DecayArray(parameter.type()), context));
    if (parameter_type->is_void()) {
      return Mismatch(absl::StrCat(
          context,
          ": a parameter cannot have type void (a function without "
          "parameters has an empty parameter list)"));
    }
    RETURN_IF_ERROR(
        WithContext(parameter_type->by_value_status(), context));
    *function->type_.mutable_parameters(i)->mutable_type() =
        parameter_type->descriptor();
    function->parameter_contexts_.push_back(context);
    function->ffi_parameter_types_.push_back(parameter_type->ffi());
    function->parameter_types_.push_back(std::move(parameter_type));
  }

  const unsigned int count =
      static_cast<unsigned int>(function->ffi_parameter_types_.size());
  ffi_status status =
      type.variadic()
          ? ffi_prep_cif_var(&function->cif_, FFI_DEFAULT_ABI, count, count,
                             function->return_type_->ffi(),
                             function->ffi_parameter_types_.data())
          : ffi_prep_cif(&function->cif_, FFI_DEFAULT_ABI, count,
                         function->return_type_->ffi(),
                         function->ffi_parameter_types_.data());
  if (status != FFI_OK) {
    return Unsupported(absl::StrCat("libffi cannot prepare a call to '",
                                    FunctionTypeName(type, fn), "' (",
                                    FfiStatusName(status), ")"));
  }
  if (!type.variadic()) {
    std::vector<const CType*> types;
    for (const auto& t : function->parameter_types_) types.push_back(t.get());
    SplitPlan plan = PlanSplit(*function->return_type_, types,
                               function->ffi_parameter_types_);
    if (plan.split) {
      function->split_ = true;
      function->split_types_ = std::move(plan.types);
      function->split_sources_ = std::move(plan.sources);
      status = ffi_prep_cif(
          &function->split_cif_, FFI_DEFAULT_ABI,
          static_cast<unsigned int>(function->split_types_.size()),
          function->return_type_->ffi(), function->split_types_.data());
      if (status != FFI_OK) {
        return Unsupported(absl::StrCat("libffi cannot prepare a call to '",
                                        FunctionTypeName(type, fn), "' (",
                                        FfiStatusName(status), ")"));
      }
    }
  }
  return function;
}

PreparedFunction::~PreparedFunction() = default;

absl::StatusOr<CallResult> PreparedFunction::Call(
    absl::Span<const v1::Value> arguments,
    absl::Span<const v1::TypeDescriptor> variadic_types,
    PointerResolver& resolver, const CallOptions& options) const {
  return CallWith(arguments, variadic_types, resolver, options);
}

absl::StatusOr<CallResult> PreparedFunction::Call(
    const google::protobuf::RepeatedPtrField<v1::Value>& arguments,
    const google::protobuf::RepeatedPtrField<v1::TypeDescriptor>&
        variadic_types,
    PointerResolver& resolver, const CallOptions& options) const {
  return CallWith(arguments, variadic_types, resolver, options);
}

template <typename Arguments, typename Types>
absl::StatusOr<CallResult> PreparedFunction::CallWith(
    const Arguments& arguments, const Types& variadic_types,
    PointerResolver& resolver, const CallOptions& options) const {
  const size_t fixed = parameter_types_.size();
  const size_t argument_count = static_cast<size_t>(arguments.size());
  const size_t variadic_count = static_cast<size_t>(variadic_types.size());
  if (!type_.variadic()) {
    if (!variadic_types.empty()) {
      return ArgumentCount(absl::StrCat(
          "'", name_, "' is not variadic, but ",
          Plural(variadic_count, "variadic argument type"),
          variadic_count == 1 ? " was" : " were", " given"));
    }
    if (argument_count != fixed) {
      return ArgumentCount(absl::StrCat("'", name_, "' takes ",
                                        Plural(fixed, "argument"), ", got ",
                                        argument_count));
    }
  } else {
    if (argument_count < fixed) {
      return ArgumentCount(absl::StrCat("'", name_, "' takes at least ",
                                        Plural(fixed, "argument"), ", got ",
                                        argument_count));
    }
    if (variadic_count > argument_count - fixed) {
      return ArgumentCount(absl::StrCat(
          "'", name_, "' got ",
          Plural(argument_count - fixed, "variadic argument"), " but ",
          Plural(variadic_count, "variadic argument type"),
          "; give at most one type per variadic argument"));
    }
  }
  // Variadic arguments without a type get the one C would give their
  // value's kind after the default promotions.
  std::vector<v1::TypeDescriptor> inferred;
  if (type_.variadic()) {
    for (size_t index = fixed + variadic_count; index < argument_count;
         ++index) {
      ASSIGN_OR_RETURN(
          v1::TypeDescriptor type,
          InferVariadicType(arguments[static_cast<int>(index)],
                            absl::StrCat("argument ", index + 1,
                                         " (variadic) of '", name_, "'")));
      inferred.push_back(std::move(type));
    }
  }

  CallArena arena;
  absl::InlinedVector<void*, 8> values(argument_count);
  struct OutParameter {
    uint32_t index;
    const CType* type;
    void* address;
  };
  absl::InlinedVector<OutParameter, 2> outs;
  for (size_t i = 0; i < fixed; ++i) {
    const CType& type = *parameter_types_[i];
    void* slot = ArgumentSlot(type, arena);
    const v1::Value& argument = arguments[static_cast<int>(i)];
    RETURN_IF_ERROR(EncodeValue(type, argument, slot, resolver, arena,
                                parameter_contexts_[i]));
    values[i] = slot;
    const v1::TypeDescriptor& d = type.descriptor();
    const v1::Value::KindCase kind = argument.kind_case();
    // Only a temporary ffid made for the call has a value to report; a NULL
    // or the caller's own pointer is the caller's business.
    if (type.pointee() != nullptr &&
        (d.pointer().direction() == v1::POINTER_DIRECTION_OUT ||
         d.pointer().direction() == v1::POINTER_DIRECTION_INOUT) &&
        kind != v1::Value::kNullValue && kind != v1::Value::kPointerValue) {
      void* address;
      std::memcpy(&address, slot, sizeof(address));
      outs.push_back({static_cast<uint32_t>(i), type.pointee(), address});
    }
  }

  ffi_cif variadic_cif;
  ffi_cif* cif = const_cast<ffi_cif*>(&cif_);
  std::vector<std::shared_ptr<const CType>> variadic_ctypes;
  std::vector<ffi_type*> all_types;
  if (type_.variadic()) {
    all_types = ffi_parameter_types_;
    for (size_t j = 0; j < argument_count - fixed; ++j) {
      const size_t index = fixed + j;
      const std::string context =
          absl::StrCat("argument ", index + 1, " (variadic) of '", name_, "'");
      const v1::TypeDescriptor& given =
          j < variadic_count ? variadic_types[static_cast<int>(j)]
                             : inferred[j - variadic_count];
      ASSIGN_OR_RETURN(std::shared_ptr<const CType> type,
                       CType::Create(DecayArray(given), context));
      if (type->is_void()) {
        return Mismatch(
            absl::StrCat(context, ": a variadic argument cannot be void"));
      }
      RETURN_IF_ERROR(WithContext(type->by_value_status(), context));
      void* slot = ArgumentSlot(*type, arena);
      RETURN_IF_ERROR(EncodeValue(*type, arguments[static_cast<int>(index)],
                                  slot, resolver, arena, context));
      std::shared_ptr<const CType> promoted = PromotedType(*type);
      if (promoted != nullptr) {
        void* wide = ArgumentSlot(*promoted, arena);
        Promote(*type, slot, wide);
        slot = wide;
        type = std::move(promoted);
      }
      values[index] = slot;
      all_types.push_back(type->ffi());
      variadic_ctypes.push_back(std::move(type));
    }
    ffi_status status = ffi_prep_cif_var(
        &variadic_cif, FFI_DEFAULT_ABI, static_cast<unsigned int>(fixed),
        static_cast<unsigned int>(all_types.size()), return_type_->ffi(),
        all_types.data());
    if (status != FFI_OK) {
      return Unsupported(absl::StrCat("libffi cannot prepare this call to '",
                                      name_, "' (", FfiStatusName(status),
                                      ")"));
    }
    cif = &variadic_cif;
  }

  // See PlanSplit: prepared once for a fixed signature, per call for a
  // variadic one.
  absl::InlinedVector<void*, 8> split_values;
  ffi_cif split_cif;
  SplitPlan plan;
  const std::vector<std::pair<size_t, size_t>>* sources = nullptr;
  if (split_) {
    sources = &split_sources_;
    cif = const_cast<ffi_cif*>(&split_cif_);
  } else if (type_.variadic()) {
    std::vector<const CType*> types;
    for (const auto& t : parameter_types_) types.push_back(t.get());
    for (const auto& t : variadic_ctypes) types.push_back(t.get());
    plan = PlanSplit(*return_type_, types, ffi_parameter_types_);
    if (plan.split) {
      const auto total = static_cast<unsigned int>(plan.types.size());
      ffi_status status = ffi_prep_cif_var(
          &split_cif, FFI_DEFAULT_ABI, static_cast<unsigned int>(plan.fixed),
          total, return_type_->ffi(), plan.types.data());
      if (status != FFI_OK) {
        return Unsupported(absl::StrCat("libffi cannot prepare this call to '",
                                        name_, "' (", FfiStatusName(status),
                                        ")"));
      }
      cif = &split_cif;
      sources = &plan.sources;
    }
  }
  if (sources != nullptr) {
    for (const auto& [index, offset] : *sources) {
      split_values.push_back(static_cast<char*>(values[index]) + offset);
    }
  }

  void* return_value = ArgumentSlot(*return_type_, arena);
  CallResult result;
  if (options.capture_errno) errno = 0;
  ffi_call(cif, address_, return_value,
           sources != nullptr ? split_values.data() : values.data());
  if (options.capture_errno) result.errno_value = errno;

  if (!return_type_->is_void()) {
    result.has_result = true;
    const void* source = return_value;
    unsigned char narrow[sizeof(ffi_arg)];
    if (IsWidenedReturn(*return_type_)) {
      NarrowReturn(return_value, return_type_->size(), narrow);
      source = narrow;
    }
    const v1::TypeDescriptor& returned = return_type_->descriptor();
    if (returned.has_string() || returned.has_pointer()) {
      std::memcpy(&result.result_address, source, sizeof(void*));
    }
    ASSIGN_OR_RETURN(result.result,
                     DecodeValue(*return_type_, source, resolver));
  }
  for (const OutParameter& out : outs) {
    ASSIGN_OR_RETURN(result.out_values[out.index],
                     DecodeValue(*out.type, out.address, resolver));
  }
  return result;
}

}  // namespace ffid::ffi

namespace ffid::ffi {

namespace {

// How CallColumns passes one parameter (or takes the result).
enum class ColumnSlot : uint8_t {
  kSigned,    // a signed integer or enum of `size` bytes
  kUnsigned,  // an unsigned integer of `size` bytes
  kBool,
  kFloat,
  kDouble,
  kPointer,  // a raw address
  kVoid,     // the result only
};

struct ColumnType {
  ColumnSlot slot = ColumnSlot::kVoid;
  size_t size = 0;
  // The range of an integer parameter.
  int64_t min = 0;
  uint64_t max = 0;
};

// How `type` travels in a column; UNSUPPORTED when it cannot.
absl::StatusOr<ColumnType> ColumnTypeOf(const CType& type,
                                        absl::string_view context) {
  ColumnType column;
  column.size = type.size();
  const v1::TypeDescriptor& d = type.descriptor();
  if (type.is_void()) return column;
  if (d.has_pointer() && type.pointee() == nullptr) {
    column.slot = ColumnSlot::kPointer;
    return column;
  }
  const ScalarInfo* scalar = type.scalar();
  if (scalar != nullptr) {
    if (d.has_scalar() && d.scalar() == v1::SCALAR_KIND_BOOL) {
      column.slot = ColumnSlot::kBool;
      return column;
    }
    if (scalar->ffi == &ffi_type_float) {
      column.slot = ColumnSlot::kFloat;
      return column;
    }
    if (scalar->ffi == &ffi_type_double) {
      column.slot = ColumnSlot::kDouble;
      return column;
    }
    if (scalar->is_integer && scalar->size >= 1 && scalar->size <= 8) {
      const int bits = static_cast<int>(scalar->size * 8);
      if (scalar->is_signed) {
        column.slot = ColumnSlot::kSigned;
        column.max = bits == 64 ? std::numeric_limits<int64_t>::max()
                                : (uint64_t{1} << (bits - 1)) - 1;
        column.min = bits == 64 ? std::numeric_limits<int64_t>::min()
                                : -(int64_t{1} << (bits - 1));
      } else {
        column.slot = ColumnSlot::kUnsigned;
        column.max = bits == 64 ? std::numeric_limits<uint64_t>::max()
                                : (uint64_t{1} << bits) - 1;
      }
      return column;
    }
  }
  return Unsupported(absl::StrCat(
      context, " is '", TypeName(d),
      "': call columns take only integers, bool, enums, float, double and "
      "pointers without a direction; use call steps for this function"));
}

// Which field of a column is used, and its length.
struct ColumnSource {
  const google::protobuf::RepeatedField<int64_t>* ints = nullptr;
  const google::protobuf::RepeatedField<uint64_t>* uints = nullptr;
  const google::protobuf::RepeatedField<double>* doubles = nullptr;
  int size = 0;
  // One element for every call.
  bool single = false;
};

absl::Status ColumnMismatch(absl::string_view context, const ColumnType& type,
                            absl::string_view given) {
  absl::string_view wanted;
  switch (type.slot) {
    case ColumnSlot::kFloat:
    case ColumnSlot::kDouble:
      wanted = "double_values";
      break;
    case ColumnSlot::kPointer:
      wanted = "uint_values (raw addresses)";
      break;
    default:
      wanted = "int_values or uint_values";
      break;
  }
  return Mismatch(absl::StrCat(context, " takes ", wanted, ", not ", given));
}

absl::Status OutOfRange(absl::string_view context, const CType& type,
                        absl::string_view value) {
  return InvalidArgumentError(
      v1::ERROR_REASON_VALUE_OUT_OF_RANGE,
      absl::StrCat(context, ": ", value, " is out of range for '",
                   TypeName(type.descriptor()), "'"));
}

}  // namespace

absl::Status PreparedFunction::ColumnsSupported() const {
  if (type_.variadic()) {
    return Unsupported(absl::StrCat(
        "'", name_, "' is variadic; call columns need a fixed signature"));
  }
  for (size_t i = 0; i < parameter_types_.size(); ++i) {
    RETURN_IF_ERROR(
        ColumnTypeOf(*parameter_types_[i], parameter_contexts_[i]).status());
  }
  return ColumnTypeOf(*return_type_, absl::StrCat("the result of '", name_, "'"))
      .status();
}

absl::Status PreparedFunction::CallColumns(
    absl::Span<const v1::ValueColumn* const> columns, uint32_t count,
    v1::ValueColumn& results, uint32_t& failed_call) const {
  failed_call = count;
  RETURN_IF_ERROR(ColumnsSupported());
  const size_t fixed = parameter_types_.size();
  if (columns.size() != fixed) {
    return ArgumentCount(absl::StrCat("'", name_, "' takes ",
                                      Plural(fixed, "argument"), ", got ",
                                      Plural(columns.size(), "column")));
  }
  absl::InlinedVector<ColumnType, 8> types(fixed);
  absl::InlinedVector<ColumnSource, 8> sources(fixed);
  for (size_t i = 0; i < fixed; ++i) {
    ASSIGN_OR_RETURN(types[i],
                     ColumnTypeOf(*parameter_types_[i], parameter_contexts_[i]));
    const v1::ValueColumn& column = *columns[i];
    ColumnSource& source = sources[i];
    int used = 0;
    if (!column.int_values().empty()) {
      source.ints = &column.int_values();
      source.size = column.int_values_size();
      ++used;
    }
    if (!column.uint_values().empty()) {
      source.uints = &column.uint_values();
      source.size = column.uint_values_size();
      ++used;
    }
    if (!column.double_values().empty()) {
      source.doubles = &column.double_values();
      source.size = column.double_values_size();
      ++used;
    }
    if (count == 0) continue;
    if (used != 1) {
      return InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat("the column of ", parameter_contexts_[i],
                       used == 0 ? " is empty" : " uses more than one field",
                       "; give it exactly one of int_values, uint_values, "
                       "double_values"));
    }
    if (static_cast<uint32_t>(source.size) != count && source.size != 1) {
      return InvalidArgumentError(
          v1::ERROR_REASON_INVALID_REQUEST,
          absl::StrCat("the column of ", parameter_contexts_[i], " has ",
                       source.size, " values for ", count,
                       " calls; give one value per call, or one for all"));
    }
    source.single = source.size == 1;
    const bool floating = types[i].slot == ColumnSlot::kFloat ||
                          types[i].slot == ColumnSlot::kDouble;
    if (floating && source.doubles == nullptr) {
      return ColumnMismatch(parameter_contexts_[i], types[i],
                            source.ints != nullptr ? "int_values"
                                                   : "uint_values");
    }
    if (!floating && source.doubles != nullptr) {
      return ColumnMismatch(parameter_contexts_[i], types[i], "double_values");
    }
  }
  ASSIGN_OR_RETURN(
      const ColumnType returned,
      ColumnTypeOf(*return_type_, absl::StrCat("the result of '", name_, "'")));
  google::protobuf::RepeatedField<int64_t>* int_results = nullptr;
  google::protobuf::RepeatedField<uint64_t>* uint_results = nullptr;
  google::protobuf::RepeatedField<double>* double_results = nullptr;
  switch (returned.slot) {
    case ColumnSlot::kSigned:
    case ColumnSlot::kBool:
      int_results = results.mutable_int_values();
      int_results->Reserve(int_results->size() + static_cast<int>(count));
      break;
    case ColumnSlot::kUnsigned:
    case ColumnSlot::kPointer:
      uint_results = results.mutable_uint_values();
      uint_results->Reserve(uint_results->size() + static_cast<int>(count));
      break;
    case ColumnSlot::kFloat:
    case ColumnSlot::kDouble:
      double_results = results.mutable_double_values();
      double_results->Reserve(double_results->size() + static_cast<int>(count));
      break;
    case ColumnSlot::kVoid:
      break;
  }

  // One 8-byte slot per argument, reused by every call: x86-64 and the
  // other little-endian ABIs libffi reads narrower integers from the low
  // bytes of.
  static_assert(sizeof(void*) <= sizeof(uint64_t));
  absl::InlinedVector<uint64_t, 8> slots(fixed);
  absl::InlinedVector<void*, 8> values(fixed);
  for (size_t i = 0; i < fixed; ++i) values[i] = &slots[i];
  alignas(16) unsigned char return_value[16];
  ffi_cif* cif = const_cast<ffi_cif*>(&cif_);

  for (uint32_t call = 0; call < count; ++call) {
    for (size_t i = 0; i < fixed; ++i) {
      const ColumnSource& source = sources[i];
      const ColumnType& type = types[i];
      const int at = source.single ? 0 : static_cast<int>(call);
      if (source.doubles != nullptr) {
        const double value = source.doubles->Get(at);
        if (type.slot == ColumnSlot::kFloat) {
          if (std::isfinite(value) &&
              std::fabs(value) > std::numeric_limits<float>::max()) {
            failed_call = call;
            return OutOfRange(parameter_contexts_[i], *parameter_types_[i],
                              absl::StrCat(value));
          }
          const float narrow = static_cast<float>(value);
          std::memcpy(&slots[i], &narrow, sizeof(narrow));
        } else {
          std::memcpy(&slots[i], &value, sizeof(value));
        }
        continue;
      }
      bool in_range;
      uint64_t bits;
      if (source.ints != nullptr) {
        const int64_t value = source.ints->Get(at);
        bits = static_cast<uint64_t>(value);
        switch (type.slot) {
          case ColumnSlot::kSigned:
            in_range = value >= type.min &&
                       (value < 0 || static_cast<uint64_t>(value) <= type.max);
            break;
          case ColumnSlot::kBool:
            in_range = value == 0 || value == 1;
            break;
          default:  // unsigned, pointer
            in_range = value >= 0 && (type.slot == ColumnSlot::kPointer ||
                                      static_cast<uint64_t>(value) <= type.max);
            break;
        }
        if (!in_range) {
          failed_call = call;
          return OutOfRange(parameter_contexts_[i], *parameter_types_[i],
                            absl::StrCat(value));
        }
      } else {
        bits = source.uints->Get(at);
        switch (type.slot) {
          case ColumnSlot::kBool:
            in_range = bits <= 1;
            break;
          case ColumnSlot::kPointer:
            in_range = true;
            break;
          default:  // signed (max is the type's largest), unsigned
            in_range = bits <= type.max;
            break;
        }
        if (!in_range) {
          failed_call = call;
          return OutOfRange(parameter_contexts_[i], *parameter_types_[i],
                            absl::StrCat(bits));
        }
      }
      slots[i] = bits;
    }
    ffi_call(cif, address_, return_value, values.data());
    switch (returned.slot) {
      case ColumnSlot::kSigned: {
        // Small integers come back widened to an ffi_arg; take the type's
        // own bytes and sign-extend them.
        int64_t value;
        switch (returned.size) {
          case 1: {
            int8_t v;
            std::memcpy(&v, return_value, 1);
            value = v;
            break;
          }
          case 2: {
            int16_t v;
            std::memcpy(&v, return_value, 2);
            value = v;
            break;
          }
          case 4: {
            int32_t v;
            std::memcpy(&v, return_value, 4);
            value = v;
            break;
          }
          default:
            std::memcpy(&value, return_value, 8);
            break;
        }
        int_results->AddAlreadyReserved(value);
        break;
      }
      case ColumnSlot::kUnsigned: {
        uint64_t value = 0;
        std::memcpy(&value, return_value, returned.size);
        uint_results->AddAlreadyReserved(value);
        break;
      }
      case ColumnSlot::kBool: {
        uint8_t value;
        std::memcpy(&value, return_value, 1);
        int_results->AddAlreadyReserved(value != 0 ? 1 : 0);
        break;
      }
      case ColumnSlot::kPointer: {
        uintptr_t value;
        std::memcpy(&value, return_value, sizeof(value));
        uint_results->AddAlreadyReserved(value);
        break;
      }
      case ColumnSlot::kFloat: {
        float value;
        std::memcpy(&value, return_value, sizeof(value));
        double_results->AddAlreadyReserved(value);
        break;
      }
      case ColumnSlot::kDouble: {
        double value;
        std::memcpy(&value, return_value, sizeof(value));
        double_results->AddAlreadyReserved(value);
        break;
      }
      case ColumnSlot::kVoid:
        break;
    }
  }
  failed_call = count;
  return absl::OkStatus();
}

}  // namespace ffid::ffi
