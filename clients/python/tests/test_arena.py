"""The session's shared-memory arena mapped into the client: the same bytes
for a memoryview here, native code in the worker, and Read/Write."""

from __future__ import annotations

import struct

import pytest

import ffid
import ffid.aio

from conftest import FIXTURE


def test_client_writes_native_code_reads(session, fixture_lib) -> None:
    fixture_lib.cdef("int fx_sum_ints(const int *values, size_t count);")
    mem = session.alloc(16 * 4, arena=True)
    assert mem.in_arena
    view = mem.view()
    view[:] = struct.pack("16i", *range(16))
    assert fixture_lib.fx_sum_ints(mem, 16) == sum(range(16))
    arena = session.map_arena()
    assert int(mem) == arena.worker_address + mem.arena_offset
    view.release()


def test_native_code_writes_client_reads(session, fixture_lib) -> None:
    fixture_lib.cdef("void fx_fill(unsigned char *buffer, size_t size, int value);")
    mem = session.alloc(1000, arena=True)
    fixture_lib.fx_fill(mem, 1000, 0x5A)
    view = mem.view()
    assert bytes(view) == b"\x5a" * 1000
    view.release()


def test_read_and_write_see_the_mapping(session) -> None:
    mem = session.alloc(32, b"initial", arena=True)
    view = mem.view()
    assert bytes(view[:7]) == b"initial"
    view[0:6] = b"mapped"
    assert mem.read(6) == b"mapped"
    mem.write(b"RPC", offset=8)
    assert bytes(view[8:11]) == b"RPC"
    with pytest.raises(ffid.OutOfBounds):
        mem.read(40)
    view.release()


def test_heap_memory_has_no_view(session) -> None:
    mem = session.alloc(8)
    assert not mem.in_arena
    with pytest.raises(ValueError, match="arena"):
        mem.view()


def test_arena_full_is_a_resource_limit(session) -> None:
    arena = session.map_arena()
    with pytest.raises(ffid.ResourceLimit):
        session.alloc(arena.size + 1, arena=True)


@pytest.mark.asyncio
async def test_aio_arena(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        lib = await s.load(str(FIXTURE))
        await lib.cdef("int fx_sum_ints(const int *values, size_t count);")
        mem = await s.alloc(8, arena=True)
        view = await mem.view()
        view[:] = struct.pack("2i", 20, 22)
        assert await lib.fx_sum_ints(mem, 2) == 42
        view.release()
