"""Calls on CallStream streams kept open, for the sync client
(CallStreams) and the asyncio one (AioCallStreams).

A unary Call RPC pays gRPC's whole per-RPC cost; a call on an open
CallStream costs one message each way. Each session keeps a few streams open
to the daemon and lends one to each call without a timeout, one call at a
time per stream: the sync client's calling thread sends the request and
waits for the answer on the stream's own completion queue (_DrivenStream,
through grpcio's lower layer; where that is missing, it queues the request
for gRPC's request thread and reads the answer: _Stream); the asyncio one
writes and reads it on the stream call.

``call`` returns None, without having run the call, when no stream can take
it: all are busy, the daemon has no CallStream (an older daemon: remembered
for good), or it refused a new stream (its limit of open streams: then no
stream is tried for a while, 1 s doubling up to 64 s). The caller then makes
the unary Call RPC. Only a stream that has answered nothing yet counts as
refused: once a call may have run, its failure is the call's, and it is never
sent again. (grpc.aio and the sync client's driven streams can also tell
that a request was never sent, because the stream had already ended: that
call goes to the unary RPC as well, unless the pool was closed meanwhile.
When
that write races with the stream's end, grpc.aio may report its own
INTERNAL instead of the daemon's status: on a new stream that counts as a
refusal, so an older daemon is remembered when its UNIMPLEMENTED is next
seen, a stream retry later.)

The bookkeeping (_Pool) is the same for both; only reading and writing a
stream differ. Thread-safe; the asyncio one is for one event loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Generic, Iterator, List, Optional, Tuple, TypeVar

import grpc
import grpc.aio
from google.protobuf import message as _message

try:
    # grpcio's own lower layer, which its blocking unary calls use; private,
    # so every use is checked (see _DrivenStream).
    from grpc._cython import cygrpc as _cygrpc
except ImportError:  # pragma: no cover - a grpcio without it
    _cygrpc = None  # type: ignore[assignment]

from ffid import _callbacks, _errors
from ffid.v1 import ffid_pb2, ffid_pb2_grpc

# Streams one session keeps open at most (a second opens only for a second
# call at the same time); more calls at the same time take the unary RPC.
STREAMS_PER_SESSION = 4

# The first wait after a refused stream, and the longest (seconds).
_FIRST_BACKOFF = 1.0
_LONGEST_BACKOFF = 64.0

# How long closing an asyncio session waits for its idle streams to end.
_FINISH_WAIT = 1.0


def _refusal(error: grpc.RpcError) -> bool:
    """Whether a new stream's failure is the daemon refusing it: an older
    daemon's UNIMPLEMENTED, or ffid's limit of open streams
    (RESOURCE_EXHAUSTED with reason RESOURCE_LIMIT; gRPC's own, for a
    message too big, is the call's failure)."""
    code = error.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return True
    return (code == grpc.StatusCode.RESOURCE_EXHAUSTED
            and _errors.from_rpc_error(error).reason == "RESOURCE_LIMIT")


class _NotSent(Exception):
    """A request could not be written (asyncio and driven streams): the
    stream had ended (its status: `error`, None if it ended with OK), so
    the call did not run."""

    def __init__(self, error: Optional[grpc.RpcError]) -> None:
        super().__init__()
        self.error = error


class _Stream:
    """One CallStream of the sync client: requests go through a queue that
    gRPC's request thread reads; answers are read by the calling thread."""

    def __init__(self, stub: ffid_pb2_grpc.FfiStub) -> None:
        self._requests: "queue.SimpleQueue[Optional[ffid_pb2.CallStreamRequest]]" = queue.SimpleQueue()
        requests: Iterator[ffid_pb2.CallStreamRequest] = iter(self._requests.get, None)
        self._responses: Any = stub.CallStream(requests)
        # Whether the daemon has answered a call on it (then it was not
        # refused).
        self.answered = False

    def ended(self) -> bool:
        return bool(self._responses.done())

    def call(self, request: ffid_pb2.CallStreamRequest) -> Optional[ffid_pb2.CallStreamResponse]:
        """The answer; None if the stream ended without one."""
        self._requests.put(request)
        response = next(self._responses, None)
        self.answered = self.answered or response is not None
        return response

    def close(self) -> None:
        """Ends an idle stream: the request iterator ends, so gRPC's request
        thread returns and the daemon ends the stream normally."""
        self._requests.put(None)

    def cancel(self) -> None:
        """Ends a stream that broke or was interrupted during a call."""
        self._requests.put(None)
        self._responses.cancel()


# grpc.StatusCode by the number gRPC Core gives.
_CODES = {code.value[0]: code for code in grpc.StatusCode}

_CALL_STREAM = b"/ffid.v1.Ffi/CallStream"


class _StreamStatus(grpc.RpcError):
    """How a _DrivenStream ended: a grpc.RpcError as grpcio raises it (its
    code, details and trailing metadata)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing_metadata = trailing_metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing_metadata

    def __str__(self) -> str:
        return f"<CallStream ended: {self._code}, {self._details!r}>"


def driving_possible(channel: Any) -> bool:
    """Whether _DrivenStream can run on `channel` (a channel grpcio made, of
    a grpcio whose lower layer has what it uses)."""
    if _cygrpc is None or not hasattr(channel, "_channel") or not hasattr(channel._channel, "segregated_call"):
        return False
    if not all(hasattr(_cygrpc, name) for name in (
            "SendInitialMetadataOperation", "ReceiveInitialMetadataOperation",
            "ReceiveStatusOnClientOperation", "SendMessageOperation", "ReceiveMessageOperation",
            "SendCloseFromClientOperation", "PropagationConstants", "StatusCode",
            "is_fork_support_enabled")):
        return False
    # With GRPC_ENABLE_FORK_SUPPORT, grpcio's after-fork handler waits for
    # every stream on its own queue to end, which an idle one never does
    # in the child: grpcio's public streams there.
    return not _cygrpc.is_fork_support_enabled()


class _DrivenStream:
    """One CallStream of the sync client driven by the calling thread alone.

    grpcio's public streams hand every request to a thread of their own and
    every answer comes through the channel's polling thread: two thread
    hand-offs per call, ~90-110 us on a 2-vCPU machine, as much as the rest
    of a call. grpcio's blocking unary calls avoid them with a call on a
    completion queue of its own, polled by the caller
    (cygrpc.Channel.segregated_call); this does the same for a stream: the
    calling thread starts the send and the receive and waits on the
    stream's queue. The layer is grpcio's private one, so CallStreams uses
    this only where driving_possible() says it has what is used here, and
    the public _Stream otherwise.

    One thread at a time (the pool lends a stream to one call). Every
    operation started is waited for before the stream is dropped: grpcio
    destroys the queue once nothing is due on it.
    """

    def __init__(self, channel: Any, metadata: Any) -> None:
        flags = 0
        self._call: Any = channel._channel.segregated_call(
            _cygrpc.PropagationConstants.GRPC_PROPAGATE_DEFAULTS, _CALL_STREAM, None, None, metadata,
            None, (
                ((_cygrpc.SendInitialMetadataOperation(metadata, flags),), "start"),
                ((_cygrpc.ReceiveInitialMetadataOperation(flags),), "initial"),
                ((_cygrpc.ReceiveStatusOnClientOperation(flags),), "status"),
            ))
        # The operations started and not yet seen complete.
        self._due = {"start", "initial", "status"}
        self._status: Optional[_StreamStatus] = None
        self._ended = False
        self._interrupted = False
        self.answered = False

    def ended(self) -> bool:
        return self._ended

    def _next(self) -> Any:
        """Waits for the next completed operation."""
        try:
            event = self._call.next_event()
        except BaseException:
            # A signal handler raised (KeyboardInterrupt), in grpcio's wait
            # (which then dropped the call and its queue) or just after it
            # took an event off the queue: see call().
            self._interrupted = True
            raise
        self._due.discard(event.tag)
        if event.tag == "status":
            self._ended = True
            operation = event.batch_operations[0]
            code = _CODES.get(operation.code(), grpc.StatusCode.UNKNOWN)
            if code != grpc.StatusCode.OK:
                self._status = _StreamStatus(code, operation.details() or "",
                                             operation.trailing_metadata())
        return event

    def _start(self, operation: Any, tag: str) -> bool:
        if not self._due or self._interrupted:
            return False
        try:
            if not self._call.operate((operation,), tag):
                return False
            self._due.add(tag)
        except BaseException:
            # A signal handler raised before the operation was noted as
            # due: as in call(), nothing is waited for on it again.
            self._interrupted = True
            raise
        return True

    def call(self, request: ffid_pb2.CallStreamRequest) -> Optional[ffid_pb2.CallStreamResponse]:
        """The answer; None if the stream ended with OK without one. Raises
        _NotSent if the request was not sent (the stream had ended), the
        stream's status if it ended otherwise."""
        if not self._start(_cygrpc.SendMessageOperation(request.SerializeToString(), 0), "send"):
            self._drain()
            raise _NotSent(self._status)
        sent = True
        if not self._start(_cygrpc.ReceiveMessageOperation(0), "receive"):
            # Cannot happen while the send is due; were it to, the request
            # may have been sent, so the call may have run.
            self.cancel()
            raise self._status or _StreamStatus(grpc.StatusCode.INTERNAL,
                                                "the CallStream's answer could not be awaited", None)
        answer = None
        try:
            while "send" in self._due or "receive" in self._due:
                event = self._next()
                if event.tag == "send":
                    sent = event.success
                elif event.tag == "receive":
                    answer = event.batch_operations[0].message()
        except BaseException:
            # Interrupted (a signal handler raised), perhaps after grpcio
            # took an event off the queue and before it or _next noted it:
            # what is still due is no longer known for sure, and waiting on
            # a queue grpcio has freed would crash, so nothing is waited for
            # on it again (cancel() still cancels it; grpcio may then keep
            # its queue and call until the process ends: a few hundred
            # bytes, for a call the user interrupted).
            self._interrupted = True
            raise
        if answer is None:
            self._drain()
            if not sent:
                raise _NotSent(self._status)
            if self._status is not None:
                raise self._status
            return None
        self.answered = True
        try:
            return ffid_pb2.CallStreamResponse.FromString(answer)
        except _message.DecodeError as error:
            self.cancel()
            raise _StreamStatus(grpc.StatusCode.INTERNAL,
                                f"the daemon's answer on the CallStream could not be parsed: {error}",
                                None) from None

    def _drain(self) -> None:
        while self._due and not self._interrupted:
            self._next()

    def close(self) -> None:
        """Half-closes an idle stream: the daemon ends it normally. Its
        end is not waited for here (finish() does)."""
        self._start(_cygrpc.SendCloseFromClientOperation(0), "close")

    def finish(self) -> None:
        """Waits for a closed stream's end: the daemon's status, or the
        channel's close, which cancels it. Frees grpcio's queue."""
        self._drain()

    def cancel(self) -> None:
        """Ends a stream that broke or was interrupted during a call.
        (grpcio's cancel does nothing once nothing is due on its side.)"""
        if self._due or self._interrupted:
            self._call.cancel(_cygrpc.StatusCode.cancelled, "the client ended the stream")
            self._drain()

    def waits_for_nothing(self) -> bool:
        """Whether nothing started on it is left to wait for."""
        return not self._due or self._interrupted


class _AioStream:
    """One CallStream of the asyncio client: the calling task writes the
    request and reads the answer."""

    def __init__(self, stub: ffid_pb2_grpc.FfiStub) -> None:
        self._call: Any = stub.CallStream()
        self.answered = False

    def ended(self) -> bool:
        return bool(self._call.done())

    async def call(self, request: ffid_pb2.CallStreamRequest) -> Optional[ffid_pb2.CallStreamResponse]:
        """The answer; None if the stream ended without one. Raises _NotSent
        if the request could not be written (the stream had ended)."""
        try:
            await self._call.write(request)
        except (grpc.RpcError, asyncio.InvalidStateError):
            # grpc.aio raises InvalidStateError, the status, or its own
            # INTERNAL ("Internal error from Core") for a stream that ended
            # before or while the request was written; read() then gives the
            # status it ended with (or EOF), or raises that same INTERNAL.
            raise _NotSent(await self._status()) from None
        response = await self._call.read()
        if response is grpc.aio.EOF:
            return None
        self.answered = True
        return response

    async def _status(self) -> Optional[grpc.RpcError]:
        try:
            await self._call.read()
        except grpc.RpcError as error:
            return error
        return None

    async def finish(self) -> None:
        """Ends an idle stream by half-closing it, and waits (a little) for
        the daemon to end it normally: the channel may be closed next,
        which would cancel it."""
        try:
            await self._call.done_writing()
            await asyncio.wait_for(self._call.code(), _FINISH_WAIT)
        except (grpc.RpcError, asyncio.InvalidStateError, asyncio.TimeoutError):
            self._call.cancel()

    def close(self) -> None:
        """Ends a stream at once (no await possible where it is called)."""
        self._call.cancel()

    def cancel(self) -> None:
        """Ends a stream that broke or was cancelled during a call."""
        self._call.cancel()


_S = TypeVar("_S", _Stream, _DrivenStream, _AioStream)


class _Pool(Generic[_S]):
    """The streams of one session, idle or lent, and whether new ones may be
    opened; what both clients' CallStreams share."""

    def __init__(self, stub: ffid_pb2_grpc.FfiStub) -> None:
        self._stub = stub
        self._lock = threading.Lock()
        self._idle: List[_S] = []
        self._open = 0
        self._unsupported = False
        self._closed = False
        self._refused_until = 0.0
        self._backoff = 0.0

    def _new_stream(self) -> _S:
        raise NotImplementedError

    def _take(self) -> Optional[_S]:
        """An idle stream, or a new one; None when none may be opened."""
        ended: List[_S] = []
        try:
            with self._lock:
                while self._idle:
                    stream = self._idle.pop()
                    if not stream.ended():
                        return stream
                    # Ended while idle (the daemon restarted, the connection
                    # dropped): nothing was sent on it; open another.
                    self._open -= 1
                    ended.append(stream)
                if (self._closed or self._unsupported or self._open >= STREAMS_PER_SESSION
                        or time.monotonic() < self._refused_until):
                    return None
                self._open += 1
        finally:
            for stream in ended:
                self._retire(stream)
        try:
            return self._new_stream()
        except (ValueError, grpc.aio.UsageError):  # the channel is closed
            with self._lock:
                self._open -= 1
            return None

    def _failed(self, stream: _S, error: BaseException) -> bool:
        """Forgets `stream`, on which a call raised `error`; whether the
        call did not run and goes to the unary RPC instead (otherwise the
        caller raises `error`)."""
        if isinstance(error, _NotSent):
            # Never sent: a new stream that ended so was refused (with the
            # status grpc.aio gave, if any); one that had answered before
            # ended while idle.
            refused = None
            if not stream.answered:
                refused = (error.error.code() if error.error is not None and _refusal(error.error)
                           else grpc.StatusCode.UNAVAILABLE)
            self._forget(stream, refused)
            return True
        refused_by_daemon = isinstance(error, grpc.RpcError) and not stream.answered and _refusal(error)
        self._forget(stream, error.code() if refused_by_daemon else None)  # type: ignore[union-attr]
        return refused_by_daemon

    def _answered(self, stream: _S,
                  response: Optional[ffid_pb2.CallStreamResponse]) -> ffid_pb2.CallResponse:
        """The call's response from its answer on `stream` (given back to
        the idle ones); raises the call's ffid.Error."""
        if response is None:
            self._forget(stream, None)
            raise _errors.from_status(grpc.StatusCode.UNAVAILABLE,
                                      "the daemon ended the CallStream before answering the call", None)
        with self._lock:
            self._backoff = 0.0
            kept = not self._closed
            if kept:
                self._idle.append(stream)
        if not kept:
            self._retire(stream)
        if response.error_status:
            raise _callbacks.stream_error(response)
        return response.call

    def _forget(self, stream: _S, refused: Optional[grpc.StatusCode]) -> None:
        """Drops a stream that broke; `refused` is the code of the daemon's
        refusal, if it was one."""
        # The count first: cancel() may wait (and be interrupted).
        with self._lock:
            self._open -= 1
            if refused == grpc.StatusCode.UNIMPLEMENTED:
                self._unsupported = True
            elif refused is not None:
                self._backoff = min(max(2 * self._backoff, _FIRST_BACKOFF), _LONGEST_BACKOFF)
                self._refused_until = time.monotonic() + self._backoff
        stream.cancel()

    def _close_pool(self) -> List[_S]:
        """Takes no more calls; the idle streams, for the caller to end."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        return idle

    def _retire(self, stream: _S) -> None:
        """Ends a stream the pool no longer lends (see close())."""
        stream.close()

    def cancel_idle(self) -> None:
        """Closes the pool and ends its idle streams at once (for a
        finalizer, where nothing can be awaited)."""
        for stream in self._close_pool():
            stream.close()


class CallStreams(_Pool[Any]):
    """The sync client's streams: driven by the calling thread
    (_DrivenStream) when `channel`, the channel `stub` is on (without
    interceptors: `metadata` goes with each stream instead), allows it,
    grpcio's public ones (_Stream) otherwise."""

    def __init__(self, stub: ffid_pb2_grpc.FfiStub, channel: Optional[grpc.Channel] = None,
                 metadata: Tuple[Tuple[str, str], ...] = ()) -> None:
        super().__init__(stub)
        self._driven_on = channel if channel is not None and driving_possible(channel) else None
        self._metadata = metadata
        self._closing: List[_DrivenStream] = []
        self._finished = False

    @property
    def driven(self) -> bool:
        """Whether calls go on streams the calling thread drives."""
        return self._driven_on is not None

    def _new_stream(self) -> Any:
        if self._driven_on is not None:
            try:
                return _DrivenStream(self._driven_on, self._metadata)
            except (AttributeError, TypeError):
                # A grpcio whose lower layer differs from what
                # driving_possible() could check: its public streams, for
                # good.
                self._driven_on = None
        return _Stream(self._stub)

    def call(self, request: ffid_pb2.CallRequest,
             wrapped: Optional[ffid_pb2.CallStreamRequest] = None) -> Optional[ffid_pb2.CallResponse]:
        """The call's response; raises the call's ffid.Error (or the
        grpc.RpcError of a stream that broke during it); None if no stream
        took the request (it did not run). `wrapped`, if given, is a
        CallStreamRequest whose `call` is `request`: sent as it is."""
        stream = self._take()
        if stream is None:
            return None
        if wrapped is None:
            wrapped = ffid_pb2.CallStreamRequest(call=request)
        try:
            response = stream.call(wrapped)
        except BaseException as error:
            # A KeyboardInterrupt while the call ran cancels the stream, as
            # an interrupted unary call is cancelled.
            if self._failed(stream, error):
                if self._closed and isinstance(error, _NotSent):
                    # The session closed while the call was on its way
                    # (the channel's close ended the stream): no unary RPC.
                    raise error.error or _StreamStatus(
                        grpc.StatusCode.CANCELLED, "the session was closed during the call", None) from None
                return None
            raise
        return self._answered(stream, response)

    def _retire(self, stream: Any) -> None:
        """Half-closes `stream`; one the calling thread drives is kept for
        finish() to wait for its end (until then grpcio keeps its queue),
        or cancelled at once once finish() has run."""
        if not isinstance(stream, _DrivenStream):
            stream.close()
            return
        if stream.ended():
            stream.cancel()  # waits for what is left, if anything
            return
        with self._lock:
            finished = self._finished
            if not finished:
                stream.close()
                self._closing.append(stream)
        if finished:
            stream.cancel()

    def close(self) -> None:
        """Ends the idle streams (half-closed); later calls get None.
        finish() then waits for their ends."""
        interrupted: Optional[BaseException] = None
        for stream in self._close_pool():
            try:
                self._retire(stream)
            except BaseException as error:  # the others are retired all the same
                interrupted = interrupted or error
        if interrupted is not None:
            raise interrupted

    def finish(self) -> None:
        """Closes the pool if close() did not, and waits for the streams it
        half-closed to end: the daemon ends each at once, and closing the
        channel first cancels them, so this does not wait on a daemon that
        stopped answering. Streams retired later (a call that was running)
        are cancelled instead."""
        self.close()
        with self._lock:
            self._finished = True
            closing, self._closing = self._closing, []
        interrupted: Optional[BaseException] = None
        for stream in closing:
            try:
                stream.finish()
            except BaseException as error:  # the others are waited for all the same
                interrupted = interrupted or error
        if interrupted is not None:
            raise interrupted


class AioCallStreams(_Pool[_AioStream]):
    """The asyncio client's streams."""

    def _new_stream(self) -> _AioStream:
        return _AioStream(self._stub)

    async def call(self, request: ffid_pb2.CallRequest,
                   wrapped: Optional[ffid_pb2.CallStreamRequest] = None) -> Optional[ffid_pb2.CallResponse]:
        """As CallStreams.call. A call cancelled while on a stream
        (CancelledError) cancels that stream; the others go on."""
        stream = self._take()
        if stream is None:
            return None
        if wrapped is None:
            wrapped = ffid_pb2.CallStreamRequest(call=request)
        try:
            response = await stream.call(wrapped)
        except BaseException as error:
            if self._failed(stream, error):
                return None
            raise
        return self._answered(stream, response)

    async def close(self) -> None:
        """Ends the idle streams (half-closed); later calls get None."""
        await asyncio.gather(*(stream.finish() for stream in self._close_pool()))

