"""Authenticating to a real daemon: bearer tokens on the unix socket, TLS and
mutual TLS on TCP with certificates made at test time by
tests/testing/make_test_pki.sh, plaintext TCP to an --insecure daemon, the
same settings from the environment, and what a wrong setting says."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import ffid
import ffid.aio
from conftest import REPO, Daemon, running_daemon

PKI_SCRIPT = REPO / "tests" / "testing" / "make_test_pki.sh"
ENVIRONMENT = ("FFID_ADDRESS", "FFID_TOKEN", "FFID_TOKEN_FILE", "FFID_CA", "FFID_CERT", "FFID_KEY",
               "FFID_INSECURE")


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ffid-py-pki-"))
    made = subprocess.run(["bash", str(PKI_SCRIPT), str(root)], capture_output=True, text=True)
    if made.returncode == 77:
        pytest.skip(made.stderr)
    assert made.returncode == 0, made.stderr
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def _start(pki: Path, flags: List[str], listen: Optional[str] = None) -> Iterator[Daemon]:
    yield from running_daemon(flags=["--token-file", str(pki / "tokens"), *flags], listen=listen)


@pytest.fixture(scope="module")
def unix_daemon(pki: Path) -> Iterator[Daemon]:
    yield from _start(pki, [])


@pytest.fixture(scope="module")
def tls_daemon(pki: Path) -> Iterator[Daemon]:
    yield from _start(pki, ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")],
                      listen="127.0.0.1:0")


@pytest.fixture(scope="module")
def mtls_daemon(pki: Path) -> Iterator[Daemon]:
    yield from _start(pki, ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                            "--tls-client-ca", str(pki / "ca.pem")], listen="127.0.0.1:0")


@pytest.fixture(scope="module")
def insecure_daemon(pki: Path) -> Iterator[Daemon]:
    yield from _start(pki, ["--insecure"], listen="127.0.0.1:0")


def principal(address: str, **settings: object) -> str:
    with ffid.connect(address, **settings) as s:  # type: ignore[arg-type]
        return s.server_info().principal


def cos0(address: str, **settings: object) -> float:
    with ffid.connect(address, **settings) as s:  # type: ignore[arg-type]
        libm = s.load("libm.so.6")
        libm.cdef("double cos(double);")
        result = libm.cos(0.0)
        # The call went on a stream the calling thread drives, with the
        # token (the daemon refuses a stream without it) and over TLS.
        streams = s._call_streams
        assert streams.driven and streams._open == 1 and len(streams._idle) == 1
        return result


# ------------------------------------------------------------ tokens

def test_token_names_the_principal(unix_daemon: Daemon, pki: Path) -> None:
    assert principal(unix_daemon.address, token="alice-secret") == "token:alice"
    assert cos0(unix_daemon.address, token="alice-secret") == 1.0
    assert principal(unix_daemon.address, token_file=pki / "alice.token") == "token:alice"
    assert principal(unix_daemon.address) == f"unix:{os.getuid()}"


def test_token_from_the_environment(unix_daemon: Daemon, pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFID_ADDRESS", unix_daemon.address)
    monkeypatch.setenv("FFID_TOKEN", "bob-secret")
    assert principal(None) == "token:bob"  # type: ignore[arg-type]
    monkeypatch.delenv("FFID_TOKEN")
    monkeypatch.setenv("FFID_TOKEN_FILE", str(pki / "alice.token"))
    assert principal(None) == "token:alice"  # type: ignore[arg-type]
    # What the code gives wins.
    assert principal(unix_daemon.address, token="bob-secret") == "token:bob"


def test_wrong_token_is_unauthenticated(unix_daemon: Daemon) -> None:
    with pytest.raises(ffid.Unauthenticated) as raised:
        ffid.connect(unix_daemon.address, token="guessed-token")
    assert raised.value.reason == "UNAUTHENTICATED"
    assert "bearer token is not one" in str(raised.value)


def test_aio_sends_the_token(unix_daemon: Daemon) -> None:
    async def run() -> str:
        async with ffid.aio.connect(unix_daemon.address, token="alice-secret") as s:
            libm = await s.load("libm.so.6")
            await libm.cdef("double cos(double);")
            assert await libm.cos(0.0) == 1.0
            return (await s.server_info()).principal

    assert asyncio.run(run()) == "token:alice"

    async def wrong() -> None:
        async with ffid.aio.connect(unix_daemon.address, token="guessed-token"):
            pass

    with pytest.raises(ffid.Unauthenticated, match="bearer token is not one"):
        asyncio.run(wrong())


# ------------------------------------------------------------ TLS

def test_tls_with_the_right_ca(tls_daemon: Daemon, pki: Path) -> None:
    assert principal(tls_daemon.address, ca=pki / "ca.pem") == "anonymous"
    assert cos0(tls_daemon.address, ca=str(pki / "ca.pem")) == 1.0
    # The PEM itself, and a token over TLS.
    ca = (pki / "ca.pem").read_bytes()
    assert principal(tls_daemon.address, ca=ca, token="alice-secret") == "token:alice"
    with pytest.raises(ffid.Unauthenticated):
        ffid.connect(tls_daemon.address, ca=ca, token="guessed-token")


def test_tls_with_the_wrong_ca_names_the_ca(tls_daemon: Daemon, pki: Path) -> None:
    with pytest.raises(ffid.Unavailable) as raised:
        ffid.connect(tls_daemon.address, ca=pki / "other-ca.pem", connect_timeout=1)
    assert f"the CA file '{pki / 'other-ca.pem'}' (ca=, FFID_CA) signed the daemon's certificate" \
        in str(raised.value)
    with pytest.raises(ffid.Unavailable, match=r"or give its CA \(ca=, FFID_CA\)"):
        ffid.connect(tls_daemon.address, connect_timeout=1)


def test_plaintext_client_of_a_tls_daemon(tls_daemon: Daemon) -> None:
    with pytest.raises(ffid.Unavailable, match="drop insecure"):
        ffid.connect(tls_daemon.address, insecure=True, connect_timeout=1)


def test_mutual_tls_names_the_certificates_common_name(mtls_daemon: Daemon, pki: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = dict(ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key")
    assert principal(mtls_daemon.address, **settings) == "x509:alice"
    assert cos0(mtls_daemon.address, **settings) == 1.0
    with pytest.raises(ffid.Unavailable, match="also needs a client certificate and key"):
        ffid.connect(mtls_daemon.address, ca=pki / "ca.pem", connect_timeout=1)
    # From the environment.
    monkeypatch.setenv("FFID_ADDRESS", mtls_daemon.address)
    monkeypatch.setenv("FFID_CA", str(pki / "ca.pem"))
    monkeypatch.setenv("FFID_CERT", str(pki / "client.pem"))
    monkeypatch.setenv("FFID_KEY", str(pki / "client.key"))
    assert principal(None) == "x509:alice"  # type: ignore[arg-type]

    async def run() -> str:
        async with ffid.aio.connect() as s:
            return (await s.server_info()).principal

    assert asyncio.run(run()) == "x509:alice"


def test_insecure_tcp(insecure_daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    assert principal(insecure_daemon.address, insecure=True, token="alice-secret") == "token:alice"
    with pytest.raises(ffid.Unavailable, match=r"started with --insecure needs insecure=True"):
        ffid.connect(insecure_daemon.address, connect_timeout=1)
    monkeypatch.setenv("FFID_INSECURE", "1")
    assert principal(insecure_daemon.address) == "anonymous"


def test_contradictions_are_refused_before_connecting(pki: Path) -> None:
    cases = [
        (dict(address="unix:/nonexistent.sock", ca=pki / "ca.pem"), "which is plaintext"),
        (dict(address="h:1", cert=pki / "client.pem"), "needs both cert= and key="),
        (dict(address="h:1", insecure=True, ca=pki / "ca.pem"), "contradicts the TLS settings"),
        (dict(address="h:1", token="a", token_file=pki / "alice.token"), "not both"),
        (dict(address="h:1", ca="/nonexistent/ca.pem"), "cannot read the CA file '/nonexistent/ca.pem'"),
    ]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            ffid.connect(**settings)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            ffid.aio.connect(**settings)  # type: ignore[arg-type]
