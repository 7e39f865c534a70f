"""Callbacks: Python functions called by native code, over the session's
Connect stream."""

from __future__ import annotations

import struct
import threading

import pytest

import ffid

from conftest import CALLBACKS_FIXTURE, FIXTURE

DECLARATIONS = """
    int fxc_sort(void *base, size_t count, size_t size, int (*compare)(const void *, const void *));
    struct fxc_vec { float x; float y; double weight; };
    double fxc_apply_vec(double (*f)(struct fxc_vec, float, double), float x, float y, double weight);
    long fxc_threads_call(int (*f)(int, int), int threads, int per_thread);
    int fxc_nest(int (*f)(int), int depth);
    void fxc_store(int (*f)(int));
    int fxc_call_stored(int x);
    int fxc_call_remember(int (*f)(int), int x);
    int fxc_last_result(void);
    int fxc_fill(void (*fill)(int *out, int value), int value);
"""


@pytest.fixture
def lib(session: ffid.Session) -> ffid.Library:
    library = session.load(str(CALLBACKS_FIXTURE))
    library.cdef(DECLARATIONS)
    return library


def test_qsort_with_a_python_comparator(session) -> None:
    libc = session.load("libc.so.6")
    libc.cdef("void qsort(void *, size_t, size_t, int (*)(const void *, const void *));")
    values = [5, -3, 9, 0, 2]
    arr = session.alloc(struct.pack(f"<{len(values)}i", *values))

    def compare(a: ffid.Pointer, b: ffid.Pointer) -> int:
        x, y = a.read_value("int"), b.read_value("int")
        return (x > y) - (x < y)

    cmp = session.callback("int(const void *, const void *)", compare)
    libc.qsort(arr, len(values), 4, cmp)
    assert list(struct.unpack(f"<{len(values)}i", arr.read())) == sorted(values)


def test_struct_arguments_and_results(lib, session) -> None:
    seen = []

    def apply(v: dict, scale: float, bias: float) -> float:
        seen.append((v, scale, bias))
        return (v["x"] + v["y"]) * scale * v["weight"] + bias

    f = session.callback("double(struct fxc_vec, float, double)", apply)
    assert lib.fxc_apply_vec(f, 1.0, 2.0, 10.0) == 60.5
    assert seen == [({"x": 1.0, "y": 2.0, "weight": 10.0}, 2.0, 0.5)]


def test_callbacks_from_threads_the_library_created(lib, session) -> None:
    callers = set()

    def f(thread: int, i: int) -> int:
        callers.add(threading.get_ident())
        return thread * 100 + i

    cb = session.callback("int(int, int)", f)
    expected = sum(t * 100 + i for t in range(4) for i in range(5))
    assert lib.fxc_threads_call(cb, 4, 5) == expected


def test_current_invocation_names_the_native_thread(lib, session) -> None:
    seen = set()

    def f(thread: int, i: int) -> int:
        invocation = session.current_invocation()
        seen.add(invocation.native_thread_id)
        return 0

    assert session.current_invocation() is None
    assert lib.fxc_threads_call(session.callback("int(int, int)", f), 3, 2) == 0
    assert len(seen) == 3 and all(tid > 0 for tid in seen)


def test_nested_calls_back_into_the_library(lib, session) -> None:
    def nest(depth: int) -> int:
        if depth == 0:
            return 100
        return lib.fxc_nest(cb, depth - 1)

    cb = session.callback("int nest(int depth)", nest)
    assert lib.fxc_nest(cb, 3) == 104


def test_out_pointer_written_inside_a_callback(lib, session) -> None:
    def fill(out: ffid.Pointer, value: int) -> None:
        out.write_value(value * 2, "int")

    assert lib.fxc_fill(session.callback("void(int *, int)", fill), 21) == 42


def test_a_failing_callback(lib, session) -> None:
    def broken(x: int) -> int:
        raise ValueError("no luck with %d" % x)

    cb = session.callback("int(int)", broken, default=-7)
    with pytest.raises(ffid.CallbackFailed, match="no luck with 5") as caught:
        lib.fxc_call_remember(cb, 5)
    assert isinstance(caught.value.__cause__, ValueError)
    assert lib.fxc_last_result() == -7  # the native caller got the default
    assert lib.fxc_call_remember(session.callback("int(int)", lambda x: x + 1), 1) == 2


def test_stored_callback_and_release(lib, session) -> None:
    cb = session.callback("int(int)", lambda x: x * 3)
    lib.fxc_store(cb)
    assert lib.fxc_call_stored(4) == 12
    cb.release()
    with pytest.raises(ffid.CallbackFailed):
        lib.fxc_call_stored(4)


def test_unary_requests_inside_a_callback_are_refused(lib, session) -> None:
    fixture = session.load(str(FIXTURE))
    fixture.cdef("int fx_add(int, int);")
    caught = []

    def f(x: int) -> int:
        try:
            fixture.fx_add  # not resolved yet: a unary ResolveFunction
        except ffid.Unsupported as error:
            caught.append(error)
        return x

    assert lib.fxc_call_remember(session.callback("int(int)", f), 9) == 9
    assert caught and "inside a callback" in caught[0].message
