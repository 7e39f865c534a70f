#!/usr/bin/env python3
"""gRPC server reflection and health against the real daemon, through a real
reflection client (grpcio-reflection's ProtoReflectionDescriptorDatabase,
the same protocol grpcurl and Postman speak).

  reflection_test.py VENV FFID FFID_WORKER VERSION

Checks:
  - over the unix socket (the caller is unix:UID): the services list names
    ffid.v1.Ffi and grpc.health.v1.Health; the descriptors it serves
    describe Ffi's methods; a GetServerInfo call built only from those
    descriptors answers with VERSION;
  - over TCP with --insecure (the caller is anonymous): reflection is
    refused (CANCELLED, and the daemon logs why) while health answers
    SERVING; with a bearer token from --token-file reflection works; the
    --health-listen port answers health and nothing else (UNIMPLEMENTED);
  - during a SIGTERM drain (a WriteStream still running) the --health-listen
    port says NOT_SERVING, and the daemon exits 0 once the stream ends;
  - with --no-reflection: the reflection service is not there
    (UNIMPLEMENTED).
Exits 77 (skipped) without grpcio-reflection in VENV (deploy/test.sh
installs deploy/tools/requirements-deploy.txt there).
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "reflection-test-secret"


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def reexec_in_venv(venv):
    try:
        import grpc_reflection  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(venv, "bin", "python")
    if os.environ.get("FFID_REFLECTION_TEST_REEXEC") or not os.path.exists(python):
        print("skipped: no grpcio-reflection (bash deploy/test.sh makes %s)" % venv)
        sys.exit(77)
    os.environ["FFID_REFLECTION_TEST_REEXEC"] = "1"
    os.execv(python, [python] + sys.argv)


class Daemon:
    """The ffid binary on `listen`, its stderr collected."""

    def __init__(self, ffid, worker, listen, flags, temp):
        self.log = ""
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [ffid, "--listen", listen, "--worker-path", worker] + flags,
            stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = re.search(r"ffid: listening on (\S+)", self.text())
            if m:
                self.address = m.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        fail("the daemon did not start:\n" + self.text())

    def _read(self):
        for line in self.process.stderr:
            with self._lock:
                self.log += line

    def text(self):
        with self._lock:
            return self.log

    def wait_for_log(self, what):
        deadline = time.monotonic() + 30
        while what not in self.text():
            if time.monotonic() > deadline:
                fail("the daemon's log lacks %r:\n%s" % (what, self.text()))
            time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


CALL_DETAILS_FIELDS = ("method", "timeout", "metadata", "credentials",
                       "wait_for_ready", "compression")


def with_token(channel, token):
    """`channel`, adding `authorization: Bearer TOKEN` to every call."""
    import collections
    import grpc
    details_type = collections.namedtuple("CallDetails", CALL_DETAILS_FIELDS)
    bearer = (("authorization", "Bearer " + token),)

    def add_token(details):
        return details_type(details.method, details.timeout,
                            tuple(details.metadata or ()) + bearer,
                            details.credentials, details.wait_for_ready,
                            details.compression)

    class Interceptor(grpc.StreamStreamClientInterceptor,
                      grpc.UnaryUnaryClientInterceptor):
        def intercept_stream_stream(self, continuation, details, requests):
            return continuation(add_token(details), requests)

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(add_token(details), request)

    return grpc.intercept_channel(channel, Interceptor())


def reflect(channel):
    """(services, pool) from the server's reflection service."""
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import \
        ProtoReflectionDescriptorDatabase
    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    return services, descriptor_pool.DescriptorPool(database)


def health(channel, service=""):
    """grpc.health.v1.Health/Check by hand: the request is field 1 (string),
    the answer field 1 (enum; 1 = SERVING)."""
    encoded = service.encode()
    request = (b"\x0a" + bytes([len(encoded)]) + encoded) if encoded else b""
    answer = channel.unary_unary("/grpc.health.v1.Health/Check")(request, timeout=30)
    return 1 if answer == b"\x08\x01" else answer


def check_unix(ffid, worker, version, temp):
    import grpc
    from google.protobuf import message_factory
    daemon = Daemon(ffid, worker, "unix:" + os.path.join(temp, "ffid.sock"), [], temp)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            services, pool = reflect(channel)
            for name in ("ffid.v1.Ffi", "grpc.health.v1.Health"):
                if name not in services:
                    fail("reflection lists %s, not %s" % (services, name))
            ffi = pool.FindServiceByName("ffid.v1.Ffi")
            methods = {m.name for m in ffi.methods}
            for name in ("CreateSession", "LoadLibrary", "Call", "Connect",
                         "Batch", "GetServerInfo"):
                if name not in methods:
                    fail("ffid.v1.Ffi as reflected lacks %s: %s" % (name, methods))
            # A call made only from what reflection said, as a generic
            # tool would.
            method = ffi.FindMethodByName("GetServerInfo")
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            call = channel.unary_unary(
                "/ffid.v1.Ffi/GetServerInfo",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString)
            info = call(request_class(), timeout=30)
            if info.version != version:
                fail("GetServerInfo (via reflection) says version %r, not %r"
                     % (info.version, version))
            print("unix: reflection lists %d services, Ffi has %d methods, "
                  "GetServerInfo.version %s" % (len(services), len(methods),
                                                info.version))
    finally:
        daemon.stop()


def check_tcp(ffid, worker, temp):
    import grpc
    tokens = os.path.join(temp, "tokens")
    with open(tokens, "w") as f:
        f.write("%s reflector\n" % hashlib.sha256(TOKEN.encode()).hexdigest())
    daemon = Daemon(ffid, worker, "127.0.0.1:0",
                    ["--insecure", "--token-file", tokens,
                     "--health-listen", "127.0.0.1:0"], temp)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            try:
                reflect(channel)
                fail("an anonymous caller got server reflection")
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:
                    fail("anonymous reflection ended with %s, not CANCELLED"
                         % error.code())
            daemon.wait_for_log("server reflection refused")
            for service in ("", "ffid.v1.Ffi"):
                status = health(channel, service)
                if status != 1:
                    fail("health(%r) without an identity: %r" % (service, status))
            services, pool = reflect(with_token(channel, TOKEN))
            if "ffid.v1.Ffi" not in services:
                fail("with a token, reflection lists %s" % services)
            pool.FindServiceByName("ffid.v1.Ffi")
            print("tcp: anonymous reflection CANCELLED, health SERVING, "
                  "token:reflector reflection lists %d services" % len(services))
        # The health-only port: health, and nothing else.
        m = re.search(r"health checking \(only\) on (\S+)", daemon.text())
        if not m:
            fail("no health-only listener in the log:\n" + daemon.text())
        with grpc.insecure_channel(m.group(1)) as channel:
            if health(channel, "ffid.v1.Ffi") != 1:
                fail("the health-only port does not say SERVING")
            for what, call in (
                    ("reflection", lambda: reflect(with_token(channel, TOKEN))),
                    ("GetServerInfo", lambda: channel.unary_unary(
                        "/ffid.v1.Ffi/GetServerInfo")(b"", timeout=30))):
                try:
                    call()
                    fail("the health-only port serves " + what)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                        fail("%s on the health-only port: %s" % (what, error.code()))
            print("health-only port: SERVING; reflection and the API UNIMPLEMENTED")
    finally:
        daemon.stop()


def check_drain(ffid, worker, temp):
    """From SIGTERM on, the health-only port says NOT_SERVING while a
    WriteStream that has sent only part of its bytes (messages built from
    the reflected descriptors) keeps the drain going: an idle session would
    not, the drain ends those at once."""
    import grpc
    import signal
    from google.protobuf import message_factory
    daemon = Daemon(ffid, worker, "unix:" + os.path.join(temp, "drain.sock"),
                    ["--health-listen", "127.0.0.1:0", "--shutdown-grace", "60s"],
                    temp)
    release = threading.Event()
    try:
        health_address = re.search(r"health checking \(only\) on (\S+)",
                                   daemon.text()).group(1)
        with grpc.insecure_channel(daemon.address) as api, \
                grpc.insecure_channel(health_address) as probe:
            _, pool = reflect(api)

            def message(name):
                return message_factory.GetMessageClass(
                    pool.FindMessageTypeByName("ffid.v1." + name))

            def unary(method, request, response):
                return api.unary_unary(
                    "/ffid.v1.Ffi/" + method,
                    request_serializer=request.SerializeToString,
                    response_deserializer=message(response).FromString)(
                        request, timeout=30)

            session = unary("CreateSession", message("CreateSessionRequest")(),
                            "CreateSessionResponse").session.id
            memory = unary("Allocate",
                           message("AllocateRequest")(session=session, size=64),
                           "AllocateResponse").memory
            first = message("WriteStreamRequest")(session=session, length=64,
                                                  data=b"half" * 8)
            first.pointer.handle = memory

            def pieces():
                yield first
                release.wait(60)

            stream = api.stream_unary(
                "/ffid.v1.Ffi/WriteStream",
                request_serializer=first.SerializeToString,
                response_deserializer=message("WriteStreamResponse").FromString
            ).future(pieces())
            if health(probe) != 1:
                fail("the health-only port is not SERVING before SIGTERM")
            daemon.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while health(probe) == 1:
                if time.monotonic() > deadline:
                    fail("the health-only port still says SERVING after SIGTERM")
                time.sleep(0.05)
            if health(probe) != b"\x08\x02":
                fail("the health-only port during the drain: %r" % health(probe))
            release.set()
            stream.cancel()
        if daemon.process.wait(60) != 0:
            fail("the daemon's exit status after the drain: %d\n%s"
                 % (daemon.process.returncode, daemon.text()))
        print("drain: the health-only port said NOT_SERVING while a "
              "WriteStream ran; exit 0")
    finally:
        release.set()
        daemon.stop()


def check_off(ffid, worker, temp):
    import grpc
    daemon = Daemon(ffid, worker, "unix:" + os.path.join(temp, "off.sock"),
                    ["--no-reflection"], temp)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            try:
                reflect(channel)
                fail("--no-reflection still serves reflection")
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                    fail("with --no-reflection: %s, not UNIMPLEMENTED" % error.code())
            if health(channel) != 1:
                fail("health with --no-reflection")
            print("--no-reflection: UNIMPLEMENTED, health SERVING")
    finally:
        daemon.stop()


def main():
    if len(sys.argv) != 5:
        fail("usage: reflection_test.py VENV FFID FFID_WORKER VERSION")
    venv, ffid, worker, version = sys.argv[1:]
    reexec_in_venv(venv)
    temp = tempfile.mkdtemp(prefix="ffid-reflection-")
    os.chmod(temp, 0o700)
    try:
        check_unix(ffid, worker, version, temp)
        check_tcp(ffid, worker, temp)
        check_drain(ffid, worker, temp)
        check_off(ffid, worker, temp)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    print("reflection_test: 4 passed, 0 failed")


if __name__ == "__main__":
    main()
