"""read_into(): a read into the caller's writable buffer, piece by piece,
with the same results and errors as read(), sync and asyncio."""

from __future__ import annotations

import array
import struct

import pytest

import ffid
import ffid.aio
from ffid import _core

PIECE = _core.BULK_PIECE
# More than two pieces and not a whole number of them.
DATA = bytes(((i * 2654435761) >> 24) & 0xFF for i in range(2 * PIECE + 77))


def _filled(size: int) -> bytearray:
    return bytearray(b"\xee" * size)


@pytest.mark.parametrize("pieces_only", [False, True], ids=["streams", "pieces"])
def test_reads_into_the_buffer_across_piece_boundaries(session, pieces_only: bool) -> None:
    buf = session.alloc(DATA)
    session._pieces_only = pieces_only
    whole = bytearray(len(DATA))
    assert buf.read_into(whole) == len(DATA)
    assert whole == DATA
    # Reads of one piece, one byte more, one byte less, and ranges that
    # start inside a piece and cross one or two boundaries, into the middle
    # of a larger buffer: only the target's bytes change.
    for offset, length in ((0, PIECE), (0, PIECE + 1), (1, PIECE - 1), (PIECE - 3, 7),
                           (5, 2 * PIECE), (PIECE + 1, PIECE + 76), (0, 1), (len(DATA) - 1, 1)):
        outer = _filled(length + 8)
        assert buf.read_into(memoryview(outer)[4:4 + length], offset=offset) == length
        assert outer[4:4 + length] == DATA[offset:offset + length], (offset, length)
        assert outer[:4] == b"\xee" * 4 and outer[-4:] == b"\xee" * 4
    # A pointer into the memory reads the same.
    target = bytearray(10)
    (buf + (PIECE - 5)).read_into(target)
    assert target == DATA[PIECE - 5:PIECE + 5]
    # The buffer was released: a bytearray can be resized again.
    whole.extend(b"x")


def test_any_writable_buffer(session) -> None:
    values = struct.pack("<4d", 0.5, 1.5, -2.0, 1e300)
    buf = session.alloc(values)
    doubles = array.array("d", [0.0] * 4)
    assert buf.read_into(doubles) == 32  # bytes, not elements
    assert doubles.tolist() == [0.5, 1.5, -2.0, 1e300]
    two_d = memoryview(bytearray(32)).cast("B", (4, 8))
    assert buf.read_into(two_d) == 32
    assert two_d.tobytes() == values
    assert buf.read_into(bytearray()) == 0


@pytest.mark.parametrize("pieces_only", [False, True], ids=["streams", "pieces"])
def test_errors_are_those_of_read(session, pieces_only: bool) -> None:
    buf = session.alloc(DATA)
    session._pieces_only = pieces_only
    messages = []
    for offset, length in ((0, len(DATA) + 1), (PIECE, PIECE + 78), (len(DATA) - 4, 8)):
        with pytest.raises(ffid.OutOfBounds) as by_read:
            buf.read(length, offset=offset)
        with pytest.raises(ffid.OutOfBounds) as by_read_into:
            buf.read_into(bytearray(length), offset=offset)
        assert by_read_into.value.message == by_read.value.message
        assert by_read_into.value.code == by_read.value.code
        messages.append(by_read_into.value.message)
    # In pieces, the failed piece is named.
    assert messages[0].startswith("piece 3 of 3 ") == pieces_only
    with pytest.raises(ValueError):
        buf.read_into(bytearray(1), offset=-1)
    buf.free()
    with pytest.raises(ffid.HandleInvalid, match="freed"):
        buf.read_into(bytearray(PIECE + 1))


def test_a_read_only_buffer_is_refused_before_any_rpc(session) -> None:
    buf = session.alloc(8)
    buf.free()
    # The freed handle would raise HandleInvalid: the buffer is checked
    # first.
    for read_only in (b"12345678", memoryview(bytearray(8)).toreadonly(), memoryview(b"12345678")):
        with pytest.raises(TypeError, match="read-only"):
            buf.read_into(read_only)
    with pytest.raises(TypeError, match="writable buffer"):
        buf.read_into([0] * 8)
    with pytest.raises(TypeError, match="contiguous"):
        buf.read_into(memoryview(bytearray(16))[::2])


@pytest.mark.asyncio
async def test_aio_read_into(daemon) -> None:
    async with ffid.aio.connect(daemon.address) as s:
        buf = await s.alloc(DATA)
        for pieces_only in (False, True):
            s._pieces_only = pieces_only
            whole = bytearray(len(DATA))
            assert await buf.read_into(whole) == len(DATA)
            assert whole == DATA
            for offset, length in ((0, PIECE + 1), (PIECE - 3, 7), (PIECE + 1, PIECE + 76)):
                outer = _filled(length + 8)
                assert await buf.read_into(memoryview(outer)[4:4 + length], offset=offset) == length
                assert outer[4:4 + length] == DATA[offset:offset + length], (offset, length)
                assert outer[:4] == b"\xee" * 4 and outer[-4:] == b"\xee" * 4
            target = bytearray(10)
            await (buf + (PIECE - 5)).read_into(target)
            assert target == DATA[PIECE - 5:PIECE + 5]
            for offset, length in ((0, len(DATA) + 1), (len(DATA) - 4, 8)):
                with pytest.raises(ffid.OutOfBounds) as by_read:
                    await buf.read(length, offset=offset)
                with pytest.raises(ffid.OutOfBounds) as by_read_into:
                    await buf.read_into(bytearray(length), offset=offset)
                assert by_read_into.value.message == by_read.value.message
        await buf.free()
        with pytest.raises(TypeError, match="read-only"):
            await buf.read_into(b"1234")
        with pytest.raises(ffid.HandleInvalid):
            await buf.read_into(bytearray(4))
