"""ffid: call native C libraries out of process.

    import ffid

    with ffid.connect() as s:
        libm = s.load("libm.so.6")
        libm.cdef("double cos(double);")
        libm.cos(0.5)            # 0.8775825618903728

A session is one worker process on the daemon's side: a crash in a library
kills that worker (ffid.WorkerCrashed), never the daemon or this process.
ffid.aio has the same API for asyncio.
"""

from ffid._core import SESSION_OPTIONS, default_address
from ffid._errors import (
    ArgumentCount,
    BadAddress,
    CallbackFailed,
    DeadlineExceeded,
    DeclarationInvalid,
    Error,
    HandleInvalid,
    Internal,
    InvalidRequest,
    LibraryLoadFailed,
    LibraryNotAllowed,
    LibraryNotFound,
    LibraryPinMismatch,
    MisalignedAccess,
    OutOfBounds,
    PrincipalDenied,
    RateLimited,
    ResourceLimit,
    SandboxViolation,
    SessionNotFound,
    SessionQuota,
    SymbolNotAllowed,
    SymbolNotFound,
    TypeMismatch,
    Unauthenticated,
    Unavailable,
    Unsupported,
    ValueOutOfRange,
    WorkerCrashed,
    WorkerStartFailed,
)
from ffid._arena import Arena
from ffid._batch import BatchResult
from ffid._sync import Batch, Callback, Function, Library, Memory, Pointer, Session, connect
from ffid._values import LongDouble, UnionValue

__version__ = "0.1.0"

__all__ = [
    "Arena",
    "ArgumentCount",
    "BadAddress",
    "Batch",
    "BatchResult",
    "Callback",
    "CallbackFailed",
    "DeadlineExceeded",
    "DeclarationInvalid",
    "Error",
    "Function",
    "HandleInvalid",
    "Internal",
    "InvalidRequest",
    "Library",
    "LibraryLoadFailed",
    "LibraryNotAllowed",
    "LibraryNotFound",
    "LibraryPinMismatch",
    "LongDouble",
    "Memory",
    "MisalignedAccess",
    "OutOfBounds",
    "Pointer",
    "PrincipalDenied",
    "RateLimited",
    "ResourceLimit",
    "SESSION_OPTIONS",
    "SandboxViolation",
    "Session",
    "SessionNotFound",
    "SessionQuota",
    "SymbolNotAllowed",
    "SymbolNotFound",
    "TypeMismatch",
    "Unauthenticated",
    "Unavailable",
    "UnionValue",
    "Unsupported",
    "ValueOutOfRange",
    "WorkerCrashed",
    "WorkerStartFailed",
    "connect",
    "default_address",
]
