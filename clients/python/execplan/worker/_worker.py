"""Worker: register handlers, connect, run attempts, drain on SIGTERM.

    worker = Worker()                                  # $EXECPLAN_ADDRESS or 127.0.0.1:7070
                                                       # "h1:7070,h2:7070": every replica

    @worker.task("payments.charge")
    async def charge(inputs: dict, ctx: TaskContext) -> dict:
        ctx.heartbeat({"step": "authorising"})
        return {"charged": inputs["amount"]}

    worker.run()                                       # blocks; SIGTERM/SIGINT drain

Lifecycle: `serve()` runs until a drain completes (`drain()`, or the first
SIGTERM/SIGINT under `run()`), `stop()` ends it at once (second signal); both
interrupt any reconnect wait at once. A server that shuts down (its `drain`) is not
the end: running attempts finish and are delivered, then the worker reconnects and
is back as soon as the server listens again (docs/contract.md, "Client retries").
A fatal connection error (INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED) is
raised from `serve()` / `run()` as an `execplan.client.errors` exception.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from execplan.client._channel import Security

from ._capacity import Capacity
from ._capacity import encode as encode_capacity
from ._group import StreamGroup, split_addresses, split_slots
from ._runner import Handler, Runner
from ._stream import StreamConfig, StreamThread

_log = logging.getLogger("execplan.worker")

_F = TypeVar("_F", bound=Callable[..., Any])


def default_worker_id() -> str:
    # Stable for the life of the process, unique across restarts: the executor
    # reconciles a reconnect by this id.
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        address: str | None = None,
        *,
        worker_id: str | None = None,
        slots: int = 8,
        labels: Mapping[str, str] | None = None,
        environment: str = "",
        concurrency: int | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        """`tls_*` (PEM paths) and `token` default to $EXECPLAN_TLS_CA/_CERT/_KEY and
        $EXECPLAN_TOKEN; none of them: plaintext (docs/security.md). `capacity`:
        what tasks' `resources` may take here at once, e.g. `{"cpu": 8, "memory":
        "16Gi", "gpu": 1, "model-slots": 2}`; default: this machine's cores and
        memory, no GPU (`_capacity.py`)."""
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.address = address
        self.worker_id = worker_id or default_worker_id()
        self.slots = slots
        self.labels = dict(labels or {})
        self.environment = environment
        # Threads for sync handlers; defaults to slots so every slot can run one.
        self.concurrency = concurrency or slots
        self.security = Security(tls_ca, tls_cert, tls_key, token)
        self.capacity = encode_capacity(capacity)  # checked now: a typo fails here
        self._handlers: dict[str, Handler] = {}
        self._stream: StreamGroup | None = None
        self._finished: asyncio.Future[None] | None = None
        self._signals = 0

    @property
    def task_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def task(self, task_type: str, *, isolate: bool = False) -> Callable[[_F], _F]:
        """Register the decorated function (async or plain) as the handler of a type.

        `isolate=True` runs every attempt in a child process whose memory and CPU
        time are enforced from the task's `resources` (`_isolate.py`); tasks may also
        ask for it themselves (`resources.isolate`). An isolated handler must be a
        top-level function of an importable module."""

        def register(fn: _F) -> _F:
            if task_type in self._handlers:
                raise ValueError(f"task type {task_type!r} already has a handler")
            self._handlers[task_type] = Handler.wrap(task_type, fn, isolate=isolate)
            return fn

        return register

    def run(self) -> None:
        """Serve until drained; SIGTERM/SIGINT drain, a second one stops at once."""
        asyncio.run(self._run_with_signals())

    async def serve(self) -> None:
        if self._stream is not None:
            raise RuntimeError("this worker is already serving")
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="execplan-task")
        # A comma list of addresses: one stream per executor replica (_group.py).
        addresses = split_addresses(self.address)
        streams, runners = [], []
        for address, slots in zip(addresses, split_slots(self.slots, len(addresses)), strict=True):
            config = StreamConfig(
                address=address,
                worker_id=self.worker_id,
                task_types=self.task_types,
                labels=self.labels,
                environment=self.environment,
                slots=slots,
                security=self.security,
                # Every replica gets the whole capacity: each places on its own, so
                # with N replicas a worker may be offered up to N times it.
                capacity=self.capacity,
            )
            stream = StreamThread(config)
            streams.append(stream)
            runners.append(Runner(dict(self._handlers), loop, pool, report=stream.submit_result))
        group = StreamGroup(streams)
        self._stream = group
        self._finished = asyncio.wrap_future(group.finished)
        for stream, runner in zip(streams, runners, strict=True):
            stream.start(runner.start)
        try:
            await asyncio.shield(self._finished)
        finally:
            group.stop()
            for runner in runners:
                runner.cancel_all()
            # Sync handlers cannot be interrupted; their threads end when they return.
            pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.wait([self._finished])
            group.join(timeout=1.0)
            self._stream = None

    async def drain(self, reason: str = "drain requested") -> None:
        """Take no new work, finish running attempts, deliver results, then return."""
        if self._stream is None or self._finished is None:
            return
        self._stream.drain(reason)
        await asyncio.wait([self._finished])

    async def stop(self) -> None:
        """End now: running attempts are abandoned and re-leased by the executor."""
        if self._stream is None or self._finished is None:
            return
        self._stream.stop()
        await asyncio.wait([self._finished])

    async def _run_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or a platform without signals
            installed.append(sig)
        try:
            await self.serve()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        stream = self._stream
        if stream is None:
            return
        if self._signals == 1:
            _log.info("%s: draining (send again to stop at once)", sig.name)
            stream.drain(sig.name)
        else:
            _log.info("%s again: stopping now", sig.name)
            stream.stop()
