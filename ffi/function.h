// PreparedFunction: a native function with its signature prepared for libffi.
//
// Create() lays out every parameter type and prepares the ffi_cif once; Call()
// validates and encodes the arguments (nothing native runs if any is wrong),
// calls through ffi_call and decodes the result. Immutable after Create(), so
// Call() is safe from several threads at once. Does not own the code it calls.
#ifndef FFID_FFI_FUNCTION_H_
#define FFID_FFI_FUNCTION_H_

#include <ffi.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ffi/marshal.h"
#include "ffi/types.h"
#include "ffid/v1/types.pb.h"
#include "google/protobuf/repeated_field.h"

namespace ffid::ffi {

struct CallOptions {
  // Reads errno right after the native call returns (it is zeroed before).
  bool capture_errno = false;
};

struct CallResult {
  // Absent (has_result false) for void.
  bool has_result = false;
  v1::Value result;
  int errno_value = 0;
  // Values of OUT/INOUT pointer parameters after the call, by index.
  std::map<uint32_t, v1::Value> out_values;
  // For a pointer or string result: the pointer itself (NULL otherwise).
  void* result_address = nullptr;
};

class PreparedFunction {
 public:
  // `name` is used in messages. Fails with TYPE_MISMATCH / UNSUPPORTED
  // naming the offending parameter.
  static absl::StatusOr<std::unique_ptr<PreparedFunction>> Create(
      std::string name, const v1::FunctionType& type, void (*address)());

  ~PreparedFunction();
  PreparedFunction(const PreparedFunction&) = delete;
  PreparedFunction& operator=(const PreparedFunction&) = delete;

  // ARGUMENT_COUNT for too few/many arguments; TYPE_MISMATCH /
  // VALUE_OUT_OF_RANGE naming the parameter. For variadic functions,
  // `variadic_types` gives the extra arguments' types (a per-call cif is
  // prepared with ffi_prep_cif_var).
  absl::StatusOr<CallResult> Call(
      absl::Span<const v1::Value> arguments,
      absl::Span<const v1::TypeDescriptor> variadic_types,
      PointerResolver& resolver, const CallOptions& options = {}) const;
  // The same for arguments in protobuf repeated fields, without copying
  // them (the worker's hot path).
  absl::StatusOr<CallResult> Call(
      const google::protobuf::RepeatedPtrField<v1::Value>& arguments,
      const google::protobuf::RepeatedPtrField<v1::TypeDescriptor>&
          variadic_types,
      PointerResolver& resolver, const CallOptions& options = {}) const;

  // OK if CallColumns can call this function: it is not variadic, and
  // every parameter and its result are integers, bool, enums, float, double
  // or pointers without a direction (a void result too). Otherwise
  // UNSUPPORTED, naming the first parameter (or the result) that is not.
  absl::Status ColumnsSupported() const;
  // Calls the function `count` times, with no allocation per call:
  // argument i of call k is element k of `columns[i]` (or its only element,
  // which every call then gets; see v1::ValueColumn for which field each
  // type takes). Each result is appended to the matching field of
  // `results` (nothing for void). Checks the columns (one per parameter,
  // each with `count` elements or one) before the first call; a value out
  // of its parameter's range stops the calls before that call is made.
  // `failed_call` is set to the index of the call that failed, or to
  // `count` when the columns themselves are wrong. Thread-safe as Call().
  absl::Status CallColumns(absl::Span<const v1::ValueColumn* const> columns,
                           uint32_t count, v1::ValueColumn& results,
                           uint32_t& failed_call) const;

  const std::string& name() const { return name_; }
  const v1::FunctionType& type() const { return type_; }
  void (*address() const)() { return address_; }

 private:
  PreparedFunction() = default;

  template <typename Arguments, typename Types>
  absl::StatusOr<CallResult> CallWith(const Arguments& arguments,
                                      const Types& variadic_types,
                                      PointerResolver& resolver,
                                      const CallOptions& options) const;

  std::string name_;
  v1::FunctionType type_;
  void (*address_)() = nullptr;
  std::shared_ptr<const CType> return_type_;
  std::vector<std::shared_ptr<const CType>> parameter_types_;
  std::vector<ffi_type*> ffi_parameter_types_;
  ffi_cif cif_{};
  // "parameter 2 'x' of 'f'", for messages; made once.
  std::vector<std::string> parameter_contexts_;
  // For a non-variadic function whose arguments hit libffi's r9 struct
  // copy bug (see Call): the cif with such arguments split into eightbytes,
  // and for each of its arguments, the parameter and byte offset it comes
  // from. Prepared once.
  bool split_ = false;
  std::vector<ffi_type*> split_types_;
  std::vector<std::pair<size_t, size_t>> split_sources_;
  ffi_cif split_cif_{};
};

}  // namespace ffid::ffi

#endif  // FFID_FFI_FUNCTION_H_
