"""The shared conformance list (tests/conformance/scenarios.json, format in
tests/conformance/README.md) run with the Python client's API: one test per
scenario, each in a new session of one daemon started as the file says."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import ffid
from ffid._errors import ERROR_CLASSES
from ffid.v1 import types_pb2

from conftest import CALLBACKS_FIXTURE, FIXTURE, REPO, Daemon

SCENARIOS = Path(os.environ.get("FFID_CONFORMANCE") or REPO / "tests" / "conformance" / "scenarios.json")
FORMAT = 1
LIST: Optional[Dict[str, Any]] = json.loads(SCENARIOS.read_text()) if SCENARIOS.exists() else None
NAMES = [s["name"] for s in LIST["scenarios"]] if LIST else []

SPECIAL_DOUBLES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "-0": -0.0}


class Places:
    """Where the placeholders of the file point."""

    def __init__(self, daemon: Daemon) -> None:
        self.allowed_dir = str(daemon.allowed_dir)
        self.not_allowed_dir = str(daemon.not_allowed_dir)

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return (value.replace("{fixture_dir}", str(FIXTURE.parent))
                    .replace("{fixture}", str(FIXTURE))
                    .replace("{callbacks_fixture}", str(CALLBACKS_FIXTURE))
                    .replace("{allowed_dir}", self.allowed_dir)
                    .replace("{not_allowed_dir}", self.not_allowed_dir))
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value


@pytest.fixture(scope="module")
def conformance() -> Iterator[Any]:
    assert LIST is not None
    assert LIST["format"] == FORMAT, f"this runner reads format {FORMAT}; update it with the list"
    root = Path(tempfile.mkdtemp(prefix="ffid-py-conformance-"))
    daemon = Daemon(root, allow_library=lambda d: Places(d).fill(LIST["daemon"]["allow_library"]))
    places = Places(daemon)
    try:
        for step in places.fill(LIST.get("setup", [])):
            if "write" in step:
                Path(step["write"]).write_text(step["text"])
            elif "copy" in step:
                shutil.copyfile(step["copy"], step["to"])
            else:
                raise AssertionError(f"unknown setup step {step}")
        yield daemon, places
    finally:
        status = daemon.stop()
        log = daemon.log()
        shutil.rmtree(root, ignore_errors=True)
    assert status == 0, f"ffid exited with status {status}; its log:\n{log}"


def to_py(value: Any, refs: Dict[str, Any]) -> Any:
    """A JSON value of the file -> what the Python API takes."""
    if isinstance(value, list):
        return [to_py(v, refs) for v in value]
    if isinstance(value, dict):
        if "$int" in value:
            return int(value["$int"])
        if "$double" in value:
            return SPECIAL_DOUBLES[value["$double"]]
        if "$ref" in value:
            assert value["$ref"] in refs, f"no {value['$ref']} bound in this scenario"
            return refs[value["$ref"]]
        return {k: to_py(v, refs) for k, v in value.items()}
    return value


def check(actual: Any, expected: Any, where: str) -> None:
    """Compares a result with an expected JSON value as the format says."""
    if expected is None:
        assert actual is None, f"{where}: expected NULL/void, got {actual!r}"
    elif isinstance(expected, list):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), f"{where}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            check(a, e, f"{where}[{i}]")
    elif isinstance(expected, dict) and "$int" in expected:
        assert actual == int(expected["$int"]), f"{where}: {actual!r}"
    elif isinstance(expected, dict) and "$double" in expected:
        special = SPECIAL_DOUBLES[expected["$double"]]
        if math.isnan(special):
            assert isinstance(actual, float) and math.isnan(actual), f"{where}: {actual!r}"
        else:
            assert actual == special and math.copysign(1, actual) == math.copysign(1, special), f"{where}: {actual!r}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a struct, got {actual!r}"
        for name, value in expected.items():
            check(actual.get(name), value, f"{where}.{name}")
    elif isinstance(expected, bool):
        assert actual is expected, f"{where}: {actual!r}"
    else:
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"


class Outcome:
    """What a step returned, or the ffid error it raised."""

    def __init__(self, body: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: Optional[ffid.Error] = None
        try:
            self.value = body()
        except ffid.Error as error:
            self.error = error


def check_error(outcome: Outcome, reason: str, where: str) -> None:
    assert outcome.error is not None, f"{where}: expected {reason}, got {outcome.value!r}"
    assert outcome.error.reason == reason, f"{where}: {outcome.error}"
    assert isinstance(outcome.error, ERROR_CLASSES[reason]), f"{where}: {type(outcome.error).__name__}"


def session_options(session: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    options: Dict[str, Any] = {}
    if session:
        if "restart_policy" in session:
            options["restart_policy"] = session["restart_policy"]
        options.update(session.get("limits", {}))
    return options


def check_call(outcome: Outcome, expect: Dict[str, Any], fn: Optional[ffid.Function], out: List[str],
               s: ffid.Session, where: str) -> None:
    """A call's outcome against `expect`: error and crash, or result,
    out-parameters and errno."""
    if "error" in expect:
        check_error(outcome, expect["error"], where)
        for field, value in expect.get("crash", {}).items():
            assert getattr(outcome.error.crash_report, field) == value, f"{where}: crash report {field}"
        return
    assert outcome.error is None, f"{where}: {outcome.error}"
    result = outcome.value
    if out:
        # (result, *outs) in parameter order; a void function returns its
        # one out value (or the tuple of them).
        assert fn is not None
        names = [p.name for p in fn.type.parameters]
        order = sorted(out, key=names.index)
        returns_void = (not fn.type.HasField("return_type")
                        or fn.type.return_type.scalar == types_pb2.SCALAR_KIND_VOID)
        if returns_void:
            outs, result = ([result] if len(order) == 1 else list(result)), None
        else:
            outs, result = list(result[1:]), result[0]
        for name, value in expect.get("out", {}).items():
            check(outs[order.index(name)], value, f"{where}: out {name}")
    if "result" in expect:
        check(result, expect["result"], f"{where}: result")
    if "errno" in expect:
        assert s.errno == expect["errno"], f"{where}: errno {s.errno}"


def load_and_resolve(s: ffid.Session, scenario: Dict[str, Any], **options: Any) -> Any:
    lib = s.load(scenario["library"])
    if scenario.get("cdef"):
        lib.cdef(scenario["cdef"])
    return lib, lib.function(scenario["function"], out=scenario.get("out", []), **options)


def run_after(s: ffid.Session, lib: Any, scenario: Dict[str, Any]) -> None:
    later = scenario.get("after")
    if not later:
        return
    outcome = Outcome(lambda: lib.function(later.get("function", scenario["function"]))(
        *to_py(later.get("arguments", []), {})))
    check_call(outcome, later["expect"], None, [], s, "after")


def run_call(scenario: Dict[str, Any], s: ffid.Session, timeout: Optional[float] = None) -> None:
    bound: Dict[str, Any] = {}

    def body() -> Any:
        bound["lib"], bound["fn"] = load_and_resolve(s, scenario, use_errno=bool(scenario.get("errno")))
        return bound["fn"](*to_py(scenario.get("arguments", []), {}), timeout=timeout)

    check_call(Outcome(body), scenario["expect"], bound.get("fn"), scenario.get("out", []), s, "call")
    if "lib" in bound:
        run_after(s, bound["lib"], scenario)


def run_callback(scenario: Dict[str, Any], s: ffid.Session) -> None:
    threads = set()
    invocations = [0]
    refs: Dict[str, Any] = {}
    bound: Dict[str, Any] = {}

    behaviours: Dict[str, Callable[..., Any]] = {
        "add": lambda *args: sum(args),
        "compare_ints": lambda a, b: (lambda x, y: (x > y) - (x < y))(a.read_value("int"), b.read_value("int")),
        "store_int": lambda out, value: out.write_value(value, "int"),
        "nest": lambda depth: 0 if depth == 0 else bound["fn"](refs["callback"], depth - 1),
    }

    def fail(*_: Any) -> Any:
        raise RuntimeError("the conformance scenario fails this callback on purpose")

    behaviours["fail"] = fail
    behaviour = behaviours[scenario["callback"]["behaviour"]]

    def callback(*args: Any) -> Any:
        invocations[0] += 1
        threads.add(s.current_invocation().native_thread_id)
        return behaviour(*args)

    def body() -> Any:
        bound["lib"], bound["fn"] = load_and_resolve(s, scenario)
        refs["callback"] = s.callback(scenario["callback"]["declaration"], callback)
        if "memory" in scenario:
            refs["memory"] = s.new(scenario["memory"]["type"], to_py(scenario["memory"]["value"], {}))
        return bound["fn"](*to_py(scenario.get("arguments", []), refs))

    expect = scenario["expect"]
    check_call(Outcome(body), expect, bound.get("fn"), scenario.get("out", []), s, "call")
    if "invocations" in expect:
        assert invocations[0] == expect["invocations"], "invocations"
    if "min_threads" in expect:
        assert len(threads) >= expect["min_threads"], f"ran on {len(threads)} native threads"
    if "memory" in expect:
        check(refs["memory"].value, expect["memory"], "memory")
    if "lib" in bound:
        run_after(s, bound["lib"], scenario)


def run_memory(scenario: Dict[str, Any], s: ffid.Session) -> None:
    lib = s.load(scenario["library"])
    if scenario.get("cdef"):
        lib.cdef(scenario["cdef"])
    bound: Dict[str, Any] = {}
    for i, step in enumerate(scenario["steps"]):
        where = f"step {i} ({step['op']})"
        op = step["op"]

        def at(step: Dict[str, Any] = step) -> Any:
            memory = bound[step["memory"]]
            return memory + step["offset"] if step.get("offset") else memory

        def body(step: Dict[str, Any] = step, op: str = op) -> Any:
            if op == "alloc":
                bound[step["as"]] = s.alloc(step["size"])
            elif op == "new":
                bound[step["as"]] = s.new(step["type"], to_py(step["value"], {}))
            elif op == "write":
                at().write(bytes.fromhex(step["hex"]))
            elif op == "read":
                return at().read(step["length"]).hex()
            elif op == "write_value":
                at().write_value(to_py(step["value"], {}), step["type"])
            elif op == "read_value":
                return at().read_value(step["type"])
            elif op == "free":
                bound[step["memory"]].free()
            elif op == "call":
                result = lib.function(step["function"])(*to_py(step.get("arguments", []), bound))
                if step.get("as"):
                    bound[step["as"]] = result
                return result
            else:
                raise AssertionError(f"{where}: unknown op")
            return None

        outcome = Outcome(body)
        expect = step.get("expect", {})
        if "error" in expect:
            check_error(outcome, expect["error"], where)
            continue
        assert outcome.error is None, f"{where}: {outcome.error}"
        if "hex" in expect:
            assert outcome.value == expect["hex"], where
        if "value" in expect:
            check(outcome.value, expect["value"], where)
        if "result" in expect:
            check(outcome.value, expect["result"], where)


def run_closed_session(scenario: Dict[str, Any], s: ffid.Session) -> None:
    _, fn = load_and_resolve(s, scenario)
    s.close()
    check_call(Outcome(lambda: fn(*to_py(scenario.get("arguments", []), {}))), scenario["expect"], fn, [], s, "call")


KINDS: Dict[str, Callable[[Dict[str, Any], ffid.Session], None]] = {
    "call": run_call,
    "crash": run_call,
    "deadline": lambda scenario, s: run_call(scenario, s, timeout=scenario["timeout_ms"] / 1000),
    "callback": run_callback,
    "memory": run_memory,
    "closed_session": run_closed_session,
}


@pytest.mark.skipif(LIST is None, reason=f"{SCENARIOS} does not exist yet")
@pytest.mark.parametrize("name", NAMES or ["-"])
def test_scenario(conformance: Any, name: str) -> None:
    daemon, places = conformance
    assert LIST is not None
    scenario = places.fill(next(s for s in LIST["scenarios"] if s["name"] == name))
    kind = scenario["kind"]
    assert kind in KINDS or kind == "session", f"unknown kind {kind}"
    opened = Outcome(lambda: ffid.connect(daemon.address, **session_options(scenario.get("session"))))
    if kind == "session":
        if "error" in scenario["expect"]:
            check_error(opened, scenario["expect"]["error"], "connect")
        else:
            assert opened.error is None, str(opened.error)
        if opened.value is not None:
            opened.value.close()
        return
    assert opened.error is None, str(opened.error)
    with opened.value as s:
        KINDS[kind](scenario, s)
