"""The JSON event log: one structured log line per execution start and end and per
failed, timed-out or retried attempt (successes at DEBUG; at WARNING only the
failures and the executions that did not succeed), from committed events.

    engine.observers.add(EventLogObserver())     # done by ExecutorComponent

Each line carries the ids `execplan.logs.JsonFormatter` prints (`execution_id`,
`task_id`, `attempt`, and the `trace_id` of the execution's trace context), so
`--log-format json` output can be joined with traces and `execplan history`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from execplan.executor.observability.observer import EngineObserver
from execplan.executor.state import ExecutionState, execution_state_name
from execplan.executor.task_errors import timeout_name
from execplan.v1 import events_pb2 as ev


def trace_id_of(trace_context: dict[str, str]) -> str:
    """The trace id in a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`)."""
    parts = trace_context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


# The kinds that may make a line at WARNING (failures; an execution that did not
# succeed), at INFO (starts, ends, retries) and at DEBUG (successes too).
_WARNING_KINDS = frozenset({"execution_completed", "task_failed", "task_timed_out"})
_INFO_KINDS = _WARNING_KINDS | {"execution_started", "task_retry_scheduled"}
_DEBUG_KINDS = _INFO_KINDS | {"task_succeeded"}


# Python 3.11's `LogRecord.__init__` (which `Records` copies; later versions add
# fields and compute the time differently, so they take the library's way).
_COPIED_INIT = sys.version_info < (3, 12)


class Records:
    """The event log's records, as `Logger.makeRecord` makes them, for less.

    `LogRecord.__init__` works out the same things for every line (the file name
    and module of `pathname`, the thread, its name, the process and its name):
    ~3 us, half the cost of a line. Here they come from a template record, made
    again whenever one of them may differ (another thread, a renamed thread, a
    forked process, logging's switches for them), and each line sets only its own
    fields, computed as `LogRecord.__init__` computes them. A record factory
    installed with `logging.setLogRecordFactory`, a Logger class with a
    `makeRecord` of its own and a Python other than 3.11 get the library's way.
    `tests/observability/test_logs.py` checks that both ways make the same record.
    """

    __slots__ = ("_key", "_taken", "_template")

    def __init__(self) -> None:
        self._key: tuple[object, ...] = ()
        self._template: dict[str, Any] = {}
        self._taken: frozenset[str] = frozenset()

    def make(
        self,
        log: logging.Logger,
        level: int,
        message: str,
        args: tuple[object, ...],
        ids: dict[str, Any],
    ) -> logging.LogRecord:
        """`log.makeRecord(log.name, level, __file__, 0, message, args, None,
        "committed", ids)`; `args` is never a single mapping (which LogRecord unpacks)."""
        if (
            not _COPIED_INIT
            or logging.getLogRecordFactory() is not logging.LogRecord
            or type(log).makeRecord is not logging.Logger.makeRecord
        ):
            return log.makeRecord(
                log.name, level, __file__, 0, message, args, None, "committed", ids
            )
        thread = threading.current_thread()
        key = (
            thread.ident,
            thread.name,
            _forks[0],
            log.name,
            logging.logThreads,
            logging.logProcesses,
            logging.logMultiprocessing,
        )
        if key != self._key:
            base = logging.LogRecord(log.name, level, __file__, 0, "", (), None, "committed")
            self._template = dict(vars(base))
            self._taken = frozenset(self._template) | {"message", "asctime"}
            self._key = key
        if not self._taken.isdisjoint(ids):  # as makeRecord refuses `extra`
            taken = next(name for name in ids if name in self._taken)
            raise KeyError(f"Attempt to overwrite {taken!r} in LogRecord")
        created = time.time()
        fields = dict(self._template)  # in LogRecord's order: a line's own fields keep it
        fields["msg"] = message
        fields["args"] = args
        fields["levelname"] = logging.getLevelName(level)
        fields["levelno"] = level
        fields["created"] = created
        fields["msecs"] = int((created - int(created)) * 1000) + 0.0
        fields["relativeCreated"] = (created - _START_TIME) * 1000
        fields.update(ids)
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__ = fields
        return record


# When logging was imported: `LogRecord.relativeCreated` counts from it.
_START_TIME: float = getattr(logging, "_startTime", 0.0)
# Forks of this process so far (a child makes its template again: its pid differs).
_forks = [0]


def _forked() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


class EventLogObserver(EngineObserver):
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("execplan.events")
        self._records = Records()

    def committed(self, state: ExecutionState, events: Sequence[ev.ExecutionEvent]) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            logged = _DEBUG_KINDS
        elif self.log.isEnabledFor(logging.INFO):
            logged = _INFO_KINDS
        elif self.log.isEnabledFor(logging.WARNING):
            logged = _WARNING_KINDS
        else:
            return
        kinds = [event.WhichOneof("kind") for event in events]
        if logged.isdisjoint(kinds):  # most rounds of most executions: nothing to log
            return
        base = {"execution_id": state.execution_id}
        trace_id = trace_id_of(state.trace_context)
        if trace_id:
            base["trace_id"] = trace_id
        for event, kind in zip(events, kinds, strict=True):
            if kind == "execution_started":
                self._line(
                    logging.INFO, "execution of %s started", (state.plan.workflow_name,), base
                )
            elif kind == "execution_completed":
                done = event.execution_completed
                outcome = execution_state_name(done.state)
                detail = f": {done.error.type}: {done.error.message}" if done.error.type else ""
                level = logging.INFO if outcome == "SUCCEEDED" else logging.WARNING
                self._line(level, "execution ended %s%s", (outcome, detail), base)
            elif kind == "task_failed":
                f = event.task_failed
                self._line(
                    logging.WARNING,
                    "task %s %s: %s: %s",
                    (
                        f.task_id,
                        "failed" if f.final else "attempt failed",
                        f.error.type,
                        f.error.message,
                    ),
                    {**base, "task_id": f.task_id, "attempt": f.token.attempt},
                )
            elif kind == "task_timed_out":
                t = event.task_timed_out
                self._line(
                    logging.WARNING,
                    "task %s timed out (%s)",
                    (t.task_id, timeout_name(t.timeout)),
                    {**base, "task_id": t.task_id, "attempt": t.token.attempt},
                )
            elif kind == "task_retry_scheduled":
                r = event.task_retry_scheduled
                self._line(
                    logging.INFO,
                    "task %s will retry: %s",
                    (r.task_id, r.reason),
                    {**base, "task_id": r.task_id, "attempt": r.next_attempt},
                )
            elif kind == "task_succeeded":
                s = event.task_succeeded
                self._line(
                    logging.DEBUG,
                    "task %s succeeded",
                    (s.task_id,),
                    {**base, "task_id": s.task_id, "attempt": s.token.attempt},
                )

    def _line(
        self, level: int, message: str, args: tuple[object, ...], ids: dict[str, Any]
    ) -> None:
        """`self.log.log(level, message, *args, extra=ids)` without looking up the caller
        (a walk of the stack per line: ~20% of a line's cost at one line per execution
        start and end). The record names this module and `committed` as its origin."""
        log = self.log
        if log.isEnabledFor(level):
            log.handle(self._records.make(log, level, message, args, ids))
