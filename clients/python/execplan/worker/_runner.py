"""Runs handlers where they belong and reports their outcome to the stream thread.

* async handlers run as tasks on the user's event loop (the loop `serve()` runs on);
* sync handlers run in a ThreadPoolExecutor sized to the worker's slots;
* isolated attempts (the task's `resources.isolate`, or a handler registered with
  `isolate=True`) run in a child process with enforced limits (`_isolate.py`),
  waited for on a pool thread.

`Runner.start` is called on the stream thread; it hops to the right place with
thread-safe calls only (async handlers through one Handoff, so the dispatches of
one stream message wake the user loop once). A sync handler's pool thread reports
its result straight to the stream thread, so a busy user loop never delays sync
results.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from execplan import hops
from execplan.client.values import from_struct, to_value
from execplan.v1 import execution_pb2, worker_service_pb2

from ._context import AttemptKey, TaskContext
from ._handoff import Handoff
from ._isolate import run_isolated
from ._subplan import SubPlan
from ._tracing import handler_span
from ._usage import Output, usage_message

_log = logging.getLogger("execplan.worker")

Report = Callable[[AttemptKey, worker_service_pb2.TaskResult], None]


@dataclass(frozen=True, slots=True)
class Handler:
    task_type: str
    fn: Callable[..., Any]
    is_async: bool
    takes_context: bool
    isolate: bool = False

    @classmethod
    def wrap(cls, task_type: str, fn: Callable[..., Any], *, isolate: bool = False) -> Handler:
        return cls(task_type, fn, inspect.iscoroutinefunction(fn), _takes_context(fn), isolate)


def _takes_context(fn: Callable[..., Any]) -> bool:
    """True when fn accepts (inputs, ctx); False for fn(inputs)."""
    positional = 0
    for param in inspect.signature(fn).parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if param.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    if positional == 0:
        raise TypeError(f"handler {fn!r} must accept (inputs) or (inputs, ctx)")
    return positional >= 2


MAX_RETRY_AFTER_S = 3600.0


def make_error(
    kind: str, message: str, *, retryable: bool, retry_after: float | None = None
) -> execution_pb2.ErrorInfo:
    """An ErrorInfo as the executor reads it: `retry` decides. `retryable` says the
    same for servers that predate `retry` (they read only that field). `retry_after`
    (seconds, e.g. a provider's 429) makes the executor back off the task's keys."""
    retry = (
        execution_pb2.ERROR_RETRY_RETRYABLE
        if retryable
        else execution_pb2.ERROR_RETRY_NON_RETRYABLE
    )
    # protobuf refuses a str that is not valid Unicode (a lone surrogate: a file name
    # decoded with surrogateescape in an OSError's message, say): escaped, so the
    # error still reaches the executor instead of the attempt losing its result.
    kind = kind.encode("utf-8", "backslashreplace").decode("utf-8")
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    info = execution_pb2.ErrorInfo(type=kind, message=message, retryable=retryable, retry=retry)
    if retry_after is not None and retry_after >= 0:
        info.retry_after.FromMilliseconds(math.ceil(min(retry_after, MAX_RETRY_AFTER_S) * 1000))
    return info


def error_info(exc: BaseException) -> execution_pb2.ErrorInfo:
    # NonRetryableError sets `retryable = False` as a class attribute, so one
    # getattr covers it, its subclasses and any third-party exception doing the same;
    # RateLimited (or anything with a numeric `retry_after`) carries its wait.
    try:
        retryable = getattr(exc, "retryable", True) is not False
        retry_after = getattr(exc, "retry_after", None)
        message = str(exc)
    except Exception:  # its str() (or a property) raises: the type still says what failed
        retryable, retry_after = True, None
        message = f"({type(exc).__name__}: its message could not be read)"
    if not isinstance(retry_after, int | float) or isinstance(retry_after, bool):
        retry_after = None
    return make_error(type(exc).__name__, message, retryable=retryable, retry_after=retry_after)


def encode_output(ref: worker_service_pb2.AttemptRef, output: Any) -> worker_service_pb2.TaskResult:
    usage = None
    try:
        if isinstance(output, Output):
            usage = _output_usage(output)
            output = output.value
        if isinstance(output, SubPlan):
            result = worker_service_pb2.TaskResult(attempt=ref, sub_plan=output.encode())
        else:
            result = worker_service_pb2.TaskResult(attempt=ref, output=to_value(output))
    except (TypeError, ValueError, OverflowError) as exc:
        # Retrying cannot make the return value serialisable. Besides TypeError (not
        # JSON-like), protobuf refuses an int too large for a double (OverflowError)
        # and a str that is not valid Unicode (UnicodeEncodeError, a ValueError):
        # left uncaught, those ended the handler's task with no result at all.
        error = make_error(
            "OutputEncodingError",
            f"handler returned {type(output).__name__}: {exc}",
            retryable=False,
        )
        return worker_service_pb2.TaskResult(attempt=ref, error=error)
    except Exception as exc:
        # Reading the output raised (a Mapping whose items fail, say): the attempt
        # fails as if the handler had raised it, instead of sending no result at all.
        return encode_error(ref, exc)
    if usage is not None:
        result.usage.CopyFrom(usage)
    return result


def _output_usage(output: Output) -> execution_pb2.Usage | None:
    try:
        return usage_message(output.usage or {})
    except ValueError as exc:  # a bad counter name or amount: as a bad output
        raise TypeError(f"Output.usage: {exc}") from exc


def encode_error(
    ref: worker_service_pb2.AttemptRef, exc: BaseException
) -> worker_service_pb2.TaskResult:
    return worker_service_pb2.TaskResult(attempt=ref, error=error_info(exc))


@dataclass(slots=True)
class _AsyncRun:
    task: asyncio.Task[None] | None = None


@dataclass
class Runner:
    handlers: dict[str, Handler]
    loop: asyncio.AbstractEventLoop
    pool: ThreadPoolExecutor
    report: Report
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Starts and cancels of async handlers, in order, onto the user loop.
    _to_loop: Handoff = field(init=False)

    def __post_init__(self) -> None:
        self._to_loop = Handoff(self.loop)

    def start(self, dispatch: worker_service_pb2.Dispatch, ctx: TaskContext) -> Callable[[], None]:
        """Start the handler (called on the stream thread); returns a canceller."""
        handler = self.handlers.get(dispatch.task_type)
        if handler is None:
            # Another worker may have this type, so the attempt stays retryable.
            exc = LookupError(f"no handler registered for task type {dispatch.task_type!r}")
            result = encode_error(dispatch.attempt, exc)
            result.error.type = "UnknownTaskType"
            self.report(AttemptKey.of(dispatch.attempt), result)
            return lambda: None
        if handler.isolate or dispatch.resources.isolate:
            self.pool.submit(self._run_isolated, handler, dispatch, ctx)
            return lambda: None  # the waiting thread kills the child once cancelled
        if not handler.is_async:
            self.pool.submit(self._run_sync, handler, dispatch, ctx)
            return lambda: None  # sync handlers poll ctx.cancelled
        run = _AsyncRun()
        self._to_loop.call(self._start_async, handler, dispatch, ctx, run)
        return lambda: self._threadsafe(self._cancel_async, run)

    def cancel_all(self) -> None:
        """Cancel every async handler task; call on the user loop."""
        for task in list(self._tasks):
            task.cancel()

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        # RuntimeError: the user loop is closed, its tasks are gone anyway.
        with contextlib.suppress(RuntimeError):
            self._to_loop.call(fn, *args)

    def _run_sync(
        self, handler: Handler, dispatch: worker_service_pb2.Dispatch, ctx: TaskContext
    ) -> None:
        key = AttemptKey.of(dispatch.attempt)
        if ctx.cancelled:
            return
        if hops.ON:
            hops.mark("worker.handler")
        try:
            inputs = from_struct(dispatch.inputs)
            with handler_span(dispatch):
                output = handler.fn(inputs, ctx) if handler.takes_context else handler.fn(inputs)
        except Exception as exc:
            self.report(key, encode_error(dispatch.attempt, exc))
        else:
            self.report(key, encode_output(dispatch.attempt, output))

    def _run_isolated(
        self, handler: Handler, dispatch: worker_service_pb2.Dispatch, ctx: TaskContext
    ) -> None:
        key = AttemptKey.of(dispatch.attempt)
        if ctx.cancelled:
            return
        try:
            inputs = from_struct(dispatch.inputs)
            with handler_span(dispatch):
                outcome = run_isolated(handler.fn, handler.takes_context, inputs, dispatch, ctx)
        except Exception as exc:  # the child could not even start
            self.report(key, encode_error(dispatch.attempt, exc))
            return
        if outcome is None:
            return  # cancelled: no result, as for any cancelled attempt
        if outcome.error is None:
            self.report(key, encode_output(dispatch.attempt, outcome.output))
            return
        kind, message, retryable, retry_after = outcome.error
        error = make_error(kind, message, retryable=retryable, retry_after=retry_after)
        self.report(key, worker_service_pb2.TaskResult(attempt=dispatch.attempt, error=error))

    def _start_async(
        self,
        handler: Handler,
        dispatch: worker_service_pb2.Dispatch,
        ctx: TaskContext,
        run: _AsyncRun,
    ) -> None:
        if ctx.cancelled:
            return
        task = self.loop.create_task(self._run_async(handler, dispatch, ctx))
        run.task = task
        # Keep a strong reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _cancel_async(run: _AsyncRun) -> None:
        if run.task is not None:
            run.task.cancel()

    async def _run_async(
        self, handler: Handler, dispatch: worker_service_pb2.Dispatch, ctx: TaskContext
    ) -> None:
        key = AttemptKey.of(dispatch.attempt)
        if hops.ON:
            hops.mark("worker.handler")
        try:
            inputs = from_struct(dispatch.inputs)
            with handler_span(dispatch):
                if handler.takes_context:
                    output = await handler.fn(inputs, ctx)
                else:
                    output = await handler.fn(inputs)
        except asyncio.CancelledError:
            # Cancelled by the executor or by stop(): no result is sent either way.
            raise
        except Exception as exc:
            self.report(key, encode_error(dispatch.attempt, exc))
        else:
            self.report(key, encode_output(dispatch.attempt, output))
