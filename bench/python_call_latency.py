"""Latency of a Call from the Python client against a bare gRPC echo from
Python, in one run (see README.md, "Python client").

    build/release/python-venv/bin/python bench/python_call_latency.py --build build/release

Starts build/<preset>/bin/echo_server and build/<preset>/bin/ffid on
temporary unix sockets, then times, one round trip at a time:

  python_grpc_echo_16B   a unary Echo (16-byte payload) from a sync Python
                         stub to the C++ echo server: the floor.
  python_ffid_call_raw   ffid's Call RPC of int fx_add(int, int) from the same
                         kind of stub, the CallRequest built once: the
                         protocol without the client library.
  python_ffid_call       lib.fx_add(1, 2) through the ffid package: value
                         conversion included.
  python_aio_echo_16B /  the same two through grpc.aio and ffid.aio.
  python_aio_ffid_call

It needs the package (pip install ./clients/python) and grpcio-tools, which
the test environment has. Prints median and p99 per figure and the ratios.
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
from typing import Awaitable, Callable, List, Tuple

import grpc
import grpc.aio

import ffid
import ffid.aio
from ffid.v1 import ffid_pb2, ffid_pb2_grpc, types_pb2

REPO = Path(__file__).resolve().parent.parent


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=str(REPO / "build" / "release"),
                        help="the CMake build directory (default build/release)")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    build = Path(args.build).resolve()
    ffid_bin, echo_bin = build / "bin" / "ffid", build / "bin" / "echo_server"
    fixture = build / "tests" / "fixtures" / "libffid_fixture.so"
    for path in (ffid_bin, echo_bin, fixture):
        if not path.exists():
            print(f"{path} is missing: cmake --build --preset <preset> --target ffid_server_main "
                  "ffid_worker_main echo_server ffid_tests_fixture", file=sys.stderr)
            return 2

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
        results: List[Tuple[str, List[float]]] = []

        # Same channel options as the ffid package's.
        from ffid._core import CHANNEL_OPTIONS

        channel = grpc.insecure_channel(f"unix:{echo_sock}", options=CHANNEL_OPTIONS)
        echo = echo_grpc.EchoServiceStub(channel)
        request = echo_pb2.EchoRequest(payload=b"0123456789abcdef")
        results.append(("python_grpc_echo_16B", time_sync(lambda: echo.Echo(request), args.warmup, args.count)))
        channel.close()

        with ffid.connect(f"unix:{ffid_sock}") as s:
            lib = s.load(str(fixture))
            lib.cdef("int fx_add(int, int);")
            add = lib.fx_add
            assert add(1, 2) == 3
            call = ffid_pb2.CallRequest(session=s.id, function=add.handle,
                                        arguments=[types_pb2.Value(int_value=1),
                                                   types_pb2.Value(int_value=2)])
            stub = ffid_pb2_grpc.FfiStub(s._channel)
            results.append(("python_ffid_call_raw", time_sync(lambda: stub.Call(call), args.warmup, args.count)))
            results.append(("python_ffid_call", time_sync(lambda: add(1, 2), args.warmup, args.count)))

        async def aio() -> None:
            channel = grpc.aio.insecure_channel(f"unix:{echo_sock}", options=CHANNEL_OPTIONS)
            stub = echo_grpc.EchoServiceStub(channel)
            results.append(("python_aio_echo_16B", await time_async(lambda: stub.Echo(request), args.warmup, args.count)))
            await channel.close()
            async with ffid.aio.connect(f"unix:{ffid_sock}") as s:
                lib = await s.load(str(fixture))
                add = await lib.function("int fx_add(int, int)")
                results.append(("python_aio_ffid_call", await time_async(lambda: add(1, 2), args.warmup, args.count)))

        asyncio.run(aio())
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    table = {name: (percentile(s, 0.5), percentile(s, 0.99)) for name, s in results}
    print(f"{'figure':<24}| {'median':>10} | {'p99':>10}   ({args.count} round trips after {args.warmup})")
    for name, (median, p99) in table.items():
        print(f"{name:<24}| {median:>7.1f} us | {p99:>7.1f} us")
    print()
    for call, echo_name in (("python_ffid_call_raw", "python_grpc_echo_16B"),
                            ("python_ffid_call", "python_grpc_echo_16B"),
                            ("python_aio_ffid_call", "python_aio_echo_16B")):
        print(f"{call} / {echo_name}: median {table[call][0] / table[echo_name][0]:.2f}x, "
              f"p99 {table[call][1] / table[echo_name][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
