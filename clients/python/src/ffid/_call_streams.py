"""Synchronous calls on CallStream streams kept open (the sync client's).

A unary Call RPC pays gRPC's whole per-RPC cost; a call on an open
CallStream costs one message each way. CallStreams keeps a few streams open
to the daemon and lends one to each call without a timeout: the caller
queues its request (gRPC's request thread sends it) and reads the answer.

``call`` returns None, without having run the call, when no stream can take
it: all are busy, the daemon has no CallStream (an older daemon: remembered
for good), or it refused the stream (its limit of open streams). The caller
then makes the unary Call RPC. Thread-safe.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, List, Optional

import grpc

from ffid import _callbacks, _errors
from ffid.v1 import ffid_pb2, ffid_pb2_grpc

# Streams one CallStreams keeps open at most; more calls at the same time
# take the unary RPC.
MAX_STREAMS = 4

# Codes with which a daemon refuses a stream before running anything on it.
_REFUSED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED)


class _Stream:
    """One CallStream: requests go through a queue that gRPC's request
    thread reads; answers are read by the calling thread."""

    def __init__(self, stub: ffid_pb2_grpc.FfiStub) -> None:
        self._requests: "queue.SimpleQueue[Optional[ffid_pb2.CallStreamRequest]]" = queue.SimpleQueue()
        requests: Iterator[ffid_pb2.CallStreamRequest] = iter(self._requests.get, None)
        self._responses: Any = stub.CallStream(requests)

    def ended(self) -> bool:
        return bool(self._responses.done())

    def call(self, request: ffid_pb2.CallStreamRequest) -> ffid_pb2.CallStreamResponse:
        self._requests.put(request)
        return next(self._responses)

    def close(self) -> None:
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

    def call(self, request: ffid_pb2.CallRequest) -> Optional[ffid_pb2.CallResponse]:
        """The call's response; raises the call's ffid.Error; None if no
        stream took the request (it did not run)."""
        stream = self._take()
        if stream is None:
            return None
        try:
            response = stream.call(ffid_pb2.CallStreamRequest(call=request))
        except grpc.RpcError as error:
            self._forget(stream, error.code())
            if error.code() in _REFUSED:
                return None
            raise
        except StopIteration:
            self._forget(stream, None)
            raise _errors.from_status(grpc.StatusCode.UNAVAILABLE,
                                      "the daemon ended the CallStream before answering the call", None) from None
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
            if self._closed or self._unsupported or self._open >= MAX_STREAMS:
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
            if not self._closed:
                self._idle.append(stream)
                return
        stream.close()

    def _forget(self, stream: _Stream, code: Optional[grpc.StatusCode]) -> None:
        stream.close()
        with self._lock:
            self._open -= 1
            if code == grpc.StatusCode.UNIMPLEMENTED:
                self._unsupported = True
