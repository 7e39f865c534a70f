"""What callbacks need on both clients: parsing a callback signature,
RegisterCallbackRequest from keyword arguments, routing requests made inside
a callback onto the Connect stream, and running one invocation."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, List, Optional

from google.rpc import status_pb2

from ffid import _core, _errors, _values
from ffid.v1 import ffid_pb2, types_pb2

# The requests that may be made from inside a callback: they travel as
# StreamCalls tagged with the invocation and run on the native thread that
# waits for the callback. Other requests would wait for the worker's main
# thread, which is inside the native call.
STREAM_FIELDS: Dict[type, str] = {
    ffid_pb2.CallRequest: "call",
    ffid_pb2.ReadRequest: "read",
    ffid_pb2.WriteRequest: "write",
    ffid_pb2.AllocateRequest: "allocate",
    ffid_pb2.FreeRequest: "free",
    ffid_pb2.RegisterCallbackRequest: "register_callback",
    ffid_pb2.ReleaseCallbackRequest: "release_callback",
}

FAILURE_POLICIES = {
    "return_default": ffid_pb2.CALLBACK_FAILURE_POLICY_RETURN_DEFAULT,
    "terminate": ffid_pb2.CALLBACK_FAILURE_POLICY_TERMINATE_WORKER,
}

_names = itertools.count(1)


# Requests the daemon answers itself, without the worker: safe anywhere.
DAEMON_ONLY = (ffid_pb2.ParseDeclarationsRequest, ffid_pb2.GetSessionRequest, ffid_pb2.DeleteSessionRequest,
               ffid_pb2.GetServerInfoRequest, ffid_pb2.OpenArenaRequest)


def not_in_callback(request: Any) -> _errors.Error:
    return _errors.Unsupported(
        f"{type(request).__name__[:-len('Request')]} cannot be made from inside a callback (the "
        "worker is inside the native call that called it): only calls, reads, writes, "
        "allocations, frees and callback registrations; resolve functions before the call",
        reason="UNSUPPORTED")


def callback_sources(signature: str) -> List[str]:
    """What to parse for a callback signature written as an abstract
    function type ("int(const void *, const void *)": a name is added) or
    as a prototype ("int compare(const void *a, const void *b)"): the
    first source that parses is the signature."""
    text = signature.strip().rstrip(";").strip()
    at = text.find("(")
    if at < 0:
        raise _errors.DeclarationInvalid(
            f"'{signature}' is not a function signature such as 'int(const void *, const void *)'",
            reason="DECLARATION_INVALID")
    name = f"__ffid_callback_{next(_names)}"
    return [f"{text[:at]} {name}{text[at:]};", f"{text};"]


def pick_function(response: ffid_pb2.ParseDeclarationsResponse, signature: str) -> types_pb2.FunctionType:
    if len(response.functions) != 1:
        raise _errors.DeclarationInvalid(f"'{signature}' is not one function signature",
                                         reason="DECLARATION_INVALID")
    return response.functions[0].type


def register_request(session_id: str, function_type: types_pb2.FunctionType, name: str, default: Any,
                     on_error: str, timeout: Optional[float]) -> ffid_pb2.RegisterCallbackRequest:
    if on_error not in FAILURE_POLICIES:
        raise ValueError(f"on_error={on_error!r}: expected one of {', '.join(FAILURE_POLICIES)}")
    request = ffid_pb2.RegisterCallbackRequest(session=session_id, type=function_type, name=name,
                                               failure_policy=FAILURE_POLICIES[on_error])
    if default is not None:
        request.default_result.CopyFrom(_values.to_value(
            default, function_type.return_type, "the callback's default result", _core.pointer_of))
    if timeout is not None:
        request.timeout.CopyFrom(_core._duration(timeout, "timeout"))
    return request


def returns_void(function_type: types_pb2.FunctionType) -> bool:
    return (not function_type.HasField("return_type")
            or (function_type.return_type.WhichOneof("kind") == "scalar"
                and function_type.return_type.scalar == types_pb2.SCALAR_KIND_VOID))


def arguments(invocation: ffid_pb2.CallbackInvocation, function_type: types_pb2.FunctionType,
              make_pointer: Callable[[types_pb2.PointerValue], Any]) -> list:
    params = function_type.parameters
    return [_values.from_value(value, params[i].type if i < len(params) else None, make_pointer)
            for i, value in enumerate(invocation.arguments)]


def result_message(invocation: ffid_pb2.CallbackInvocation, function_type: types_pb2.FunctionType,
                   returned: Any, failure: Optional[BaseException]) -> ffid_pb2.ConnectRequest:
    """The CallbackResult for an invocation that returned `returned` or
    raised `failure`."""
    result = ffid_pb2.CallbackResult(invocation=invocation.invocation)
    if failure is None and not returns_void(function_type):
        try:
            result.result.CopyFrom(_values.to_value(
                returned, function_type.return_type, "the callback's result", _core.pointer_of))
        except _errors.Error as error:
            failure = error
    if failure is not None:
        result.ClearField("result")
        result.error.message = f"{type(failure).__name__}: {failure}"[:1000]
    return ffid_pb2.ConnectRequest(callback_result=result)


def stream_error(result: ffid_pb2.StreamResult) -> _errors.Error:
    """The exception for a StreamResult that failed."""
    import grpc

    status = status_pb2.Status()
    status.ParseFromString(result.error_status)
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), None)
    return _errors.from_status(code, status.message, [("grpc-status-details-bin", result.error_status)])
