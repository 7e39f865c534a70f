"""ffid's exceptions: one class per ErrorReason the server reports.

Every failing RPC carries a google.rpc.Status whose details hold an ErrorInfo
(reason "SYMBOL_NOT_FOUND", ...) and, for a worker's death, a CrashReport.
from_rpc_error() turns a grpc.RpcError into the matching ffid.Error subclass.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Type

import grpc
from google.rpc import error_details_pb2, status_pb2

from ffid.v1 import errors_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_DOMAIN = "ffid.dev"


class Error(Exception):
    """Base class of every error ffid raises.

    Attributes:
      message: the server's message (what went wrong, what to do about it).
      reason: the ErrorReason name without its prefix ("SYMBOL_NOT_FOUND"),
        or "" when the failure carried none (e.g. the daemon is unreachable).
      code: the gRPC status code, or None for errors found by the client.
      metadata: ErrorInfo.metadata, when the server sent any.
    """

    reason_name: str = ""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        code: Optional[grpc.StatusCode] = None,
        metadata: Optional[Dict[str, str]] = None,
        crash_report: Optional[errors_pb2.CrashReport] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.reason_name
        self.code = code
        self.metadata: Dict[str, str] = dict(metadata or {})
        self._crash_report = crash_report

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.reason else self.message

    @property
    def crash_report(self) -> Optional[errors_pb2.CrashReport]:
        """How the worker died, when this failure ended it (WorkerCrashed,
        and ResourceLimit, SandboxViolation or DeadlineExceeded raised by a
        worker's death); None otherwise."""
        return self._crash_report

    @property
    def batch_step(self) -> Optional[int]:
        """For a failed batch: the index of the step that failed, else None."""
        step = self.metadata.get("batch_step")
        return int(step) if step is not None and step.isdigit() else None


class LibraryNotFound(Error):
    """The library file does not exist or the loader cannot find the soname."""

    reason_name = "LIBRARY_NOT_FOUND"


class LibraryNotAllowed(Error):
    """The library's real path is outside the server's allowlist."""

    reason_name = "LIBRARY_NOT_ALLOWED"


class LibraryLoadFailed(Error):
    """dlopen failed for another reason (wrong ELF class, missing dependency)."""

    reason_name = "LIBRARY_LOAD_FAILED"


class SymbolNotFound(Error, AttributeError):
    """The library does not export the symbol."""

    reason_name = "SYMBOL_NOT_FOUND"


class DeclarationInvalid(Error, SyntaxError):
    """A C declaration could not be parsed."""

    reason_name = "DECLARATION_INVALID"

    def __str__(self) -> str:  # SyntaxError has its own __str__
        return Error.__str__(self)


class TypeMismatch(Error, TypeError):
    """A value's kind does not suit its type, or a type cannot be used there."""

    reason_name = "TYPE_MISMATCH"


class ValueOutOfRange(Error, ValueError):
    """A value does not fit in its type's range."""

    reason_name = "VALUE_OUT_OF_RANGE"


class ArgumentCount(Error, TypeError):
    """Too few or too many arguments for the function."""

    reason_name = "ARGUMENT_COUNT"


class HandleInvalid(Error):
    """A handle that was freed, never existed, or belongs to another session."""

    reason_name = "HANDLE_INVALID"


class OutOfBounds(Error, IndexError):
    """A read or write outside an allocation's bounds."""

    reason_name = "OUT_OF_BOUNDS"


class WorkerCrashed(Error):
    """The session's worker process died. crash_report says how: signal,
    signal_name, exit_code, fault_address, frames, function, pid."""

    reason_name = "WORKER_CRASHED"

    @property
    def crash_report(self) -> errors_pb2.CrashReport:  # type: ignore[override]
        return self._crash_report or errors_pb2.CrashReport()


class SessionNotFound(Error):
    """The session does not exist (or was deleted)."""

    reason_name = "SESSION_NOT_FOUND"


class DeadlineExceeded(Error, TimeoutError):
    """The call did not finish within its timeout."""

    reason_name = "DEADLINE_EXCEEDED"


class ResourceLimit(Error):
    """A resource limit was reached (memory, sessions, sizes)."""

    reason_name = "RESOURCE_LIMIT"


class SandboxViolation(Error):
    """The worker's sandbox refused an operation."""

    reason_name = "SANDBOX_VIOLATION"


class CallbackFailed(Error):
    """A client callback failed or did not answer."""

    reason_name = "CALLBACK_FAILED"


class InvalidRequest(Error, ValueError):
    """A request field is missing or malformed."""

    reason_name = "INVALID_REQUEST"


class Unsupported(Error):
    """The type or feature is valid but not supported by this server yet."""

    reason_name = "UNSUPPORTED"


class WorkerStartFailed(Error):
    """The worker could not be started."""

    reason_name = "WORKER_START_FAILED"


class BadAddress(Error):
    """The memory at a borrowed address cannot be read or written."""

    reason_name = "BAD_ADDRESS"


class Internal(Error):
    """An internal error in ffid itself."""

    reason_name = "INTERNAL"


class MisalignedAccess(Error):
    """A typed read or write at an address not aligned for its type."""

    reason_name = "MISALIGNED_ACCESS"


class Unauthenticated(Error, PermissionError):
    """The client presented no identity where one is required, or an unknown bearer token."""

    reason_name = "UNAUTHENTICATED"


class PrincipalDenied(Error, PermissionError):
    """The principal's policy refuses it every request."""

    reason_name = "PRINCIPAL_DENIED"


class SymbolNotAllowed(Error, PermissionError):
    """The principal's policy does not allow this symbol."""

    reason_name = "SYMBOL_NOT_ALLOWED"


class LibraryPinMismatch(Error):
    """A pinned library's contents differ from its pinned SHA-256."""

    reason_name = "LIBRARY_PIN_MISMATCH"


class SessionQuota(Error):
    """The principal already has as many sessions as its policy allows."""

    reason_name = "SESSION_QUOTA"


class RateLimited(Error):
    """The principal made more requests per second than its policy allows."""

    reason_name = "RATE_LIMITED"


class Unavailable(Error, ConnectionError):
    """The daemon cannot be reached (not running, wrong address, gone)."""


ERROR_CLASSES: Dict[str, Type[Error]] = {
    cls.reason_name: cls
    for cls in (
        LibraryNotFound,
        LibraryNotAllowed,
        LibraryLoadFailed,
        SymbolNotFound,
        DeclarationInvalid,
        TypeMismatch,
        ValueOutOfRange,
        ArgumentCount,
        HandleInvalid,
        OutOfBounds,
        WorkerCrashed,
        SessionNotFound,
        DeadlineExceeded,
        ResourceLimit,
        SandboxViolation,
        CallbackFailed,
        InvalidRequest,
        Unsupported,
        WorkerStartFailed,
        BadAddress,
        Internal,
        MisalignedAccess,
        Unauthenticated,
        PrincipalDenied,
        SymbolNotAllowed,
        LibraryPinMismatch,
        SessionQuota,
        RateLimited,
    )
}


def _details(
    metadata: Optional[Sequence[Tuple[str, Any]]],
) -> Tuple[str, Dict[str, str], Optional[errors_pb2.CrashReport]]:
    """(reason, ErrorInfo metadata, crash report) from trailing metadata."""
    reason = ""
    info_metadata: Dict[str, str] = {}
    crash: Optional[errors_pb2.CrashReport] = None
    for key, value in metadata or ():
        if key != _STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed trailer must not hide the error
            continue
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain in ("", ERROR_DOMAIN):
                    reason = info.reason
                    info_metadata = dict(info.metadata)
            elif detail.Is(errors_pb2.CrashReport.DESCRIPTOR):
                crash = errors_pb2.CrashReport()
                detail.Unpack(crash)
    return reason, info_metadata, crash


def from_status(
    code: Optional[grpc.StatusCode],
    message: str,
    trailing_metadata: Optional[Sequence[Tuple[str, Any]]],
) -> Error:
    """The ffid.Error for a failed RPC's code, message and trailers."""
    reason, info_metadata, crash = _details(trailing_metadata)
    cls: Type[Error] = ERROR_CLASSES.get(reason, Error)
    if not reason:
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            cls, reason = DeadlineExceeded, DeadlineExceeded.reason_name
            message = message or "the call did not finish within its timeout"
        elif code == grpc.StatusCode.UNAVAILABLE:
            cls = Unavailable
    return cls(
        message or (code.name if code else "unknown error"),
        reason=reason,
        code=code,
        metadata=info_metadata,
        crash_report=crash,
    )


def from_rpc_error(error: grpc.RpcError) -> Error:
    """The ffid.Error for a grpc.RpcError raised by a sync or aio call."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return from_status(code, details or "", trailers)
