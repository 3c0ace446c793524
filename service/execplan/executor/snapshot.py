"""Checkpoints: an ExecutionState serialized so recovery replays only the log tail.

The plan is not part of a checkpoint (plans are stored once, by plan_id), so a
50,000-task execution checkpoints only its per-task runtime fields. Format: compact
JSON with one positional array per task; `FORMAT` is bumped when fields change,
and a checkpoint of another format is ignored (the full log is replayed instead).

What grew at run time (docs/runtime-plans.md) is in it too: the tasks beyond the
plan's (`grown`: what each is, its node found again from its for_each task or its
sub-plan), their bookkeeping (`extras`) and the sub-plans (`scopes`, each with its
compiled plan, which is small: a sub-plan has at most Limits.sub_plan_tasks tasks).
"""

from __future__ import annotations

import base64
import json
from dataclasses import astuple
from typing import Any

from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.state import (
    AttemptRecord,
    AttemptSpend,
    BudgetHold,
    ExecutionState,
    Extra,
    Grown,
    Limits,
    Scope,
    Spend,
    TaskRun,
    Timer,
)
from execplan.executor.task_errors import TaskError
from execplan.search import SearchValue
from execplan.usage import Budget
from execplan.v1 import plan_pb2

# 2: the request ids of control calls (executor/decide/requests.py); 3: tasks record the
# principal that holds their lease; 4: usage, budget and caps (`spend`); 5: what grew
# at run time, attempts' iterations; 6: task progress and the search attributes.
FORMAT = 6

_TASK_FIELDS = (
    "state",
    "phase",
    "attempt",
    "epoch",
    "worker_id",
    "output",
    "error",
    "first_queued_ms",
    "queued_ms",
    "started_ms",
    "finished_ms",
    "status_message",
    "upstream_pending",
    "upstream_succeeded",
    "upstream_failed",
    "upstream_other",
    "completed_order",
    "compensated",
    "principal",
    "progress",
    "progress_ms",
)
_STATE_FIELDS = (
    "state",
    "inputs",
    "outputs",
    "error",
    "failed_task_id",
    "request_id",
    "fairness_key",
    "trace_context",
    "created_ms",
    "updated_ms",
    "finished_ms",
    "last_sequence",
    "paused",
    "cancel_requested",
    "compensation_queue",
    "mailbox",
    "requests",
    "consecutive_failures",
    "completions",
    "any_failed",
)
_ATTEMPT_FIELDS = (
    "attempt",
    "phase",
    "worker_id",
    "epoch",
    "dispatched_ms",
    "finished_ms",
    "error",
    "iteration",
)
_EXTRA_FIELDS = (
    "first",
    "count",
    "started",
    "finished",
    "failed",
    "iteration",
    "previous",
    "child_execution_id",
    "revision",
)


def encode_state(state: ExecutionState) -> bytes:
    document: dict[str, Any] = {"format": FORMAT, "plan_id": state.plan.plan_id}
    document.update({name: getattr(state, name) for name in _STATE_FIELDS})
    document["timers"] = [
        [t.timer_id, t.task_index, t.purpose, t.fire_at_ms] for t in state.timers.values()
    ]
    document["tasks"] = [
        [getattr(task, name) for name in _TASK_FIELDS]
        + [[[getattr(a, n) for n in _ATTEMPT_FIELDS] for a in task.attempts]]
        for task in state.tasks
    ]
    document["spend"] = _encode_spend(state.spend)
    document["parent"] = [state.parent_execution_id, state.parent_task_id, state.depth]
    document["limits"] = None if state.limits is None else astuple(state.limits)
    document["grown"] = [[g.task_id, g.parent, g.item_index, g.item, g.scope] for g in state.grown]
    document["extras"] = [
        [index, *(getattr(extra, n) for n in _EXTRA_FIELDS)]
        for index, extra in sorted(state.extras.items())
    ]
    document["scopes"] = [
        [
            s.revision,
            s.task,
            s.base,
            s.prefix,
            s.inputs,
            s.finished,
            base64.b64encode(s.plan_bytes).decode("ascii"),
        ]
        for s in state.scopes
    ]
    document["search_attributes"] = {
        name: [value.kind, value.value] for name, value in state.search_attributes.items()
    }
    return json.dumps(document, separators=(",", ":"), default=_encode).encode()


def _encode_spend(spend: Spend) -> dict[str, Any]:
    budget = spend.budget
    hold = spend.hold
    return {
        "budget": None if budget is None else [budget.limits, budget.on_exceeded],
        "caps": [spend.max_for_each_items, spend.max_attempts],
        "attempts": spend.attempts,
        "usage": spend.usage,
        "reserved": spend.reserved,
        "tasks": [[index, used] for index, used in spend.tasks.items()],
        "task_reserved": [[index, held] for index, held in spend.task_reserved.items()],
        "leases": [
            [*key, lease.worker_id, lease.usage, lease.reports, lease.reserved]
            for key, lease in spend.leases.items()
        ],
        "hold": None if hold is None else astuple(hold),
        "task_budgets": [
            [index, b.limits, b.on_exceeded] for index, b in spend.task_budgets.items()
        ],
    }


def _decode_spend(value: dict[str, Any]) -> Spend:
    budget = value["budget"]
    spend = Spend(
        budget=None if budget is None else Budget(tuple(map(tuple, budget[0])), budget[1]),
        max_for_each_items=value["caps"][0],
        max_attempts=value["caps"][1],
        attempts=value["attempts"],
        usage=value["usage"],
        reserved=value["reserved"],
        tasks={index: used for index, used in value["tasks"]},
        task_reserved={index: held for index, held in value["task_reserved"]},
        hold=None if value["hold"] is None else BudgetHold(*value["hold"]),
    )
    for index, phase, attempt, epoch, worker_id, used, reports, held in value["leases"]:
        spend.leases[(index, phase, attempt, epoch)] = AttemptSpend(worker_id, used, reports, held)
    # Absent from checkpoints written before task budgets could be raised: none were.
    for index, limits, action in value.get("task_budgets", []):
        spend.task_budgets[index] = Budget(tuple(map(tuple, limits)), action)
    return spend


def _encode(value: object) -> object:
    # Errors are stored as the mappings they always were (type, message, retryable).
    if isinstance(value, TaskError):
        return value.as_dict()
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _error(value: Any) -> TaskError | None:
    return None if value is None else TaskError.from_dict(value)


def _attempt(values: list[Any]) -> AttemptRecord:
    record = AttemptRecord(*values)
    record.error = _error(record.error)
    return record


def decode_state(payload: bytes, execution_id: str, plan: PlanView) -> ExecutionState | None:
    """The state in a checkpoint, or None if it cannot be used for this plan."""
    document = json.loads(payload)
    if document.get("format") != FORMAT or document.get("plan_id") != plan.plan_id:
        return None
    if len(document["tasks"]) != len(plan.nodes) + len(document["grown"]):
        return None
    state = ExecutionState(execution_id=execution_id, plan=plan)
    for name in _STATE_FIELDS:
        setattr(state, name, document[name])
    state.error = _error(state.error)
    state.search_attributes = {
        name: SearchValue(kind, value)
        for name, (kind, value) in document["search_attributes"].items()
    }
    state.timers = {
        timer_id: Timer(timer_id, index, purpose, fire_at)
        for timer_id, index, purpose, fire_at in document["timers"]
    }
    tasks = []
    for index, row in enumerate(document["tasks"]):
        task = TaskRun(index=index)
        for name, value in zip(_TASK_FIELDS, row, strict=False):
            setattr(task, name, value)
        task.error = _error(task.error)
        task.attempts = [_attempt(values) for values in row[len(_TASK_FIELDS)]]
        tasks.append(task)
    state.tasks = tasks
    state.spend = _decode_spend(document["spend"])
    _decode_grown(state, document)
    return state


def _decode_grown(state: ExecutionState, document: dict[str, Any]) -> None:
    state.parent_execution_id, state.parent_task_id, state.depth = document["parent"]
    if document["limits"] is not None:
        state.limits = Limits(*document["limits"])
    for revision, task, base, prefix, inputs, finished, plan in document["scopes"]:
        payload = base64.b64decode(plan)
        view = decode_plan(plan_pb2.ExecutionPlan.FromString(payload))
        state.scopes.append(Scope(revision, task, view, base, prefix, inputs, finished, payload))
    for index, extra in ((row[0], row[1:]) for row in document["extras"]):
        state.extras[index] = Extra(*extra)
    offset = len(state.plan.nodes)
    for i, (task_id, parent, item_index, item, scope) in enumerate(document["grown"]):
        index = offset + i
        if item_index >= 0:
            node = state.node(parent)
        else:
            found = state.scopes[scope - 1]
            node = found.plan.nodes[index - found.base]
        state.grown.append(Grown(task_id, node, parent, item_index, item, scope))
        state.grown_index[task_id] = index
