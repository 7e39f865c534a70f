"""The synchronous client: connect() -> Session -> Library -> Function, and
native memory as Memory/Pointer objects."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import queue
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from ffid import _arena, _batch, _call_streams, _callbacks, _connection, _core, _errors, _values
from ffid._core import ParamSelector
from ffid.v1 import ffid_pb2, ffid_pb2_grpc, types_pb2

BytesLike = Union[bytes, bytearray, memoryview]


def connect(address: Optional[str] = None, *, connect_timeout: float = 10.0,
            token: Optional[str] = None, token_file: Optional[Union[str, "os.PathLike[str]"]] = None,
            ca: Optional[_connection.PemSource] = None, cert: Optional[_connection.PemSource] = None,
            key: Optional[_connection.PemSource] = None, insecure: Optional[bool] = None,
            **session_options: Any) -> "Session":
    """Connects to the ffid daemon and starts a session (one worker process).

    address: "unix:/path/to/socket" or "host:port"; default $FFID_ADDRESS,
      else the daemon's default socket ($XDG_RUNTIME_DIR/ffid/ffid.sock,
      else /tmp/ffid-$UID/ffid.sock).
    connect_timeout: seconds to wait for the daemon.
    token / token_file: a bearer token, or a file holding one, sent with
      every request (default $FFID_TOKEN, else the file $FFID_TOKEN_FILE).
    ca: the CA certificates that signed the daemon's certificate, a PEM file
      name or the PEM bytes (default $FFID_CA, else the system's roots). A
      host:port address uses TLS unless insecure=True.
    cert, key: the client certificate chain and its private key for mutual
      TLS, file names or PEM bytes (default $FFID_CERT, $FFID_KEY).
    insecure: plaintext TCP, for a daemon started with --insecure (default
      $FFID_INSECURE=1). A unix: address is always plaintext.
    session_options: options of the session, see ffid.SESSION_OPTIONS
      (idle_timeout=seconds).

    Contradictory or unreadable settings raise ValueError; a daemon that
    cannot be reached (or a failed TLS handshake) ffid.Unavailable saying
    what to check; a token the daemon does not accept ffid.Unauthenticated.

    Use the session as a context manager, or call close(): the daemon ends the
    session (and its worker) when it closes.
    """
    request = _core.create_session_request(session_options)
    connection = _connection.resolve(address, token=token, token_file=token_file, ca=ca, cert=cert,
                                     key=key, insecure=insecure)
    address = connection.address
    _core.check_address(address)
    raw_channel, channel = _connection.sync_channel(connection, _core.CHANNEL_OPTIONS)
    try:
        grpc.channel_ready_future(raw_channel).result(timeout=connect_timeout)
    except grpc.FutureTimeoutError:
        raw_channel.close()
        raise _connection.unreachable(connection, connect_timeout) from None
    stub = ffid_pb2_grpc.FfiStub(channel)
    try:
        try:
            response = stub.CreateSession(request)
        except grpc.RpcError as error:
            raise _errors.from_rpc_error(error) from None
        return Session(address, raw_channel, stub, response.session, connection.metadata)
    except BaseException:
        raw_channel.close()
        raise


class _Stream:
    """The session's Connect stream: attached on creation, held open until
    close(). The daemon deletes the session when the stream closes. A reader
    thread takes StreamResults (answers to requests made inside callbacks)
    and CallbackInvocations, which it hands to `on_invocation`."""

    def __init__(self, stub: ffid_pb2_grpc.FfiStub, session_id: str,
                 on_invocation: Callable[[ffid_pb2.CallbackInvocation], None]) -> None:
        self._on_invocation = on_invocation
        self._pending: Dict[int, "concurrent.futures.Future[ffid_pb2.StreamResult]"] = {}
        self._tags = itertools.count(1)
        self._lock = threading.Lock()
        self._ended = False
        self._requests: "queue.Queue[Optional[ffid_pb2.ConnectRequest]]" = queue.Queue()
        self._requests.put(ffid_pb2.ConnectRequest(attach=ffid_pb2.AttachSession(session=session_id)))
        self._call = stub.Connect(self._messages())
        try:
            first = next(self._call)
        except grpc.RpcError as error:
            raise _errors.from_rpc_error(error) from None
        except StopIteration:
            raise _errors.Unavailable(
                f"the daemon closed the Connect stream of session {session_id} before confirming it") from None
        if not first.HasField("attached"):
            self.close()
            raise _errors.Internal(
                f"the daemon answered the attachment of session {session_id} with an unexpected message",
                reason="INTERNAL")
        self._reader = threading.Thread(target=self._read, name=f"ffid-stream-{session_id[:8]}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                kind = message.WhichOneof("kind")
                if kind == "result":
                    with self._lock:
                        future = self._pending.pop(message.result.tag, None)
                    if future is not None:
                        future.set_result(message.result)
                elif kind == "invocation":
                    self._on_invocation(message.invocation)
        except grpc.RpcError:
            pass  # cancelled by close(), or the daemon went away
        finally:
            with self._lock:
                self._ended = True
                pending, self._pending = self._pending, {}
            for future in pending.values():
                future.set_exception(_errors.Unavailable("the session's Connect stream closed"))

    def send(self, message: ffid_pb2.ConnectRequest) -> None:
        self._requests.put(message)

    def request(self, invocation: int, field: str, request: Any, timeout: Optional[float]) -> Any:
        """Sends `request` as a StreamCall made inside `invocation` and
        returns its response."""
        future = self.submit(field, request, invocation)
        try:
            result = future.result(timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                for tag, pending in list(self._pending.items()):
                    if pending is future:
                        del self._pending[tag]
            raise _errors.DeadlineExceeded(f"no answer within {timeout:g}s", reason="DEADLINE_EXCEEDED") from None
        if result.error_status:
            raise _callbacks.stream_error(result)
        return getattr(result, field)

    def submit(self, field: str, request: Any,
               invocation: int = 0) -> "concurrent.futures.Future[ffid_pb2.StreamResult]":
        """Sends `request` as a StreamCall (made inside `invocation`, if not
        0) and returns at once; the future gets its StreamResult."""
        future: "concurrent.futures.Future[ffid_pb2.StreamResult]" = concurrent.futures.Future()
        with self._lock:
            if self._ended:
                raise _errors.Unavailable("the session's Connect stream closed")
            tag = next(self._tags)
            self._pending[tag] = future
        call = ffid_pb2.StreamCall(tag=tag, invocation=invocation)
        getattr(call, field).CopyFrom(request)
        self.send(ffid_pb2.ConnectRequest(call=call))
        return future

    def _messages(self) -> Iterator[ffid_pb2.ConnectRequest]:
        while True:
            message = self._requests.get()
            if message is None:
                return
            yield message

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()


class _Current(threading.local):
    """Per thread: the invocation (its id and message) the thread runs
    inside; 0 and None outside callbacks."""

    invocation = 0
    message: Optional[ffid_pb2.CallbackInvocation] = None


class _Callbacks:
    """A session's callbacks: the Python functions by handle, the threads
    that run invocations, and which invocation the current thread is
    inside. Holds the session weakly (the stream's reader thread holds
    this)."""

    def __init__(self, session: "Session") -> None:
        self._session = weakref.ref(session)
        self._lock = threading.Lock()
        self._functions: Dict[str, Any] = {}
        # Invocations run on their own threads so that the reader keeps
        # reading (nested calls' answers, nested invocations).
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="ffid-callback")
        self.current = _Current()
        self.last_failure: Optional[BaseException] = None

    def add(self, handle: str, function: Callable[..., Any], function_type: types_pb2.FunctionType) -> None:
        with self._lock:
            self._functions[handle] = (function, function_type)

    def remove(self, handle: str) -> None:
        with self._lock:
            self._functions.pop(handle, None)

    def invocation(self) -> int:
        return self.current.invocation

    def message(self) -> Optional[ffid_pb2.CallbackInvocation]:
        return self.current.message

    def dispatch(self, invocation: ffid_pb2.CallbackInvocation) -> None:
        try:
            self._executor.submit(self._run, invocation)
        except RuntimeError:
            pass  # shutting down: the native side sees the stream close

    def _run(self, invocation: ffid_pb2.CallbackInvocation) -> None:
        session = self._session()
        if session is None or session._stream is None:
            return
        with self._lock:
            entry = self._functions.get(invocation.callback)
        returned: Any = None
        failure: Optional[BaseException] = None
        function_type = types_pb2.FunctionType()
        if entry is None:
            failure = LookupError(f"no callback {invocation.callback} in this client")
        else:
            function, function_type = entry
            outer, outer_message = self.invocation(), self.message()
            self.current.invocation, self.current.message = invocation.invocation, invocation
            try:
                returned = function(*_callbacks.arguments(invocation, function_type, session._make_pointer))
            except BaseException as error:  # reported to the native caller
                failure = error
            finally:
                self.current.invocation, self.current.message = outer, outer_message
        if failure is not None:
            self.last_failure = failure
        session._stream.send(_callbacks.result_message(invocation, function_type, returned, failure))

    def close(self) -> None:
        self._executor.shutdown(wait=False)


def _close_session(stub: ffid_pb2_grpc.FfiStub, session_id: str, stream: _Stream, channel: grpc.Channel,
                   call_streams: _call_streams.CallStreams) -> None:
    try:
        call_streams.close()
        try:
            stub.DeleteSession(ffid_pb2.DeleteSessionRequest(session=session_id), timeout=_core.DELETE_TIMEOUT)
        except grpc.RpcError:
            pass  # closing the stream below makes the daemon delete it anyway
        except ValueError:
            pass  # the channel is already closed
        stream.close()
    finally:
        # Even if interrupted (Ctrl-C in DeleteSession): the finalizer runs
        # once.
        try:
            channel.close()
        finally:
            # The call streams' ends, the daemon's or the channel's cancel:
            # frees what grpcio kept for them.
            call_streams.finish()


class Session:
    """One ffid session: a worker process on the daemon's side, the libraries
    it loaded, the functions it resolved and the memory it owns.

    Thread-safe: every method may be called from several threads at once.
    """

    _pointer_class: type

    def __init__(self, address: str, channel: grpc.Channel, stub: ffid_pb2_grpc.FfiStub,
                 session: ffid_pb2.Session, metadata: Tuple[Tuple[str, str], ...] = ()) -> None:
        self._pointer_class = Pointer
        self.address = address
        self.id: str = session.id
        self.worker_pid: int = session.worker_pid
        self._channel = channel
        self._stub = stub
        self._declarations = _core.Declarations()
        self._lock = threading.Lock()
        self._pending_free: List[str] = []
        self._closed = False
        # Set once the daemon turned WriteStream/ReadStream down as unknown.
        self._pieces_only = False
        self._errno = threading.local()
        self._stream: Optional[_Stream] = None
        self._arena: Optional[_arena.Arena] = None
        self._callbacks = _Callbacks(self)
        # Calls without a timeout go on CallStreams (cheaper than unary RPCs).
        self._call_streams = _call_streams.CallStreams(stub, channel, metadata)
        try:
            self._stream = _Stream(stub, self.id, self._callbacks.dispatch)
        except BaseException:
            try:
                stub.DeleteSession(ffid_pb2.DeleteSessionRequest(session=self.id), timeout=_core.DELETE_TIMEOUT)
            except grpc.RpcError:
                pass
            raise
        self._finalizer = weakref.finalize(self, _close_session, stub, self.id, self._stream, channel,
                                           self._call_streams)

    # -- lifetime

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Ends the session: the daemon stops its worker, which releases
        everything the session held. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()
        self._callbacks.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<ffid.Session {self.id} at {self.address}{' (closed)' if self._closed else ''}>"

    # -- plumbing

    def _call(self, method: Any, request: Any, timeout: Optional[float] = None,
              wrapped: Optional[ffid_pb2.CallStreamRequest] = None) -> Any:
        """Makes the RPC `method` with `request`, or the call on a
        CallStream (a Call without a timeout). `wrapped`: a
        CallStreamRequest whose `call` is `request`, to send as it is."""
        if self._closed:
            raise _errors.SessionNotFound(f"session {self.id} was closed", reason="SESSION_NOT_FOUND")
        invocation = self._callbacks.invocation()
        if invocation and not isinstance(request, _callbacks.DAEMON_ONLY):
            # Inside a callback: on the stream, run by the waiting native thread.
            field = _callbacks.STREAM_FIELDS.get(type(request))
            if field is None or self._stream is None:
                raise _callbacks.not_in_callback(request)
            return self._stream.request(invocation, field, request, timeout)
        if self._pending_free:
            self._flush_frees()
        try:
            if timeout is None and method is self._stub.Call:
                response = self._call_streams.call(request, wrapped)
                if response is not None:
                    return response
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise _core.with_timeout(_errors.from_rpc_error(error), timeout) from None
        except ValueError:
            # grpcio's "Cannot invoke RPC on closed channel!": the session
            # was closed by another thread during the call.
            if self._closed:
                raise _errors.SessionNotFound(f"session {self.id} was closed during the call",
                                              reason="SESSION_NOT_FOUND") from None
            raise

    def _defer_free(self, handle: str) -> None:
        # Called by the garbage collector: no RPC here, the next call sends it.
        self._pending_free.append(handle)

    def _flush_frees(self) -> None:
        while self._pending_free:
            try:
                handle = self._pending_free.pop()
            except IndexError:
                return
            try:
                self._stub.Free(ffid_pb2.FreeRequest(session=self.id, memory=handle),
                                timeout=_core.DELETE_TIMEOUT)
            except grpc.RpcError:
                pass  # the session's end releases it anyway

    def _make_pointer(self, value: types_pb2.PointerValue) -> "Pointer":
        return Pointer(self, value.handle, value.offset if value.handle else 0, value.address)

    def _make_owned(self, value: types_pb2.PointerValue, text: Any = None) -> "Memory":
        return Memory(self, value.handle, 0, value.address, None, text=text)

    # -- session

    def info(self) -> ffid_pb2.Session:
        """The session as the daemon sees it (state, worker pid, crash report)."""
        return self._call(self._stub.GetSession, ffid_pb2.GetSessionRequest(session=self.id)).session

    def server_info(self) -> ffid_pb2.GetServerInfoResponse:
        """What the server offers: the sandbox layers this kernel supports,
        default and maximum limits, whether network access may be asked for."""
        return self._call(self._stub.GetServerInfo, ffid_pb2.GetServerInfoRequest())

    def current_invocation(self) -> Optional[ffid_pb2.CallbackInvocation]:
        """The callback invocation this thread runs inside (its id,
        callback handle and the native_thread_id of the native thread that
        waits for it), or None outside callbacks."""
        return self._callbacks.message()

    @property
    def errno(self) -> int:
        """errno after this thread's last call that captured it (errno=True on
        the call, or use_errno=True on the function or library)."""
        return getattr(self._errno, "value", 0)

    # -- declarations and libraries

    def cdef(self, source: str) -> None:
        """Declares C functions and types (prototypes, struct, union, enum,
        typedef) for this session's libraries, as cffi's cdef does."""
        response = self._call(self._stub.ParseDeclarations,
                              ffid_pb2.ParseDeclarationsRequest(session=self.id, source=source))
        self._declarations.add(response)

    def typeof(self, ctype: str) -> types_pb2.TypeDescriptor:
        """The type descriptor of a C type ("struct point", "int[4]"), with the
        types declared by cdef() resolved."""
        known = self._declarations.known_type(ctype)
        if known is not None:
            return known
        source, name = _core.type_source(ctype)
        response = self._call(self._stub.ParseDeclarations, ffid_pb2.ParseDeclarationsRequest(
            session=self.id, source=source))
        return self._declarations.remember_type(ctype, _core.type_from_parse(response, ctype, name))

    def load(self, name: str, *, use_errno: bool = False) -> "Library":
        """Loads a shared library by path or soname ("libm.so.6"); the daemon
        checks it against its allowlist. use_errno=True captures errno after
        every call of its functions (read it as session.errno)."""
        response = self._call(self._stub.LoadLibrary, ffid_pb2.LoadLibraryRequest(session=self.id, name=name))
        return Library(self, response.library, response.path, use_errno)

    # -- callbacks

    def callback(self, signature: str, function: Callable[..., Any], *, default: Any = None,
                 on_error: str = "return_default", timeout: Optional[float] = None) -> "Callback":
        """Makes a Python function callable from native code: pass the
        returned Callback wherever a function pointer is expected.

        signature: "int(const void *, const void *)" or a prototype.
        default: what the native caller gets when `function` raises (or
          does not answer within `timeout` seconds, default 60) under
          on_error="return_default"; the native call then raises
          CallbackFailed. on_error="terminate" kills the worker instead.

        The callback runs on a thread of this client while the native
        thread waits; inside it, calls, reads and writes through this
        session run on that native thread (so a callback may call back into
        the library). Released by release() or when the session ends.
        """
        sources = _callbacks.callback_sources(signature)
        for i, source in enumerate(sources):
            try:
                response = self._call(self._stub.ParseDeclarations,
                                      ffid_pb2.ParseDeclarationsRequest(session=self.id, source=source))
                break
            except _errors.DeclarationInvalid:
                if i == len(sources) - 1:
                    raise
        function_type = self._declarations.resolve_function(_callbacks.pick_function(response, signature))
        request = _callbacks.register_request(self.id, function_type, getattr(function, "__name__", ""),
                                              default, on_error, timeout)
        registered = self._call(self._stub.RegisterCallback, request)
        self._callbacks.add(registered.callback, function, function_type)
        return Callback(self, registered.callback, function, function_type, registered.address)

    # -- memory

    def alloc(self, size: Union[int, BytesLike], init: BytesLike = b"", *, arena: bool = False) -> "Memory":
        """Allocates zero-filled native memory owned by the session:
        alloc(64), alloc(64, b"initial"), or alloc(b"data") for exactly the
        bytes given. Freed by free(), when the object is garbage-collected or
        when the session ends. arena=True places it in the session's
        shared-memory arena: memory.view() is then a memoryview of the very
        bytes native code uses (this client must run on the daemon's host)."""
        request = _core.allocate_request(self.id, size, init, arena)
        return self._memory_from(self._call(self._stub.Allocate, request))

    def _memory_from(self, response: ffid_pb2.AllocateResponse, owned: bool = True) -> "Memory":
        memory = Memory(self, response.memory, response.size, response.address, None, owned=owned)
        memory.in_arena = response.in_arena
        memory.arena_offset = response.arena_offset
        return memory

    def map_arena(self) -> _arena.Arena:
        """Maps the session's shared-memory arena into this process (made on
        first use; the same Arena afterwards). Needs the daemon on this host."""
        with self._lock:
            if self._arena is not None:
                return self._arena
        response = self._call(self._stub.OpenArena, ffid_pb2.OpenArenaRequest(session=self.id))
        arena = _arena.receive(response)
        with self._lock:
            if self._arena is None:
                self._arena = arena
            else:
                arena.close()
            return self._arena

    def batch(self) -> "Batch":
        """A batch: steps added to it (call, alloc, read, write, free) run in
        one round trip, in order, when it runs; a step may take an earlier
        step's result (a BatchResult) as an argument before it exists.

            with session.batch() as b:
                p = b.call(malloc, 64)
                b.call(memset, p, 0, 64, discard=True)
                total = b.call(sum_ints, p, 16)
                b.call(free, p)
            total.value
        """
        return Batch(self)

    def new(self, ctype: str, value: Any = None, *, count: int = 0, flexible_length: int = 0) -> "Memory":
        """Allocates memory for a C type, optionally initialized:
        new("struct point", {"x": 1, "y": 2}), new("int[4]", [1, 2, 3, 4]),
        new("double", count=8) for 8 doubles. Types declared by cdef() may be
        used. memory.value reads it back as a Python value.

        For a struct ending in a flexible array member (`double data[];`,
        also at the end of a struct that is its last member),
        flexible_length=N makes room for N elements, which `value` may set
        ({"n": 2, "data": [0.5, 1.5]}); memory.value and read_value() /
        write_value() on this memory then cover them too."""
        descriptor = self.typeof(ctype)
        request = ffid_pb2.AllocateRequest(session=self.id, size=count, type=descriptor,
                                           flexible_length=flexible_length)
        if value is not None:
            request.initial_value.CopyFrom(_values.to_value(value, descriptor, "initial value", _core.pointer_of))
        response = self._call(self._stub.Allocate, request)
        memory = Memory(self, response.memory, response.size, response.address, _core.array_of(descriptor, count))
        memory.flexible_length = flexible_length
        return memory

    def adopt(self, pointer: "Pointer", destructor: str = "", *, library: Optional["Library"] = None,
              size: int = 0) -> "Memory":
        """Takes ownership of a pointer native code returned: the session
        releases it with `destructor` (a `void f(void *)` symbol, default
        `free`, looked up in `library` or globally) on free(), when the
        Memory is garbage-collected, or when the session ends. With `size`,
        reads and writes are bounds-checked."""
        response = self._call(self._stub.Adopt, ffid_pb2.AdoptRequest(
            session=self.id, pointer=pointer._pointer_value(), destructor=destructor,
            library=library.handle if library is not None else "", size=size))
        return Memory(self, response.memory, size, response.address, None)

    def read(self, pointer: "Pointer", length: int) -> bytes:
        """Reads `length` bytes at any pointer (a bad address raises BadAddress)."""
        return pointer.read(length)

    def write(self, pointer: "Pointer", data: BytesLike) -> None:
        """Writes bytes at any pointer."""
        pointer.write(data)

    def _streams(self, length: int) -> bool:
        # Big transfers go on the streams, except inside a callback (where
        # reads and writes travel on the Connect stream) and to a daemon
        # without them.
        return (_core.use_streams(length) and not self._pieces_only and not self._closed
                and not self._callbacks.invocation())

    def _read(self, pointer: types_pb2.PointerValue, length: int) -> bytes:
        return b"".join(self._read_pieces(pointer, length))

    def _read_into(self, pointer: types_pb2.PointerValue, target: _core.ReadInto) -> int:
        for data in self._read_pieces(pointer, len(target.view)):
            target.add(data)
        return target.finish()

    def _read_pieces(self, pointer: types_pb2.PointerValue, length: int) -> Iterator[bytes]:
        """The bytes of a read, in order, as they arrive. More than
        BULK_PIECE comes on one ReadStream; from a daemon without it, in
        pieces of that size, one after the other: a failure stops it and
        names the piece."""
        if self._streams(length):
            self._flush_frees()
            try:
                for piece in self._stub.ReadStream(_core.read_stream_request(self.id, pointer, length)):
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
                data = self._call(self._stub.Read, ffid_pb2.ReadRequest(
                    session=self.id, pointer=_core.advanced(pointer, start), length=size)).data
            except _errors.Error as error:
                raise (_core.name_piece(error, start, length) if len(plan) > 1 else error) from None
            yield data

    def _write(self, pointer: types_pb2.PointerValue, data: BytesLike) -> None:
        # More than BULK_PIECE goes on one WriteStream (a failure says which
        # bytes were written); to a daemon without it, in pieces of that
        # size, the last first (see write_pieces): a failure stops it
        # (pieces written stay) and names the piece.
        view = memoryview(data).cast("B")
        if self._streams(len(view)):
            self._flush_frees()
            try:
                self._stub.WriteStream(_core.write_stream_requests(self.id, pointer, view))
                return
            except grpc.RpcError as rpc_error:
                error = _errors.from_rpc_error(rpc_error)
                if not _core.streams_unimplemented(error):
                    raise error from None
                self._pieces_only = True
        plan = _core.write_pieces(len(view))
        for start, size in plan:
            try:
                self._call(self._stub.Write, ffid_pb2.WriteRequest(
                    session=self.id, pointer=_core.advanced(pointer, start), data=bytes(view[start:start + size])))
            except _errors.Error as error:
                raise (_core.name_piece(error, start, len(view)) if len(plan) > 1 else error) from None

    def _read_value(self, pointer: types_pb2.PointerValue, descriptor: types_pb2.TypeDescriptor,
                    flexible_length: int = 0) -> Any:
        response = self._call(self._stub.Read, ffid_pb2.ReadRequest(
            session=self.id, pointer=pointer, type=descriptor, flexible_length=flexible_length))
        return _values.from_value(response.value, descriptor, self._make_pointer)

    def _write_value(self, pointer: types_pb2.PointerValue, descriptor: types_pb2.TypeDescriptor, value: Any,
                     flexible_length: int = 0) -> None:
        self._call(self._stub.Write, ffid_pb2.WriteRequest(
            session=self.id, pointer=pointer, type=descriptor, flexible_length=flexible_length,
            value=_values.to_value(value, descriptor, "the value", _core.pointer_of)))


class Library:
    """A library loaded into a session's worker. Functions declared by
    cdef() are its attributes (lib.cos(0.5)); function() resolves one from
    its prototype."""

    def __init__(self, session: Session, handle: str, path: str, use_errno: bool) -> None:
        self._session = session
        self.handle = handle
        self.path = path
        self._use_errno = use_errno
        self._functions: Dict[str, Function] = {}
        self._variables: Dict[str, Memory] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ffid.Library {self.path}>"

    def cdef(self, source: str) -> "Library":
        """Declares C functions and types, as Session.cdef(); returns self."""
        self._session.cdef(source)
        return self

    def function(self, declaration: str, *, out: Sequence[ParamSelector] = (),
                 inout: Sequence[ParamSelector] = (), use_errno: Optional[bool] = None,
                 result: str = "borrow", destructor: str = "") -> "Function":
        """Resolves the function one C prototype names, e.g.
        function("double pow(double, double)"). Pointer parameters listed in
        out (by index or name) are filled by the call and returned after the
        result; inout ones are passed as values and returned likewise.

        For a function returning a pointer or string, result= says who owns
        what it returns: "borrow" (the library; ffid never frees it),
        "adopt" (the call returns an owned Memory that the session releases
        with `destructor`, default free; for a string its text is
        memory.text), "release" (released with `destructor` right after
        the call, e.g. for `char *strdup(const char *)`)."""
        session = self._session
        response = session._call(session._stub.ParseDeclarations, ffid_pb2.ParseDeclarationsRequest(
            session=session.id, source=_core.prototype_source(declaration)))
        if len(response.functions) != 1:
            raise _errors.DeclarationInvalid(
                f"expected one function prototype, got {len(response.functions)}: {declaration!r}",
                reason="DECLARATION_INVALID")
        session._declarations.add(ffid_pb2.ParseDeclarationsResponse(types=response.types))
        parsed = response.functions[0]
        return self._resolve(parsed.name, parsed.type, out, inout, use_errno, result, destructor)

    def _resolve(self, name: str, function_type: types_pb2.FunctionType, out: Sequence[ParamSelector],
                 inout: Sequence[ParamSelector], use_errno: Optional[bool], result: str = "borrow",
                 destructor: str = "") -> "Function":
        session = self._session
        typed = session._declarations.resolve_function(_core.apply_directions(function_type, out, inout))
        response = session._call(session._stub.ResolveFunction, ffid_pb2.ResolveFunctionRequest(
            session=session.id, library=self.handle, symbol=name, type=typed))
        spec = _core.FunctionSpec(name, response.function, typed, out, inout,
                                  self._use_errno if use_errno is None else use_errno, result, destructor)
        return Function(session, spec, response.address)

    def variable(self, name: str, ctype: Optional[str] = None) -> "Memory":
        """The global variable `name` of this library as Memory of its type
        (borrowed: the library owns it); .value reads and assigns it. Its
        type comes from an `extern` declaration passed to cdef(), or from
        `ctype`."""
        session = self._session
        request = ffid_pb2.ResolveVariableRequest(session=session.id, library=self.handle, symbol=name)
        declared = session._declarations.variable(name)
        if ctype is not None:
            request.type.CopyFrom(session.typeof(ctype))
        elif declared is not None:
            request.type.CopyFrom(declared)
        else:
            raise AttributeError(f"variable '{name}' is not declared: cdef(\"extern <type> {name};\") "
                                 "or pass its type")
        response = session._call(session._stub.ResolveVariable, request)
        return Memory(session, response.memory, 0, response.address,
                      session._declarations.resolve_type(response.type), owned=False)

    def _variable_memory(self, name: str) -> "Memory":
        with self._lock:
            found = self._variables.get(name)
        if found is None:
            found = self.variable(name)
            with self._lock:
                found = self._variables.setdefault(name, found)
        return found

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and "_session" in self.__dict__ \
                and self._session._declarations.variable(name) is not None:
            self._variable_memory(name).value = value
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or not _core.is_identifier(name):
            raise AttributeError(name)
        with self._lock:
            found = self._functions.get(name)
        if found is not None:
            return found
        if self._session._declarations.variable(name) is not None:
            return self._variable_memory(name).value
        function_type = self._session._declarations.function(name)
        if function_type is None:
            raise AttributeError(
                f"'{name}' is not declared: declare it first with cdef(\"... {name}(...);\") "
                f"or resolve it with function(\"<prototype>\")")
        function = self._resolve(name, function_type, (), (), None)
        with self._lock:
            return self._functions.setdefault(name, function)

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(self._session._declarations.function_names()))

    def unload(self) -> None:
        """Unloads the library; its functions become invalid."""
        self._session._call(self._session._stub.UnloadLibrary, ffid_pb2.UnloadLibraryRequest(
            session=self._session.id, library=self.handle))
        with self._lock:
            self._functions.clear()


class Function(_core.FunctionBase):
    """A resolved native function. Call it with Python values; keyword
    arguments: timeout (seconds; the worker is killed when it passes,
    raising DeadlineExceeded) and errno (capture errno: session.errno)."""

    _label = "ffid.Function"

    def __call__(self, *args: Any, timeout: Optional[float] = None, errno: Optional[bool] = None) -> Any:
        session = self._session
        wrapped = self._spec.stream_request(session.id, args, errno)
        request = wrapped.call
        try:
            response = session._call(session._stub.Call, request, timeout, wrapped)
        except _errors.CallbackFailed as error:
            cause, session._callbacks.last_failure = session._callbacks.last_failure, None
            raise error from cause
        if request.capture_errno:
            session._errno.value = response.errno_value
        return self._spec.result(response, session._make_pointer, session._make_owned)


    def call_async(self, *args: Any, errno: Optional[bool] = None) -> "concurrent.futures.Future[Any]":
        """Sends the call on the session's Connect stream and returns at
        once: many calls can be in flight (pipelined); they run in the order
        sent. The future's result is what calling the function returns (or
        its exception)."""
        session = self._session
        if session._closed:
            raise _errors.SessionNotFound(f"session {session.id} was closed", reason="SESSION_NOT_FOUND")
        if session._stream is None:
            raise _errors.Unavailable("the session has no Connect stream")
        request = self._spec.request(session.id, args, errno)
        sent = session._stream.submit("call", request)
        done: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        spec = self._spec

        def finish(future: "concurrent.futures.Future[ffid_pb2.StreamResult]") -> None:
            try:
                result = future.result()
                if result.error_status:
                    raise _callbacks.stream_error(result)
                if request.capture_errno:
                    session._errno.value = result.call.errno_value
                done.set_result(spec.result(result.call, session._make_pointer, session._make_owned))
            except BaseException as error:  # handed to the caller
                done.set_exception(error)

        sent.add_done_callback(finish)
        return done


class Batch(_batch.BatchSteps):
    """Steps to run in one round trip (see Session.batch()). Use it as a
    context manager (it runs when the block ends without an exception) or
    call run(). A failed step raises its error, with error.batch_step its
    index; the steps before it stay done."""

    def run(self, timeout: Optional[float] = None) -> List[Any]:
        """Runs the steps; returns each step's value (None for discarded
        steps, writes and frees)."""
        session = self._session
        response = session._call(session._stub.Batch, self._builder.request(), timeout)
        self.results = self._builder.finish(response)
        return self.results

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.run()


class Callback(_core.CallbackBase):
    """A Python function registered with session.callback(): a function
    pointer for native code."""

    _label = "ffid.Callback"

    def release(self) -> None:
        """Releases the callback; native code that still calls it gets its
        failure behaviour, never a crash."""
        self._session._call(self._session._stub.ReleaseCallback, self._release_request())
        self._session._callbacks.remove(self.handle)


class Pointer(_core.PointerBase):
    """A pointer into the worker: one a call returned (borrowed: ffid never
    frees it), or an offset into a Memory. read() needs an explicit length;
    a bad address raises BadAddress instead of crashing."""

    __slots__ = ("_owner",)

    def __init__(self, session: Session, handle: str, offset: int, address: int) -> None:
        super().__init__(session, handle, offset, address)
        self._owner: Any = None

    def _at(self, offset: int) -> "Pointer":
        pointer = Pointer(self._session, self.handle, offset, self.address)
        pointer._owner = self._owner if self._owner is not None else self
        return pointer

    def read(self, length: int, offset: int = 0) -> bytes:
        """Reads `length` bytes at this pointer + offset."""
        if length < 0 or offset < 0:
            raise ValueError("length and offset must not be negative")
        return self._session._read((self + offset)._pointer_value(), length)

    def read_into(self, buffer: Any, offset: int = 0) -> int:
        """Reads len(buffer) bytes at this pointer + offset into `buffer`,
        any writable contiguous buffer (bytearray, memoryview, array.array,
        a numpy array), copying each piece as it arrives: no bytes object
        of the whole size is made. Returns the number of bytes read, always
        len(buffer) in bytes (as io.RawIOBase.readinto, but never short: a
        failure raises what read() raises, and the buffer's contents are
        then unspecified; an empty buffer reads nothing and asks nothing).
        A read-only buffer raises TypeError."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        with _core.ReadInto(buffer) as target:
            return target.finish() if target.empty() else \
                self._session._read_into((self + offset)._pointer_value(), target)

    def write(self, data: BytesLike, offset: int = 0) -> None:
        """Writes bytes at this pointer + offset."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        self._session._write((self + offset)._pointer_value(), data)

    def _descriptor(self, ctype: Optional[str]) -> types_pb2.TypeDescriptor:
        if ctype is not None:
            return self._session.typeof(ctype)
        own = getattr(self, "ctype", None)
        if own is None:
            raise TypeError("this pointer has no C type: pass one, e.g. read_value(\"int\")")
        return own

    def read_value(self, ctype: Optional[str] = None, *, flexible_length: Optional[int] = None) -> Any:
        """Reads one value of C type `ctype` ("int", "struct point",
        "double[4]") here, as a Python value; for memory from new() or
        variable() the type defaults to its own. flexible_length=N also
        reads N elements of the struct's flexible array member (default:
        the memory's own, from new(), for its own type; else none)."""
        return self._session._read_value(self._pointer_value(), self._descriptor(ctype),
                                         _core.flexible_length_of(self, ctype, flexible_length))

    def write_value(self, value: Any, ctype: Optional[str] = None, *, flexible_length: Optional[int] = None) -> None:
        """Writes a Python value here as C type `ctype` (default: the
        memory's own type); flexible_length as for read_value."""
        self._session._write_value(self._pointer_value(), self._descriptor(ctype), value,
                                   _core.flexible_length_of(self, ctype, flexible_length))


class Memory(Pointer):
    """Native memory owned by the session (alloc(), new()). len() is its
    size; read() and write() are bounds-checked (OutOfBounds). Released by
    free(), when this object is garbage-collected, or when the session ends."""

    __slots__ = ("size", "ctype", "text", "_finalizer", "in_arena", "arena_offset", "flexible_length")

    def __init__(self, session: Session, handle: str, size: int, address: int,
                 ctype: Optional[types_pb2.TypeDescriptor], *, owned: bool = True, text: Any = None) -> None:
        super().__init__(session, handle, 0, address)
        self.size = size  # 0 when unknown (adopted without a size, variables)
        self.ctype = ctype
        # Elements of ctype's flexible array member the memory has room for.
        self.flexible_length = 0
        self.text = text  # for an adopted string result: its text
        self.in_arena = False  # in the session's shared-memory arena
        self.arena_offset = 0
        self._finalizer: Optional[weakref.finalize[Any, Any]] = (
            weakref.finalize(self, session._defer_free, handle) if owned else None)

    def view(self) -> memoryview:
        """For memory allocated with arena=True: a writable memoryview of
        its bytes, shared with native code (no copy, no RPC). Maps the
        session's arena on first use."""
        return self._session.map_arena().view(self)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return True

    def read(self, length: Optional[int] = None, offset: int = 0) -> bytes:
        """Reads `length` bytes at `offset` (default: to the end)."""
        if length is None:
            if self.size == 0:
                raise ValueError("the size of this memory is unknown: give read() a length")
            length = self.size - offset
            if length <= 0:
                return b""
        return super().read(length, offset)

    def free(self) -> None:
        """Releases the memory now (an adopted pointer with its destructor);
        later use raises HandleInvalid."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._session._call(self._session._stub.Free,
                            ffid_pb2.FreeRequest(session=self._session.id, memory=self.handle))

    @property
    def value(self) -> Any:
        """The memory's contents as a Python value of its C type (memory
        from new() or variable()); assigning writes it."""
        return self.read_value()

    @value.setter
    def value(self, value: Any) -> None:
        self.write_value(value)
