"""A history reduced to the event kinds a test asserts on."""

from __future__ import annotations

from execplan.v1 import events_pb2, execution_pb2

# One dispatch of a task, up to the worker's start.
RUN = ["task_queued", "task_dispatched", "task_started"]
# A failed attempt waiting out its retry backoff.
BACKOFF = ["task_retry_scheduled", "timer_scheduled", "timer_fired"]

_SHORT = {"task_parked": lambda body: "task_parked" if body.parked else "task_unparked"}


def task_kinds(events: list[events_pb2.ExecutionEvent], task_id: str) -> list[str]:
    """The event kinds of one task, in order (`task_unparked` = task_parked{parked:false};
    a phase other than main is appended as `:fallback` / `:compensation`)."""
    kinds = []
    for event in events:
        kind = event.WhichOneof("kind") or ""
        body = getattr(event, kind)
        if getattr(body, "task_id", None) != task_id:
            continue
        name = _SHORT[kind](body) if kind in _SHORT else kind
        phase: execution_pb2.TaskPhase.ValueType = getattr(
            body, "phase", execution_pb2.TASK_PHASE_UNSPECIFIED
        )
        if phase and phase != execution_pb2.TASK_PHASE_MAIN:
            name += ":" + execution_pb2.TaskPhase.Name(phase).removeprefix("TASK_PHASE_").lower()
        kinds.append(name)
    return kinds


def execution_kinds(events: list[events_pb2.ExecutionEvent]) -> list[str]:
    """Kinds of the events that belong to no task."""
    return [
        kind
        for e in events
        if not getattr(getattr(e, kind := e.WhichOneof("kind") or ""), "task_id", "")
    ]
