"""The session's shared-memory arena mapped into this process.

OpenArena gives a one-time token; the daemon's arena socket (a unix socket
beside its own) answers it with the arena's memfd, which is mapped shared
here. Memory allocated with alloc(..., arena=True) is then visible as a
memoryview over the same bytes native code in the worker uses: no copy, no
RPC. Only for a client on the daemon's host.
"""

from __future__ import annotations

import mmap
import os
import socket
from typing import Any, Optional

from ffid import _errors
from ffid.v1 import ffid_pb2


class Arena:
    """A mapped arena. view(memory) is a writable memoryview of an arena
    Memory's bytes. The mapping lives until close() (or the object is
    collected); views taken from it must be released first."""

    def __init__(self, fd: int, size: int, worker_address: int) -> None:
        try:
            self._map: Optional[mmap.mmap] = mmap.mmap(
                fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.size = size
        self.worker_address = worker_address

    def view(self, memory: Any) -> memoryview:
        """The bytes of `memory` (a Memory allocated in the arena) as a
        writable memoryview."""
        if self._map is None:
            raise ValueError("the arena was closed")
        if not getattr(memory, "in_arena", False):
            raise ValueError(f"{memory!r} is not in the session's arena: allocate it with arena=True")
        start = memory.arena_offset
        end = start + memory.size
        if end > self.size:
            raise ValueError(f"{memory!r} lies outside the {self.size}-byte arena")
        return memoryview(self._map)[start:end]

    def close(self) -> None:
        """Unmaps the arena (fails with BufferError while views exist)."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def __repr__(self) -> str:
        return f"<ffid.Arena {self.size} bytes at worker 0x{self.worker_address:x}>"


def receive(response: ffid_pb2.OpenArenaResponse) -> Arena:
    """Presents OpenArena's token on the arena socket and maps the memfd it
    answers with."""
    if not response.socket_path:
        raise _errors.Unsupported(
            "the daemon has no arena socket (it listens on TCP only): its arenas cannot be mapped from here",
            reason="UNSUPPORTED")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10.0)
        try:
            connection.connect(response.socket_path)
            connection.sendall(response.token.encode() + b"\n")
            message, fds, _, _ = socket.recv_fds(connection, 512, 1)
        except OSError as error:
            raise _errors.Unavailable(
                f"cannot receive the arena from {response.socket_path}: {error} "
                "(mapping an arena needs a client on the daemon's host)") from None
    if not message or message[0] != 0 or not fds:
        for fd in fds:
            os.close(fd)
        why = message[1:].decode(errors="replace") if message else "no answer"
        raise _errors.HandleInvalid(f"the daemon refused the arena token: {why}", reason="HANDLE_INVALID")
    for extra in fds[1:]:
        os.close(extra)
    if os.fstat(fds[0]).st_size != response.size:
        os.close(fds[0])
        raise _errors.Internal(f"the daemon's answer carried no arena of {response.size} bytes", reason="INTERNAL")
    return Arena(fds[0], response.size, response.worker_address)
