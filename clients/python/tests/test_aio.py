"""ffid.aio: the same API on asyncio."""

from __future__ import annotations

import asyncio
import gc
import struct

import pytest

import ffid
import ffid.aio

from conftest import FIXTURE


@pytest.mark.asyncio
async def test_first_call(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        libm = await s.load("libm.so.6")
        await libm.cdef("double cos(double);")
        assert await libm.cos(0.5) == 0.8775825618903728
        f = await libm.function("double pow(double, double)")
        assert await f(2.0, 10.0) == 1024.0
        frexp = await libm.function("double frexp(double, int *)", out=[1])
        assert await frexp(8.0) == (0.5, 4)
    assert s.closed


@pytest.mark.asyncio
async def test_concurrent_calls_on_one_session(daemon) -> None:
    s = await ffid.aio.connect(daemon.address, idle_timeout=60)
    try:
        lib = await s.load(str(FIXTURE))
        add = await lib.function("int fx_add(int, int)")
        results = await asyncio.gather(*(add(i, i) for i in range(20)))
        assert results == [2 * i for i in range(20)]
        assert (await s.info()).idle_timeout.seconds == 60
    finally:
        await s.close()


@pytest.mark.asyncio
async def test_memory(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        buf = await s.alloc(16)
        assert len(buf) == 16
        await buf.write(b"hello\0")
        assert await buf.read(5) == b"hello"
        with pytest.raises(ffid.OutOfBounds):
            await buf.read(17)
        await s.cdef("struct point { int x, y; };")
        pt = await s.new("struct point", {"x": 1, "y": 2})
        assert struct.unpack("<2i", await pt.read()) == (1, 2)
        await buf.free()
        with pytest.raises(ffid.HandleInvalid):
            await buf.free()
        other = await s.alloc(4)
        stale = ffid.aio.Pointer(s, other.handle, 0, other.address)
        del other
        gc.collect()
        with pytest.raises(ffid.HandleInvalid, match="freed"):
            await stale.read(1)


@pytest.mark.asyncio
async def test_large_memory_on_streams_and_in_pieces(daemon) -> None:
    # As the sync client: more than 1 MiB goes on one stream each way (or
    # in 1 MiB pieces to a daemon without them), in place, and a transfer
    # past the end fails before writing anything.
    data = bytes(((i * 2654435761) >> 24) & 0xFF for i in range((2 << 20) + 77))
    async with ffid.aio.connect(daemon.address) as s:
        buf = await s.alloc(len(data) + 3)
        await buf.write(data, offset=3)
        assert await buf.read() == bytes(3) + data
        # The stream's check refuses it; when grpc.aio reports its own
        # INTERNAL for the stream the daemon ended (a race in grpc.aio), the
        # client asks again in pieces, whose check says the same.
        with pytest.raises(ffid.OutOfBounds) as caught:
            await buf.write(data + b"x", offset=3)
        assert "exceeds the 2097232-byte allocation" in caught.value.message
        with pytest.raises(ffid.OutOfBounds):
            await buf.read(len(data) + 4)
        assert await buf.read(len(data), offset=3) == data  # the failed write wrote nothing
        s._pieces_only = True
        await buf.write(data[::-1], offset=3)
        assert await buf.read(len(data), offset=3) == data[::-1]
        with pytest.raises(ffid.OutOfBounds) as caught:
            await buf.write(data + b"x", offset=3)
        assert caught.value.message.startswith("piece 3 of 3 (bytes 2097152..2097229 of 2097230): ")
        with pytest.raises(ffid.OutOfBounds) as caught:
            await buf.read(len(data) + 4)
        assert caught.value.message.startswith("piece 3 of 3 (bytes 2097152..2097232 of 2097233): ")


@pytest.mark.asyncio
async def test_errors_crash_and_timeout(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        lib = await s.load(str(FIXTURE))
        with pytest.raises(ffid.SymbolNotFound):
            await lib.function("int ffid_nope(void)")
        sleep = await lib.function("void fx_sleep_ms(int)")
        with pytest.raises(ffid.DeadlineExceeded):
            await sleep(10_000, timeout=0.3)
    async with ffid.aio.connect(daemon.address) as s:
        lib = await s.load(str(FIXTURE))
        await lib.cdef("void fx_crash_null(void); int fx_set_errno(int);")
        assert await lib.fx_set_errno(5, errno=True) == -1
        assert s.errno == 5
        with pytest.raises(ffid.WorkerCrashed) as caught:
            await lib.fx_crash_null()
        assert caught.value.crash_report.signal_name == "SIGSEGV"
    async with ffid.aio.connect(daemon.address) as s:
        lib = await s.load(str(FIXTURE))
        assert await (await lib.function("int fx_add(int, int)"))(1, 2) == 3


@pytest.mark.asyncio
async def test_unavailable(tmp_path) -> None:
    with pytest.raises(ffid.Unavailable):
        await ffid.aio.connect(f"unix:{tmp_path}/none.sock")


@pytest.mark.asyncio
async def test_types_variables_and_ownership(daemon) -> None:
    from conftest import REPO

    async with ffid.aio.connect(daemon.address) as s:
        lib = await s.load(str(FIXTURE))
        await lib.cdef((REPO / "tests" / "fixtures" / "types_fixture.h").read_text())
        assert await lib.fxt_point_add((1, 2), {"x": 3, "y": 4}) == {"x": 4, "y": 6}
        pt = await s.new("struct fxt_point", {"x": 1, "y": 2})
        assert await pt.read_value() == {"x": 1, "y": 2}
        await pt.write_value((7, 8))
        assert await pt.read_value() == {"x": 7, "y": 8}
        counter = await lib.variable("fxt_counter")
        await counter.write_value(11)
        assert await lib.fxt_counter_get() == 11
        strdup = await lib.function("char *fxt_strdup(const char *)", result="release")
        assert await strdup("x") == "x"
        new = await lib.function("void *fxt_object_new(int)")
        owned = await s.adopt(await new(3), "fxt_object_release", library=lib, size=4)
        assert await owned.read_value("int") == 3
        await owned.free()


@pytest.mark.asyncio
async def test_callbacks(daemon) -> None:
    from conftest import CALLBACKS_FIXTURE

    async with ffid.aio.connect(daemon.address) as s:
        libc = await s.load("libc.so.6")
        await libc.cdef("void qsort(void *, size_t, size_t, int (*)(const void *, const void *));")
        arr = await s.alloc(struct.pack("<4i", 3, 1, 4, 2))

        async def compare(a, b) -> int:
            x, y = await a.read_value("int"), await b.read_value("int")
            return (x > y) - (x < y)

        await libc.qsort(arr, 4, 4, await s.callback("int(const void *, const void *)", compare))
        assert struct.unpack("<4i", await arr.read()) == (1, 2, 3, 4)

        lib = await s.load(str(CALLBACKS_FIXTURE))
        await lib.cdef("int fxc_nest(int (*f)(int), int depth); int fxc_call_remember(int (*f)(int), int x);")

        async def nest(depth: int) -> int:
            return 100 if depth == 0 else await lib.fxc_nest(cb, depth - 1)

        cb = await s.callback("int(int)", nest)
        assert await lib.fxc_nest(cb, 2) == 103
        plain = await s.callback("int(int)", lambda x: x * 2)  # a plain function works too
        assert await lib.fxc_call_remember(plain, 21) == 42

        def broken(x: int) -> int:
            raise RuntimeError("boom")

        with pytest.raises(ffid.CallbackFailed, match="boom") as caught:
            await lib.fxc_call_remember(await s.callback("int(int)", broken), 1)
        assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.asyncio
async def test_flexible_length(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        await s.cdef("struct flex { int n; double data[]; };")
        flex = await s.new("struct flex", {"n": 2, "data": [0.5, 1.5]}, flexible_length=2)
        assert len(flex) == 8 + 2 * 8
        assert await flex.read_value() == {"n": 2, "data": [0.5, 1.5]}
        await flex.write_value({"n": 1, "data": [2.5]}, "struct flex", flexible_length=1)
        assert await flex.read_value("struct flex", flexible_length=2) == {"n": 1, "data": [2.5, 1.5]}
        assert await flex.read_value("struct flex") == {"n": 1}
        with pytest.raises(ffid.OutOfBounds):
            await flex.read_value(flexible_length=3)
