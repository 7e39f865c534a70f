"""Calls on CallStream streams: the sync client's calls without a timeout
take them; calls with a timeout, calls beyond the streams' number and calls
to a daemon without CallStream take the unary RPC."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import List

import grpc
import pytest

import ffid
from ffid import _call_streams
from ffid.v1 import ffid_pb2, ffid_pb2_grpc, types_pb2


def test_calls_reuse_one_stream_and_a_failure_keeps_it(session, fixture_lib) -> None:
    add = fixture_lib.function("int fx_add(int, int)")
    for i in range(20):
        assert add(i, 1) == i + 1
    streams = session._call_streams
    assert streams._open == 1
    with pytest.raises(ffid.Error) as failure:
        session._call(session._stub.Call, ffid_pb2.CallRequest(session=session.id, function="nope"))
    assert failure.value.reason == "HANDLE_INVALID"
    assert add(2, 3) == 5
    assert streams._open == 1


def test_a_call_with_a_timeout_takes_the_unary_rpc(session, fixture_lib) -> None:
    sleep = fixture_lib.function("void fx_sleep_ms(int)")
    with pytest.raises(ffid.DeadlineExceeded):
        sleep(10000, timeout=0.2)
    assert session._call_streams._open == 0


def test_many_threads_get_their_own_answers(session, fixture_lib) -> None:
    add = fixture_lib.function("int fx_add(int, int)")
    threads = 2 * _call_streams.STREAMS_PER_SESSION
    wrong: List[int] = [0] * threads

    def run(t: int) -> None:
        for i in range(50):
            if add(t * 1000, i) != t * 1000 + i:
                wrong[t] += 1

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert wrong == [0] * threads
    assert 1 <= session._call_streams._open <= _call_streams.STREAMS_PER_SESSION


class _OlderDaemon(ffid_pb2_grpc.FfiServicer):
    """A daemon from before CallStream: the generated servicer answers
    UNIMPLEMENTED for it."""


def test_an_older_daemon_gets_unary_calls_for_good() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ffid_pb2_grpc.add_FfiServicer_to_server(_OlderDaemon(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            streams = _call_streams.CallStreams(ffid_pb2_grpc.FfiStub(channel))
            request = ffid_pb2.CallRequest(function="f", arguments=[types_pb2.Value(int_value=1)])
            assert streams.call(request) is None
            assert streams._unsupported
            assert streams.call(request) is None
            assert streams._open == 0
            streams.close()
    finally:
        server.stop(None)


def test_closed_streams_take_no_calls(session, fixture_lib) -> None:
    add = fixture_lib.function("int fx_add(int, int)")
    assert add(1, 1) == 2
    session._call_streams.close()
    assert session._call_streams.call(ffid_pb2.CallRequest(session=session.id)) is None
    # The session's calls go on, through the unary RPC.
    assert add(2, 2) == 4
