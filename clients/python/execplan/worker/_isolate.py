"""Isolated attempts: a handler run in a child process whose memory and CPU time are
enforced, for tasks that ask for it (`resources: {memory: 256Mi, cpu: 1, isolate: true}`
in the workflow, or `@worker.task("t", isolate=True)`).

    result = run_isolated(handler, dispatch, ctx)     # on a pool thread; blocks

The child comes from a fork server (multiprocessing's "forkserver": a clean process
started once, before any gRPC thread, that forks a child per attempt), imports the
handler's module by name and calls it. Limits, set in the child before the handler
runs (Linux `setrlimit`):

- memory: RLIMIT_AS = the child's address space at start + `memory_bytes`, so the
  handler itself may allocate `memory_bytes` (the interpreter it starts from is not
  counted). Going over raises MemoryError in the handler, or kills the child.
- CPU time: RLIMIT_CPU = cpu x the time left to the start_to_close deadline (a task
  asking for half a core for 10 s gets 5 CPU seconds); no deadline, no CPU limit.

Either way the attempt fails with error type `ResourceExhausted` (not retried: the
next attempt gets the same limits) and a message naming the limit. The child cannot
call back into the worker: `ctx.heartbeat(progress)` is relayed through a pipe, and a
cancelled attempt kills the child. Without isolation (the in-process path, sync or
async) `resources` are only used for placement: the SDK cannot bound one handler's
memory inside a shared process, so those limits are advisory there.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from execplan.v1 import worker_service_pb2

from ._context import TaskContext

POLL_S = 0.05
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    memory_bytes: int = 0
    cpu_seconds: int = 0

    def describe_memory(self) -> str:
        return f"memory limit of {self.memory_bytes / MIB:.0f} MiB"

    def describe_cpu(self) -> str:
        return f"CPU time limit of {self.cpu_seconds} s"


def limits_of(dispatch: worker_service_pb2.Dispatch) -> Limits:
    r = dispatch.resources
    cpu_seconds = 0
    if r.cpu_millis and dispatch.HasField("start_to_close_deadline"):
        deadline = dispatch.start_to_close_deadline.ToDatetime(tzinfo=UTC)
        left = max((deadline - datetime.now(UTC)).total_seconds(), 0.0)
        cpu_seconds = max(1, math.ceil(left * r.cpu_millis / 1000))
    return Limits(r.memory_bytes, cpu_seconds)


class ChildContext:
    """What an isolated handler gets as `ctx`: the attempt's facts and heartbeat."""

    def __init__(self, facts: dict[str, Any], conn: multiprocessing.connection.Connection) -> None:
        self._facts = facts
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        try:
            return self._facts[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def cancelled(self) -> bool:
        return False  # a cancelled attempt's child is killed

    def heartbeat(self, progress: Any = None) -> None:
        self._conn.send(("heartbeat", progress))


def _address_space() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True, slots=True)
class _Job:
    """What the child needs, pickled to it: the handler by name, never by value."""

    module: str
    qualname: str
    inputs: Any
    facts: dict[str, Any]
    takes_context: bool
    limits: Limits


def _child(job: _Job, conn: multiprocessing.connection.Connection) -> None:
    """The child's entry point (runs in the forked process)."""
    import resource  # noqa: PLC0415  (POSIX only: imported where it is used)

    limits, inputs = job.limits, job.inputs
    try:
        fn: Any = __import__(job.module, fromlist=["_"])
        for part in job.qualname.split("."):
            fn = getattr(fn, part)
        if limits.memory_bytes:
            cap = _address_space() + limits.memory_bytes
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        if limits.cpu_seconds:
            # SIGXCPU at the soft limit ends the process (default action); the hard
            # limit one second later is SIGKILL if a handler ignores it.
            spent = math.ceil(time.process_time())
            soft = spent + limits.cpu_seconds
            resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
        args = (inputs, ChildContext(job.facts, conn)) if job.takes_context else (inputs,)
        output = fn(*args)
        if inspect.isawaitable(output):
            output = asyncio.run(_awaited(output))
        conn.send(("ok", output))
    except MemoryError:
        conn.send(("memory", ""))
    except BaseException as exc:
        retryable = getattr(exc, "retryable", True) is not False
        retry_after = getattr(exc, "retry_after", None)
        if not isinstance(retry_after, int | float) or isinstance(retry_after, bool):
            retry_after = None  # as error_info: the parent's make_error takes a number
        try:
            conn.send(("error", type(exc).__name__, str(exc), retryable, retry_after))
        except MemoryError:
            conn.send(("memory", ""))
    finally:
        conn.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


_CONTEXT: Any = None


def _mp() -> Any:
    """The multiprocessing context of isolated attempts (one fork server per worker)."""
    global _CONTEXT  # noqa: PLW0603
    if _CONTEXT is None:
        methods = multiprocessing.get_all_start_methods()
        _CONTEXT = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return _CONTEXT


class Outcome:
    """What the isolated run ended with (the parent turns it into a TaskResult)."""

    def __init__(
        self,
        output: Any = None,
        *,
        error: tuple[str, str, bool, float | None] | None = None,
    ) -> None:
        self.output = output
        self.error = error


def run_isolated(
    fn: Callable[..., Any],
    takes_context: bool,
    inputs: Any,
    dispatch: worker_service_pb2.Dispatch,
    ctx: TaskContext,
) -> Outcome | None:
    """Run `fn` in a child process under the dispatch's limits; None when cancelled."""
    limits = limits_of(dispatch)
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<" in qualname or (module == "__main__" and not _main_importable()):
        return Outcome(
            error=(
                "IsolationUnavailable",
                f"handler {qualname or fn!r} is not importable by name "
                f"(module {module!r}); isolated handlers must be top-level functions",
                False,
                None,
            )
        )
    facts = {
        "execution_id": ctx.execution_id,
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "lease_epoch": ctx.lease_epoch,
        "idempotency_key": ctx.idempotency_key,
        "task_type": ctx.task_type,
        "workflow_name": ctx.workflow_name,
        "secrets": ctx.secrets,
        "deadline": ctx.deadline,
        "previous_error": ctx.previous_error,
    }
    mp = _mp()
    parent, child = mp.Pipe(duplex=False)
    proc = mp.Process(
        target=_child,
        args=(_Job(module, qualname, inputs, facts, takes_context, limits), child),
        name=f"execplan-isolated-{ctx.task_id}",
        daemon=True,
    )
    proc.start()
    child.close()
    try:
        return _wait(proc, parent, ctx, limits)
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)


def _main_importable() -> bool:
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None))


def _wait(
    proc: multiprocessing.process.BaseProcess,
    conn: multiprocessing.connection.Connection,
    ctx: TaskContext,
    limits: Limits,
) -> Outcome | None:
    while True:
        if ctx.cancelled:
            proc.kill()
            return None
        if conn.poll(POLL_S):
            try:
                message = conn.recv()
            except EOFError:
                break  # the child died without a word: see its exit below
            kind = message[0]
            if kind == "heartbeat":
                ctx.heartbeat(message[1])
                continue
            if kind == "ok":
                return Outcome(message[1])
            if kind == "memory":
                return _exhausted(limits.describe_memory() + " exceeded (MemoryError)")
            _, type_name, text, retryable, retry_after = message
            return Outcome(error=(type_name, text, retryable, retry_after))
        if not proc.is_alive():
            break
    proc.join(timeout=5)
    code = proc.exitcode
    if code is not None and code < 0:
        sig = signal.Signals(-code)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and limits.cpu_seconds:
            return _exhausted(f"{limits.describe_cpu()} exceeded (killed by {sig.name})")
        if limits.memory_bytes:
            return _exhausted(
                f"the isolated process died ({sig.name}) under its {limits.describe_memory()}"
            )
        return Outcome(error=("IsolatedProcessDied", f"killed by {sig.name}", True, None))
    return Outcome(
        error=("IsolatedProcessDied", f"exited with status {code} without a result", True, None)
    )


def _exhausted(message: str) -> Outcome:
    return Outcome(error=("ResourceExhausted", message, False, None))
