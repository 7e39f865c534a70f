"""Calls through the sync client: the first call, scalars, strings,
variadic functions, errno, out-parameters, structs by value."""

from __future__ import annotations

import math

import pytest

import ffid


def test_first_call_from_the_readme(daemon) -> None:
    with ffid.connect(daemon.address) as s:
        libm = s.load("libm.so.6")
        libm.cdef("double cos(double); double frexp(double, int *);")
        assert libm.cos(0.5) == 0.8775825618903728
        f = libm.function("double pow(double, double)")
        assert f(2.0, 10.0) == 1024.0


def test_address_from_environment(daemon, monkeypatch) -> None:
    monkeypatch.setenv("FFID_ADDRESS", daemon.address)
    assert ffid.default_address() == daemon.address
    with ffid.connect() as s:
        assert s.address == daemon.address
        assert s.load("libm.so.6").function("double sqrt(double)")(9.0) == 3.0


def test_default_address_without_environment(monkeypatch) -> None:
    monkeypatch.delenv("FFID_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    assert ffid.default_address() == "unix:/run/user/1234/ffid/ffid.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    import os

    assert ffid.default_address() == f"unix:/tmp/ffid-{os.getuid()}/ffid.sock"


def test_session_info_and_options(daemon) -> None:
    with ffid.connect(daemon.address, idle_timeout=42.5) as s:
        info = s.info()
        assert info.id == s.id
        assert info.worker_pid == s.worker_pid > 0
        assert info.idle_timeout.seconds == 42 and info.idle_timeout.nanos == 500_000_000
    assert s.closed


def test_unknown_session_option_is_refused(daemon) -> None:
    with pytest.raises(TypeError, match="unknown session option"):
        ffid.connect(daemon.address, no_such_option=1)


def test_integers_round_trip(fixture_lib) -> None:
    fixture_lib.cdef("""
        int8_t fx_int8_id(int8_t); uint64_t fx_uint64_max(void); int64_t fx_int64_min(void);
        uint64_t fx_uint64_id(uint64_t); long fx_long_add(long, long); int64_t fx_int8_widen(int8_t);
        unsigned char fx_uchar_id(unsigned char); char fx_char_id(char); size_t fx_size_max(void);
    """)
    assert fixture_lib.fx_int8_id(-128) == -128
    assert fixture_lib.fx_uint64_max() == 2**64 - 1
    assert fixture_lib.fx_int64_min() == -(2**63)
    assert fixture_lib.fx_uint64_id(2**64 - 1) == 2**64 - 1
    assert fixture_lib.fx_long_add(-9_000_000_000, 1) == -8_999_999_999
    assert fixture_lib.fx_int8_widen(-5) == -5
    assert fixture_lib.fx_uchar_id(b"A") == 65
    assert fixture_lib.fx_char_id("z") == ord("z")
    assert fixture_lib.fx_size_max() == 2**64 - 1


def test_floats_and_bools(fixture_lib) -> None:
    fixture_lib.cdef("""
        float fx_float_third(void); double fx_double_nan(void); double fx_double_neg_inf(void);
        double fx_double_add(double, double); bool fx_bool_not(bool); int fx_bool_to_int(bool);
        double fx_mixed(int8_t, uint16_t, int32_t, int64_t, float, double, char, long, double,
                        unsigned long long);
        int fx_double_signbit(double);
    """)
    assert fixture_lib.fx_float_third() == pytest.approx(1 / 3, rel=1e-7)
    assert math.isnan(fixture_lib.fx_double_nan())
    assert fixture_lib.fx_double_neg_inf() == -math.inf
    assert fixture_lib.fx_double_add(1, 2) == 3.0  # ints are accepted for doubles
    assert fixture_lib.fx_bool_not(True) is False
    assert fixture_lib.fx_bool_to_int(True) == 1
    assert fixture_lib.fx_mixed(1, 2, 3, 4, 5.0, 6.0, 7, 8, 9.0, 10) == 55.0
    assert fixture_lib.fx_double_signbit(-0.0) == 1


def test_strings(fixture_lib) -> None:
    fixture_lib.cdef("""
        size_t fx_strlen(const char *); const char *fx_greeting(void);
        const char *fx_null_string(void); size_t fx_utf8_count(const char *);
        int fx_streq(const char *, const char *); int fx_string_is_null(const char *);
    """)
    assert fixture_lib.fx_strlen("hello") == 5
    assert fixture_lib.fx_strlen(b"bytes\xff") == 6
    assert fixture_lib.fx_greeting() == "h\u00e9llo w\u00f6rld \u2713"
    assert fixture_lib.fx_null_string() is None
    assert fixture_lib.fx_utf8_count("h\u00e9\u2713") == 3
    assert fixture_lib.fx_streq("a\u00e9", "a\u00e9") == 1
    assert fixture_lib.fx_string_is_null(None) == 1


def test_variadic_arguments_follow_c_promotions(fixture_lib) -> None:
    fixture_lib.cdef("int fx_sum_variadic(int, ...); double fx_sum_variadic_doubles(int, ...);")
    assert fixture_lib.fx_sum_variadic(3, 1, 2, 3) == 6
    assert fixture_lib.fx_sum_variadic_doubles(2, 0.5, 0.25) == 0.75


def test_snprintf_with_a_buffer(session) -> None:
    libc = session.load("libc.so.6")
    libc.cdef("int snprintf(char *, size_t, const char *, ...);")
    buf = session.alloc(32)
    n = libc.snprintf(buf, len(buf), "%s=%d %.2f", "x", 42, 1.5)
    assert n == 9
    assert buf.read(n) == b"x=42 1.50"


def test_errno_after_a_call_that_asked_for_it(fixture_lib, session) -> None:
    f = fixture_lib.function("int fx_set_errno(int)")
    assert f(7, errno=True) == -1
    assert session.errno == 7
    g = fixture_lib.function("int fx_set_errno(int)", use_errno=True)
    g(13)
    assert session.errno == 13


def test_errno_asked_for_one_call_only(fixture_lib, session) -> None:
    # A call's errno= does not stay with the function's prepared request.
    f = fixture_lib.function("int fx_set_errno(int)")
    assert f(7, errno=True) == -1
    assert session.errno == 7
    assert f(11) == -1
    assert session.errno == 7
    g = fixture_lib.function("int fx_set_errno(int)", use_errno=True)
    g(13, errno=False)
    assert session.errno == 7
    g(13)
    assert session.errno == 13


def test_prepared_requests_are_the_unary_requests(fixture_lib, session) -> None:
    # A plain function's calls copy a prepared CallStreamRequest and append
    # their arguments: the same CallRequest as the general path builds.
    add = fixture_lib.function("int fx_add(int, int)")
    spec = add._spec
    for args, errno in (((1, 2), None), ((-(1 << 63), (1 << 64) - 1), True), ((3, True), False)):
        wrapped = spec.stream_request(session.id, args, errno)
        assert wrapped.call == spec.request(session.id, args, errno)
        assert not wrapped.HasField("timeout")
    assert spec.stream_request(session.id, (1, 2), None).call.capture_errno is False
    assert list(spec.stream_request("other", (1, 2), None).call.arguments) == list(
        spec.request(session.id, (1, 2), None).arguments)
    assert spec.stream_request("other", (1, 2), None).call.session == "other"
    with pytest.raises(ffid.ValueOutOfRange, match="parameter 2 of 'fx_add': 18446744073709551616 does not fit"):
        add(1, 1 << 64)
    with pytest.raises(ffid.ArgumentCount):
        add(1)
    assert add(40, 2) == 42
    # Functions with out-parameters take the general path, wrapped.
    frexp = session.load("libm.so.6").function("double frexp(double x, int *exp)", out=["exp"])
    wrapped = frexp._spec.stream_request(session.id, (8.0,), None)
    assert wrapped.call == frexp._spec.request(session.id, (8.0,), None)
    assert frexp(8.0) == (0.5, 4)


def test_use_errno_on_the_library(daemon) -> None:
    with ffid.connect(daemon.address) as s:
        libc = s.load("libc.so.6", use_errno=True)
        libc.cdef("int close(int);")
        assert libc.close(-1) == -1
        assert s.errno == 9  # EBADF


def test_out_parameter(libm) -> None:
    frexp = libm.function("double frexp(double x, int *exp)", out=["exp"])
    assert frexp(8.0) == (0.5, 4)
    modf = libm.function("double modf(double, double *)", out=[1])
    assert modf(3.25) == (0.25, 3.0)


def test_struct_returned_by_value(session) -> None:
    libc = session.load("libc.so.6")
    libc.cdef("typedef struct { int quot; int rem; } div_t; div_t div(int, int);"
              "typedef struct { long quot; long rem; } ldiv_t; ldiv_t ldiv(long, long);")
    assert libc.div(17, 5) == {"quot": 3, "rem": 2}
    assert libc.ldiv(-9_000_000_001, 2) == {"quot": -4_500_000_000, "rem": -1}


def test_state_survives_between_calls(fixture_lib) -> None:
    counter = fixture_lib.function("int fx_counter(void)")
    first = counter()
    assert counter() == first + 1


def test_void_function_returns_none(fixture_lib) -> None:
    assert fixture_lib.function("void fx_noop(void)")() is None


def test_timeout_kills_a_call_that_hangs(daemon) -> None:
    from conftest import FIXTURE

    with ffid.connect(daemon.address) as s:
        lib = s.load(str(FIXTURE))
        sleep = lib.function("void fx_sleep_ms(int)")
        with pytest.raises(ffid.DeadlineExceeded) as caught:
            sleep(10_000, timeout=0.3)
        assert isinstance(caught.value, TimeoutError)
    # A new session works as before.
    with ffid.connect(daemon.address) as s:
        assert s.load(str(FIXTURE)).function("int fx_add(int, int)")(2, 3, timeout=30) == 5


def test_attribute_errors_for_undeclared_functions(libm) -> None:
    with pytest.raises(AttributeError, match="not declared"):
        libm.tan
    assert "cos" not in dir(libm)
    libm.cdef("double tan(double);")
    assert "tan" in dir(libm)
    assert libm.tan(0.0) == 0.0


def test_inout_parameter(session) -> None:
    libc = session.load("libc.so.6")
    # long strtol(const char *, char **endptr, int): endptr is OUT.
    strtol = libc.function("long strtol(const char *s, char **end, int base)", out=["end"])
    value, end = strtol("123abc", 10)
    assert value == 123
    assert end == "abc"  # a char * comes back as its string
    fixture = session.load(str(__import__("conftest").FIXTURE))
    read_int = fixture.function("int fx_read_int(const int *p)", inout=["p"])
    assert read_int(41) == (41, 41)


def test_long_double_and_complex(libm) -> None:
    libm.cdef("long double sqrtl(long double); double _Complex csqrt(double _Complex);"
              "double cabs(double _Complex);")
    assert libm.sqrtl(2.0) == pytest.approx(math.sqrt(2.0), rel=1e-15)
    assert libm.csqrt(-4 + 0j) == pytest.approx(2j)
    assert libm.cabs(3 + 4j) == 5.0


def test_enums_by_name_or_number(fixture_lib) -> None:
    fixture_lib.cdef("enum color { RED, GREEN = 5, BLUE }; int fx_int_id(enum color);")
    assert fixture_lib.fx_int_id("GREEN") == 5
    assert fixture_lib.fx_int_id(6) == 6
    with pytest.raises(ffid.TypeMismatch, match="PURPLE"):
        fixture_lib.fx_int_id("PURPLE")


def test_wide_strings(session) -> None:
    libc = session.load("libc.so.6")
    libc.cdef("size_t wcslen(const wchar_t *);")
    assert libc.wcslen("h\u00e9llo \u2713") == 7


def test_unload_library(session) -> None:
    libm = session.load("libm.so.6")
    cos = libm.function("double cos(double)")
    libm.unload()
    with pytest.raises(ffid.HandleInvalid):
        cos(0.5)


def test_calls_from_many_threads(fixture_lib) -> None:
    from concurrent.futures import ThreadPoolExecutor

    add = fixture_lib.function("int fx_add(int, int)")
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda i: add(i, 1), range(64))) == [i + 1 for i in range(64)]


def test_dropping_an_unclosed_session_ends_it(daemon) -> None:
    import gc
    import time

    s = ffid.connect(daemon.address)
    session_id = s.id
    del s
    gc.collect()
    with ffid.connect(daemon.address) as other:
        stub = other._stub
        from ffid.v1 import ffid_pb2

        # The daemon ends the session when its Connect stream closes; wait
        # (bounded) for it to notice.
        deadline = time.monotonic() + 30
        while True:
            try:
                stub.GetSession(ffid_pb2.GetSessionRequest(session=session_id))
            except Exception as error:  # grpc.RpcError
                assert ffid._errors.from_rpc_error(error).reason == "SESSION_NOT_FOUND"
                break
            assert time.monotonic() < deadline, "the dropped session is still there"
            time.sleep(0.02)
