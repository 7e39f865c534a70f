"""How connect() reaches the daemon and proves who it is: the transport (the
unix socket, TLS or mutual TLS on TCP, plaintext TCP for a daemon started
with --insecure) and a bearer token, given as keyword arguments or taken from
the environment. Every ffid client shares these names and rules:

  FFID_ADDRESS     "unix:/path" or "host:port"
  FFID_TOKEN       a bearer token, sent as "authorization: Bearer TOKEN"
  FFID_TOKEN_FILE  a file holding the token (FFID_TOKEN wins if both are set)
  FFID_CA          PEM file of the CA certificates that signed the daemon's
                   certificate (default: the system's roots)
  FFID_CERT        PEM file of the client certificate chain (mutual TLS)
  FFID_KEY         PEM file of its private key
  FFID_INSECURE    "1" (or "true", "yes"): plaintext TCP

A unix: address is always plaintext; any other uses TLS unless insecure.
Nothing here performs network I/O."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

import grpc
import grpc.aio

from ffid import _core, _errors

# A PEM given as a file name, or as its contents (bytes).
PemSource = Union[str, "os.PathLike[str]", bytes]

_TRUE = ("1", "true", "yes")


@dataclass
class Connection:
    """What connect() makes of its arguments and the environment."""

    address: str
    token: Optional[str] = None
    tls: bool = False
    root_certificates: Optional[bytes] = None
    private_key: Optional[bytes] = None
    certificate_chain: Optional[bytes] = None
    # For messages: where the CA and the client certificate came from.
    ca_name: Optional[str] = None
    cert_name: Optional[str] = None

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates, private_key=self.private_key,
            certificate_chain=self.certificate_chain)


def _read(source: PemSource, what: str) -> Tuple[bytes, str]:
    """The bytes of a PEM given as contents or a file name, and its name."""
    if isinstance(source, bytes):
        return source, f"the {what} given as bytes"
    path = os.fspath(source)
    try:
        with open(path, "rb") as file:
            return file.read(), f"the {what} file {path!r}"
    except OSError as error:
        raise ValueError(f"cannot read the {what} file {path!r}: {error.strerror}") from None


def resolve(address: Optional[str], *, token: Optional[str], token_file: Optional[Union[str, "os.PathLike[str]"]],
            ca: Optional[PemSource], cert: Optional[PemSource], key: Optional[PemSource],
            insecure: Optional[bool]) -> Connection:
    """Applies the environment to the settings not given (None) and checks
    the combination; ValueError names what is wrong."""
    def env(name: str) -> Optional[str]:
        return os.environ.get(name) or None

    address = address or _core.default_address()
    if token is not None and token_file is not None:
        raise ValueError("give token= or token_file=, not both")
    if token is None and token_file is None:
        token = env("FFID_TOKEN")
        if token is None:
            token_file = env("FFID_TOKEN_FILE")
    if token_file is not None:
        path = os.fspath(token_file)
        try:
            with open(path, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as error:
            raise ValueError(f"cannot read the token file {path!r}: {error.strerror}") from None
        if not token:
            raise ValueError(f"the token file {path!r} is empty")
    if token is not None:
        token = token.strip()
        if "\n" in token or "\r" in token:
            raise ValueError("the bearer token holds a line break: it must be one line")
    connection = Connection(address=address, token=token or None)

    ca = ca if ca is not None else env("FFID_CA")
    cert = cert if cert is not None else env("FFID_CERT")
    key = key if key is not None else env("FFID_KEY")
    if insecure is None:
        insecure = (env("FFID_INSECURE") or "").lower() in _TRUE
    tls_settings = ca is not None or cert is not None or key is not None
    if address.startswith("unix:"):
        if tls_settings:
            raise ValueError(
                "TLS settings (ca=, cert=, key=; FFID_CA, FFID_CERT, FFID_KEY) apply to TCP "
                f"addresses, but {address} is the daemon's unix socket, which is plaintext: "
                "drop them or give a host:port address")
        return connection
    if insecure:
        if tls_settings:
            raise ValueError(
                "insecure=True (plaintext TCP, FFID_INSECURE) contradicts the TLS settings "
                "given (ca=, cert=, key=; FFID_CA, FFID_CERT, FFID_KEY): give one or the other")
        return connection
    if (cert is None) != (key is None):
        raise ValueError("mutual TLS needs both cert= and key= (FFID_CERT and FFID_KEY); only one was given")
    connection.tls = True
    if ca is not None:
        connection.root_certificates, connection.ca_name = _read(ca, "CA")
    if cert is not None and key is not None:
        connection.certificate_chain, connection.cert_name = _read(cert, "client certificate")
        connection.private_key, _ = _read(key, "client key")
    return connection


def unreachable(connection: Connection, timeout: float) -> _errors.Unavailable:
    """What to check when the connection did not come up in time."""
    message = f"cannot connect to ffid at {connection.address} within {timeout:g}s"
    if not connection.tls:
        message += ": is the daemon running? (pass an address or set FFID_ADDRESS)"
        if not connection.address.startswith("unix:"):
            message += ("; plaintext TCP reaches only a daemon started with --insecure: for one with "
                        "--tls-cert, drop insecure (FFID_INSECURE) and give its CA (ca=, FFID_CA)")
        return _errors.Unavailable(message)
    if connection.ca_name:
        ca = f"that {connection.ca_name} (ca=, FFID_CA) signed the daemon's certificate"
    else:
        ca = ("that the daemon's certificate is signed by a CA the system trusts, "
              "or give its CA (ca=, FFID_CA)")
    if connection.cert_name:
        cert = f"that the daemon's --tls-client-ca signed {connection.cert_name}; "
    else:
        cert = ("a daemon with --tls-client-ca (mutual TLS) also needs a client certificate and key "
                "(cert=/key=, FFID_CERT/FFID_KEY); ")
    return _errors.Unavailable(
        f"{message}: is the daemon running with TLS there? If the TLS handshake failed, check {ca} "
        f"and that the certificate names the host you connect to; {cert}"
        "a daemon started with --insecure needs insecure=True (FFID_INSECURE=1)")


class _SyncDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    """A sync RPC's details with the token added to its metadata."""

    def __init__(self, details: Any, metadata: Tuple[Tuple[str, str], ...]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = tuple(details.metadata or ()) + metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _SyncTokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
                            grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the bearer token to every RPC of a sync channel."""

    def __init__(self, metadata: Tuple[Tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: Any) -> Any:
        return _SyncDetails(details, self._metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def sync_channel(connection: Connection, options: List[Tuple[str, Any]]) -> Tuple[grpc.Channel, grpc.Channel]:
    """The channel to close and the one to make stubs on (the first with
    the token added to every RPC)."""
    if connection.tls:
        channel = grpc.secure_channel(connection.address, connection.credentials(), options=options)
    else:
        channel = grpc.insecure_channel(connection.address, options=options)
    if not connection.token:
        return channel, channel
    return channel, grpc.intercept_channel(channel, _SyncTokenInterceptor(connection.metadata))


def _aio_details(details: Any, metadata: Tuple[Tuple[str, str], ...]) -> Any:
    merged = grpc.aio.Metadata(*tuple(details.metadata or ()), *metadata)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, merged, details.credentials,
                                      details.wait_for_ready)


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: Tuple[Tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: Tuple[Tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: Tuple[Tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), requests)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: Tuple[Tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_aio_details(details, self._metadata), requests)


def aio_channel(connection: Connection, options: List[Tuple[str, Any]]) -> grpc.aio.Channel:
    """An asyncio channel that sends the token (if any) with every RPC."""
    interceptors = None
    if connection.token:
        metadata = connection.metadata
        interceptors = [_AioUnaryUnary(metadata), _AioUnaryStream(metadata),
                        _AioStreamUnary(metadata), _AioStreamStream(metadata)]
    if connection.tls:
        return grpc.aio.secure_channel(connection.address, connection.credentials(), options=options,
                                       interceptors=interceptors)
    return grpc.aio.insecure_channel(connection.address, options=options, interceptors=interceptors)
