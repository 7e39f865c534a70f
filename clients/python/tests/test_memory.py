"""Native memory: owned allocations (bounds-checked), typed allocations,
borrowed pointers, release by free(), by the garbage collector and by the
session's end."""

from __future__ import annotations

import gc
import struct

import pytest

import ffid


def test_alloc_read_write_len_free(session) -> None:
    buf = session.alloc(64)
    assert len(buf) == 64
    assert buf.read() == bytes(64)
    buf.write(b"hello\0")
    assert buf.read(5) == b"hello"
    buf.write(b"XY", offset=62)
    assert buf.read(2, offset=62) == b"XY"
    assert (buf + 62).read(2) == b"XY"
    buf.free()
    with pytest.raises(ffid.HandleInvalid, match="freed"):
        buf.read(1)


def test_alloc_with_initial_bytes(session) -> None:
    assert session.alloc(b"abc").read() == b"abc"
    assert session.alloc(8, b"ab").read() == b"ab" + bytes(6)


def test_reads_and_writes_are_bounds_checked(session) -> None:
    buf = session.alloc(16)
    with pytest.raises(ffid.OutOfBounds) as caught:
        buf.read(17)
    assert isinstance(caught.value, IndexError)
    with pytest.raises(ffid.OutOfBounds):
        buf.write(b"x" * 4, offset=14)
    with pytest.raises(ffid.OutOfBounds):
        session.alloc(4, b"too long")


def test_double_free_is_an_error(session) -> None:
    buf = session.alloc(8)
    buf.free()
    with pytest.raises(ffid.HandleInvalid):
        buf.free()


def test_garbage_collection_releases_memory(session) -> None:
    buf = session.alloc(8)
    stale = ffid.Pointer(session, buf.handle, 0, buf.address)
    del buf
    gc.collect()
    # The release travels with the session's next request.
    with pytest.raises(ffid.HandleInvalid, match="freed"):
        stale.read(1)


def test_memory_as_pointer_argument(fixture_lib, session) -> None:
    fixture_lib.cdef("int fx_sum_ints(const int *, size_t); void fx_fill(unsigned char *, size_t, int);")
    ints = session.alloc(struct.pack("<4i", 1, 2, 3, 4))
    assert fixture_lib.fx_sum_ints(ints, 4) == 10
    assert fixture_lib.fx_sum_ints(ints + 8, 2) == 7
    buf = session.alloc(6)
    fixture_lib.fx_fill(buf, len(buf), 0x41)
    assert buf.read() == b"AAAAAA"


def test_typed_allocation(fixture_lib, session) -> None:
    session.cdef("struct point { int x, y; }; typedef struct point point_t;")
    pt = session.new("struct point", {"x": 1, "y": 2})
    assert len(pt) == 8
    assert struct.unpack("<2i", pt.read()) == (1, 2)
    pt2 = session.new("point_t", (3, 4))  # a tuple sets members in order
    assert struct.unpack("<2i", pt2.read()) == (3, 4)
    ints = session.new("int[4]", [5, 6, 7, 8])
    assert fixture_lib.function("int fx_sum_ints(const int *, size_t)")(ints, 4) == 26
    doubles = session.new("double", count=3)
    assert len(doubles) == 24
    with pytest.raises(ffid.TypeMismatch):
        session.new("struct point", {"z": 1})


def test_borrowed_pointers(fixture_lib, session) -> None:
    fixture_lib.cdef("int *fx_static_ints(void); int fx_read_int(const int *); void *fx_null_ptr(void);"
                     "void *fx_ptr_add(void *, size_t);")
    p = fixture_lib.fx_static_ints()
    assert isinstance(p, ffid.Pointer)
    assert struct.unpack("<4i", p.read(16)) == (10, 20, 30, 40)
    assert fixture_lib.fx_read_int(p + 4) == 20
    assert fixture_lib.fx_read_int(int(p) + 8) == 30  # a raw address works too
    p.write(struct.pack("<i", 99), offset=12)
    assert fixture_lib.fx_read_int(p + 12) == 99
    assert fixture_lib.fx_null_ptr() is None


def test_bad_address_is_an_error_not_a_crash(fixture_lib, session) -> None:
    bad = fixture_lib.function("void *fx_ptr_add(void *, size_t)")(None, 16)
    assert int(bad) == 16
    with pytest.raises(ffid.BadAddress):
        bad.read(4)
    assert fixture_lib.function("int fx_add(int, int)")(1, 1) == 2


def test_resource_limit(session) -> None:
    with pytest.raises(ffid.ResourceLimit):
        session.alloc(1 << 40)


def _pattern(size: int) -> bytes:
    # Differs between bytes 1 MiB apart, so a piece out of place shows.
    return bytes(((i * 2654435761) >> 24) & 0xFF for i in range(size))


PIECES_DATA = _pattern((3 << 20) + 123)


@pytest.mark.parametrize("pieces_only", [False, True], ids=["streams", "pieces"])
@pytest.mark.parametrize("arena", [False, True], ids=["heap", "arena"])
def test_large_reads_and_writes_go_on_streams_or_in_pieces(session, arena: bool, pieces_only: bool) -> None:
    # More than 1 MiB goes on one WriteStream / ReadStream (or, to a daemon
    # without them, as 1 MiB RPCs); every byte lands where it belongs, also
    # at an offset that is not a multiple of the piece size.
    session._pieces_only = pieces_only
    data = PIECES_DATA
    buf = session.alloc(len(data) + 5, arena=arena)
    buf.write(memoryview(data), offset=5)
    assert buf.read(5) == bytes(5)
    assert buf.read(len(data), offset=5) == data
    assert buf.read() == bytes(5) + data
    assert (buf + 5).read(len(data)) == data


def test_large_transfer_past_the_end_writes_nothing(session) -> None:
    size = (5 << 20) // 2
    buf = session.alloc(size)
    # The stream's whole range is checked first: nothing is written.
    with pytest.raises(ffid.OutOfBounds) as caught:
        buf.write(b"y" * (3 << 20))
    assert not caught.value.message.startswith("piece ")
    assert buf.read() == bytes(size)
    with pytest.raises(ffid.OutOfBounds):
        buf.read(3 << 20)
    # In pieces, the last is sent first: nothing is written either, and the
    # failure names the piece.
    session._pieces_only = True
    with pytest.raises(ffid.OutOfBounds, match=r"^OUT_OF_BOUNDS: piece 3 of 3 \(bytes 2097152\.\.3145727 of 3145728\): "):
        buf.write(b"y" * (3 << 20))
    assert buf.read() == bytes(size)
    with pytest.raises(ffid.OutOfBounds, match=r"^OUT_OF_BOUNDS: piece 3 of 3 \(bytes 2097152\.\.3145727 of 3145728\): "):
        buf.read(3 << 20)
    # One piece: the message is the daemon's own.
    with pytest.raises(ffid.OutOfBounds) as caught:
        session.alloc(16).read(17)
    assert not caught.value.message.startswith("piece ")
