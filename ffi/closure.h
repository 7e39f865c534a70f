// Closure: a native function pointer whose calls are handed to a handler.
//
// Create() lays out a signature, prepares an ffi_cif and a libffi closure
// (ffi_closure_alloc + ffi_prep_closure_loc); code() is then an ordinary C
// function pointer of that signature. Whenever native code calls it, on any
// thread, the closure calls ClosureHandler::OnCall on that same thread with
// libffi's argument and result pointers. The handler decides what the call
// means (ffi/ knows nothing of processes or clients): it decodes the
// arguments with DecodeArguments() and writes the return value with
// WriteResult() or WriteResultBytes() before it returns.
//
// A Closure is immutable after Create(), so every method is safe from any
// number of threads at once. It owns its closure memory and frees it when
// destroyed: destroying it while native code may still call it is the
// caller's bug, so owners keep closures until nothing can call them (the
// worker keeps released callbacks until the session ends). The handler is
// borrowed and must outlive the closure.
#ifndef FFID_FFI_CLOSURE_H_
#define FFID_FFI_CLOSURE_H_

#include <ffi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ffi/marshal.h"
#include "ffi/types.h"
#include "ffid/v1/types.pb.h"

namespace ffid::ffi {

class Closure;

// Receives native calls of closures. Implementations must be thread-safe and
// re-entrant: closures may be called from threads the library created, from
// several threads at once, and from inside another OnCall.
class ClosureHandler {
 public:
  virtual ~ClosureHandler() = default;
  // Runs on the native thread that called `closure`. `arguments` are
  // libffi's pointers to each argument; `result` has room for the return
  // value (at least sizeof(ffi_arg) bytes), which OnCall must write unless
  // the closure returns void.
  virtual void OnCall(const Closure& closure, void* result,
                      void** arguments) = 0;
};

class Closure {
 public:
  // `name` is used in messages; `tag` is any value the owner wants to find
  // again in OnCall (e.g. an index into its own table). Fails with
  // TYPE_MISMATCH / UNSUPPORTED naming the offending part of the signature:
  // variadic callbacks, string or array return types, and types libffi
  // cannot pass by value are refused.
  static absl::StatusOr<std::unique_ptr<Closure>> Create(
      std::string name, const v1::FunctionType& type, ClosureHandler& handler,
      uint64_t tag = 0);

  ~Closure();
  Closure(const Closure&) = delete;
  Closure& operator=(const Closure&) = delete;

  // The native entry point: a function of the closure's signature.
  void* code() const { return code_; }
  const std::string& name() const { return name_; }
  // The signature with every type laid out.
  const v1::FunctionType& type() const { return type_; }
  uint64_t tag() const { return tag_; }
  bool returns_void() const { return return_type_->is_void(); }

  // Decodes one call's arguments (pointers become values through
  // `resolver`, e.g. borrowed memory handles).
  absl::StatusOr<std::vector<v1::Value>> DecodeArguments(
      void** arguments, PointerResolver& resolver) const;

  // Encodes `value` as the return type into `bytes` (resized to the return
  // type's size); TYPE_MISMATCH / VALUE_OUT_OF_RANGE naming the return
  // value. For void, `value` must be unset.
  [[nodiscard]] absl::Status EncodeResult(const v1::Value& value,
                                          PointerResolver& resolver,
                                          std::string* bytes) const;
  // Writes an encoded return value (from EncodeResult, or all zeros when
  // `bytes` is empty) into libffi's `result`, widening integers narrower
  // than a register as libffi requires.
  void WriteResultBytes(const std::string& bytes, void* result) const;

 private:
  Closure() = default;
  static void Trampoline(ffi_cif* cif, void* result, void** arguments,
                         void* self);

  std::string name_;
  v1::FunctionType type_;
  uint64_t tag_ = 0;
  ClosureHandler* handler_ = nullptr;
  std::shared_ptr<const CType> return_type_;
  std::vector<std::shared_ptr<const CType>> parameter_types_;
  std::vector<ffi_type*> ffi_parameter_types_;
  ffi_cif cif_{};
  ffi_closure* closure_ = nullptr;
  void* code_ = nullptr;
};

}  // namespace ffid::ffi

#endif  // FFID_FFI_CLOSURE_H_
