"""Latency of a Call from the Python client against a bare gRPC echo from
Python, in one run (see README.md, "Python client").

    build/release/python-venv/bin/python bench/python_call_latency.py --build build/release

Starts build/<preset>/bin/echo_server and build/<preset>/bin/ffid on
temporary unix sockets, then times, one round trip at a time:

  python_grpc_echo_16B   a unary Echo (16-byte payload) from a sync Python
                         stub to the C++ echo server: the floor.
  python_ffid_call_raw   ffid's Call RPC of int fx_add(int, int) from the same
                         kind of stub, the CallRequest built once: the
                         protocol without the client library (unary).
  python_ffid_call       lib.fx_add(1, 2) through the ffid package: value
                         conversion included (on a CallStream).
  python_aio_echo_16B /  the same two through grpc.aio and ffid.aio.
  python_aio_ffid_call

How it samples: the machine drifts (other builds, an idle vCPU's wake-up
cost), so the figures are timed in interleaved rounds, not one long block
each. Each of --rounds rounds (10) times the echo block and the ffid block,
--count round trips (300) per figure, the blocks' order reversed every other
round (echo, ffid; ffid, echo; ...), and each figure's samples from all
rounds are pooled before the median and p99 are taken. The ffid block opens
a session (python_ffid_call and python_ffid_call_raw on it, their order
reversed every other round too) and closes it, so the echo always runs in
a process with no ffid channel, as a bare gRPC client would. --warmup (200)
untimed round trips go before a figure's first round, a tenth of it before
each later one. The asyncio pair is sampled the same way, after the sync
figures. The last line gives each round's own call/echo ratio of medians:
how much the machine moved during the run.

It needs the package (pip install ./clients/python) and grpcio-tools, which
the test environment has. Prints median and p99 per figure and the ratios
(bench/run reads the `name | median us | p99 us` rows).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, TypeVar

import grpc
import grpc.aio

import ffid
import ffid.aio
from ffid.v1 import ffid_pb2, ffid_pb2_grpc, types_pb2

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def percentile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_sync(fn: Callable[[], object], warmup: int, count: int) -> List[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


async def time_async(fn: Callable[[], Awaitable[object]], warmup: int, count: int) -> List[float]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        await fn()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


class Rounds:
    """How the figures are sampled: `rounds` rounds, each timing every
    figure for `count` round trips (after `warmup` untimed ones), the
    figures' order reversed every other round; each figure's samples from
    all rounds are pooled."""

    def __init__(self, rounds: int, count: int, warmup: int) -> None:
        self.rounds, self.count, self.warmup = rounds, count, warmup
        self.samples: Dict[str, List[float]] = {}

    def order(self, r: int, blocks: List[T]) -> List[T]:
        return blocks if r % 2 == 0 else blocks[::-1]

    def add(self, name: str, samples: List[float]) -> None:
        self.samples.setdefault(name, []).extend(samples)


def start(argv: List[str], ready: str, log: Path, socket: Path) -> subprocess.Popen:
    out = open(log, "wb")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ready.encode() in log.read_bytes() and socket.exists():
            return process
        if process.poll() is not None:
            break
        time.sleep(0.01)
    process.kill()
    raise RuntimeError(f"{argv[0]} did not start: {log.read_text(errors='replace')}")


def echo_stubs(tmp: Path):
    from grpc_tools import protoc

    if protoc.main(["protoc", f"-I{REPO}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                    "bench/echo_service.proto"]) != 0:
        raise RuntimeError("cannot generate the echo stubs")
    sys.path.insert(0, str(tmp))
    return (importlib.import_module("bench.echo_service_pb2"),
            importlib.import_module("bench.echo_service_pb2_grpc"))


def sync_figures(rounds: Rounds, echo_sock: Path, ffid_sock: Path, fixture: Path,
                 echo_pb2: Any, echo_grpc: Any) -> None:
    """The sync figures: per round, the echo block and the ffid block (a
    session opened for it, closed after: the echo runs in a process with no
    ffid channel, as a bare gRPC client would)."""
    # Same channel options as the ffid package's.
    from ffid._core import CHANNEL_OPTIONS

    channel = grpc.insecure_channel(f"unix:{echo_sock}", options=CHANNEL_OPTIONS)
    echo = echo_grpc.EchoServiceStub(channel)
    request = echo_pb2.EchoRequest(payload=b"0123456789abcdef")

    def echo_block(r: int, warmup: int) -> None:
        rounds.add("python_grpc_echo_16B", time_sync(lambda: echo.Echo(request), warmup, rounds.count))

    def ffid_block(r: int, warmup: int) -> None:
        with ffid.connect(f"unix:{ffid_sock}") as s:
            lib = s.load(str(fixture))
            lib.cdef("int fx_add(int, int);")
            add = lib.fx_add
            assert add(1, 2) == 3
            call = ffid_pb2.CallRequest(session=s.id, function=add.handle,
                                        arguments=[types_pb2.Value(int_value=1),
                                                   types_pb2.Value(int_value=2)])
            stub = ffid_pb2_grpc.FfiStub(s._channel)
            figures = [("python_ffid_call", lambda: add(1, 2)),
                       ("python_ffid_call_raw", lambda: stub.Call(call))]
            for name, fn in rounds.order(r, figures):
                rounds.add(name, time_sync(fn, warmup, rounds.count))

    try:
        for r in range(rounds.rounds):
            warmup = rounds.warmup if r == 0 else rounds.warmup // 10
            for block in rounds.order(r, [echo_block, ffid_block]):
                block(r, warmup)
    finally:
        channel.close()


def aio_figures(rounds: Rounds, echo_sock: Path, ffid_sock: Path, fixture: Path,
                echo_pb2: Any, echo_grpc: Any) -> None:
    """The asyncio pair, sampled as the sync figures are."""
    from ffid._core import CHANNEL_OPTIONS

    request = echo_pb2.EchoRequest(payload=b"0123456789abcdef")

    async def echo_block(r: int, warmup: int) -> None:
        channel = grpc.aio.insecure_channel(f"unix:{echo_sock}", options=CHANNEL_OPTIONS)
        stub = echo_grpc.EchoServiceStub(channel)
        rounds.add("python_aio_echo_16B", await time_async(lambda: stub.Echo(request), warmup, rounds.count))
        await channel.close()

    async def ffid_block(r: int, warmup: int) -> None:
        async with ffid.aio.connect(f"unix:{ffid_sock}") as s:
            lib = await s.load(str(fixture))
            add = await lib.function("int fx_add(int, int)")
            rounds.add("python_aio_ffid_call", await time_async(lambda: add(1, 2), warmup, rounds.count))

    async def run() -> None:
        for r in range(rounds.rounds):
            warmup = rounds.warmup if r == 0 else rounds.warmup // 10
            for block in rounds.order(r, [echo_block, ffid_block]):
                await block(r, warmup)

    asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=str(REPO / "build" / "release"),
                        help="the CMake build directory (default build/release)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds; each times every figure once (default 10)")
    parser.add_argument("--count", type=int, default=300,
                        help="timed round trips per figure and round (default 300)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="untimed round trips before a figure's first round "
                        "(a tenth of it before each later one; default 200)")
    parser.add_argument("--no-aio", action="store_true", help="skip the asyncio pair")
    args = parser.parse_args()
    build = Path(args.build).resolve()
    ffid_bin, echo_bin = build / "bin" / "ffid", build / "bin" / "echo_server"
    fixture = build / "tests" / "fixtures" / "libffid_fixture.so"
    for path in (ffid_bin, echo_bin, fixture):
        if not path.exists():
            print(f"{path} is missing: cmake --build --preset <preset> --target ffid_server_main "
                  "ffid_worker_main echo_server ffid_tests_fixture", file=sys.stderr)
            return 2

    rounds = Rounds(args.rounds, args.count, args.warmup)
    tmp = Path(tempfile.mkdtemp(prefix="ffid-pybench-"))
    processes: List[subprocess.Popen] = []
    try:
        echo_pb2, echo_grpc = echo_stubs(tmp)
        echo_sock, ffid_sock = tmp / "echo.sock", tmp / "ffid.sock"
        processes.append(start([str(echo_bin), f"unix:{echo_sock}"], "listening on",
                               tmp / "echo.log", echo_sock))
        processes.append(start([str(ffid_bin), "--listen", f"unix:{ffid_sock}",
                                "--allow-library", f"{fixture.parent}/*"],
                               "ffid: listening on ", tmp / "ffid.log", ffid_sock))
        sync_figures(rounds, echo_sock, ffid_sock, fixture, echo_pb2, echo_grpc)
        if not args.no_aio:
            aio_figures(rounds, echo_sock, ffid_sock, fixture, echo_pb2, echo_grpc)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    names = ["python_grpc_echo_16B", "python_ffid_call_raw", "python_ffid_call",
             "python_aio_echo_16B", "python_aio_ffid_call"]
    table = {name: (percentile(rounds.samples[name], 0.5), percentile(rounds.samples[name], 0.99))
             for name in names if name in rounds.samples}
    print(f"{'figure':<24}| {'median':>10} | {'p99':>10}   ({args.rounds} interleaved rounds of "
          f"{args.count} round trips, after {args.warmup})")
    for name, (median, p99) in table.items():
        print(f"{name:<24}| {median:>7.1f} us | {p99:>7.1f} us")
    print()
    for call, echo_name in (("python_ffid_call_raw", "python_grpc_echo_16B"),
                            ("python_ffid_call", "python_grpc_echo_16B"),
                            ("python_aio_ffid_call", "python_aio_echo_16B")):
        if call in table and echo_name in table:
            print(f"{call} / {echo_name}: median {table[call][0] / table[echo_name][0]:.2f}x, "
                  f"p99 {table[call][1] / table[echo_name][1]:.2f}x")
    # Each round's own ratio of medians: how much the machine moved between
    # rounds.
    per_round = []
    echo_samples, call_samples = (rounds.samples["python_grpc_echo_16B"],
                                  rounds.samples["python_ffid_call"])
    for r in range(args.rounds):
        piece = slice(r * args.count, (r + 1) * args.count)
        per_round.append(percentile(call_samples[piece], 0.5) / percentile(echo_samples[piece], 0.5))
    print("python_ffid_call / python_grpc_echo_16B per round: "
          + " ".join(f"{x:.2f}" for x in per_round))
    return 0


if __name__ == "__main__":
    sys.exit(main())
