"""The asyncio client: the same API as ffid's, on grpc.aio, with every
method that talks to the daemon a coroutine.

    import ffid.aio

    async with ffid.aio.connect() as s:
        libm = await s.load("libm.so.6")
        await libm.cdef("double cos(double);")
        await libm.cos(0.5)          # 0.8775825618903728
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import os
import threading
import weakref
from typing import Any, AsyncGenerator, Callable, Dict, Generator, List, Optional, Sequence, Union

import grpc
import grpc.aio

from ffid import _arena, _batch, _call_streams, _callbacks, _connection, _core, _errors, _values
from ffid._core import ParamSelector
from ffid.v1 import ffid_pb2, ffid_pb2_grpc, types_pb2

BytesLike = Union[bytes, bytearray, memoryview]


class _Connecting:
    """What connect() returns: await it for a Session, or use it directly
    as an async context manager."""

    def __init__(self, connection: _connection.Connection, connect_timeout: float,
                 options: Dict[str, Any]) -> None:
        self._connection = connection
        self._timeout = connect_timeout
        self._options = options
        self._session: Optional[Session] = None

    def __await__(self) -> Generator[Any, None, "Session"]:
        return self._connect().__await__()

    async def __aenter__(self) -> "Session":
        self._session = await self._connect()
        return self._session

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()

    async def _connect(self) -> "Session":
        request = _core.create_session_request(self._options)
        address = self._connection.address
        _core.check_address(address)
        channel = _connection.aio_channel(self._connection, _core.CHANNEL_OPTIONS)
        try:
            try:
                await asyncio.wait_for(channel.channel_ready(), self._timeout)
            except asyncio.TimeoutError:
                raise _connection.unreachable(self._connection, self._timeout) from None
            stub = ffid_pb2_grpc.FfiStub(channel)
            try:
                response = await stub.CreateSession(request)
            except grpc.RpcError as error:
                raise _errors.from_rpc_error(error) from None
            session = Session(address, channel, stub, response.session)
            await session._attach()
            return session
        except BaseException:
            await channel.close()
            raise


def connect(address: Optional[str] = None, *, connect_timeout: float = 10.0,
            token: Optional[str] = None, token_file: Optional[Union[str, "os.PathLike[str]"]] = None,
            ca: Optional[_connection.PemSource] = None, cert: Optional[_connection.PemSource] = None,
            key: Optional[_connection.PemSource] = None, insecure: Optional[bool] = None,
            **session_options: Any) -> _Connecting:
    """Connects to the ffid daemon and starts a session; see ffid.connect()
    for the arguments (token, token_file, ca, cert, key, insecure and their
    environment variables). `await ffid.aio.connect()` or
    `async with ffid.aio.connect() as s:`. Contradictory or unreadable
    settings raise ValueError here, before anything is awaited."""
    connection = _connection.resolve(address, token=token, token_file=token_file, ca=ca, cert=cert,
                                     key=key, insecure=insecure)
    return _Connecting(connection, connect_timeout, session_options)


def _cancel_streams(call: Any, call_streams: _call_streams.AioCallStreams) -> None:
    call_streams.cancel_idle()
    call.cancel()


# The callback invocation the current task runs inside (0: none).
_INVOCATION: "contextvars.ContextVar[int]" = contextvars.ContextVar("ffid_aio_invocation", default=0)


class Session:
    """One ffid session (asyncio). Methods that talk to the daemon are
    coroutines; see ffid.Session for what each does."""

    _pointer_class: type

    def __init__(self, address: str, channel: grpc.aio.Channel, stub: ffid_pb2_grpc.FfiStub,
                 session: ffid_pb2.Session) -> None:
        self._pointer_class = Pointer
        self.address = address
        self.id: str = session.id
        self.worker_pid: int = session.worker_pid
        self._channel = channel
        self._stub = stub
        self._declarations = _core.Declarations()
        self._pending_free: List[str] = []
        self._closed = False
        # Set once the daemon turned WriteStream/ReadStream down as unknown.
        self._pieces_only = False
        self._errno = threading.local()
        self._stream: Any = None
        self._finalizer: "Optional[weakref.finalize[Any, Any]]" = None
        self._reader: "Optional[asyncio.Future[None]]" = None
        self._write_lock = asyncio.Lock()
        self._pending: "Dict[int, asyncio.Future[ffid_pb2.StreamResult]]" = {}
        self._tags = itertools.count(1)
        self._callback_functions: Dict[str, Any] = {}
        self._last_callback_failure: Optional[BaseException] = None
        self._arena: Optional[_arena.Arena] = None
        # Calls without a timeout go on CallStreams (cheaper than unary RPCs).
        self._call_streams = _call_streams.AioCallStreams(stub)

    async def _attach(self) -> None:
        call = self._stub.Connect()
        try:
            await call.write(ffid_pb2.ConnectRequest(attach=ffid_pb2.AttachSession(session=self.id)))
            first = await call.read()
        except grpc.RpcError as error:
            await self._delete()
            raise _errors.from_rpc_error(error) from None
        if first is grpc.aio.EOF or not first.HasField("attached"):
            call.cancel()
            await self._delete()
            raise _errors.Unavailable(
                f"the daemon did not confirm the Connect stream of session {self.id}")
        self._stream = call
        # Dropped without close(): closing the stream ends the session; its
        # CallStreams end too.
        self._finalizer = weakref.finalize(self, _cancel_streams, call, self._call_streams)
        self._reader = asyncio.ensure_future(self._read_stream(call))

    async def _read_stream(self, call: Any) -> None:
        """Takes StreamResults and CallbackInvocations off the stream."""
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    break
                kind = message.WhichOneof("kind")
                if kind == "result":
                    future = self._pending.pop(message.result.tag, None)
                    if future is not None and not future.done():
                        future.set_result(message.result)
                elif kind == "invocation":
                    asyncio.ensure_future(self._run_callback(message.invocation))
        except (grpc.RpcError, asyncio.CancelledError):
            pass  # closed, or the daemon went away
        finally:
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(_errors.Unavailable("the session's Connect stream closed"))

    async def _send(self, message: ffid_pb2.ConnectRequest) -> None:
        async with self._write_lock:  # one write at a time on a stream
            await self._stream.write(message)

    async def _stream_request(self, invocation: int, field: str, request: Any, timeout: Optional[float]) -> Any:
        future: "asyncio.Future[ffid_pb2.StreamResult]" = asyncio.get_running_loop().create_future()
        tag = next(self._tags)
        self._pending[tag] = future
        call = ffid_pb2.StreamCall(tag=tag, invocation=invocation)
        getattr(call, field).CopyFrom(request)
        await self._send(ffid_pb2.ConnectRequest(call=call))
        try:
            result = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self._pending.pop(tag, None)
            raise _errors.DeadlineExceeded(f"no answer within {timeout:g}s", reason="DEADLINE_EXCEEDED") from None
        if result.error_status:
            raise _callbacks.stream_error(result)
        return getattr(result, field)

    async def _run_callback(self, invocation: ffid_pb2.CallbackInvocation) -> None:
        entry = self._callback_functions.get(invocation.callback)
        returned: Any = None
        failure: Optional[BaseException] = None
        function_type = types_pb2.FunctionType()
        if entry is None:
            failure = LookupError(f"no callback {invocation.callback} in this client")
        else:
            function, function_type = entry
            token = _INVOCATION.set(invocation.invocation)
            try:
                returned = function(*_callbacks.arguments(invocation, function_type, self._make_pointer))
                if inspect.isawaitable(returned):
                    returned = await returned
            except Exception as error:  # reported to the native caller
                failure = error
            finally:
                _INVOCATION.reset(token)
        if failure is not None:
            self._last_callback_failure = failure
        try:
            await self._send(_callbacks.result_message(invocation, function_type, returned, failure))
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the stream closed; the native side sees that

    async def callback(self, signature: str, function: Callable[..., Any], *, default: Any = None,
                       on_error: str = "return_default", timeout: Optional[float] = None) -> "Callback":
        """See ffid.Session.callback. `function` may be a coroutine function;
        inside it, await calls, reads and writes of this session as usual."""
        sources = _callbacks.callback_sources(signature)
        for i, source in enumerate(sources):
            try:
                response = await self._call(self._stub.ParseDeclarations,
                                            ffid_pb2.ParseDeclarationsRequest(session=self.id, source=source))
                break
            except _errors.DeclarationInvalid:
                if i == len(sources) - 1:
                    raise
        function_type = self._declarations.resolve_function(_callbacks.pick_function(response, signature))
        request = _callbacks.register_request(self.id, function_type, getattr(function, "__name__", ""),
                                              default, on_error, timeout)
        registered = await self._call(self._stub.RegisterCallback, request)
        self._callback_functions[registered.callback] = (function, function_type)
        return Callback(self, registered.callback, function, function_type, registered.address)

    async def _delete(self) -> None:
        try:
            await self._stub.DeleteSession(ffid_pb2.DeleteSessionRequest(session=self.id),
                                           timeout=_core.DELETE_TIMEOUT)
        except grpc.RpcError:
            pass  # closing the stream makes the daemon delete it anyway

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Ends the session and closes its channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._call_streams.close()
        await self._delete()
        if self._finalizer is not None:
            self._finalizer()
        if self._reader is not None:
            self._reader.cancel()
        await self._channel.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<ffid.aio.Session {self.id} at {self.address}{' (closed)' if self._closed else ''}>"

    async def _call(self, method: Any, request: Any, timeout: Optional[float] = None,
                    wrapped: Optional[ffid_pb2.CallStreamRequest] = None) -> Any:
        """As the sync Session._call."""
        if self._closed:
            raise _errors.SessionNotFound(f"session {self.id} was closed", reason="SESSION_NOT_FOUND")
        invocation = _INVOCATION.get()
        if invocation and not isinstance(request, _callbacks.DAEMON_ONLY):
            # Inside a callback: on the stream, run by the waiting native thread.
            field = _callbacks.STREAM_FIELDS.get(type(request))
            if field is None:
                raise _callbacks.not_in_callback(request)
            return await self._stream_request(invocation, field, request, timeout)
        while self._pending_free:
            handle = self._pending_free.pop()
            try:
                await self._stub.Free(ffid_pb2.FreeRequest(session=self.id, memory=handle),
                                      timeout=_core.DELETE_TIMEOUT)
            except grpc.RpcError:
                pass  # the session's end releases it anyway
        try:
            if timeout is None and method is self._stub.Call:
                response = await self._call_streams.call(request, wrapped)
                if response is not None:
                    return response
            return await method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise _core.with_timeout(_errors.from_rpc_error(error), timeout) from None

    def _defer_free(self, handle: str) -> None:
        self._pending_free.append(handle)

    def _make_pointer(self, value: types_pb2.PointerValue) -> "Pointer":
        return Pointer(self, value.handle, value.offset if value.handle else 0, value.address)

    def _make_owned(self, value: types_pb2.PointerValue, text: Any = None) -> "Memory":
        return Memory(self, value.handle, 0, value.address, None, text=text)

    async def adopt(self, pointer: "Pointer", destructor: str = "", *, library: Optional["Library"] = None,
                    size: int = 0) -> "Memory":
        response = await self._call(self._stub.Adopt, ffid_pb2.AdoptRequest(
            session=self.id, pointer=pointer._pointer_value(), destructor=destructor,
            library=library.handle if library is not None else "", size=size))
        return Memory(self, response.memory, size, response.address, None)

    async def info(self) -> ffid_pb2.Session:
        return (await self._call(self._stub.GetSession, ffid_pb2.GetSessionRequest(session=self.id))).session

    async def server_info(self) -> ffid_pb2.GetServerInfoResponse:
        """See ffid.Session.server_info."""
        return await self._call(self._stub.GetServerInfo, ffid_pb2.GetServerInfoRequest())

    @property
    def errno(self) -> int:
        return getattr(self._errno, "value", 0)

    async def cdef(self, source: str) -> None:
        response = await self._call(self._stub.ParseDeclarations,
                                    ffid_pb2.ParseDeclarationsRequest(session=self.id, source=source))
        self._declarations.add(response)

    async def typeof(self, ctype: str) -> types_pb2.TypeDescriptor:
        known = self._declarations.known_type(ctype)
        if known is not None:
            return known
        source, name = _core.type_source(ctype)
        response = await self._call(self._stub.ParseDeclarations, ffid_pb2.ParseDeclarationsRequest(
            session=self.id, source=source))
        return self._declarations.remember_type(ctype, _core.type_from_parse(response, ctype, name))

    async def load(self, name: str, *, use_errno: bool = False) -> "Library":
        response = await self._call(self._stub.LoadLibrary, ffid_pb2.LoadLibraryRequest(session=self.id, name=name))
        return Library(self, response.library, response.path, use_errno)

    async def alloc(self, size: Union[int, BytesLike], init: BytesLike = b"", *, arena: bool = False) -> "Memory":
        """See ffid.Session.alloc (arena=True: in the shared-memory arena)."""
        request = _core.allocate_request(self.id, size, init, arena)
        return self._memory_from(await self._call(self._stub.Allocate, request))

    def _memory_from(self, response: ffid_pb2.AllocateResponse, owned: bool = True) -> "Memory":
        memory = Memory(self, response.memory, response.size, response.address, None, owned=owned)
        memory.in_arena = response.in_arena
        memory.arena_offset = response.arena_offset
        return memory

    async def map_arena(self) -> _arena.Arena:
        """Maps the session's shared-memory arena into this process; see
        ffid.Session.map_arena."""
        if self._arena is not None:
            return self._arena
        response = await self._call(self._stub.OpenArena, ffid_pb2.OpenArenaRequest(session=self.id))
        arena = await asyncio.get_running_loop().run_in_executor(None, _arena.receive, response)
        if self._arena is None:
            self._arena = arena
        else:
            arena.close()
        return self._arena

    def batch(self) -> "Batch":
        """A batch (see ffid.Session.batch): `async with session.batch() as
        b:` runs it when the block ends, or `await b.run()`."""
        return Batch(self)

    async def _submit(self, field: str, request: Any) -> "asyncio.Future[ffid_pb2.StreamResult]":
        """Sends `request` as a StreamCall; the future gets its result."""
        if self._closed:
            raise _errors.SessionNotFound(f"session {self.id} was closed", reason="SESSION_NOT_FOUND")
        future: "asyncio.Future[ffid_pb2.StreamResult]" = asyncio.get_running_loop().create_future()
        tag = next(self._tags)
        self._pending[tag] = future
        call = ffid_pb2.StreamCall(tag=tag)
        getattr(call, field).CopyFrom(request)
        await self._send(ffid_pb2.ConnectRequest(call=call))
        return future

    async def new(self, ctype: str, value: Any = None, *, count: int = 0, flexible_length: int = 0) -> "Memory":
        """See ffid.Session.new."""
        descriptor = await self.typeof(ctype)
        request = ffid_pb2.AllocateRequest(session=self.id, size=count, type=descriptor,
                                           flexible_length=flexible_length)
        if value is not None:
            request.initial_value.CopyFrom(_values.to_value(value, descriptor, "initial value", _core.pointer_of))
        response = await self._call(self._stub.Allocate, request)
        memory = Memory(self, response.memory, response.size, response.address, _core.array_of(descriptor, count))
        memory.flexible_length = flexible_length
        return memory

    def _streams(self, length: int) -> bool:
        # As ffid.Session._streams.
        return (_core.use_streams(length) and not self._pieces_only and not self._closed
                and not _INVOCATION.get())

    async def _read(self, pointer: types_pb2.PointerValue, length: int) -> bytes:
        return b"".join([data async for data in self._read_pieces(pointer, length)])

    async def _read_into(self, pointer: types_pb2.PointerValue, target: _core.ReadInto) -> int:
        pieces = self._read_pieces(pointer, len(target.view))
        try:
            async for data in pieces:
                target.add(data)
        finally:
            await pieces.aclose()  # a stream left early ends now, not at collection
        return target.finish()

    async def _read_pieces(self, pointer: types_pb2.PointerValue, length: int) -> AsyncGenerator[bytes, None]:
        # On one ReadStream, else in pieces, as ffid.Session._read_pieces.
        if self._streams(length):
            try:
                async for piece in self._stub.ReadStream(_core.read_stream_request(self.id, pointer, length)):
                    yield piece.data
                return
            except grpc.RpcError as rpc_error:
                error = _errors.from_rpc_error(rpc_error)
                if not _core.streams_unimplemented(error):
                    raise error from None
                self._pieces_only = True
        plan = _core.read_pieces(length)
        for start, size in plan:
            try:
                data = (await self._call(self._stub.Read, ffid_pb2.ReadRequest(
                    session=self.id, pointer=_core.advanced(pointer, start), length=size))).data
            except _errors.Error as error:
                raise (_core.name_piece(error, start, length) if len(plan) > 1 else error) from None
            yield data

    async def _write(self, pointer: types_pb2.PointerValue, data: BytesLike) -> None:
        # On one WriteStream, else in pieces, the last first, as
        # ffid.Session._write.
        view = memoryview(data).cast("B")
        if self._streams(len(view)):
            try:
                # Written by hand, not from a request iterator: the daemon
                # may end the stream after the first message (a range past
                # the end), and a write then fails with gRPC's "Internal
                # error from Core" instead of the daemon's status. Stop
                # writing once the call has ended; awaiting it gives that
                # status.
                call = self._stub.WriteStream()
                for request in _core.write_stream_requests(self.id, pointer, view):
                    if call.done():
                        break
                    try:
                        await call.write(request)
                    except (asyncio.InvalidStateError, grpc.RpcError):
                        break
                else:
                    try:
                        await call.done_writing()
                    except (asyncio.InvalidStateError, grpc.RpcError):
                        pass
                await call
                return
            except grpc.RpcError as rpc_error:
                error = _errors.from_rpc_error(rpc_error)
                if _core.streams_unimplemented(error):
                    self._pieces_only = True
                elif not (error.code == grpc.StatusCode.INTERNAL and not error.reason):
                    raise error from None
                # Otherwise gRPC's own INTERNAL ("Internal error from
                # Core"), not the daemon's: grpc.aio gives it when the
                # daemon ends the stream (a range past the end) while a
                # message is being written. The pieces below say what the
                # daemon says; writing the same bytes again is harmless.
        plan = _core.write_pieces(len(view))
        for start, size in plan:
            try:
                await self._call(self._stub.Write, ffid_pb2.WriteRequest(
                    session=self.id, pointer=_core.advanced(pointer, start), data=bytes(view[start:start + size])))
            except _errors.Error as error:
                raise (_core.name_piece(error, start, len(view)) if len(plan) > 1 else error) from None

    async def _read_value(self, pointer: types_pb2.PointerValue, descriptor: types_pb2.TypeDescriptor,
                          flexible_length: int = 0) -> Any:
        response = await self._call(self._stub.Read, ffid_pb2.ReadRequest(
            session=self.id, pointer=pointer, type=descriptor, flexible_length=flexible_length))
        return _values.from_value(response.value, descriptor, self._make_pointer)

    async def _write_value(self, pointer: types_pb2.PointerValue, descriptor: types_pb2.TypeDescriptor,
                           value: Any, flexible_length: int = 0) -> None:
        await self._call(self._stub.Write, ffid_pb2.WriteRequest(
            session=self.id, pointer=pointer, type=descriptor, flexible_length=flexible_length,
            value=_values.to_value(value, descriptor, "the value", _core.pointer_of)))


class Library:
    """A loaded library (asyncio). `await lib.cos(0.5)` calls a function
    declared by cdef(); it is resolved on its first call."""

    def __init__(self, session: Session, handle: str, path: str, use_errno: bool) -> None:
        self._session = session
        self.handle = handle
        self.path = path
        self._use_errno = use_errno
        self._functions: Dict[str, Function] = {}

    def __repr__(self) -> str:
        return f"<ffid.aio.Library {self.path}>"

    async def cdef(self, source: str) -> "Library":
        await self._session.cdef(source)
        return self

    async def function(self, declaration: str, *, out: Sequence[ParamSelector] = (),
                       inout: Sequence[ParamSelector] = (), use_errno: Optional[bool] = None,
                       result: str = "borrow", destructor: str = "") -> "Function":
        session = self._session
        response = await session._call(session._stub.ParseDeclarations, ffid_pb2.ParseDeclarationsRequest(
            session=session.id, source=_core.prototype_source(declaration)))
        if len(response.functions) != 1:
            raise _errors.DeclarationInvalid(
                f"expected one function prototype, got {len(response.functions)}: {declaration!r}",
                reason="DECLARATION_INVALID")
        session._declarations.add(ffid_pb2.ParseDeclarationsResponse(types=response.types))
        parsed = response.functions[0]
        return await self._resolve(parsed.name, parsed.type, out, inout, use_errno, result, destructor)

    async def _resolve(self, name: str, function_type: types_pb2.FunctionType, out: Sequence[ParamSelector],
                       inout: Sequence[ParamSelector], use_errno: Optional[bool], result: str = "borrow",
                       destructor: str = "") -> "Function":
        session = self._session
        typed = session._declarations.resolve_function(_core.apply_directions(function_type, out, inout))
        response = await session._call(session._stub.ResolveFunction, ffid_pb2.ResolveFunctionRequest(
            session=session.id, library=self.handle, symbol=name, type=typed))
        spec = _core.FunctionSpec(name, response.function, typed, out, inout,
                                  self._use_errno if use_errno is None else use_errno, result, destructor)
        return Function(session, spec, response.address)

    async def variable(self, name: str, ctype: Optional[str] = None) -> "Memory":
        """The global variable `name` as Memory of its type; see
        ffid.Library.variable. `await mem.read_value()` reads it."""
        session = self._session
        request = ffid_pb2.ResolveVariableRequest(session=session.id, library=self.handle, symbol=name)
        declared = session._declarations.variable(name)
        if ctype is not None:
            request.type.CopyFrom(await session.typeof(ctype))
        elif declared is not None:
            request.type.CopyFrom(declared)
        else:
            raise AttributeError(f"variable '{name}' is not declared: cdef(\"extern <type> {name};\") "
                                 "or pass its type")
        response = await session._call(session._stub.ResolveVariable, request)
        return Memory(session, response.memory, 0, response.address,
                      session._declarations.resolve_type(response.type), owned=False)

    async def resolve(self, name: str) -> "Function":
        """Resolves a function declared by cdef() now (calling it does so on
        first use)."""
        found = self._functions.get(name)
        if found is None:
            function_type = self._session._declarations.function(name)
            if function_type is None:
                raise AttributeError(
                    f"'{name}' is not declared: declare it first with cdef(\"... {name}(...);\") "
                    f"or resolve it with function(\"<prototype>\")")
            found = self._functions.setdefault(name, await self._resolve(name, function_type, (), (), None))
        return found

    def __getattr__(self, name: str) -> "_Declared":
        if name.startswith("__") or not _core.is_identifier(name):
            raise AttributeError(name)
        if self._session._declarations.function(name) is None:
            raise AttributeError(
                f"'{name}' is not declared: declare it first with cdef(\"... {name}(...);\") "
                f"or resolve it with function(\"<prototype>\")")
        return _Declared(self, name)

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self._session._declarations.function_names()))

    async def unload(self) -> None:
        await self._session._call(self._session._stub.UnloadLibrary, ffid_pb2.UnloadLibraryRequest(
            session=self._session.id, library=self.handle))
        self._functions.clear()


class _Declared:
    """lib.name for a cdef()'d function: awaiting a call resolves it first."""

    def __init__(self, library: Library, name: str) -> None:
        self._library = library
        self.name = name

    async def __call__(self, *args: Any, timeout: Optional[float] = None, errno: Optional[bool] = None) -> Any:
        function = await self._library.resolve(self.name)
        return await function(*args, timeout=timeout, errno=errno)


class Function(_core.FunctionBase):
    """A resolved native function (asyncio): `await f(args...)`."""

    _label = "ffid.aio.Function"

    async def __call__(self, *args: Any, timeout: Optional[float] = None, errno: Optional[bool] = None) -> Any:
        session = self._session
        wrapped = self._spec.stream_request(session.id, args, errno)
        request = wrapped.call
        try:
            response = await session._call(session._stub.Call, request, timeout, wrapped)
        except _errors.CallbackFailed as error:
            cause, session._last_callback_failure = session._last_callback_failure, None
            raise error from cause
        if request.capture_errno:
            session._errno.value = response.errno_value
        return self._spec.result(response, session._make_pointer, session._make_owned)


    def call_async(self, *args: Any, errno: Optional[bool] = None) -> "asyncio.Future[Any]":
        """Sends the call on the session's Connect stream without waiting
        for earlier ones: many can be in flight (pipelined), and they run in
        the order this method was called. Returns a future of the result."""
        session = self._session
        request = self._spec.request(session.id, args, errno)
        spec = self._spec
        sending = asyncio.ensure_future(session._submit("call", request))

        async def finish() -> Any:
            result = await (await sending)
            if result.error_status:
                raise _callbacks.stream_error(result)
            if request.capture_errno:
                session._errno.value = result.call.errno_value
            return spec.result(result.call, session._make_pointer, session._make_owned)

        return asyncio.ensure_future(finish())


class Batch(_batch.BatchSteps):
    """Steps to run in one round trip (asyncio); see ffid.Batch. Adding
    steps does no I/O; `await batch.run()` (or leaving `async with`) runs
    them."""

    async def run(self, timeout: Optional[float] = None) -> List[Any]:
        session = self._session
        response = await session._call(session._stub.Batch, self._builder.request(), timeout)
        self.results = self._builder.finish(response)
        return self.results

    async def __aenter__(self) -> "Batch":
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            await self.run()


class Callback(_core.CallbackBase):
    """A Python function registered with `await session.callback(...)`."""

    _label = "ffid.aio.Callback"

    async def release(self) -> None:
        await self._session._call(self._session._stub.ReleaseCallback, self._release_request())
        self._session._callback_functions.pop(self.handle, None)


class Pointer(_core.PointerBase):
    """A pointer into the worker (asyncio); see ffid.Pointer."""

    __slots__ = ("_owner",)

    def __init__(self, session: Session, handle: str, offset: int, address: int) -> None:
        super().__init__(session, handle, offset, address)
        self._owner: Any = None

    def _at(self, offset: int) -> "Pointer":
        pointer = Pointer(self._session, self.handle, offset, self.address)
        pointer._owner = self._owner if self._owner is not None else self
        return pointer

    async def read(self, length: int, offset: int = 0) -> bytes:
        if length < 0 or offset < 0:
            raise ValueError("length and offset must not be negative")
        return await self._session._read((self + offset)._pointer_value(), length)

    async def read_into(self, buffer: Any, offset: int = 0) -> int:
        """See ffid.Pointer.read_into: reads len(buffer) bytes into a
        writable buffer, piece by piece; returns that count."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        with _core.ReadInto(buffer) as target:
            return target.finish() if target.empty() else \
                await self._session._read_into((self + offset)._pointer_value(), target)

    async def write(self, data: BytesLike, offset: int = 0) -> None:
        if offset < 0:
            raise ValueError("offset must not be negative")
        await self._session._write((self + offset)._pointer_value(), data)

    async def _descriptor(self, ctype: Optional[str]) -> types_pb2.TypeDescriptor:
        if ctype is not None:
            return await self._session.typeof(ctype)
        own = getattr(self, "ctype", None)
        if own is None:
            raise TypeError("this pointer has no C type: pass one, e.g. read_value(\"int\")")
        return own

    async def read_value(self, ctype: Optional[str] = None, *, flexible_length: Optional[int] = None) -> Any:
        """See ffid.Pointer.read_value."""
        return await self._session._read_value(self._pointer_value(), await self._descriptor(ctype),
                                               _core.flexible_length_of(self, ctype, flexible_length))

    async def write_value(self, value: Any, ctype: Optional[str] = None, *,
                          flexible_length: Optional[int] = None) -> None:
        """See ffid.Pointer.write_value."""
        await self._session._write_value(self._pointer_value(), await self._descriptor(ctype), value,
                                         _core.flexible_length_of(self, ctype, flexible_length))


class Memory(Pointer):
    """Native memory owned by the session (asyncio); see ffid.Memory."""

    __slots__ = ("size", "ctype", "text", "_finalizer", "in_arena", "arena_offset", "flexible_length")

    def __init__(self, session: Session, handle: str, size: int, address: int,
                 ctype: Optional[types_pb2.TypeDescriptor], *, owned: bool = True, text: Any = None) -> None:
        super().__init__(session, handle, 0, address)
        self.size = size
        self.ctype = ctype
        # Elements of ctype's flexible array member the memory has room for.
        self.flexible_length = 0
        self.text = text
        self.in_arena = False
        self.arena_offset = 0
        self._finalizer: Optional[weakref.finalize[Any, Any]] = (
            weakref.finalize(self, session._defer_free, handle) if owned else None)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return True

    async def read(self, length: Optional[int] = None, offset: int = 0) -> bytes:
        if length is None:
            if self.size == 0:
                raise ValueError("the size of this memory is unknown: give read() a length")
            length = self.size - offset
            if length <= 0:
                return b""
        return await super().read(length, offset)

    async def view(self) -> memoryview:
        """For arena memory: a writable memoryview of its bytes, shared with
        native code; see ffid.Memory.view."""
        return (await self._session.map_arena()).view(self)

    async def free(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        await self._session._call(self._session._stub.Free,
                                  ffid_pb2.FreeRequest(session=self._session.id, memory=self.handle))
