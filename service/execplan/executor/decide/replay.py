"""Deterministic replay: re-run the scheduler over an execution's recorded history.

Pure (no I/O, no clock): give it a plan and the events, get a verdict.

How events are classified. The log interleaves two kinds of events:

* **inputs**, caused by the outside world: a start request (with its budget and
  caps), a worker's choice
  (`task_dispatched`: which worker got the slot is the dispatcher's business, not
  the Machine's), acks (`task_started`), results (`task_succeeded`/`task_failed`
  from workers, or from the result cache), lease timeouts (`task_timed_out`),
  re-leases (`task_requeued`), timers firing, external events, control calls (pause,
  resume, cancel, a budget change) and usage reports (`task_usage`);
* **decisions**, emitted by the Machine in reaction to an input: `task_queued`,
  `task_skipped`, `task_retry_scheduled`, `timer_scheduled`, `compensation_started`,
  `task_cancelled`, `execution_completed`, and also `task_succeeded` (sleep, wait),
  `task_failed` (binding, condition, wait timeout), `execution_paused` (auto-pause).
  A pause at a budget is replayed as the dispatch it held back (it must be held back
  again, with the same reason).

Replay walks the log. At an input it calls the matching public method of a fresh
`Machine` over the replay state (with `now` = the event's recorded time, which is
the time the engine's Machine had), and compares every event the Machine emits
with the recorded events that follow (kind and body; `recorded_at` is ignored).
A recorded event that was not reproduced by some earlier input must itself be an
input; a decision found there means the scheduler did not make it this time.
Informational events (`task_progress`, `search_attributes_updated`) and breaker
parking (`task_parked`: the breaker is shared by every execution, so from one
execution's view it is an input) are folded in without a Machine call.

With a candidate plan, the same walk against the new plan tells whether the
instance could continue on it; a static check lists tasks that already ran but are
missing or changed (type, upstream) in the candidate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from execplan.errors import ExecplanError
from execplan.executor.decide.evolve import decode_limits, evolve
from execplan.executor.decide.fencing import Claim
from execplan.executor.decide.flow import Parent
from execplan.executor.decide.inputs import resolve_inputs
from execplan.executor.decide.machine import Machine
from execplan.executor.expressions.evaluation import BUDGET_EXCEEDED, BlockingEvaluator
from execplan.executor.expressions.sandbox import Sandbox
from execplan.executor.plan_view import PlanView
from execplan.executor.state import (
    LEASED_TASK_STATES,
    Allowance,
    ExecutionState,
    TaskRun,
    new_state,
)
from execplan.executor.task_errors import TaskError
from execplan.executor.values import from_struct, from_value
from execplan.search.codec import decode_map
from execplan.usage.codec import decode_budget, decode_change, decode_usage
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from google.protobuf import json_format

INPUT_KINDS = frozenset(
    {
        "execution_started",
        "task_dispatched",
        "task_started",
        "task_succeeded",
        "task_failed",
        "task_timed_out",
        "task_requeued",
        "timer_fired",
        "external_event_received",
        "execution_paused",
        "execution_resumed",
        "execution_cancel_requested",
        "task_usage",
        "budget_changed",
        # Plans that grow at runtime: the machine's first answer to a worker's result
        # of a repeat task, to a sub-plan the runtime compiled, to a child's start and
        # end (docs/runtime-plans.md).
        "iteration_completed",
        "plan_revised",
        "child_execution_started",
        "child_execution_ended",
    }
)
MAIN = ex.TASK_PHASE_MAIN
# Folded in as they are: they inform, or come from state shared across executions.
FOLDED_KINDS = frozenset({"task_progress", "task_parked", "search_attributes_updated"})
# Replay gives a sandboxed evaluation more time than the live budget: the history says
# it finished in time once, and a replay should not call that a divergence because
# the box is busier now.
_REPLAY_TIMEOUT = 30_000


@dataclass(frozen=True, slots=True)
class Divergence:
    sequence: int
    expected: str  # the recorded event, as text ("" = the history ended here)
    actual: str  # what the replay produced instead ("" = nothing)


@dataclass(slots=True)
class ReplayResult:
    deterministic: bool
    events: int
    divergence: Divergence | None = None
    state: ExecutionState | None = None


@dataclass(slots=True)
class Compatibility:
    compatible: bool
    incompatibilities: list[str] = field(default_factory=list)
    divergence: Divergence | None = None


class _Mismatch(Exception):
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.expected)
        self.divergence = divergence


def describe(event: ev.ExecutionEvent | None) -> str:
    """`kind {key fields as compact JSON}`; "" for no event."""
    if event is None:
        return ""
    kind = event.WhichOneof("kind") or "?"
    body = json_format.MessageToDict(getattr(event, kind), preserving_proto_field_name=True)
    return f"{kind} {json.dumps(body, sort_keys=True, separators=(',', ':'))}"


def _body(event: ev.ExecutionEvent, relaxed_start: bool) -> tuple[str, bytes]:
    kind = event.WhichOneof("kind") or ""
    body = getattr(event, kind)
    if relaxed_start and kind == "execution_started":
        # A candidate plan has its own id and version by definition.
        body = ev.ExecutionStarted()
        body.CopyFrom(event.execution_started)
        body.ClearField("plan_id")
        body.ClearField("workflow_version")
        body.ClearField("workflow_name")
    return kind, body.SerializeToString(deterministic=True)


def same(recorded: ev.ExecutionEvent, produced: ev.ExecutionEvent, relaxed: bool = False) -> bool:
    return recorded.sequence == produced.sequence and _body(recorded, relaxed) == _body(
        produced, relaxed
    )


def _task(machine: Machine, task_id: str, phase: int, token: ev.AttemptToken) -> TaskRun:
    # A recorded result passed the token check when it happened; it must here too.
    return machine.check_token(task_id, Claim(phase, token.attempt, token.lease_epoch))


def _unleased_ok(machine: Machine, task_id: str, phase: int, token: ev.AttemptToken) -> TaskRun:
    """Failures the engine decides for attempts without a lease (an open breaker,
    schedule_to_start/close deadlines) carry no live token; leased ones must."""
    task = machine.state.task(task_id)
    if task.state in LEASED_TASK_STATES:
        return _task(machine, task_id, phase, token)
    return task


def _feed(machine: Machine, event: ev.ExecutionEvent) -> None:
    """Calls the Machine method that the engine called for this input."""
    kind = event.WhichOneof("kind")
    state = machine.state
    if _feed_grown(machine, event, kind):
        return
    if kind == "execution_started":
        body = event.execution_started
        allowance = Allowance(
            budget=decode_budget(body.budget) if body.HasField("budget") else None,
            max_for_each_items=body.caps.max_for_each_items,
            max_attempts=body.caps.max_attempts,
            limits=decode_limits(body.limits) if body.HasField("limits") else None,
        )
        parent = None
        if body.parent_execution_id:
            parent = Parent(body.parent_execution_id, body.parent_task_id, body.depth)
        attributes = decode_map(body.search_attributes)
        machine.start(
            from_struct(body.inputs),
            body.request_id,
            body.fairness_key,
            dict(body.trace_context),
            allowance,
            parent=parent,
            search_attributes={k: v for k, v in attributes.items() if v is not None},
        )
    elif kind == "task_dispatched":
        d = event.task_dispatched
        machine.dispatch(state.task(d.task_id).index, d.worker_id, d.principal)
    elif kind == "task_started":
        s = event.task_started
        machine.acknowledged(_task(machine, s.task_id, s.phase, s.token))
    elif kind == "task_succeeded":
        r = event.task_succeeded
        if r.HasField("cache_hit"):  # the cache answered: the output is in the history
            machine.cached(state.task(r.task_id).index, from_value(r.output), r.cache_hit)
        else:
            machine.succeeded(_task(machine, r.task_id, r.phase, r.token), from_value(r.output))
    elif kind == "task_failed":
        f = event.task_failed
        task = _unleased_ok(machine, f.task_id, f.phase, f.token)
        machine.failed(task, TaskError.from_proto(f.error))
    elif kind == "task_timed_out":
        t = event.task_timed_out
        machine.deadline_passed(_unleased_ok(machine, t.task_id, t.phase, t.token), t.timeout)
    elif kind == "task_requeued":
        q = event.task_requeued
        machine.requeue(_task(machine, q.task_id, q.phase, q.token), q.reason)
    elif kind == "timer_fired":
        machine.timer_fired(event.timer_fired.timer_id)
    elif kind == "external_event_received":
        x = event.external_event_received
        data = from_value(x.data) if x.HasField("data") else None
        machine.external_event(x.name, data, x.request_id)
    else:
        _feed_control(machine, event, kind)


def _feed_control(machine: Machine, event: ev.ExecutionEvent, kind: str | None) -> None:
    """The inputs of control calls and usage reports (see `_feed`)."""
    state = machine.state
    if kind == "execution_paused" and event.execution_paused.HasField("budget_exceeded"):
        # A budget held a dispatch back: the same dispatch must be held back again.
        machine.dispatch(state.task(event.execution_paused.budget_exceeded.task_id).index, "", "")
    elif kind == "execution_paused":
        machine.pause(event.execution_paused.reason, event.execution_paused.request_id)
    elif kind == "execution_resumed":
        machine.resume(event.execution_resumed.request_id)
    elif kind == "execution_cancel_requested":
        c = event.execution_cancel_requested
        machine.cancel(c.reason, c.request_id, c.terminate)
    else:
        _feed_usage(machine, event, kind)


def _feed_usage(machine: Machine, event: ev.ExecutionEvent, kind: str | None) -> None:
    """The inputs of usage and budgets (docs/usage.md)."""
    if kind == "task_usage":
        u = event.task_usage
        claim = Claim(u.phase, u.token.attempt, u.token.lease_epoch)
        machine.usage(u.task_id, claim, u.worker_id, decode_usage(u.usage), u.report)
    elif kind == "budget_changed":
        b = event.budget_changed
        machine.set_budget(decode_change(b.requested), b.request_id, b.reason, task_id=b.task_id)


def _feed_grown(machine: Machine, event: ev.ExecutionEvent, kind: str | None) -> bool:
    """The inputs of plans that grow at runtime; False when `event` is not one."""
    if kind == "iteration_completed":
        done = event.iteration_completed
        task = _task(machine, done.task_id, MAIN, done.token)
        machine.succeeded(task, from_value(done.output))
    elif kind == "plan_revised":
        revised = event.plan_revised
        task = _task(machine, revised.task_id, MAIN, revised.token)
        machine.sub_plan(task, revised.plan, from_struct(revised.inputs))
    elif kind == "child_execution_started":
        started = event.child_execution_started
        machine.child_started(
            started.task_id,
            started.token.attempt,
            started.token.lease_epoch,
            child_execution_id=started.child_execution_id,
            plan_id=started.plan_id,
            workflow_name=started.workflow_name,
            workflow_version=started.workflow_version,
        )
    elif kind == "child_execution_ended":
        ended = event.child_execution_ended
        error = TaskError.from_proto(ended.error) if ended.HasField("error") else None
        outputs = from_struct(ended.outputs) if ended.HasField("outputs") else None
        used = decode_usage(ended.usage)
        machine.child_ended(
            ended.task_id, ended.child_execution_id, ended.state, outputs, error, used=used
        )
    else:
        return False
    return True


def replay(
    plan: PlanView,
    events: Sequence[ev.ExecutionEvent],
    *,
    execution_id: str = "",
    relaxed_start: bool = False,
    sandbox: Sandbox | None = None,
) -> ReplayResult:
    """Re-runs the Machine over `events`; reports the first divergence, if any.

    Expressions too expensive to run inline are evaluated in `sandbox` (default: a
    process-wide one), waiting for each: call this off the event loop. Budget
    failures are not evaluated again but taken from the history (see `_recorded`)."""
    execution_id = execution_id or (events[0].execution_id if events else "")
    state = new_state(execution_id, plan)
    i = 0
    try:
        while i < len(events):
            i = _step(state, events, i, relaxed_start, sandbox)
    except _Mismatch as mismatch:
        return ReplayResult(False, i, mismatch.divergence, state)
    return ReplayResult(True, len(events), None, state)


def _step(
    state: ExecutionState,
    events: Sequence[ev.ExecutionEvent],
    i: int,
    relaxed: bool,
    sandbox: Sandbox | None,
) -> int:
    recorded = events[i]
    kind = recorded.WhichOneof("kind") or ""
    if kind in FOLDED_KINDS:
        _guard(lambda: evolve(state, recorded), recorded)
        return i + 1
    if kind not in INPUT_KINDS:
        raise _Mismatch(Divergence(recorded.sequence, describe(recorded), ""))

    def recorded_failure(field: str) -> str | None:
        # The Machine's events line up with the recorded ones from `i` (the input's own).
        return _recorded(events, i + len(machine.events), field)

    evaluator = BlockingEvaluator(sandbox, recorded=recorded_failure, timeout_ms=_REPLAY_TIMEOUT)
    machine = Machine(state, recorded.recorded_at.ToMilliseconds(), evaluator)
    _guard(lambda: _feed(machine, recorded), recorded)
    produced = machine.events
    if not produced:
        raise _Mismatch(Divergence(recorded.sequence, describe(recorded), ""))
    for offset, event in enumerate(produced):
        at = i + offset
        if at >= len(events):
            raise _Mismatch(Divergence(event.sequence, "", describe(event)))
        if not same(events[at], event, relaxed):
            raise _Mismatch(Divergence(events[at].sequence, describe(events[at]), describe(event)))
    return i + len(produced)


def _recorded(events: Sequence[ev.ExecutionEvent], at: int, field: str) -> str | None:
    """The message of the budget failure recorded at `at` for `field`, if that is one.

    Whether an evaluation ran out of time or memory depends on the machine and its
    load, not only on the history, so replay takes the recorded outcome. A failure
    is emitted right after the evaluation (`task_failed` of the task, or
    `execution_completed` for an output), so only the next event can record it."""
    if at >= len(events):
        return None
    event = events[at]
    kind = event.WhichOneof("kind")
    if kind == "task_failed":
        error = event.task_failed.error
    elif kind == "execution_completed":
        error = event.execution_completed.error
    else:
        return None
    if error.type == BUDGET_EXCEEDED and error.message.startswith(f"{field}: "):
        return error.message
    return None


def _guard(action: Callable[[], Any], recorded: ev.ExecutionEvent) -> None:
    """A Machine that cannot take a recorded input at all is a divergence too."""
    try:
        action()
    except (ExecplanError, KeyError, IndexError, ValueError, AssertionError) as exc:
        reason = f"cannot apply: {type(exc).__name__}: {exc}"
        raise _Mismatch(Divergence(recorded.sequence, describe(recorded), reason)) from exc


def compatibility(
    recorded_plan: PlanView,
    candidate: PlanView,
    events: Sequence[ev.ExecutionEvent],
    sandbox: Sandbox | None = None,
) -> Compatibility:
    """Could this instance continue on `candidate`? Lists every static problem, then
    replays the history against the candidate and reports its first divergence."""
    problems = _static_problems(recorded_plan, candidate, events)
    result = replay(candidate, events, relaxed_start=True, sandbox=sandbox)
    if result.divergence is not None:
        d = result.divergence
        problems.append(
            f"replay diverges at event {d.sequence}: recorded {d.expected or '(end)'}; "
            f"candidate decides {d.actual or '(nothing)'}"
        )
    return Compatibility(not problems, problems, result.divergence)


def _static_problems(
    old: PlanView, new: PlanView, events: Sequence[ev.ExecutionEvent]
) -> list[str]:
    problems: list[str] = []
    touched: list[str] = []
    for event in events:
        kind = event.WhichOneof("kind") or ""
        task_id = getattr(getattr(event, kind), "task_id", "") if kind else ""
        if task_id and task_id not in touched:
            touched.append(task_id)
    for task_id in touched:
        if task_id not in old.index_of:
            continue
        before = old.nodes[old.index_of[task_id]]
        if task_id not in new.index_of:
            problems.append(f"task {task_id} already ran but is not in the candidate plan")
            continue
        after = new.nodes[new.index_of[task_id]]
        if before.type != after.type:
            problems.append(f"task {task_id} changed type: {before.type} -> {after.type}")
        up_before = sorted(old.nodes[u].task_id for u in before.upstream)
        up_after = sorted(new.nodes[u].task_id for u in after.upstream)
        if up_before != up_after:
            problems.append(
                f"task {task_id} changed upstream: "
                f"[{', '.join(up_before)}] -> [{', '.join(up_after)}]"
            )
    started = next((e for e in events if e.HasField("execution_started")), None)
    if started is not None:
        try:
            resolve_inputs(new, from_struct(started.execution_started.inputs))
        except ExecplanError as exc:
            problems.append(f"recorded inputs do not fit the candidate: {exc}")
    return problems
