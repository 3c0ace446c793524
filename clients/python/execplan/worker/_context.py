"""TaskContext: what a handler knows about the attempt it runs, and how it talks back.

A context is created on the stream thread when a dispatch arrives and is then used
from the handler's thread (the user's event loop, or a pool thread for sync
handlers). So every method here is thread-safe: plain attribute reads, a flag
for `cancelled` that only the stream thread sets (nothing blocks on it: sync
handlers poll it, async ones await `wait_cancelled`), and callbacks that hop
threads themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from execplan.client.values import from_struct, to_search_attributes, to_value
from execplan.v1 import execution_pb2, worker_service_pb2
from google.protobuf import struct_pb2

from ._usage import usage_message


class AttemptKey(NamedTuple):
    """Identity of one lease: the same task re-leased under a new epoch is a new key."""

    execution_id: str
    task_id: str
    phase: int
    attempt: int
    lease_epoch: int

    @classmethod
    def of(cls, ref: worker_service_pb2.AttemptRef) -> AttemptKey:
        return cls(
            ref.execution_id, ref.task_id, ref.phase, ref.token.attempt, ref.token.lease_epoch
        )


@dataclass(frozen=True, slots=True)
class PreviousError:
    """Why the previous attempt of this task failed (`TaskContext.previous_error`)."""

    type: str
    message: str
    details: dict[str, Any]

    @classmethod
    def of(cls, error: execution_pb2.ErrorInfo) -> PreviousError:
        return cls(error.type, error.message, from_struct(error.details))


class AttemptInfo(NamedTuple):
    """What a dispatch says about its attempt; one per attempt, read-only. (A tuple:
    it is built for every dispatch, and a frozen dataclass costs ~1.5 us more.)"""

    execution_id: str
    task_id: str
    attempt: int
    lease_epoch: int
    idempotency_key: str
    task_type: str
    workflow_name: str
    secrets: Mapping[str, str]
    trace_context: Mapping[str, str]
    deadline: datetime | None
    previous_error: PreviousError | None = None


# A chunk larger than this is split (text, bytes) or refused (JSON): the server takes
# at most 64 KiB per chunk. 16,384 characters are at most 64 KiB of UTF-8.
MAX_CHUNK_BYTES = 64 * 1024
_MAX_CHUNK_CHARS = MAX_CHUNK_BYTES // 4


def chunks_of(chunk: str | bytes | Any) -> list[worker_service_pb2.TaskStreamChunk]:
    """`chunk` as TaskStreamChunks (attempt not set): str -> text, bytes -> data,
    anything else JSON-like -> json; text and bytes above the limit are split."""
    if isinstance(chunk, str):
        return [
            worker_service_pb2.TaskStreamChunk(text=chunk[i : i + _MAX_CHUNK_CHARS])
            for i in range(0, max(len(chunk), 1), _MAX_CHUNK_CHARS)
        ]
    if isinstance(chunk, bytes | bytearray | memoryview):
        data = bytes(chunk)
        return [
            worker_service_pb2.TaskStreamChunk(data=data[i : i + MAX_CHUNK_BYTES])
            for i in range(0, max(len(data), 1), MAX_CHUNK_BYTES)
        ]
    value = to_value(chunk)
    if value.ByteSize() > MAX_CHUNK_BYTES:
        raise ValueError(f"a JSON chunk is at most {MAX_CHUNK_BYTES} bytes; split it")
    return [worker_service_pb2.TaskStreamChunk(json=value)]


_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def attribute_problem(name: str, value: Any) -> str:
    """Why the server would refuse a search attribute a task sets ("" if it would not):
    checked here so the handler gets the error where it made the mistake."""
    if not _ATTRIBUTE_NAME.match(name):
        return "a name matches [A-Za-z_][A-Za-z0-9_]* and is at most 64 characters"
    if name.startswith("execplan_"):
        return "names starting with 'execplan_' belong to the server"
    if isinstance(value, str) and len(value.encode()) > 1024:
        return "a string value is at most 1024 bytes"
    return ""


class TaskContext:
    """Passed as the second argument to handlers that accept two parameters."""

    def __init__(
        self,
        info: AttemptInfo,
        on_heartbeat: Callable[[], None],
        on_usage: Callable[[int, execution_pb2.Usage], None] = lambda _seq, _usage: None,
        on_chunks: Callable[[list[worker_service_pb2.TaskStreamChunk]], None] | None = None,
    ) -> None:
        self._info = info
        self._on_heartbeat = on_heartbeat
        self._on_usage = on_usage
        self._on_chunks = on_chunks
        # Reports of this attempt are numbered 1, 2, ... (the executor counts each once).
        self._usage_lock = threading.Lock()
        self._usage_reports = 0
        # Set once by the stream thread, read by the handler's: a plain attribute.
        self._cancelled = False
        self._progress: struct_pb2.Value | None = None
        self._progress_dirty = False
        self._lock = threading.Lock()
        self._attributes: dict[str, execution_pb2.SearchAttributeValue] = {}
        # Bound lazily by wait_cancelled() to the loop the handler awaits on.
        self._waiter_loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Event | None = None

    # -- what the attempt is --------------------------------------------------------
    @property
    def execution_id(self) -> str:
        return self._info.execution_id

    @property
    def task_id(self) -> str:
        return self._info.task_id

    @property
    def attempt(self) -> int:
        return self._info.attempt

    @property
    def lease_epoch(self) -> int:
        return self._info.lease_epoch

    @property
    def idempotency_key(self) -> str:
        """Stable across re-leases of this attempt: use it for side effects."""
        return self._info.idempotency_key

    @property
    def task_type(self) -> str:
        return self._info.task_type

    @property
    def workflow_name(self) -> str:
        return self._info.workflow_name

    @property
    def secrets(self) -> dict[str, str]:
        return dict(self._info.secrets)

    @property
    def trace_context(self) -> dict[str, str]:
        return dict(self._info.trace_context)

    @property
    def deadline(self) -> datetime | None:
        """start_to_close deadline (UTC), if the task has one."""
        return self._info.deadline

    @property
    def previous_error(self) -> PreviousError | None:
        """The error of this task's previous attempt (`.type`, `.message`, `.details`),
        None on a first attempt. A dynamic task whose sub-plan was refused finds
        `PlanInvalid` here, with the planner's diagnostics in `.details`."""
        return self._info.previous_error

    # -- talking back -------------------------------------------------------------------
    def heartbeat(self, progress: Any = None) -> None:
        """Record progress (JSON-like) for the next heartbeat and ask for an early send.

        Heartbeats flow without this call: the SDK sends one for every running attempt
        each interval. Calling it is for reporting progress promptly.
        """
        if progress is not None:
            self._progress = to_value(progress)
            self._progress_dirty = True
        self._on_heartbeat()

    def usage(
        self,
        tokens_in: float | None = None,
        tokens_out: float | None = None,
        cost: float | None = None,
        **counters: float,
    ) -> None:
        """Report what this attempt used since the last call (amounts add up): tokens,
        money and any counter of your own (`searches=1`). Sent at once and counted even
        if the handler then raises or times out (docs/usage.md). Raises ValueError or
        TypeError for a bad name or amount."""
        message = usage_message(
            {"tokens_in": tokens_in, "tokens_out": tokens_out, "cost": cost, **counters}
        )
        if message is not None:
            with self._usage_lock:  # handlers may report from several threads
                self._usage_reports += 1
                self._on_usage(self._usage_reports, message)

    def stream(self, chunk: str | bytes | Any) -> None:
        """Send partial output (LLM tokens, log lines) to whoever watches the execution
        now (`execplan watch ID --stream`, `client.watch(..., stream=True)`). Text
        (str), bytes, or a JSON-like value; returns at once (thread-safe). Chunks are
        live only, never stored: the handler's return value stays the task's output.
        If the connection cannot keep up (8 MiB waiting), newer chunks are dropped."""
        if self._on_chunks is None or self._cancelled:
            return
        self._on_chunks(chunks_of(chunk))

    def set_search_attributes(
        self, attributes: Mapping[str, Any] | None = None, **more: Any
    ) -> None:
        """Set search attributes of the execution, e.g. `ctx.set_search_attributes(
        customer="acme", priority=3)`; None removes one. Sent with the next heartbeat
        (asked for now) or with the result, whichever leaves first, and recorded as
        an event of the execution. Types: str, int, float, bool, aware datetime."""
        given = {**(attributes or {}), **more}
        for name, value in given.items():
            problem = attribute_problem(name, value)
            if problem:
                raise ValueError(f"search attribute {name!r}: {problem}")
        converted = to_search_attributes(given)
        with self._lock:
            self._attributes.update(converted)
        self._on_heartbeat()

    @property
    def cancelled(self) -> bool:
        """True once the executor cancelled this attempt; sync handlers should poll it."""
        return self._cancelled

    async def wait_cancelled(self) -> None:
        """Return when the attempt is cancelled (for async handlers racing other work)."""
        if self._waiter is None:
            self._waiter_loop = asyncio.get_running_loop()
            self._waiter = asyncio.Event()
            if self._cancelled:
                self._waiter.set()
        await self._waiter.wait()

    # -- SDK internals -------------------------------------------------------------------
    def take_progress(self, *, only_dirty: bool) -> tuple[bool, struct_pb2.Value | None]:
        """(include?, latest progress) for a heartbeat; clears the dirty mark. Every
        heartbeat repeats the latest progress (a lost message loses nothing); the
        executor records it only when it changed."""
        dirty, self._progress_dirty = self._progress_dirty, False
        pending = bool(self._attributes)
        return (dirty or pending or not only_dirty), self._progress

    def take_search_attributes(self) -> dict[str, execution_pb2.SearchAttributeValue]:
        """The attributes set since the last take (for a heartbeat or the result)."""
        with self._lock:
            taken, self._attributes = self._attributes, {}
        return taken

    def cancel(self) -> None:
        """Called from the stream thread."""
        self._cancelled = True
        loop, waiter = self._waiter_loop, self._waiter
        if loop is not None and waiter is not None:
            # RuntimeError: the handler's loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(waiter.set)
