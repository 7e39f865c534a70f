"""Batches (one round trip, results of earlier steps as later arguments) and
pipelined calls (call_async on the Connect stream), sync and asyncio."""

from __future__ import annotations

import struct

import pytest

import ffid
import ffid.aio

from conftest import FIXTURE


@pytest.fixture
def libc(session: ffid.Session) -> ffid.Library:
    lib = session.load("libc.so.6")
    lib.cdef("void *malloc(size_t); void *memset(void *, int, size_t); void free(void *);")
    return lib


def test_promise_pipelining_malloc_memset_use_free(session, fixture_lib, libc) -> None:
    fixture_lib.cdef("int fx_sum_ints(const int *values, size_t count);")
    with session.batch() as b:
        p = b.call(libc.malloc, 64)
        b.call(libc.memset, p, 1, 64, discard=True)
        total = b.call(fixture_lib.fx_sum_ints, p, 16)
        b.call(libc.free, p)
    assert len(b) == 4
    assert total.value == 16 * 0x01010101
    assert isinstance(p.value, ffid.Pointer)
    assert b.results[1] is None  # discarded


def test_alloc_write_read_free_and_references(session, fixture_lib) -> None:
    fixture_lib.cdef("void fx_fill(unsigned char *buffer, size_t size, int value);")
    b = session.batch()
    mem = b.alloc(16)
    b.call(fixture_lib.fx_fill, mem, 16, 7)
    b.write(mem + 4, b"ab")
    data = b.read(mem, 16)
    b.free(mem)
    values = b.run()
    assert data.value == b"\x07" * 4 + b"ab" + b"\x07" * 10
    assert values[3] == data.value
    assert isinstance(mem.value, ffid.Memory)
    with pytest.raises(ffid.HandleInvalid):
        mem.value.read(1)


def test_load_through_a_pointer(session, fixture_lib) -> None:
    fixture_lib.cdef("int *fx_static_ints(void); int fx_read_int(const int *p);")
    b = session.batch()
    ints = b.call(fixture_lib.fx_static_ints)
    second = b.call(fixture_lib.fx_read_int, ints + 4)
    b.run()
    assert second.value == struct.unpack("i", ints.value.read(8)[4:])[0]


def test_failed_step_is_named_and_stops_the_batch(session, fixture_lib) -> None:
    fixture_lib.cdef("int fx_sum_ints(const int *values, size_t count);")
    mem = session.alloc(8)
    b = session.batch()
    b.write(mem, b"12345678")
    b.read(mem, 100)  # out of bounds
    after = b.write(mem, b"xxxxxxxx")
    with pytest.raises(ffid.OutOfBounds) as caught:
        b.run()
    assert caught.value.batch_step == 1
    assert "batch step 1" in caught.value.message
    assert mem.read() == b"12345678"  # step 0 stays done, step 2 never ran
    with pytest.raises(RuntimeError):
        after.value


def test_results_of_another_batch_are_refused(session, libc) -> None:
    first = session.batch()
    p = first.call(libc.malloc, 8)
    second = session.batch()
    with pytest.raises(ValueError, match="another batch"):
        second.call(libc.free, p)


def test_call_async_pipelines_in_order(session, fixture_lib) -> None:
    fixture_lib.cdef("int fx_add(int, int);")
    futures = [fixture_lib.fx_add.call_async(i, 1) for i in range(200)]
    assert [f.result(timeout=30) for f in futures] == [i + 1 for i in range(200)]


def test_call_async_reports_errors(session, fixture_lib) -> None:
    fixture_lib.cdef("int fx_add(int, int);")
    with pytest.raises(ffid.ValueOutOfRange):
        fixture_lib.fx_add.call_async(2**40, 1).result(timeout=30)


@pytest.mark.asyncio
async def test_aio_batch_and_call_async(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        lib = await s.load(str(FIXTURE))
        await lib.cdef("int fx_add(int, int); void fx_fill(unsigned char *, size_t, int);")
        add = await lib.resolve("fx_add")
        fill = await lib.resolve("fx_fill")
        async with s.batch() as b:
            mem = b.alloc(4)
            b.call(fill, mem, 4, 9)
            data = b.read(mem, 4)
            total = b.call(add, 40, 2)
        assert data.value == b"\x09" * 4
        assert total.value == 42
        futures = [add.call_async(i, i) for i in range(50)]
        import asyncio
        assert await asyncio.gather(*futures) == [2 * i for i in range(50)]
