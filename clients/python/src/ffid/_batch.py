"""Batches: many steps in one round trip (the Batch RPC), shared by the sync
and asyncio clients. A step's result can be passed to a later step before
it exists (promise pipelining): every step returns a BatchResult that later
steps take as an argument, a pointer, or the memory to free."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from ffid import _core, _errors
from ffid.v1 import ffid_pb2, types_pb2

_PENDING = object()


class BatchResult(_core.BatchRefBase):
    """The result of one batch step: before the batch runs, a reference that
    later steps of the same batch can take (as an argument, a pointer to read,
    write or free); after it ran, `.value` is the result.

    ref.field("origin", "x") or ref["x"] refers to a member (array elements by
    index), ref + 8 to a pointer 8 bytes further, ref.load(type) to the value
    of C type `type` (a TypeDescriptor, e.g. session.typeof("int")) stored
    where the pointer points."""

    __slots__ = ("_batch", "step", "_path", "_offset", "_load", "_value")

    def __init__(self, batch: "BatchBuilder", step: int, path: Tuple[str, ...] = (), offset: int = 0,
                 load: Optional[types_pb2.TypeDescriptor] = None) -> None:
        self._batch = batch
        self.step = step
        self._path = path
        self._offset = offset
        self._load = load
        self._value: Any = _PENDING

    def _derive(self, **changes: Any) -> "BatchResult":
        derived = BatchResult(self._batch, self.step, changes.get("path", self._path),
                              changes.get("offset", self._offset), changes.get("load", self._load))
        return derived

    def field(self, *path: Union[str, int]) -> "BatchResult":
        """A member (or array element) of this step's result."""
        return self._derive(path=self._path + tuple(str(p) for p in path))

    def __getitem__(self, key: Union[str, int]) -> "BatchResult":
        return self.field(key)

    def __add__(self, delta: int) -> "BatchResult":
        if not isinstance(delta, int):
            return NotImplemented
        return self._derive(offset=self._offset + delta)

    def load(self, ctype: types_pb2.TypeDescriptor) -> "BatchResult":
        """The value of type `ctype` where this pointer points."""
        if not isinstance(ctype, types_pb2.TypeDescriptor):
            raise TypeError("load() takes a TypeDescriptor (session.typeof(\"int\"))")
        return self._derive(load=ctype)

    def reference(self, argument: int = 0) -> ffid_pb2.BatchReference:
        reference = ffid_pb2.BatchReference(step=self.step, argument=argument, field_path=list(self._path),
                                            offset=self._offset)
        if self._load is not None:
            reference.load_type.CopyFrom(self._load)
        return reference

    @property
    def value(self) -> Any:
        """The step's result once the batch ran: a call's return value, a
        Memory for alloc, bytes for read, None for write/free."""
        value = self._batch._values[self.step]
        if value is _PENDING:
            raise RuntimeError(f"batch step {self.step} has not run yet (or its result was discarded)")
        return value

    def __repr__(self) -> str:
        return f"<ffid.BatchResult step {self.step}>"


class BatchBuilder:
    """The steps of one batch and, after it ran, their results. Not
    thread-safe; build and run it from one thread (or task)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._request = ffid_pb2.BatchRequest(session=session.id)
        # Per step: how to turn its BatchStepResult into a Python value.
        self._decoders: List[Callable[[ffid_pb2.BatchStepResult], Any]] = []
        self._values: List[Any] = []
        self._freed_steps: List[int] = []
        self._ran = False

    def __len__(self) -> int:
        return len(self._decoders)

    def _add(self, step: ffid_pb2.BatchStep, decode: Callable[[ffid_pb2.BatchStepResult], Any],
             discard: bool) -> BatchResult:
        if self._ran:
            raise RuntimeError("this batch ran already; start a new one")
        step.discard_result = discard
        self._request.steps.append(step)
        self._decoders.append(decode)
        self._values.append(_PENDING)
        return BatchResult(self, len(self._decoders) - 1)

    def _own(self, ref: Any) -> None:
        if isinstance(ref, BatchResult) and ref._batch is not self:
            raise ValueError(f"{ref!r} belongs to another batch")

    def call(self, function: Any, *args: Any, discard: bool = False, errno: Optional[bool] = None) -> BatchResult:
        """Calls `function` (a resolved Function); any argument may be a
        BatchResult of an earlier step."""
        spec: _core.FunctionSpec = function._spec
        refs: List[Tuple[int, Any]] = []
        for arg in args:
            self._own(arg)
        call = spec.request(self._session.id, args, errno, refs)
        step = ffid_pb2.BatchStep(call=call)
        for index, ref in refs:
            step.references.append(ref.reference(index))
        session = self._session
        return self._add(step, lambda result: spec.result(result.call, session._make_pointer,
                                                          session._make_owned), discard)

    def alloc(self, size: int, init: bytes = b"", *, arena: bool = False, discard: bool = False) -> BatchResult:
        """Allocates zero-filled memory (in the session's arena with
        arena=True); its result is the Memory (owned by the session)."""
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"alloc needs a positive size in bytes, got {size!r}")
        request = ffid_pb2.AllocateRequest(size=size, initial_bytes=bytes(init))
        if arena:
            request.placement = ffid_pb2.ALLOCATION_PLACEMENT_ARENA
        index = len(self._decoders)
        session = self._session

        def decode(result: ffid_pb2.BatchStepResult) -> Any:
            allocated = result.allocate
            return session._memory_from(allocated, owned=index not in self._freed_steps)

        return self._add(ffid_pb2.BatchStep(allocate=request), decode, discard)

    def _pointer_step(self, step: ffid_pb2.BatchStep, target: Any, field: str) -> None:
        self._own(target)
        if isinstance(target, BatchResult):
            step.references.append(target.reference())
            if field == "free":
                self._freed_steps.append(target.step)
            return
        pointer = _core.pointer_of(target)
        if pointer is None:
            raise TypeError(f"expected a Pointer, Memory or BatchResult, got {target!r}")
        if field == "free":
            if not pointer.handle:
                raise TypeError("free() needs owned memory, not a raw address")
            step.free.memory = pointer.handle
            if getattr(target, "_finalizer", None) is not None:
                target._finalizer.detach()
        else:
            getattr(step, field).pointer.CopyFrom(pointer)

    def read(self, pointer: Any, length: int, *, discard: bool = False) -> BatchResult:
        """Reads `length` bytes at a pointer (or a BatchResult pointer)."""
        step = ffid_pb2.BatchStep(read=ffid_pb2.ReadRequest(length=length))
        self._pointer_step(step, pointer, "read")
        return self._add(step, lambda result: result.read.data, discard)

    def write(self, pointer: Any, data: bytes) -> BatchResult:
        """Writes bytes at a pointer (or a BatchResult pointer)."""
        step = ffid_pb2.BatchStep(write=ffid_pb2.WriteRequest(data=bytes(data)))
        self._pointer_step(step, pointer, "write")
        return self._add(step, lambda result: None, True)

    def free(self, memory: Any) -> BatchResult:
        """Frees owned memory (or the memory an earlier alloc step made)."""
        step = ffid_pb2.BatchStep(free=ffid_pb2.FreeRequest())
        self._pointer_step(step, memory, "free")
        return self._add(step, lambda result: None, True)

    def request(self) -> ffid_pb2.BatchRequest:
        if self._ran:
            raise RuntimeError("this batch ran already; start a new one")
        return self._request

    def finish(self, response: ffid_pb2.BatchResponse) -> List[Any]:
        """Takes the response: every step's value (None for discarded ones)."""
        self._ran = True
        values: List[Any] = []
        for index, (step, result) in enumerate(zip(self._request.steps, response.results)):
            if step.discard_result:
                values.append(None)
                continue
            value = self._decoders[index](result)
            self._values[index] = value
            values.append(value)
        return values


class BatchSteps:
    """The step-adding half of the sync and asyncio Batch classes (they add
    run()). Each method returns the step's BatchResult."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._builder = BatchBuilder(session)
        self.results: List[Any] = []

    def call(self, function: Any, *args: Any, discard: bool = False,
             errno: Optional[bool] = None) -> BatchResult:
        """Adds a call; arguments may be BatchResults of earlier steps."""
        return self._builder.call(function, *args, discard=discard, errno=errno)

    def alloc(self, size: int, init: Union[bytes, bytearray, memoryview] = b"", *, arena: bool = False,
              discard: bool = False) -> BatchResult:
        """Adds an allocation (arena=True: in the session's arena); its value
        is the Memory."""
        return self._builder.alloc(size, bytes(init), arena=arena, discard=discard)

    def read(self, pointer: Any, length: int, *, discard: bool = False) -> BatchResult:
        """Adds a read of `length` bytes at a pointer; its value is the bytes."""
        return self._builder.read(pointer, length, discard=discard)

    def write(self, pointer: Any, data: Union[bytes, bytearray, memoryview]) -> BatchResult:
        """Adds a write of bytes at a pointer."""
        return self._builder.write(pointer, bytes(data))

    def free(self, memory: Any) -> BatchResult:
        """Adds a free of owned memory (or of an earlier alloc step's)."""
        return self._builder.free(memory)

    def __len__(self) -> int:
        return len(self._builder)
