"""The type system through Python: structs, unions and enums by value,
typed memory (new, .value, read_value), global variables, ownership of
returned pointers (adopt, release). Uses the fixture's own header,
tests/fixtures/types_fixture.h, as the cdef."""

from __future__ import annotations

import decimal
import gc
import struct

import pytest

import ffid

from conftest import FIXTURE, REPO

HEADER = (REPO / "tests" / "fixtures" / "types_fixture.h").read_text()


@pytest.fixture
def lib(session: ffid.Session) -> ffid.Library:
    library = session.load(str(FIXTURE))
    library.cdef(HEADER)
    return library


def test_structs_by_value(lib) -> None:
    assert lib.fxt_point_add({"x": 1, "y": 2}, (10, 20)) == {"x": 11, "y": 22}
    assert lib.fxt_point_scale((2, 3), 4) == {"x": 8, "y": 12}
    made = lib.fxt_mixed_make("a", 2.5)
    assert made["c"] == ord("a") and made["d"] == 2.5
    assert made["p"] == {"x": 0, "y": 0} or isinstance(made["p"], dict)
    assert lib.fxt_mixed_sum(made) == lib.fxt_mixed_sum(made)
    assert lib.fxt_packed_sum(lib.fxt_packed_make("b", 1000, -3)) == ord("b") + 1000 - 3
    assert lib.fxt_aligned_twice({"i": 21}) == 42


def test_unions_and_enums(lib) -> None:
    # A union result has every member, decoded from the same bytes (only the
    # caller knows which one is set), and the bytes.
    number = lib.fxt_number_from_float(1.5)
    assert isinstance(number, ffid.UnionValue)
    assert number["f"] == 1.5 and number["i"] == 0x3FC00000
    assert struct.unpack_from("<f", number.raw) == (1.5,)
    assert lib.fxt_number_as_double(number, 1) == 1.5  # passed back: its bytes
    assert lib.fxt_number_as_double({"d": 0.25}, 2) == 0.25
    tagged = lib.fxt_tagged_from_int(65)
    assert tagged["i"] == 65 and tagged["s"].address == 65  # not followed
    # An anonymous union's members read as the struct's own.
    assert lib.fxt_with_union_make(2, 0.5) == {"kind": 2, "i": 0x3F000000, "f": 0.5}
    assert lib.fxt_color_next("FXT_RED") == "FXT_GREEN"  # constants by name
    assert lib.fxt_color_next(2) == "FXT_BLUE"
    assert lib.fxt_holder_check({"f": None, "name": "abc", "color": "FXT_BLUE"}) == 34


def test_long_double(lib) -> None:
    assert lib.fxt_long_double_half(3.0) == 1.5
    third = lib.fxt_long_double_third(1)
    assert isinstance(third, ffid.LongDouble)
    assert str(third) == "0.33333333333333333334"  # every bit of the mantissa
    one_third = decimal.Decimal(1) / 3
    assert abs(third.exact - one_third) < decimal.Decimal("1e-19")
    assert abs(decimal.Decimal(float(third)) - one_third) > decimal.Decimal("1e-18")
    # Passed back, nothing is lost: (1/3)/3 at long double precision.
    ninth = lib.fxt_long_double_third(third)
    assert abs(ninth.exact - decimal.Decimal(1) / 9) < decimal.Decimal("1e-20")
    assert lib.fxt_long_double_third(decimal.Decimal("0.75")).decimal == "0.25"
    z = lib.fxt_complex_scale(1.5 + 0.25j, 2)
    assert z == 3 + 0.5j


def test_unnamed_bitfields_and_misaligned_nested_structs(lib) -> None:
    holes = lib.fxt_holes_make("a", "b", 9, -5)
    assert holes == {"c": ord("a"), "d": ord("b"), "e": 9, "f": -5}
    assert lib.fxt_holes_sum(holes) == ord("a") + ord("b") + 9 - 5
    made = lib.fxt_misaligned_make(1, 2, 3, 4)
    assert made == {"c": 1, "p": {"x": 2, "y": 3}, "s": 4}
    assert lib.fxt_misaligned_sum(made) == 1 + 20 + 300 + 4000


def test_typed_memory_value(session, lib) -> None:
    pt = session.new("struct fxt_point", {"x": 1, "y": 2})
    assert pt.value == {"x": 1, "y": 2}
    pt.value = {"x": 5, "y": 6}
    assert struct.unpack("<2i", pt.read()) == (5, 6)
    ints = session.new("int[3]", [1, 2, 3])
    assert ints.value == [1, 2, 3]
    many = session.new("fxt_point_t", count=2)
    assert many.value == [{"x": 0, "y": 0}, {"x": 0, "y": 0}]
    raw = session.alloc(16)
    raw.write_value(258, "int")
    assert raw.read_value("int") == 258
    assert (raw + 4).read_value("int") == 0
    with pytest.raises(ffid.MisalignedAccess):
        (raw + 1).read_value("int")
    with pytest.raises(TypeError, match="no C type"):
        raw.value


def test_global_variables(session, lib) -> None:
    assert lib.fxt_counter == 7
    lib.fxt_counter = 42
    assert lib.fxt_counter_get() == 42
    assert lib.fxt_origin == {"x": 3, "y": -4}
    origin = lib.variable("fxt_origin")
    assert origin.value == {"x": 3, "y": -4}
    assert lib.fxt_point_add(origin.value, (1, 1)) == {"x": 4, "y": -3}
    assert lib.variable("fxt_counter", "int").value == 42


def test_result_ownership(session, lib) -> None:
    released = lib.function("char *fxt_strdup(const char *)", result="release")
    assert released("copy me") == "copy me"
    adopted = lib.function("char *fxt_strdup(const char *)", result="adopt")
    memory = adopted("mine")
    assert isinstance(memory, ffid.Memory)
    assert memory.text == "mine"
    assert memory.read(5) == b"mine\0"
    memory.free()
    new = lib.function("void *fxt_object_new(int)", result="adopt", destructor="fxt_object_release")
    before = lib.fxt_released
    obj = new(7)
    assert obj.read_value("int") == 7
    obj.free()
    assert lib.fxt_released == before + 1
    # Dropped adopted memory is released with its destructor too.
    new(8)
    gc.collect()
    assert lib.fxt_counter_get() is not None  # a request, which sends the release
    assert lib.fxt_released == before + 2


def test_adopt_a_borrowed_pointer(session, lib) -> None:
    borrowed = lib.function("void *fxt_object_new(int)")(9)
    before = lib.fxt_released
    owned = session.adopt(borrowed, "fxt_object_release", library=lib, size=4)
    assert len(owned) == 4 and owned.read_value("int") == 9
    with pytest.raises(ffid.OutOfBounds):
        owned.read(8)
    owned.free()
    assert lib.fxt_released == before + 1


def test_flexible_array_members_with_flexible_length(session, lib) -> None:
    # new() makes room for the elements and sets them; .value reads them.
    flex = session.new("struct fxt_flex", {"n": 3, "data": [0.5, 1.0, 1.5]}, flexible_length=3)
    assert len(flex) == 8 + 3 * 8
    assert flex.flexible_length == 3
    assert flex.value == {"n": 3, "data": [0.5, 1.0, 1.5]}
    assert lib.fxt_flex_sum(flex) == 3.0
    flex.value = {"n": 3, "data": [10.0, 1.0, 1.5]}
    assert lib.fxt_flex_sum(flex) == 12.5
    # Explicit lengths on read_value/write_value; beyond the memory: OutOfBounds.
    assert flex.read_value("struct fxt_flex", flexible_length=2) == {"n": 3, "data": [10.0, 1.0]}
    assert flex.read_value("struct fxt_flex") == {"n": 3}  # the fixed part only
    flex.write_value({"n": 2, "data": [4.0]}, "struct fxt_flex", flexible_length=1)
    assert flex.value == {"n": 2, "data": [4.0, 1.0, 1.5]}
    with pytest.raises(ffid.OutOfBounds):
        flex.read_value(flexible_length=4)
    with pytest.raises(ValueError, match="negative"):
        flex.read_value(flexible_length=-1)
    # One the library made, through the borrowed pointer it returned.
    made = lib.fxt_flex_new(2)
    assert made.read_value("struct fxt_flex", flexible_length=2)["data"] == [0.0, 0.5]
    session.adopt(made).free()
    # Nested last in another struct (a GCC extension).
    outer = session.new("struct fxt_flex_outer", {"tag": 100, "inner": {"n": 2, "data": [0.25, 0.5]}},
                        flexible_length=2)
    assert len(outer) == 16 + 2 * 8
    assert outer.value == {"tag": 100, "inner": {"n": 2, "data": [0.25, 0.5]}}
    assert lib.fxt_flex_outer_sum(outer) == 100.75
    # Elements without a length, or a length for a type without the member.
    with pytest.raises(ffid.TypeMismatch):
        session.new("struct fxt_flex", {"n": 1, "data": [1.0]})
    with pytest.raises(ffid.TypeMismatch):
        session.new("struct fxt_point", flexible_length=2)


def test_member_level_aligned_and_packed(lib) -> None:
    made = lib.fxt_member_aligned_make(1, 20, 300, -4)
    assert made == {"c": 1, "x": 20, "s": 300, "t": -4}
    assert lib.fxt_member_aligned_sum(made) == 317
    assert lib.fxt_packed_aligned_sum({"c": 1, "x": 20, "s": 300, "y": 4000}) == 4321
    assert lib.fxt_member_packed_sum({"c": 1, "x": -20, "s": 300}) == 281
    assert lib.fxt_layout("struct fxt_member_aligned", "x") == 8
