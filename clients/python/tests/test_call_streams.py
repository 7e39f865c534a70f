"""Calls on CallStream streams: the sync and asyncio clients' calls without
a timeout take them; calls with a timeout, calls beyond the streams' number
and calls to a daemon without CallStream (or refusing a stream) take the
unary RPC. A failed call raises what the unary RPC raises."""

from __future__ import annotations

import _thread
import asyncio
import inspect
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent import futures
from typing import Any, Dict, Iterator, List, Tuple

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import ffid
import ffid.aio
from ffid import _call_streams
from ffid.v1 import ffid_pb2, ffid_pb2_grpc, types_pb2

from conftest import CALLBACKS_FIXTURE, FIXTURE, running_daemon


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


def test_sync_calls_run_on_streams_the_calling_thread_drives(session, fixture_lib) -> None:
    # With the grpcio this package is tested with, the calls go on
    # _DrivenStreams: grpcio starts no thread of its own to send the
    # requests (its public streams each start one), and the answers are
    # read off the stream's own queue.
    streams = session._call_streams
    assert streams.driven
    add = fixture_lib.function("int fx_add(int, int)")
    before = set(threading.enumerate())
    for i in range(20):
        assert add(i, 2) == i + 2
    assert set(threading.enumerate()) <= before
    assert streams._open == 1 and isinstance(streams._idle[0], _call_streams._DrivenStream)


def test_a_grpcio_whose_lower_layer_differs_gets_its_public_streams(session, fixture_lib, monkeypatch) -> None:
    def changed(*args: Any) -> None:
        raise TypeError("segregated_call() takes exactly 9 positional arguments")

    monkeypatch.setattr(_call_streams, "_DrivenStream", changed)
    add = fixture_lib.function("int fx_add(int, int)")
    assert add(3, 4) == 7
    streams = session._call_streams
    assert not streams.driven
    assert streams._open == 1 and isinstance(streams._idle[0], _call_streams._Stream)


def test_closing_ends_driven_streams_normally(daemon) -> None:
    with ffid.connect(daemon.address) as s:
        add = s.load(str(FIXTURE)).function("int fx_add(int, int)")
        assert add(1, 2) == 3
        streams = s._call_streams
        stream = streams._idle[0]
        streams.close()
        assert add(2, 2) == 4  # through the unary RPC
        streams.finish()
        # The daemon ended the half-closed stream with OK, and nothing is
        # left due on its queue.
        assert stream.ended() and stream._status is None and not stream._due
        assert streams._open == 1 and not streams._closing


def test_an_interrupted_call_cancels_its_stream_and_calls_go_on(daemon) -> None:
    # Ctrl-C during a call on a stream: KeyboardInterrupt, the stream is
    # cancelled (the daemon then stops the worker running the call, as for a
    # cancelled unary call), the session goes on.
    with ffid.connect(daemon.address, restart_policy="restart") as s:
        lib = s.load(str(FIXTURE))
        add = lib.function("int fx_add(int, int)")
        sleep = lib.function("void fx_sleep_ms(int)")
        assert add(1, 1) == 2
        streams = s._call_streams
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            sleep(20000)
        assert time.monotonic() - started < 10
        timer.join()
        assert streams._open == 0
        while s.info().restarts < 1:
            time.sleep(0.01)
        assert add(2, 3) == 5
        assert streams._open == 1


def test_a_session_closed_as_a_call_is_sent_fails_that_call(daemon, monkeypatch) -> None:
    # The stream was lent, then the session closed (its channel's close
    # ends the stream): the call did not run, and is not sent through the
    # unary RPC of a closed channel either (grpcio's ValueError); it fails
    # with an ffid error.
    s = ffid.connect(daemon.address)
    add = s.load(str(FIXTURE)).function("int fx_add(int, int)")
    assert add(1, 2) == 3
    streams = s._call_streams
    stream = streams._idle[0]
    take = streams._take

    def take_then_close() -> Any:
        lent = take()
        s.close()
        return lent

    monkeypatch.setattr(streams, "_take", take_then_close)
    with pytest.raises(ffid.Error) as failure:
        add(2, 3)
    assert failure.value.code == grpc.StatusCode.CANCELLED
    assert stream.waits_for_nothing() and streams._open == 0


def test_a_session_closed_before_a_stream_is_lent_fails_the_call(daemon, monkeypatch) -> None:
    # Closed by another thread after the call began: no stream, and the
    # unary RPC on the closed channel fails with an ffid error too.
    s = ffid.connect(daemon.address)
    add = s.load(str(FIXTURE)).function("int fx_add(int, int)")
    assert add(1, 2) == 3

    def close_then_take() -> Any:
        s.close()
        return None

    monkeypatch.setattr(s._call_streams, "_take", close_then_take)
    with pytest.raises(ffid.SessionNotFound, match="was closed during the call"):
        add(2, 3)


def test_grpcio_fork_support_gets_grpcios_own_streams(tmp_path, daemon) -> None:
    # grpcio's after-fork handler waits for every stream on its own queue
    # to end: with GRPC_ENABLE_FORK_SUPPORT the client uses grpcio's public
    # streams, and a child forked after calls exits.
    script = tmp_path / "fork.py"
    script.write_text(inspect.cleandoc(f"""
        import os, sys
        import ffid
        with ffid.connect({daemon.address!r}) as s:
            add = s.load({str(FIXTURE)!r}).function("int fx_add(int, int)")
            assert add(1, 2) == 3
            assert not s._call_streams.driven
            child = os.fork()
            if child == 0:
                os._exit(7)
            _, status = os.waitpid(child, 0)
            assert os.WEXITSTATUS(status) == 7
            assert add(2, 2) == 4
        print("forked and went on")
    """))
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="1", GRPC_POLL_STRATEGY="poll")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "forked and went on" in done.stdout


def test_closed_streams_take_no_calls(session, fixture_lib) -> None:
    add = fixture_lib.function("int fx_add(int, int)")
    assert add(1, 1) == 2
    session._call_streams.close()
    assert session._call_streams.call(ffid_pb2.CallRequest(session=session.id)) is None
    # The session's calls go on, through the unary RPC.
    assert add(2, 2) == 4


async def _raised(call: Any) -> ffid.Error:
    with pytest.raises(ffid.Error) as caught:
        await call
    return caught.value


@pytest.mark.asyncio
async def test_aio_calls_reuse_one_stream_and_fail_as_unary_calls_do(daemon) -> None:
    async with ffid.aio.connect(daemon.address, restart_policy="restart") as s:
        lib = await s.load(str(FIXTURE))
        add = await lib.function("int fx_add(int, int)")
        for i in range(20):
            assert await add(i, 1) == i + 1
        streams = s._call_streams
        assert streams._open == 1
        # The same exception, message included, as the unary RPC's (a call
        # with a timeout is unary).
        unknown = ffid_pb2.CallRequest(session=s.id, function="nope")
        on_stream = await _raised(s._call(s._stub.Call, unknown))
        unary = await _raised(s._call(s._stub.Call, unknown, timeout=60))
        assert type(on_stream) is type(unary) is ffid.HandleInvalid
        assert (on_stream.code, on_stream.reason, on_stream.message) == (unary.code, unary.reason, unary.message)
        crash = await lib.function("void fx_crash_null(void)")
        on_stream, unary = await _raised(crash()), await _raised(crash(timeout=60))
        assert type(on_stream) is type(unary) is ffid.WorkerCrashed
        assert (on_stream.code, on_stream.reason) == (unary.code, unary.reason)
        assert on_stream.crash_report.signal_name == unary.crash_report.signal_name == "SIGSEGV"
        assert on_stream.crash_report.function == unary.crash_report.function
        # The failures left the stream in the pool.
        assert await add(2, 3) == 5
        assert streams._open == 1
        assert (await s.info()).restarts == 2


@pytest.mark.asyncio
async def test_aio_calls_beyond_the_streams_are_all_answered(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        add = await (await s.load(str(FIXTURE))).function("int fx_add(int, int)")
        count = 3 * _call_streams.STREAMS_PER_SESSION
        for _ in range(3):
            results = await asyncio.gather(*(add(1000 * i, i) for i in range(count)))
            assert results == [1001 * i for i in range(count)]
        # The first calls each opened a stream; the others were unary.
        assert s._call_streams._open == _call_streams.STREAMS_PER_SESSION
        assert len(s._call_streams._idle) == _call_streams.STREAMS_PER_SESSION
        idle = list(s._call_streams._idle)
    assert s._call_streams._closed
    assert not s._call_streams._idle
    # close() ended them by half-closing: the daemon ended each normally.
    for stream in idle:
        assert await stream._call.code() == grpc.StatusCode.OK


@pytest.mark.asyncio
async def test_aio_a_cancelled_call_cancels_its_stream_and_calls_go_on(daemon) -> None:
    async with ffid.aio.connect(daemon.address, restart_policy="restart") as s:
        add = await (await s.load(str(FIXTURE))).function("int fx_add(int, int)")
        remember = await (await s.load(str(CALLBACKS_FIXTURE))).function("int fxc_call_remember(int (*f)(int), int)")
        entered, release = asyncio.Event(), asyncio.Event()

        async def hold(x: int) -> int:
            entered.set()
            await release.wait()
            return x

        callback = await s.callback("int(int)", hold)
        assert await add(1, 1) == 2
        streams = s._call_streams
        stream = streams._idle[0]
        running = asyncio.ensure_future(remember(callback, 7))
        await entered.wait()  # the call runs, on the stream
        assert streams._open == 1 and not streams._idle
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert streams._open == 0
        assert stream._call.cancelled()
        # The daemon kills the worker running the cancelled call (as for a
        # cancelled unary call: the native call cannot be stopped otherwise)
        # and, with restart_policy="restart", starts another. The callback
        # is held until then, so the call cannot finish first.
        while (await s.info()).restarts < 1:
            await asyncio.sleep(0.01)
        release.set()
        assert await add(2, 3) == 5
        assert streams._open == 1


def _status(code: grpc.StatusCode, message: str, reason: str = "") -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if reason:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="ffid.dev"))
        status.details.append(detail)
    return status


class _TestDaemon(ffid_pb2_grpc.FfiServicer):
    """A daemon whose CallStream does one thing: "answer" each call
    (result: the number of arguments; function "fail" fails with
    NOT_FOUND), answer it after 0.1 s ("slow"), "refuse" the stream as ffid does at its limit, "break" it
    once a call was read, end it with gRPC's own "exhausted" once a call was
    read, or "old": a daemon from before CallStream (UNIMPLEMENTED)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.opened = 0
        self.server: Any = None
        # Set when a stream ends (normally or cancelled).
        self.ended = threading.Event()

    def CallStream(self, requests: Iterator[ffid_pb2.CallStreamRequest],
                   context: grpc.ServicerContext) -> Iterator[ffid_pb2.CallStreamResponse]:
        self.opened += 1
        context.add_callback(self.ended.set)
        if self.behaviour == "old":
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        if self.behaviour == "refuse":
            refusal = _status(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams", "RESOURCE_LIMIT")
            context.set_trailing_metadata([("grpc-status-details-bin", refusal.SerializeToString())])
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams")
        for request in requests:
            if self.behaviour == "break":
                context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            if self.behaviour == "exhausted":
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too big")
            if self.behaviour == "slow":
                time.sleep(0.1)
            if request.call.function == "fail":
                failure = _status(grpc.StatusCode.NOT_FOUND, "no such function", "HANDLE_INVALID")
                yield ffid_pb2.CallStreamResponse(error_status=failure.SerializeToString())
            else:
                yield ffid_pb2.CallStreamResponse(call=ffid_pb2.CallResponse(
                    result=types_pb2.Value(int_value=len(request.call.arguments))))


def _request(arguments: int) -> ffid_pb2.CallRequest:
    return ffid_pb2.CallRequest(function="f", arguments=[types_pb2.Value(int_value=i) for i in range(arguments)])


async def _call(streams: Any, request: ffid_pb2.CallRequest) -> Any:
    answer = streams.call(request)
    return await answer if inspect.isawaitable(answer) else answer


def _serving(kind: str) -> Iterator[Any]:
    """serve(behaviour) -> (a _TestDaemon serving, the CallStreams talking
    to it: the sync client's on grpcio's public streams ("sync"), the sync
    client's driven by the calling thread ("driven"), or the asyncio
    client's ("aio"))."""
    servers: List[Tuple[grpc.Server, Any, Any]] = []

    def start(behaviour: str) -> Tuple[_TestDaemon, Any]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service = _TestDaemon(behaviour)
        service.server = server
        ffid_pb2_grpc.add_FfiServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        if kind in ("sync", "driven"):
            channel: Any = grpc.insecure_channel(f"127.0.0.1:{port}")
            driven = channel if kind == "driven" else None
            streams: Any = _call_streams.CallStreams(ffid_pb2_grpc.FfiStub(channel), driven)
            assert streams.driven == (kind == "driven")
        else:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            streams = _call_streams.AioCallStreams(ffid_pb2_grpc.FfiStub(channel))
        servers.append((server, channel, streams))
        return service, streams

    yield start
    for server, channel, streams in servers:
        if isinstance(channel, grpc.Channel):
            channel.close()
            streams.finish()
        server.stop(None)


@pytest.fixture(params=["sync", "driven", "aio"])
def serve(request: Any) -> Iterator[Any]:
    yield from _serving(request.param)


@pytest.fixture
def serve_driven() -> Iterator[Any]:
    """serve, for the driven streams alone, in a test with no event loop
    (asyncio's turns SIGINT into a cancel of its task)."""
    yield from _serving("driven")


@pytest.mark.asyncio
async def test_answers_and_failures_keep_one_stream(serve) -> None:
    service, streams = serve("answer")
    for i in range(10):
        assert (await _call(streams, _request(i))).result.int_value == i
    with pytest.raises(ffid.HandleInvalid, match="no such function") as caught:
        await _call(streams, ffid_pb2.CallRequest(function="fail"))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert (await _call(streams, _request(3))).result.int_value == 3
    assert service.opened == 1 and streams._open == 1
    closing = streams.close()
    if inspect.isawaitable(closing):
        await closing
    # Closed: no stream takes a call.
    assert await _call(streams, _request(1)) is None


@pytest.mark.asyncio
async def test_an_older_daemon_gets_unary_calls_for_good(serve) -> None:
    service, streams = serve("old")
    assert await _call(streams, _request(1)) is None
    # grpc.aio may give its own INTERNAL instead of the daemon's status when
    # the request's write races with the stream's end: that counts as a
    # refusal (no stream for a while) until the UNIMPLEMENTED is seen.
    for _ in range(20):
        if streams._unsupported:
            break
        assert streams._refused_until > 0.0
        streams._refused_until = 0.0  # instead of waiting for it
        assert await _call(streams, _request(1)) is None
    assert streams._unsupported
    tried = service.opened
    streams._refused_until = 0.0
    assert await _call(streams, _request(1)) is None
    assert service.opened == tried  # no new stream, ever
    assert streams._open == 0


@pytest.mark.asyncio
async def test_a_refused_stream_leaves_calls_to_the_unary_rpc_for_a_while(serve) -> None:
    service, streams = serve("refuse")
    assert await _call(streams, _request(1)) is None
    # No new stream is tried at once: a full daemon would refuse it again.
    assert await _call(streams, _request(1)) is None
    assert await _call(streams, _request(1)) is None
    assert service.opened == 1
    assert streams._open == 0 and not streams._unsupported


@pytest.mark.asyncio
@pytest.mark.parametrize("behaviour, code, details", [
    ("break", grpc.StatusCode.UNAVAILABLE, "going away"),
    # Not ffid's refusal (no RESOURCE_LIMIT reason).
    ("exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, "message too big"),
])
async def test_a_stream_ended_once_it_had_the_call_fails_that_call(serve, behaviour: str, code: grpc.StatusCode,
                                                                   details: str) -> None:
    # The daemon had the call (it may have run): never sent again through
    # the unary RPC, and no backoff.
    service, streams = serve(behaviour)
    with pytest.raises(grpc.RpcError) as caught:
        await _call(streams, _request(1))
    assert caught.value.code() == code
    assert details in caught.value.details()
    assert streams._open == 0 and streams._refused_until == 0.0


def test_a_driven_stream_that_ended_while_idle_leaves_the_call_to_the_unary_rpc(serve_driven) -> None:
    service, streams = serve_driven("answer")
    assert streams.call(_request(2)).result.int_value == 2
    stream = streams._idle[0]
    service.server.stop(None).wait()
    # The request could not be sent: the call did not run, and the unary
    # RPC gets it; the stream is dropped.
    assert streams.call(_request(1)) is None
    assert stream.ended() and streams._open == 0 and not streams._idle


def test_ctrl_c_just_before_the_answer_still_cancels_the_stream(serve_driven) -> None:
    # The interrupt arrives while grpcio waits and is raised only once the
    # answer has been taken off the queue: grpcio has not dropped the call,
    # so the stream must still be cancelled (or it stays open on the daemon).
    service, streams = serve_driven("slow")
    assert streams.call(_request(1)).result.int_value == 1
    stream = streams._idle[0]
    timer = threading.Timer(0.01, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        streams.call(_request(2))
    timer.join()
    assert service.ended.wait(5), "the interrupted stream was not cancelled"
    assert stream._interrupted and streams._open == 0 and not streams._idle


def test_an_answer_after_finish_cancels_its_stream(serve_driven) -> None:
    # A call still running while the pool is closed and finished: it gets
    # its answer, and its stream, which finish() could not wait for, is
    # ended (cancelled) with nothing left due.
    service, streams = serve_driven("slow")
    answers: List[Any] = []

    def run() -> None:
        try:
            answers.append(streams.call(_request(3)))
        except BaseException as error:  # shown by the assertion below
            answers.append(error)

    running = threading.Thread(target=run)
    running.start()
    deadline = time.monotonic() + 10
    while streams._open == 0 and not answers and time.monotonic() < deadline:
        time.sleep(0.001)
    streams.finish()
    running.join()
    assert isinstance(answers[0], ffid_pb2.CallResponse), answers
    assert answers[0].result.int_value == 3
    assert not streams._idle and not streams._closing
    assert service.ended.wait(5)


@pytest.mark.asyncio
async def test_no_daemon_leaves_the_call_to_the_unary_rpc() -> None:
    channel = grpc.aio.insecure_channel("unix:/nonexistent/ffid.sock")
    streams = _call_streams.AioCallStreams(ffid_pb2_grpc.FfiStub(channel))
    assert await streams.call(_request(1)) is None
    assert streams._open == 0
    await channel.close()
    # A closed channel opens no stream.
    streams._refused_until = 0.0
    assert await streams.call(_request(1)) is None


@pytest.fixture(scope="module")
def metrics_daemon() -> Iterator[Any]:
    yield from running_daemon(flags=["--metrics-listen", "127.0.0.1:0"])


def _calls_counted(daemon: Any) -> Dict[str, float]:
    """ffid_calls_total's samples with reason="OK", by `via`."""
    address = re.search(r"metrics on (http://\S+/metrics)", daemon.log()).group(1)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no $http_proxy
    with direct.open(address, timeout=10) as page:
        text = page.read().decode()
    return {via: float(value) for via, value in
            re.findall(r'^ffid_calls_total\{reason="OK",via="(\w+)"\} (\S+)$', text, re.MULTILINE)}


@pytest.mark.asyncio
async def test_the_daemon_counts_calls_on_streams_and_unary_ones(metrics_daemon) -> None:
    # One daemon for this test alone: its counters count only these calls.
    with ffid.connect(metrics_daemon.address) as s:
        add = s.load(str(FIXTURE)).function("int fx_add(int, int)")
        for i in range(3):
            assert add(i, i) == 2 * i
        assert add(1, 1, timeout=60) == 2
    async with ffid.aio.connect(metrics_daemon.address) as s:
        add = await (await s.load(str(FIXTURE))).function("int fx_add(int, int)")
        for i in range(4):
            assert await add(i, i) == 2 * i
        assert await add(1, 1, timeout=60) == 2
    assert _calls_counted(metrics_daemon) == {"call_stream": 7.0, "unary": 2.0}
