"""What the sync and asyncio clients share: addresses, session options,
pointers, and how a Python call becomes a CallRequest and its response a
Python value. Nothing here performs I/O."""

from __future__ import annotations

import itertools
import os
import re
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import duration_pb2

from ffid import _errors, _values
from ffid.v1 import ffid_pb2, types_pb2

# Arguments for every channel: Read/Write move whole buffers in one message,
# and each client owns its connection (gRPC's shared subchannel pool would
# otherwise hand a new client the broken connection of an earlier one to a
# daemon that has since restarted).
CHANNEL_OPTIONS: List[Tuple[str, Any]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),
]

# How long closing a session waits for DeleteSession.
DELETE_TIMEOUT = 10.0

# Reads and writes longer than this go as several RPCs of this size, as the
# C++ client sends them: one message of many MiB costs gRPC far more per
# byte than several of 1 MiB (docs/performance.md).
BULK_PIECE = 1 << 20

# A read of this many bytes or more is refused by the daemon whatever its
# pieces: it goes as one RPC, which says so.
BULK_READ_LIMIT = 1 << 30


def read_pieces(length: int) -> List[Tuple[int, int]]:
    """The (start, length) of each piece of a read of `length` bytes, in
    order; one piece when it is not split."""
    if length <= BULK_PIECE or length >= BULK_READ_LIMIT:
        return [(0, length)]
    return [(start, min(BULK_PIECE, length - start)) for start in range(0, length, BULK_PIECE)]


def write_pieces(length: int) -> List[Tuple[int, int]]:
    """The (start, length) of each piece of a write of `length` bytes in the
    order they are sent: the last piece first (a write past the end of owned
    memory then fails before any byte is written, as one write would), then
    the others in order."""
    if length <= BULK_PIECE:
        return [(0, length)]
    pieces = [(start, min(BULK_PIECE, length - start)) for start in range(0, length, BULK_PIECE)]
    return pieces[-1:] + pieces[:-1]


def use_streams(length: int) -> bool:
    """Whether a read or write of `length` bytes goes on ReadStream /
    WriteStream (one stream of BULK_PIECE messages) rather than one RPC."""
    return length > BULK_PIECE


def write_stream_requests(session: str, pointer: types_pb2.PointerValue,
                          view: memoryview) -> Iterator[ffid_pb2.WriteStreamRequest]:
    """The messages of a WriteStream of `view` at `pointer`: the first names
    the session, the pointer and the length, each carries the next
    BULK_PIECE bytes."""
    total = len(view)
    for start in range(0, total, BULK_PIECE):
        data = bytes(view[start:start + BULK_PIECE])
        if start == 0:
            yield ffid_pb2.WriteStreamRequest(session=session, pointer=pointer, length=total, data=data)
        else:
            yield ffid_pb2.WriteStreamRequest(data=data)


def read_stream_request(session: str, pointer: types_pb2.PointerValue,
                        length: int) -> ffid_pb2.ReadStreamRequest:
    """The request of a ReadStream of `length` bytes at `pointer`."""
    return ffid_pb2.ReadStreamRequest(session=session, pointer=pointer, length=length, piece_bytes=BULK_PIECE)


def streams_unimplemented(error: _errors.Error) -> bool:
    """Whether `error` is gRPC's own UNIMPLEMENTED (no ffid reason): a daemon
    older than WriteStream and ReadStream, which then get unary pieces."""
    return error.code == grpc.StatusCode.UNIMPLEMENTED and not error.reason


class ReadInto:
    """Copies the pieces of a read, in the order they arrive, into the
    caller's writable buffer (read_into): no bytes object of the whole
    size is made. The buffer is checked before any RPC."""

    def __init__(self, buffer: Any) -> None:
        try:
            view = memoryview(buffer)
        except TypeError:
            raise TypeError(f"read_into() needs a writable buffer (bytearray, memoryview, array, numpy "
                            f"array), not {type(buffer).__name__}") from None
        if view.readonly:
            view.release()
            raise TypeError(f"read_into() needs a writable buffer: this {type(buffer).__name__} is read-only")
        if not view.c_contiguous:
            view.release()
            raise TypeError("read_into() needs a contiguous buffer")
        self._exported = view
        self.view = view.cast("B")
        self._filled = 0

    def __enter__(self) -> "ReadInto":
        return self

    def __exit__(self, *exc: Any) -> None:
        # Lets the buffer be resized again (a bytearray with an export
        # cannot be).
        self.view.release()
        self._exported.release()

    def empty(self) -> bool:
        """Whether the buffer has no bytes (nothing to ask the daemon: a
        Read of length 0 means something else to it)."""
        return len(self.view) == 0

    def add(self, data: bytes) -> None:
        end = self._filled + len(data)
        if end > len(self.view):
            raise _errors.Internal(f"the daemon sent more than the {len(self.view)} bytes asked for",
                                   reason="INTERNAL")
        self.view[self._filled:end] = data
        self._filled = end

    def finish(self) -> int:
        """The number of bytes read: always len(buffer)."""
        if self._filled != len(self.view):
            raise _errors.Internal(f"the daemon sent {self._filled} of the {len(self.view)} bytes asked for",
                                   reason="INTERNAL")
        return self._filled


def advanced(pointer: types_pb2.PointerValue, count: int) -> types_pb2.PointerValue:
    """`pointer` moved `count` bytes further."""
    moved = types_pb2.PointerValue()
    moved.CopyFrom(pointer)
    if moved.handle:
        moved.offset += count
    else:
        moved.address += count
    return moved


def name_piece(error: _errors.Error, start: int, total: int) -> _errors.Error:
    """`error` (of the piece at byte `start` of a transfer of `total` bytes,
    split) with the piece named in front of its message."""
    end = min(start + BULK_PIECE, total)
    count = (total + BULK_PIECE - 1) // BULK_PIECE
    error.message = (f"piece {start // BULK_PIECE + 1} of {count} (bytes {start}..{end - 1} of {total}): "
                     f"{error.message}")
    error.args = (error.message,)
    return error


def default_address() -> str:
    """$FFID_ADDRESS, else the daemon's default socket:
    unix:$XDG_RUNTIME_DIR/ffid/ffid.sock, else unix:/tmp/ffid-$UID/ffid.sock."""
    address = os.environ.get("FFID_ADDRESS")
    if address:
        return address
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return f"unix:{runtime_dir}/ffid/ffid.sock"
    return f"unix:/tmp/ffid-{os.getuid()}/ffid.sock"


def check_address(address: str) -> None:
    """Fails at once, with a clear message, when a unix socket is missing."""
    if not address:
        raise _errors.Unavailable("the daemon's address is empty")
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]
        if not os.path.exists(path):
            raise _errors.Unavailable(
                f"cannot connect to ffid at {address}: {path} does not exist: "
                "is the daemon running? (start it with ffid, or pass an address "
                "or set FFID_ADDRESS)")


def with_timeout(error: _errors.Error, timeout: Optional[float]) -> _errors.Error:
    """Says what a timeout the client enforced means (gRPC only says
    "Deadline Exceeded")."""
    if isinstance(error, _errors.DeadlineExceeded) and timeout is not None and not error.metadata \
            and error.message == "Deadline Exceeded":
        error.message = (
            f"the call did not finish within its timeout of {timeout:g}s; the daemon kills the "
            "session's worker for it (a native call cannot be interrupted), so later calls on "
            "this session raise WorkerCrashed: open a new session")
        error.args = (error.message,)
    return error


def _duration(seconds: float, name: str) -> duration_pb2.Duration:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    duration = duration_pb2.Duration()
    duration.seconds = int(seconds)
    duration.nanos = int(round((seconds - int(seconds)) * 1e9))
    return duration


# Session options: keyword arguments of connect() -> CreateSessionRequest.
_LIMITS = ("address_space_bytes", "cpu_seconds", "open_files", "file_size_bytes")
_RESTART_POLICIES = {
    "never": ffid_pb2.RESTART_POLICY_NEVER,
    "restart": ffid_pb2.RESTART_POLICY_RESTART,
}
SESSION_OPTIONS = ("idle_timeout", *_LIMITS, "max_call_duration", "allow_network", "restart_policy")


def create_session_request(options: Dict[str, Any]) -> ffid_pb2.CreateSessionRequest:
    """CreateSessionRequest from connect()'s session keyword arguments.

    idle_timeout: seconds the daemon keeps the session without requests while
      no Connect stream is attached (default: the server's, 5 minutes).
    address_space_bytes, cpu_seconds, open_files, file_size_bytes: the
      worker's rlimits (default: the server's; above its maximum is refused
      with ResourceLimit).
    max_call_duration: seconds any one call may run, whatever its timeout.
    allow_network: let the worker use the network (the server must allow it).
    restart_policy: "never" (default: a crashed session stays dead) or
      "restart" (a new worker at once, under the same library and function
      handles; memory handles of the dead worker become invalid).
    """
    unknown = sorted(set(options) - set(SESSION_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown session option(s) {', '.join(unknown)}; this client knows "
            f"{', '.join(SESSION_OPTIONS)}")
    request = ffid_pb2.CreateSessionRequest()
    if options.get("idle_timeout") is not None:
        request.idle_timeout.CopyFrom(_duration(options["idle_timeout"], "idle_timeout"))
    for name in _LIMITS:
        value = options.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            setattr(request.limits, name, value)
    if options.get("max_call_duration") is not None:
        request.limits.max_call_duration.CopyFrom(_duration(options["max_call_duration"], "max_call_duration"))
    if options.get("allow_network") is not None:
        request.sandbox.allow_network = bool(options["allow_network"])
    policy = options.get("restart_policy")
    if policy is not None:
        if policy not in _RESTART_POLICIES:
            raise ValueError(f"restart_policy={policy!r}: expected one of {', '.join(_RESTART_POLICIES)}")
        request.restart_policy = _RESTART_POLICIES[policy]
    return request


def allocate_request(session_id: str, size: Any, init: Any, arena: bool) -> ffid_pb2.AllocateRequest:
    """The AllocateRequest of alloc(size, init, arena=...)."""
    if isinstance(size, (bytes, bytearray, memoryview)):
        init, size = bytes(size), len(size)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"alloc needs a positive size in bytes, got {size!r}")
    request = ffid_pb2.AllocateRequest(session=session_id, size=size, initial_bytes=bytes(init))
    if arena:
        request.placement = ffid_pb2.ALLOCATION_PLACEMENT_ARENA
    return request


class PointerBase:
    """A native address in a session's worker: a memory handle (owned or
    borrowed) plus a byte offset, or a bare address. `p + n` is the pointer n
    bytes further; int(p) is the address."""

    __slots__ = ("_session", "handle", "offset", "address", "__weakref__")

    def __init__(self, session: Any, handle: str, offset: int, address: int) -> None:
        self._session = session
        self.handle = handle
        self.offset = offset
        self.address = address

    def _pointer_value(self) -> types_pb2.PointerValue:
        if self.handle:
            return types_pb2.PointerValue(handle=self.handle, offset=self.offset)
        return types_pb2.PointerValue(address=self.address + self.offset)

    def __add__(self, delta: int) -> "PointerBase":
        if not isinstance(delta, int):
            return NotImplemented
        return self._at(self.offset + delta)

    def _at(self, offset: int) -> "PointerBase":
        cls = self._session._pointer_class
        return cls(self._session, self.handle, offset, self.address)

    def __int__(self) -> int:
        return self.address + self.offset

    def __index__(self) -> int:
        return self.address + self.offset

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PointerBase):
            return NotImplemented
        return int(self) == int(other) and self._session is other._session

    def __hash__(self) -> int:
        return hash((int(self), id(self._session)))

    def __repr__(self) -> str:
        where = f"{self.handle}+{self.offset}" if self.handle else "raw"
        return f"<ffid.{type(self).__name__} 0x{int(self):x} ({where})>"


class BatchRefBase:
    """A reference to the result of an earlier step of a batch (see
    ffid._batch.BatchResult)."""

    __slots__ = ()


def pointer_of(obj: Any) -> Optional[types_pb2.PointerValue]:
    if isinstance(obj, PointerBase):
        return obj._pointer_value()
    return None


def is_pointer(obj: Any) -> bool:
    return isinstance(obj, PointerBase)


def prototype_source(declaration: str) -> str:
    """One C prototype as ParseDeclarations source (with its ';')."""
    text = declaration.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text + ";"


_TYPE_NAME = "__ffid_type"
_type_names = itertools.count(1)


def type_source(type_text: str) -> Tuple[str, str]:
    """A typedef that names the type written as `type_text` (an abstract C
    type such as "struct point", "int[4]", "char *", "int (*)(int)"), so that
    ParseDeclarations can parse it, and that name. Each name is new: the
    server remembers a session's typedefs."""
    name = f"{_TYPE_NAME}_{next(_type_names)}"
    return _typedef(type_text.strip(), name), name


def _typedef(text: str, name: str) -> str:
    # The declarator's name goes where an abstract declarator has its hole:
    # after "(*" for function pointers, else before the first '['.
    if "(*" in text:
        at = text.index("(*") + 2
        return f"typedef {text[:at]}{name}{text[at:]};"
    if "[" in text:
        at = text.index("[")
        return f"typedef {text[:at]} {name}{text[at:]};"
    return f"typedef {text} {name};"


def type_from_parse(response: ffid_pb2.ParseDeclarationsResponse, type_text: str,
                    name: str) -> types_pb2.TypeDescriptor:
    for declaration in response.types:
        if declaration.name == name:
            return declaration.type
    raise _errors.DeclarationInvalid(
        f"'{type_text}' is not a C type", reason="DECLARATION_INVALID")


ParamSelector = Union[int, str]


class FunctionSpec:
    """A resolved function: its handle and the signature (named types already
    resolved) used to convert arguments and results. Immutable once built."""

    def __init__(
        self,
        name: str,
        handle: str,
        function_type: types_pb2.FunctionType,
        out: Sequence[ParamSelector] = (),
        inout: Sequence[ParamSelector] = (),
        use_errno: bool = False,
        result: str = "borrow",
        destructor: str = "",
    ) -> None:
        if result not in RESULT_OWNERSHIP:
            raise ValueError(f"result={result!r}: expected one of {', '.join(RESULT_OWNERSHIP)}")
        self.ownership = result
        self.destructor = destructor
        self.name = name
        self.handle = handle
        self.type = types_pb2.FunctionType()
        self.type.CopyFrom(function_type)
        self.out = sorted(select_params(function_type, out, "out"))
        self.inout = sorted(select_params(function_type, inout, "inout"))
        self.use_errno = use_errno
        self._returns_void = (
            not self.type.HasField("return_type")
            or (self.type.return_type.WhichOneof("kind") == "scalar"
                and self.type.return_type.scalar == types_pb2.SCALAR_KIND_VOID))
        params = self.type.parameters
        # As the server names them: "parameter 1 ('x') of 'cos'".
        self._param_names = [
            f"parameter {i + 1}{f' ({p.name!r})' if p.name else ''} of '{name}'" for i, p in enumerate(params)]
        # The fast path of request()/result() for the common case (no OUT or
        # INOUT parameters, not variadic, no adoption): parameter types and
        # how an int or float argument converts, computed once.
        self._param_types = [p.type for p in params]
        self._fast: List[Optional[type]] = []
        for d in self._param_types:
            kind = d.WhichOneof("kind")
            if kind == "scalar" and d.scalar in _values._INTEGER_KINDS:
                self._fast.append(int)
            elif kind == "scalar" and d.scalar in _values._FLOAT_KINDS:
                self._fast.append(float)
            else:
                self._fast.append(None)
        self._plain = not self.out and not self.inout and not self.type.variadic
        self._fast_params = list(zip(self._fast, self._param_types, self._param_names))
        self._return_type = self.type.return_type if self.type.HasField("return_type") else None
        self._ownership_value = RESULT_OWNERSHIP[result]
        self._plain_result = self._plain and result != "adopt"
        # (session id, a CallStreamRequest with every field of the call but
        # its arguments): each plain call copies it and appends its
        # arguments. Made at the first call (replaced whole, never changed).
        self._template: Optional[Tuple[str, ffid_pb2.CallStreamRequest]] = None

    def request(self, session_id: str, args: Sequence[Any], capture_errno: Optional[bool],
                refs: Optional[List[Tuple[int, Any]]] = None) -> ffid_pb2.CallRequest:
        """The CallRequest of a call with `args`. With `refs` (in a batch), an
        argument that is a BatchRefBase becomes an empty placeholder and
        (its index in `arguments`, the reference) is appended to `refs`."""
        if refs is None and self._plain and len(args) == len(self._fast):
            return self.stream_request(session_id, args, capture_errno).call
        params = self.type.parameters
        request = ffid_pb2.CallRequest(session=session_id, function=self.handle)
        given = list(args)
        values: List[_values.Value] = []
        for i, parameter in enumerate(params):
            if i in self.out:
                values.append(_values.Value())
                continue
            if refs is not None and given and isinstance(given[0], BatchRefBase):
                refs.append((len(values), given.pop(0)))
                values.append(_values.Value())
                continue
            if not given:
                expected = len(params) - len(self.out)
                raise _errors.ArgumentCount(
                    f"{self.name}() takes {expected} argument{'s' if expected != 1 else ''}"
                    f"{' or more' if self.type.variadic else ''}, got {len(args)}",
                    reason="ARGUMENT_COUNT")
            # An INOUT parameter takes a value of its pointee type.
            param_type = parameter.type.pointer.pointee if i in self.inout else parameter.type
            values.append(_values.to_value(given.pop(0), param_type, self._param_names[i], pointer_of))
        if given and not self.type.variadic:
            expected = len(params) - len(self.out)
            raise _errors.ArgumentCount(
                f"{self.name}() takes {expected} argument{'s' if expected != 1 else ''}, got {len(args)}",
                reason="ARGUMENT_COUNT")
        for j, extra in enumerate(given):
            if isinstance(extra, BatchRefBase):
                raise TypeError("a batch result cannot be a variadic argument (its type is not known)")
            request.variadic_types.append(_values.variadic_type(extra, is_pointer))
            values.append(_values.to_value(
                extra, None, f"parameter {len(params) + j + 1} (variadic) of '{self.name}'", pointer_of))
        request.arguments.extend(values)
        request.capture_errno = self.use_errno if capture_errno is None else capture_errno
        request.result_ownership = RESULT_OWNERSHIP[self.ownership]
        request.result_destructor = self.destructor
        return request

    def stream_request(self, session_id: str, args: Sequence[Any],
                       capture_errno: Optional[bool]) -> ffid_pb2.CallStreamRequest:
        """The call with `args` as a CallStreamRequest; its `call` is what
        request() returns (given as it is to the unary Call RPC, so a call
        that takes either needs no copy)."""
        if not self._plain or len(args) != len(self._fast):
            wrapped = ffid_pb2.CallStreamRequest()
            wrapped.call.CopyFrom(self.request(session_id, args, capture_errno))
            return wrapped
        # A plain call: the prepared request, copied, and its arguments.
        template = self._template
        if template is None or template[0] != session_id:
            template = (session_id, ffid_pb2.CallStreamRequest(call=ffid_pb2.CallRequest(
                session=session_id, function=self.handle, capture_errno=self.use_errno,
                result_ownership=self._ownership_value, result_destructor=self.destructor)))
            self._template = template
        wrapped = ffid_pb2.CallStreamRequest()
        wrapped.CopyFrom(template[1])
        call = wrapped.call
        if capture_errno is not None:
            call.capture_errno = capture_errno
        arguments = call.arguments
        for arg, (fast, d, name) in zip(args, self._fast_params):
            kind = type(arg)
            if fast is int and kind is int:
                if _values._INT64_MIN <= arg < _values._INT64_LIMIT:
                    arguments.add(int_value=arg)
                else:
                    arguments.append(_values._int_value(arg, name))
            elif fast is float and (kind is float or kind is int):
                arguments.add(double_value=arg)
            else:
                arguments.append(_values.to_value(arg, d, name, pointer_of))
        return wrapped

    def result(self, response: ffid_pb2.CallResponse, make_pointer: Any, make_owned: Any) -> Any:
        """The Python result; make_owned(PointerValue, text) wraps an adopted
        result in the session's Memory type."""
        if self._plain_result:
            if not response.HasField("result"):
                return None
            value = response.result
            kind = value.WhichOneof("kind")
            if kind == "int_value":
                return value.int_value
            if kind == "double_value":
                return value.double_value
            return _values.from_value(value, self._return_type, make_pointer)
        result = None
        if response.HasField("result"):
            result = _values.from_value(response.result, self.type.return_type, make_pointer)
        if self.ownership == "adopt" and response.HasField("result_pointer"):
            text = result if isinstance(result, (str, bytes)) else None
            result = make_owned(response.result_pointer, text)
        indexes = sorted(set(self.out) | set(self.inout))
        if not indexes:
            return result
        outs = []
        for i in indexes:
            pointee = self.type.parameters[i].type.pointer.pointee
            value = response.out_values.get(i)
            outs.append(None if value is None else _values.from_value(value, pointee, make_pointer))
        if self._returns_void:
            return outs[0] if len(outs) == 1 else tuple(outs)
        return (result, *outs)


# result= of Library.function(): what happens to a returned pointer/string.
RESULT_OWNERSHIP = {
    "borrow": ffid_pb2.RESULT_OWNERSHIP_BORROW,
    "adopt": ffid_pb2.RESULT_OWNERSHIP_ADOPT,
    "release": ffid_pb2.RESULT_OWNERSHIP_RELEASE,
}


def select_params(function_type: types_pb2.FunctionType, selectors: Sequence[ParamSelector], what: str) -> List[int]:
    """Parameter indexes named by index or name."""
    if isinstance(selectors, (str, int)):
        selectors = [selectors]
    indexes = []
    names = [p.name for p in function_type.parameters]
    for selector in selectors:
        if isinstance(selector, int) and 0 <= selector < len(names):
            index = selector
        elif isinstance(selector, str) and selector in names:
            index = names.index(selector)
        else:
            raise ValueError(f"{what}={selector!r} names no parameter of this function "
                             f"(parameters: {', '.join(n or '?' for n in names)})")
        if function_type.parameters[index].type.WhichOneof("kind") != "pointer":
            raise ValueError(f"{what}={selector!r}: parameter {index} is not a pointer")
        indexes.append(index)
    return indexes


def apply_directions(function_type: types_pb2.FunctionType, out: Sequence[ParamSelector],
                     inout: Sequence[ParamSelector]) -> types_pb2.FunctionType:
    """A copy of `function_type` with the OUT/INOUT parameters marked."""
    result = types_pb2.FunctionType()
    result.CopyFrom(function_type)
    for index in select_params(result, out, "out"):
        result.parameters[index].type.pointer.direction = types_pb2.POINTER_DIRECTION_OUT
    for index in select_params(result, inout, "inout"):
        result.parameters[index].type.pointer.direction = types_pb2.POINTER_DIRECTION_INOUT
    return result


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_identifier(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


class Declarations:
    """The functions and types a session's cdef()s declared. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.types = _values.TypeRegistry()
        self._functions: Dict[str, types_pb2.FunctionType] = {}
        self._variables: Dict[str, types_pb2.TypeDescriptor] = {}
        self._parsed: Dict[str, types_pb2.TypeDescriptor] = {}

    def add(self, response: ffid_pb2.ParseDeclarationsResponse) -> None:
        with self._lock:
            for declaration in response.types:
                self.types.add(declaration.name, declaration.type)
            for function in response.functions:
                self._functions[function.name] = function.type
            for variable in response.variables:
                self._variables[variable.name] = variable.type

    def variable(self, name: str) -> Optional[types_pb2.TypeDescriptor]:
        with self._lock:
            found = self._variables.get(name)
            return None if found is None else self.types.resolve(found)

    def function(self, name: str) -> Optional[types_pb2.FunctionType]:
        with self._lock:
            found = self._functions.get(name)
            if found is None:
                return None
            resolved = types_pb2.FunctionType()
            resolved.CopyFrom(found)
            self.types.resolve_function(resolved)
            return resolved

    def known_type(self, name: str) -> Optional[types_pb2.TypeDescriptor]:
        """The resolved type a cdef() declared as `name` ("struct point",
        "point_t"), or one typeof() parsed before, or None."""
        name = " ".join(name.split())
        with self._lock:
            found = self.types.get(name) or self._parsed.get(name)
            return None if found is None else self.types.resolve(found)

    def remember_type(self, text: str, descriptor: types_pb2.TypeDescriptor) -> types_pb2.TypeDescriptor:
        """Keeps what a C type's text parsed to (C types cannot be
        redefined, so it stays true) and returns it resolved."""
        with self._lock:
            self._parsed[" ".join(text.split())] = descriptor
            return self.types.resolve(descriptor)

    def resolve_type(self, descriptor: types_pb2.TypeDescriptor) -> types_pb2.TypeDescriptor:
        with self._lock:
            return self.types.resolve(descriptor)

    def resolve_function(self, function_type: types_pb2.FunctionType) -> types_pb2.FunctionType:
        with self._lock:
            resolved = types_pb2.FunctionType()
            resolved.CopyFrom(function_type)
            self.types.resolve_function(resolved)
            return resolved

    def function_names(self) -> List[str]:
        with self._lock:
            return sorted(set(self._functions) | set(self._variables))


def flexible_length_of(pointer: Any, ctype: Optional[str], flexible_length: Optional[int]) -> int:
    """The flexible_length of a typed read or write at `pointer`: the one
    given, else the memory's own when its own type is used, else 0."""
    if flexible_length is not None:
        if flexible_length < 0:
            raise ValueError("flexible_length must not be negative")
        return flexible_length
    if ctype is None:
        return getattr(pointer, "flexible_length", 0)
    return 0


def array_of(descriptor: types_pb2.TypeDescriptor, count: int) -> types_pb2.TypeDescriptor:
    """`descriptor[count]`, or `descriptor` itself for count <= 1."""
    if count <= 1:
        return descriptor
    return types_pb2.TypeDescriptor(array=types_pb2.ArrayType(element=descriptor, length=count))


class FunctionBase:
    """What a resolved function is, for both clients: its session, its
    FunctionSpec and its address in the worker."""

    _label = "ffid.Function"

    def __init__(self, session: Any, spec: FunctionSpec, address: int) -> None:
        self._session = session
        self._spec = spec
        self.address = address

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def handle(self) -> str:
        return self._spec.handle

    @property
    def type(self) -> types_pb2.FunctionType:
        return self._spec.type

    def __repr__(self) -> str:
        return f"<{self._label} {self._spec.name} at 0x{self.address:x}>"


class CallbackBase:
    """What a registered callback is, for both clients: a function pointer
    value (its handle) and the Python function behind it."""

    _label = "ffid.Callback"

    def __init__(self, session: Any, handle: str, function: Any,
                 function_type: types_pb2.FunctionType, address: int) -> None:
        self._session = session
        self._ffid_callback_handle = handle
        self.handle = handle
        self.function = function
        self.type = function_type
        self.address = address

    def __repr__(self) -> str:
        return f"<{self._label} {getattr(self.function, '__name__', '?')} {self.handle}>"

    def _release_request(self) -> ffid_pb2.ReleaseCallbackRequest:
        return ffid_pb2.ReleaseCallbackRequest(session=self._session.id, callback=self.handle)
