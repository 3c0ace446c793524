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
from collections.abc import Sequence
from typing import Any

from execplan.executor.observability.observer import Commit, EngineObserver
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


class EventLogObserver(EngineObserver):
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("execplan.events")

    def committed(self, commits: Sequence[Commit]) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            logged = _DEBUG_KINDS
        elif self.log.isEnabledFor(logging.INFO):
            logged = _INFO_KINDS
        elif self.log.isEnabledFor(logging.WARNING):
            logged = _WARNING_KINDS
        else:
            return
        for state, events, kinds, _ in commits:
            if not logged.isdisjoint(kinds):  # most executions of a round: nothing to log
                self._lines(state, events, kinds)

    def _lines(
        self, state: ExecutionState, events: Sequence[ev.ExecutionEvent], kinds: Sequence[str]
    ) -> None:
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
            log.handle(
                log.makeRecord(log.name, level, __file__, 0, message, args, None, "committed", ids)
            )
