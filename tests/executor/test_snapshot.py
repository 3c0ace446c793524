"""Checkpoints: state rebuilt from a checkpoint plus the log tail equals a full replay."""

from __future__ import annotations

from execplan.executor.decide.evolve import evolve
from execplan.executor.decide.machine import Machine
from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.snapshot import decode_state, encode_state
from execplan.executor.state import new_state
from execplan.executor.task_errors import TaskError
from execplan.executor.view import encode_execution
from execplan.planner import compile_source
from execplan.wire.plan_codec import encode_plan

WORKFLOW = """
name: snap
inputs: {n: {type: integer, default: 2}}
tasks:
  - id: a
    type: t
    retry: {max_attempts: 3, initial_interval: 1s}
    inputs: {x: "${{ workflow.inputs.n }}"}
  - {id: b, type: t, inputs: {x: "${{ tasks.a.output.y }}"}}
  - {id: c, type: t, depends_on: [a], trigger: all_done}
outputs: {b: "${{ tasks.b.output.y }}"}
"""


def _plan() -> PlanView:
    result = compile_source(WORKFLOW)
    assert result.plan is not None
    return decode_plan(encode_plan(result.plan))


def test_checkpoint_plus_tail_equals_full_replay() -> None:
    plan = _plan()
    state = new_state("e1", plan)
    machine = Machine(state, 1_000)
    machine.start({"n": 3}, "r1", "tenant", {})
    machine.dispatch(plan.index_of["a"], "w1")
    task = state.task("a")
    machine.failed(task, TaskError("Boom", "x", True))
    events = list(machine.events)
    checkpoint = encode_state(state)
    at = state.last_sequence

    later = Machine(state, 2_000)
    later.timer_fired(next(iter(state.timers)))
    later.dispatch(plan.index_of["a"], "w2")
    later.succeeded(state.task("a"), {"y": 6})
    events += later.events

    restored = decode_state(checkpoint, "e1", plan)
    assert restored is not None and restored.last_sequence == at
    for event in later.events:
        evolve(restored, event)
    full = new_state("e1", plan)
    for event in events:
        evolve(full, event)
    assert encode_execution(restored) == encode_execution(full) == encode_execution(state)


def test_checkpoint_of_another_plan_is_ignored() -> None:
    plan = _plan()
    state = new_state("e1", plan)
    Machine(state, 1_000).start({}, "", "", {})
    payload = encode_state(state).replace(plan.plan_id.encode(), b"sha256:other")
    assert decode_state(payload, "e1", plan) is None
