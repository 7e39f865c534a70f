"""Synchronous calls on CallStream streams kept open (the sync client's).

A unary Call RPC pays gRPC's whole per-RPC cost; a call on an open
CallStream costs one message each way. CallStreams keeps a few streams open
to the daemon and lends one to each call without a timeout: the caller
queues its request (gRPC's request thread sends it) and reads the answer.

``call`` returns None, without having run the call, when no stream can take
it: all are busy, the daemon has no CallStream (an older daemon: remembered
for good), or it refused a new stream (its limit of open streams: then no
stream is tried for a while, 1 s doubling up to 64 s). The caller then makes
the unary Call RPC. Only a stream that has answered nothing yet counts as
refused: once a call may have run, its failure is the call's. Thread-safe.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator, List, Optional

import grpc

from ffid import _callbacks, _errors
from ffid.v1 import ffid_pb2, ffid_pb2_grpc

# Streams one session keeps open at most (a second opens only for a second
# call at the same time); more calls at the same time take the unary RPC.
STREAMS_PER_SESSION = 4

# The first wait after a refused stream, and the longest (seconds).
_FIRST_BACKOFF = 1.0
_LONGEST_BACKOFF = 64.0


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


class _Stream:
    """One CallStream: requests go through a queue that gRPC's request
    thread reads; answers are read by the calling thread."""

    def __init__(self, stub: ffid_pb2_grpc.FfiStub) -> None:
        self._requests: "queue.SimpleQueue[Optional[ffid_pb2.CallStreamRequest]]" = queue.SimpleQueue()
        requests: Iterator[ffid_pb2.CallStreamRequest] = iter(self._requests.get, None)
        self._responses: Any = stub.CallStream(requests)
        # Whether the daemon has answered a call on it (then it was not
        # refused).
        self.answered = False

    def ended(self) -> bool:
        return bool(self._responses.done())

    def call(self, request: ffid_pb2.CallStreamRequest) -> ffid_pb2.CallStreamResponse:
        self._requests.put(request)
        response = next(self._responses)
        self.answered = True
        return response

    def close(self) -> None:
        """Ends an idle stream: the request iterator ends, so gRPC's request
        thread returns and the daemon ends the stream normally."""
        self._requests.put(None)

    def cancel(self) -> None:
        """Ends a stream that broke or was interrupted during a call."""
        self._requests.put(None)
        self._responses.cancel()


class CallStreams:
    def __init__(self, stub: ffid_pb2_grpc.FfiStub) -> None:
        self._stub = stub
        self._lock = threading.Lock()
        self._idle: List[_Stream] = []
        self._open = 0
        self._unsupported = False
        self._closed = False
        self._refused_until = 0.0
        self._backoff = 0.0

    def call(self, request: ffid_pb2.CallRequest) -> Optional[ffid_pb2.CallResponse]:
        """The call's response; raises the call's ffid.Error; None if no
        stream took the request (it did not run)."""
        stream = self._take()
        if stream is None:
            return None
        try:
            response = stream.call(ffid_pb2.CallStreamRequest(call=request))
        except grpc.RpcError as error:
            refused = not stream.answered and _refusal(error)
            self._forget(stream, error.code() if refused else None)
            if refused:
                return None
            raise
        except StopIteration:
            self._forget(stream, None)
            raise _errors.from_status(grpc.StatusCode.UNAVAILABLE,
                                      "the daemon ended the CallStream before answering the call", None) from None
        except BaseException:
            # Interrupted (KeyboardInterrupt) while the call ran: the stream
            # is cancelled, as an interrupted unary call is.
            self._forget(stream, None)
            raise
        self._give_back(stream)
        if response.error_status:
            raise _callbacks.stream_error(response)
        return response.call

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for stream in idle:
            stream.close()

    def _take(self) -> Optional[_Stream]:
        with self._lock:
            while self._idle:
                stream = self._idle.pop()
                if not stream.ended():
                    return stream
                # Ended while idle (the daemon restarted, the connection
                # dropped): nothing was sent on it; open another.
                self._open -= 1
                stream.close()
            if (self._closed or self._unsupported or self._open >= STREAMS_PER_SESSION
                    or time.monotonic() < self._refused_until):
                return None
            self._open += 1
        try:
            return _Stream(self._stub)
        except ValueError:  # the channel is closed
            with self._lock:
                self._open -= 1
            return None

    def _give_back(self, stream: _Stream) -> None:
        with self._lock:
            self._backoff = 0.0
            if not self._closed:
                self._idle.append(stream)
                return
        stream.close()

    def _forget(self, stream: _Stream, refused: Optional[grpc.StatusCode]) -> None:
        """Drops a stream that broke; `refused` is the code of the daemon's
        refusal, if it was one."""
        stream.cancel()
        with self._lock:
            self._open -= 1
            if refused == grpc.StatusCode.UNIMPLEMENTED:
                self._unsupported = True
            elif refused is not None:
                self._backoff = min(max(2 * self._backoff, _FIRST_BACKOFF), _LONGEST_BACKOFF)
                self._refused_until = time.monotonic() + self._backoff
