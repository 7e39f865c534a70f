"""Runs the real ffid daemon (the built binary) on a temporary unix socket
for the tests, with the repository's fixture library allowed.

Paths come from the environment (ctest sets them), else the default build:
  FFID_BIN          the ffid daemon        (build/default/bin/ffid)
  FFID_WORKER_BIN   the ffid-worker binary (beside FFID_BIN)
  FFID_FIXTURE      libffid_fixture.so     (build/default/tests/fixtures/)
  FFID_CALLBACKS_FIXTURE  libffid_callbacks_fixture.so (beside FFID_FIXTURE)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence

import pytest

import ffid

REPO = Path(__file__).resolve().parents[3]
SYSTEM_LIBRARY_GLOBS = ["/lib/*", "/lib64/*", "/usr/lib/*", "/usr/lib64/*", "/usr/local/lib/*"]


def _path(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else default


FFID_BIN = _path("FFID_BIN", REPO / "build" / "default" / "bin" / "ffid")
WORKER_BIN = _path("FFID_WORKER_BIN", FFID_BIN.parent / "ffid-worker")
FIXTURE = _path("FFID_FIXTURE", REPO / "build" / "default" / "tests" / "fixtures" / "libffid_fixture.so")
CALLBACKS_FIXTURE = _path("FFID_CALLBACKS_FIXTURE", FIXTURE.parent / "libffid_callbacks_fixture.so")


class Daemon:
    """A running ffid: its address, its log, and a directory outside its
    allowlist."""

    def __init__(self, root: Path, allow_library: Optional[Callable[["Daemon"], List[str]]] = None,
                 flags: Sequence[str] = (), listen: Optional[str] = None) -> None:
        """flags: more command-line flags; listen: a host:port to listen on
        instead of a unix socket in `root` (self.address is then the
        host:port the daemon reports)."""
        self.root = root
        self.socket = root / "ffid.sock"
        self.address = listen or f"unix:{self.socket}"
        self.log_path = root / "ffid.log"
        # Libraries the tests make: allowed_dir is on the allowlist,
        # not_allowed_dir is not.
        self.allowed_dir = root / "allowed"
        self.allowed_dir.mkdir()
        self.not_allowed_dir = root / "not-allowed"
        self.not_allowed_dir.mkdir()
        argv = [str(FFID_BIN), "--listen", self.address, "--worker-path", str(WORKER_BIN)]
        # allow_library(self) may give the allowlist's globs instead.
        globs = allow_library(self) if allow_library else [
            f"{FIXTURE.parent}/*", f"{self.allowed_dir}/*", *SYSTEM_LIBRARY_GLOBS]
        for glob in globs:
            argv += ["--allow-library", glob]
        argv += list(flags)
        env = dict(os.environ)
        # Sanitized builds: let a native crash kill the worker with its real
        # signal (as tests/testing/daemon.cc does), and no LeakSanitizer:
        # workers inherit these options, and LSan's exit-time tracer is
        # refused by a worker's seccomp policy, so a worker that calls exit()
        # would die of SIGSYS. (The daemon's leaks are the C++ suite's.)
        asan = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + \
            "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:detect_leaks=0"
        self._log = open(self.log_path, "wb")
        # Workers inherit stderr: a file, so nothing waits on a pipe.
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=self._log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            log = self.log_path.read_bytes()
            if b"ffid: listening on " in log and (listen or self.socket.exists()):
                if listen:
                    self.address = log.split(b"ffid: listening on ", 1)[1].split(b"\n", 1)[0].decode()
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"ffid did not start ({' '.join(argv)}); its log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Stops the daemon; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    for path in (FFID_BIN, WORKER_BIN, FIXTURE, CALLBACKS_FIXTURE):
        if not path.exists():
            pytest.fail(f"{path} does not exist: build first (cmake --build --preset default)")
    yield from running_daemon()


def running_daemon(**options: Any) -> Iterator[Daemon]:
    """A Daemon (options: its keyword arguments) in a new directory, for a
    fixture to yield from; stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ffid-py-test-"))
    running = Daemon(root, **options)
    try:
        yield running
    finally:
        status = running.stop()
        log = running.log()
        shutil.rmtree(root, ignore_errors=True)
    # A daemon that did not exit cleanly (a sanitizer's report, a crash)
    # fails the run.
    assert status == 0, f"ffid exited with status {status}; its log:\n{log}"


@pytest.fixture
def session(daemon: Daemon) -> Iterator[ffid.Session]:
    with ffid.connect(daemon.address) as s:
        yield s


@pytest.fixture
def fixture_lib(session: ffid.Session) -> ffid.Library:
    return session.load(str(FIXTURE))


@pytest.fixture
def libm(session: ffid.Session) -> ffid.Library:
    return session.load("libm.so.6")
