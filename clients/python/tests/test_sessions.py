"""Session options (limits, sandbox, restart policy) as keyword arguments
of connect, and what the server says about itself."""

from __future__ import annotations

import pytest

import ffid
import ffid.aio

from conftest import FIXTURE


def test_limits_and_policies_reach_the_session(daemon) -> None:
    with ffid.connect(daemon.address, open_files=64, cpu_seconds=30, max_call_duration=5,
                      restart_policy="restart", idle_timeout=20) as s:
        info = s.info()
        assert info.limits.open_files == 64
        assert info.limits.cpu_seconds == 30
        assert info.limits.max_call_duration.seconds == 5
        assert info.restart_policy == ffid.v1.ffid_pb2.RESTART_POLICY_RESTART
        assert info.sandbox.allow_network is False


def test_bad_option_values_are_refused_before_connecting(daemon) -> None:
    with pytest.raises(ValueError, match="restart_policy"):
        ffid.connect(daemon.address, restart_policy="sometimes")
    with pytest.raises(ValueError, match="open_files"):
        ffid.connect(daemon.address, open_files=-1)


def test_network_needs_the_servers_permission(daemon) -> None:
    with ffid.connect(daemon.address) as s:
        allowed = s.server_info().network_allowed
    assert allowed is False  # the test daemon runs without --allow-network
    with pytest.raises(ffid.Error) as caught:
        ffid.connect(daemon.address, allow_network=True)
    assert "network" in caught.value.message


def test_max_call_duration_ends_a_call(daemon) -> None:
    # The limit holds for every request of the session, loading included:
    # generous enough for a loaded machine under ASan, far below the sleep.
    with ffid.connect(daemon.address, max_call_duration=2) as s:
        sleep = s.load(str(FIXTURE)).function("void fx_sleep_ms(int)")
        with pytest.raises(ffid.DeadlineExceeded):
            sleep(60_000)


def test_restart_policy_brings_the_session_back(daemon) -> None:
    with ffid.connect(daemon.address, restart_policy="restart") as s:
        lib = s.load(str(FIXTURE))
        add = lib.function("int fx_add(int, int)")
        crash = lib.function("void fx_crash_null(void)")
        buf = s.alloc(8)
        with pytest.raises(ffid.WorkerCrashed) as caught:
            crash()
        assert caught.value.crash_report.signal_name == "SIGSEGV"
        # The same function handles work on the new worker; memory of the
        # dead one does not.
        assert add(1, 2) == 3
        assert s.info().restarts == 1
        with pytest.raises(ffid.HandleInvalid):
            buf.read(1)


@pytest.mark.asyncio
async def test_aio_session_options(daemon) -> None:
    async with ffid.aio.connect(daemon.address, open_files=32) as s:
        assert (await s.info()).limits.open_files == 32
        assert (await s.server_info()).HasField("default_limits")
