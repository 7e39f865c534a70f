"""Python values <-> ffid.v1.Value, guided by the C type where it is known.

Python -> C: None is NULL; bool, int, float, complex as numbers; str and
bytes as strings (or one character for char types, bytes for byte arrays);
dict (by member name) or tuple (by position) for structs and unions; list or
tuple for arrays; Pointer/Memory objects and ints for pointers; Callback
objects for function pointers; str names for enum constants.

C -> Python: the same mapping back. Strings come back as str (bytes when they
are not valid UTF-8), pointers as Pointer objects, NULL as None, structs as
dicts, arrays as lists, enums as constant names (ints when no constant
matches). A `long double` comes back as a LongDouble (a float that keeps the
exact value: `.exact` is a decimal.Decimal, passing it back loses nothing); a
union as a UnionValue (a dict of every member decoded from the same bytes,
`.raw` the bytes; passing it back passes those bytes).
"""

from __future__ import annotations

import decimal
import struct
import math
from typing import Any, Callable, Dict, List, Mapping, Optional

from ffid import _errors
from ffid.v1 import types_pb2

TypeDescriptor = types_pb2.TypeDescriptor
Value = types_pb2.Value

_INT64_MIN = -(1 << 63)
_INT64_LIMIT = 1 << 63
_UINT64_LIMIT = 1 << 64

_S = types_pb2.ScalarKind
_INTEGER_KINDS = frozenset(
    {
        _S.SCALAR_KIND_CHAR, _S.SCALAR_KIND_SIGNED_CHAR, _S.SCALAR_KIND_UNSIGNED_CHAR,
        _S.SCALAR_KIND_SHORT, _S.SCALAR_KIND_UNSIGNED_SHORT, _S.SCALAR_KIND_INT,
        _S.SCALAR_KIND_UNSIGNED_INT, _S.SCALAR_KIND_LONG, _S.SCALAR_KIND_UNSIGNED_LONG,
        _S.SCALAR_KIND_LONG_LONG, _S.SCALAR_KIND_UNSIGNED_LONG_LONG, _S.SCALAR_KIND_INT8,
        _S.SCALAR_KIND_UINT8, _S.SCALAR_KIND_INT16, _S.SCALAR_KIND_UINT16,
        _S.SCALAR_KIND_INT32, _S.SCALAR_KIND_UINT32, _S.SCALAR_KIND_INT64,
        _S.SCALAR_KIND_UINT64, _S.SCALAR_KIND_SIZE_T, _S.SCALAR_KIND_SSIZE_T,
        _S.SCALAR_KIND_INTPTR_T, _S.SCALAR_KIND_UINTPTR_T, _S.SCALAR_KIND_PTRDIFF_T,
        _S.SCALAR_KIND_WCHAR_T, _S.SCALAR_KIND_CHAR16_T, _S.SCALAR_KIND_CHAR32_T,
    }
)
_FLOAT_KINDS = frozenset({_S.SCALAR_KIND_FLOAT, _S.SCALAR_KIND_DOUBLE})
_COMPLEX_KINDS = frozenset({_S.SCALAR_KIND_COMPLEX_FLOAT, _S.SCALAR_KIND_COMPLEX_DOUBLE,
                            _S.SCALAR_KIND_COMPLEX_LONG_DOUBLE})


class LongDouble(float):
    """A C `long double` result: a float (the nearest double) that keeps the
    value's full precision. `raw` is its bytes as the daemon's platform
    stores it, `exact` the value as a decimal.Decimal, `str()` the shortest
    decimal that reads back as exactly this value. Passed as an argument it
    sends `raw`, so nothing is lost on a round trip."""

    raw: bytes
    decimal: str

    def __new__(cls, approximate: float, raw: bytes = b"", text: str = "") -> "LongDouble":
        obj = super().__new__(cls, approximate)
        obj.raw = raw
        obj.decimal = text or repr(float(approximate))
        return obj

    @property
    def exact(self) -> decimal.Decimal:
        """The exact value (from `raw` when it is an x87 extended value)."""
        if len(self.raw) >= 10:
            return long_double_to_decimal(self.raw)
        return decimal.Decimal(self.decimal)

    def __repr__(self) -> str:
        return f"LongDouble('{self.decimal}')"

    def __str__(self) -> str:
        return self.decimal


class UnionValue(dict):
    """A C union result (or typed read): every member decoded from the same
    bytes, since only the caller knows which one is live; a `char *` member
    is a Pointer (not followed). `raw` is the union's bytes. Passed back as
    an argument it sends `raw`; to set one member, pass a dict with only
    that member."""

    raw: bytes

    def __init__(self, members: Dict[str, Any], raw: bytes) -> None:
        super().__init__(members)
        self.raw = raw


class TypeRegistry:
    """The named types (struct/union/enum tags, typedefs) a session's cdefs
    declared, so that values can be converted by their C type on the client.

    Not thread-safe by itself; the session guards it.
    """

    def __init__(self) -> None:
        self._types: Dict[str, TypeDescriptor] = {}

    def add(self, name: str, descriptor: TypeDescriptor) -> None:
        self._types[name] = descriptor
        if descriptor.HasField("record") and descriptor.record.name:
            keyword = "union" if descriptor.record.kind == types_pb2.RECORD_KIND_UNION else "struct"
            self._types.setdefault(f"{keyword} {descriptor.record.name}", descriptor)
        if descriptor.HasField("enum_type") and descriptor.enum_type.name:
            self._types.setdefault(f"enum {descriptor.enum_type.name}", descriptor)

    def get(self, name: str) -> Optional[TypeDescriptor]:
        return self._types.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._types

    def resolve(self, descriptor: TypeDescriptor, _depth: int = 0) -> TypeDescriptor:
        """A copy of `descriptor` with every known named reference replaced by
        its definition (references behind pointers stay, so that recursive
        types such as linked lists terminate)."""
        result = TypeDescriptor()
        result.CopyFrom(descriptor)
        self._resolve_in_place(result, _depth)
        return result

    def _resolve_in_place(self, d: TypeDescriptor, depth: int) -> None:
        if depth > 64:
            return
        kind = d.WhichOneof("kind")
        if kind == "named":
            found = self._types.get(d.named)
            if found is not None and not found.HasField("named"):
                is_const = d.is_const
                d.CopyFrom(found)
                if is_const:
                    d.is_const = True
                self._resolve_in_place(d, depth + 1)
            elif found is not None and found.named != d.named:
                d.named = found.named
                self._resolve_in_place(d, depth + 1)
        elif kind == "array":
            self._resolve_in_place(d.array.element, depth + 1)
        elif kind == "record":
            for field in d.record.fields:
                self._resolve_in_place(field.type, depth + 1)
        elif kind == "pointer" and d.pointer.HasField("pointee"):
            pointee = d.pointer.pointee
            # Only resolve the pointee when it is a by-reference parameter,
            # whose value the client converts.
            if d.pointer.direction != types_pb2.POINTER_DIRECTION_UNSPECIFIED:
                self._resolve_in_place(pointee, depth + 1)
        elif kind == "function_pointer":
            self.resolve_function(d.function_pointer, depth + 1)

    def resolve_function(self, function: types_pb2.FunctionType, depth: int = 0) -> None:
        """Resolves a FunctionType's named references in place."""
        if function.HasField("return_type"):
            self._resolve_in_place(function.return_type, depth + 1)
        for parameter in function.parameters:
            self._resolve_in_place(parameter.type, depth + 1)


def null_value() -> Value:
    return Value(null_value=types_pb2.NULL_VALUE_UNSPECIFIED)


def _int_value(number: int, param: str) -> Value:
    if _INT64_MIN <= number < _INT64_LIMIT:
        return Value(int_value=number)
    if 0 <= number < _UINT64_LIMIT:
        return Value(uint_value=number)
    raise _errors.ValueOutOfRange(
        f"{param}: {number} does not fit in 64 bits", reason="VALUE_OUT_OF_RANGE"
    )


def _is_record(d: Optional[TypeDescriptor]) -> bool:
    return d is not None and d.WhichOneof("kind") == "record"


def _field_names(d: TypeDescriptor) -> List[str]:
    """Member names in declaration order; the members of an anonymous
    struct or union member count as the record's own, as in C."""
    names: List[str] = []
    for field in d.record.fields:
        if field.name:
            names.append(field.name)
        elif field.type.WhichOneof("kind") == "record":
            names.extend(_field_names(field.type))
    return names


def _field_type(d: TypeDescriptor, name: str) -> Optional[TypeDescriptor]:
    for field in d.record.fields:
        if field.name == name:
            return field.type
    for field in d.record.fields:
        if not field.name and field.type.WhichOneof("kind") == "record":
            found = _field_type(field.type, name)
            if found is not None:
                return found
    return None


def to_value(
    obj: Any,
    d: Optional[TypeDescriptor],
    param: str,
    pointer_of: Callable[[Any], Optional[types_pb2.PointerValue]],
) -> Value:
    """Converts `obj` to a Value for a parameter of type `d` (None when the
    type is not known, e.g. a variadic argument). `pointer_of` turns a
    Pointer-like object into a PointerValue, or returns None for other
    objects. Kinds the server would reject are sent anyway: its message names
    the parameter and the type."""
    kind = d.WhichOneof("kind") if d is not None else None
    if obj is None:
        return null_value()
    if isinstance(obj, Value):
        return obj
    callback_handle = getattr(obj, "_ffid_callback_handle", None)
    if isinstance(callback_handle, str):
        return Value(callback_handle=callback_handle)
    pointer = pointer_of(obj)
    if pointer is not None:
        return Value(pointer_value=pointer)
    if isinstance(obj, bool):
        if kind == "scalar" and d is not None and d.scalar in _INTEGER_KINDS:
            return Value(int_value=int(obj))
        return Value(bool_value=obj)
    if isinstance(obj, int):
        if kind in ("pointer", "string", "function_pointer"):
            if obj == 0:
                return null_value()
            if 0 < obj < _UINT64_LIMIT:
                return Value(pointer_value=types_pb2.PointerValue(address=obj))
        if kind == "scalar" and d is not None and d.scalar in _FLOAT_KINDS | {_S.SCALAR_KIND_LONG_DOUBLE}:
            return Value(double_value=float(obj))
        return _int_value(obj, param)
    if isinstance(obj, LongDouble):
        if obj.raw:
            return Value(long_double=types_pb2.LongDoubleValue(bytes=obj.raw))
        return Value(long_double=types_pb2.LongDoubleValue(decimal=obj.decimal))
    if isinstance(obj, decimal.Decimal):
        # Exactly as written, rounded by the daemon to the parameter's type.
        return Value(long_double=types_pb2.LongDoubleValue(decimal=str(obj)))
    if isinstance(obj, float):
        return Value(double_value=obj)
    if isinstance(obj, complex):
        return Value(array_value=types_pb2.ArrayValue(elements=[
            Value(double_value=obj.real), Value(double_value=obj.imag)]))
    if isinstance(obj, str):
        if kind == "enum_type":
            return Value(enum_value=obj)
        return Value(string_value=obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return Value(bytes_value=bytes(obj))
    if isinstance(obj, UnionValue) and obj.raw:
        return Value(record_value=types_pb2.RecordValue(union_bytes=obj.raw))
    if isinstance(obj, Mapping):
        fields: Dict[str, Value] = {}
        for name, member in obj.items():
            member_type = _field_type(d, name) if d is not None and _is_record(d) else None
            fields[str(name)] = to_value(
                member, member_type, f"{param}, member '{name}'", pointer_of)
        return Value(record_value=types_pb2.RecordValue(fields=fields))
    if isinstance(obj, tuple) and _is_record(d):
        assert d is not None
        names = _field_names(d)
        if len(obj) > len(names):
            raise _errors.TypeMismatch(
                f"{param}: a tuple of {len(obj)} values for a record of "
                f"{len(names)} members ({', '.join(names)})",
                reason="TYPE_MISMATCH")
        return to_value(dict(zip(names, obj)), d, param, pointer_of)
    if isinstance(obj, (list, tuple)):
        element = None
        if kind == "array" and d is not None:
            element = d.array.element
        elif kind == "pointer" and d is not None and d.pointer.HasField("pointee"):
            element = d.pointer.pointee
        return Value(array_value=types_pb2.ArrayValue(elements=[
            to_value(item, element, f"{param}, element {i}", pointer_of)
            for i, item in enumerate(obj)
        ]))
    raise _errors.TypeMismatch(
        f"{param}: cannot pass a Python {type(obj).__name__} to C",
        reason="TYPE_MISMATCH")


def from_value(
    value: Value,
    d: Optional[TypeDescriptor],
    make_pointer: Callable[[types_pb2.PointerValue], Any],
) -> Any:
    """Converts a Value (a result or out-value) to Python. `make_pointer`
    wraps a PointerValue in the session's Pointer type."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "uint_value":
        return value.uint_value
    if kind == "double_value":
        return value.double_value
    if kind == "string_value":
        return value.string_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "pointer_value":
        return make_pointer(value.pointer_value)
    if kind == "record_value":
        record = d if _is_record(d) else None
        out: Dict[str, Any] = {}
        names = _field_names(record) if record is not None else sorted(value.record_value.fields)
        for name in names:
            if name in value.record_value.fields:
                out[name] = from_value(
                    value.record_value.fields[name],
                    _field_type(record, name) if record is not None else None,
                    make_pointer)
        if value.record_value.union_bytes:
            return UnionValue(out, value.record_value.union_bytes)
        return out
    if kind == "array_value":
        element = d.array.element if d is not None and d.WhichOneof("kind") == "array" else None
        items = [from_value(item, element, make_pointer) for item in value.array_value.elements]
        if d is not None and d.WhichOneof("kind") == "scalar" and d.scalar in _COMPLEX_KINDS and len(items) == 2:
            return complex(items[0], items[1])
        return items
    if kind == "enum_value":
        return value.enum_value
    if kind == "long_double_value":
        raw = value.long_double_value
        return LongDouble(long_double_to_float(raw), raw, "")
    if kind == "long_double":
        full = value.long_double
        return LongDouble(full.approximate, full.bytes, full.decimal)
    if kind == "callback_handle":
        return value.callback_handle
    raise _errors.Internal(f"unknown value kind {kind!r}", reason="INTERNAL")


def long_double_to_float(raw: bytes) -> float:
    """The nearest double to an x87 80-bit extended value (16 bytes, little
    endian, as x86-64 stores `long double`)."""
    mantissa, exponent_sign = struct.unpack_from("<QH", raw)
    sign = -1.0 if exponent_sign & 0x8000 else 1.0
    exponent = exponent_sign & 0x7FFF
    if exponent == 0x7FFF:
        return sign * float("inf") if (mantissa << 1) & ((1 << 64) - 1) == 0 else float("nan")
    if exponent == 0 and mantissa == 0:
        return sign * 0.0
    return sign * math.ldexp(mantissa, exponent - 16383 - 63)


def long_double_to_decimal(raw: bytes) -> decimal.Decimal:
    """The exact value of an x87 80-bit extended `long double` (16 bytes,
    little endian) as a Decimal (NaN and infinities included)."""
    mantissa, exponent_sign = struct.unpack_from("<QH", raw)
    negative = bool(exponent_sign & 0x8000)
    exponent = exponent_sign & 0x7FFF
    if exponent == 0x7FFF:
        if (mantissa << 1) & ((1 << 64) - 1) == 0:
            return decimal.Decimal("-Infinity" if negative else "Infinity")
        return decimal.Decimal("NaN")
    # Denormals have exponent 0 and count as exponent 1.
    power = max(exponent, 1) - 16383 - 63
    context = decimal.Context(prec=20000)
    magnitude = context.multiply(decimal.Decimal(mantissa),
                                 context.power(decimal.Decimal(2), power))
    return -magnitude if negative else magnitude


def variadic_type(obj: Any, is_pointer: Callable[[Any], bool]) -> TypeDescriptor:
    """The C type a Python value is passed as after `...`, following C's
    default argument promotions: int (or long long when it does not fit),
    double, char*, void*."""
    if obj is None or is_pointer(obj):
        return TypeDescriptor(pointer=types_pb2.PointerType())
    if isinstance(obj, bool):
        return TypeDescriptor(scalar=_S.SCALAR_KIND_INT)
    if isinstance(obj, int):
        if -(1 << 31) <= obj < (1 << 31):
            return TypeDescriptor(scalar=_S.SCALAR_KIND_INT)
        if obj >= (1 << 63):
            return TypeDescriptor(scalar=_S.SCALAR_KIND_UNSIGNED_LONG_LONG)
        return TypeDescriptor(scalar=_S.SCALAR_KIND_LONG_LONG)
    if isinstance(obj, (LongDouble, decimal.Decimal)):
        return TypeDescriptor(scalar=_S.SCALAR_KIND_LONG_DOUBLE)
    if isinstance(obj, float):
        return TypeDescriptor(scalar=_S.SCALAR_KIND_DOUBLE)
    if isinstance(obj, (str, bytes, bytearray)):
        return TypeDescriptor(string=types_pb2.StringType(is_const=True))
    raise _errors.TypeMismatch(
        f"cannot pass a Python {type(obj).__name__} as a variadic argument; "
        "pass an int, float, str, bytes, None or a pointer",
        reason="TYPE_MISMATCH")
