"""Every error class the client raises, each with the server's message, and
a worker crash followed by more calls on a new session."""

from __future__ import annotations

import shutil

import pytest

import ffid
from ffid import _errors
from ffid.v1 import errors_pb2

from conftest import FIXTURE


def test_every_error_reason_has_a_class() -> None:
    reasons = {name[len("ERROR_REASON_"):] for name in errors_pb2.ErrorReason.keys()} - {"UNSPECIFIED"}
    assert reasons == set(_errors.ERROR_CLASSES)
    for reason, cls in _errors.ERROR_CLASSES.items():
        assert issubclass(cls, ffid.Error)
        assert getattr(ffid, cls.__name__) is cls


def test_library_not_allowed(session, daemon) -> None:
    copy = daemon.not_allowed_dir / "libcopy.so"
    shutil.copy(FIXTURE, copy)
    with pytest.raises(ffid.LibraryNotAllowed) as caught:
        session.load(str(copy))
    assert caught.value.reason == "LIBRARY_NOT_ALLOWED"
    assert str(copy) in caught.value.message
    assert str(caught.value).startswith("LIBRARY_NOT_ALLOWED: ")


def test_library_not_found(session) -> None:
    with pytest.raises(ffid.LibraryNotFound):
        session.load("libffid-does-not-exist.so.9")


def test_library_load_failed(session, daemon) -> None:
    junk = daemon.allowed_dir / "libjunk.so"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(ffid.LibraryLoadFailed):
        session.load(str(junk))


def test_symbol_not_found(libm) -> None:
    with pytest.raises(ffid.SymbolNotFound, match="ffid_nope"):
        libm.function("int ffid_nope(int)")
    libm.cdef("int ffid_nope2(void);")
    with pytest.raises(ffid.SymbolNotFound):
        libm.ffid_nope2


def test_declaration_invalid(session) -> None:
    with pytest.raises(ffid.DeclarationInvalid) as caught:
        session.cdef("int (;")
    assert caught.value.message


def test_type_mismatch(libm) -> None:
    libm.cdef("double cos(double);")
    with pytest.raises(ffid.TypeMismatch, match="parameter 1 of 'cos'") as caught:
        libm.cos("half")
    assert isinstance(caught.value, TypeError)


def test_value_out_of_range(fixture_lib) -> None:
    f = fixture_lib.function("int8_t fx_int8_id(int8_t)")
    with pytest.raises(ffid.ValueOutOfRange, match="300"):
        f(300)
    with pytest.raises(ffid.ValueOutOfRange):
        f(2**70)


def test_argument_count(libm) -> None:
    f = libm.function("double pow(double, double)")
    with pytest.raises(ffid.ArgumentCount, match="takes 2 arguments, got 1") as caught:
        f(1.0)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(ffid.ArgumentCount):
        f(1.0, 2.0, 3.0)


def test_handle_invalid_from_another_session(daemon) -> None:
    with ffid.connect(daemon.address) as a, ffid.connect(daemon.address) as b:
        buf = a.alloc(4)
        foreign = ffid.Pointer(b, buf.handle, 0, 0)
        with pytest.raises(ffid.HandleInvalid, match="another session"):
            foreign.read(1)


def test_unsupported(session) -> None:
    with pytest.raises(ffid.Unsupported):
        session.cdef("static int f(int);")


def test_invalid_request(session) -> None:
    with pytest.raises(ffid.InvalidRequest):
        session.load("")


def test_session_not_found_after_close(daemon) -> None:
    s = ffid.connect(daemon.address)
    s.close()
    with pytest.raises(ffid.SessionNotFound):
        s.load("libm.so.6")


def test_unavailable_daemon(tmp_path) -> None:
    with pytest.raises(ffid.Unavailable, match="does not exist") as caught:
        ffid.connect(f"unix:{tmp_path}/nothing.sock")
    assert isinstance(caught.value, ConnectionError)


def test_worker_crash_then_a_new_session(daemon) -> None:
    with ffid.connect(daemon.address) as s:
        lib = s.load(str(FIXTURE))
        crash = lib.function("void fx_crash_null(void)")
        with pytest.raises(ffid.WorkerCrashed) as caught:
            crash()
        report = caught.value.crash_report
        assert report.signal_name == "SIGSEGV"
        assert report.function == "fx_crash_null"
        assert report.pid == s.worker_pid
        assert "SIGSEGV" in caught.value.message
        # The session says how it died on every later use.
        with pytest.raises(ffid.WorkerCrashed) as again:
            lib.function("int fx_add(int, int)")
        assert again.value.crash_report.signal_name == "SIGSEGV"
        assert s.info().state == 2  # SESSION_STATE_CRASHED
    with ffid.connect(daemon.address) as s:
        lib = s.load(str(FIXTURE))
        assert lib.function("int fx_add(int, int)")(40, 2) == 42


def test_worker_abort_and_exit_are_reported(daemon) -> None:
    for name, check in (("fx_abort", lambda r: r.signal_name == "SIGABRT"),
                        ("fx_exit3", lambda r: r.signal == 0 and r.exit_code == 3)):
        with ffid.connect(daemon.address) as s:
            f = s.load(str(FIXTURE)).function(f"void {name}(void)")
            with pytest.raises(ffid.WorkerCrashed) as caught:
                f()
            assert check(caught.value.crash_report), caught.value.crash_report


def _details(reason: str, crash: "errors_pb2.CrashReport | None" = None) -> list:
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=13, message="m")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain="ffid.dev"))
    if crash is not None:
        status.details.add().Pack(crash)
    return [("grpc-status-details-bin", status.SerializeToString())]


@pytest.mark.parametrize("reason", sorted(_errors.ERROR_CLASSES))
def test_status_details_choose_the_class(reason: str) -> None:
    """The decoding of google.rpc.Status details, for the reasons a test
    cannot provoke on demand (CALLBACK_FAILED, SANDBOX_VIOLATION, ...)."""
    import grpc

    crash = errors_pb2.CrashReport(signal=11, signal_name="SIGSEGV")
    error = _errors.from_status(grpc.StatusCode.INTERNAL, "the message", _details(reason, crash))
    assert type(error) is _errors.ERROR_CLASSES[reason]
    assert error.reason == reason and error.message == "the message"
    assert error.code == grpc.StatusCode.INTERNAL
    if reason == "WORKER_CRASHED":
        assert error.crash_report.signal_name == "SIGSEGV"
