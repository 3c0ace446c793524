"""The two callers of the fold agree: random histories, folded as they are decided and
read back from their events.

The Machine folds the events of a task's attempts from the values it built them
from (`Step.emit_folded`, decide/folds.py); recovery and replay fold the recorded
messages (`evolve`). Here random histories of the test workflows (results, failures,
re-leases, timers, usage reports, pauses, events, cancels) are decided step by step,
and after every step the state a fresh fold of the serialized log gives must equal
the live one, field by field (attempts, usage and reservations included), and so
must the values' types (3 and 3.0 are == but not the same output). Starts with
every argument (inputs the log normalizes, limits, budget, caps, a parent, search
attributes) are folded both ways too.
"""

from __future__ import annotations

import random
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from execplan.errors import ExecplanError
from execplan.executor.decide.evolve import evolve
from execplan.executor.decide.fencing import Claim
from execplan.executor.decide.flow import Parent
from execplan.executor.decide.machine import Machine
from execplan.executor.state import (
    LEASED_TASK_STATES,
    Allowance,
    ExecutionState,
    Limits,
    new_state,
)
from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue
from execplan.search import SearchValue
from execplan.usage import FAIL, Budget
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

from .machinekit import Sim

WORKFLOWS = {
    "diamond": """
name: diamond
inputs: {x: {type: integer, required: true}}
tasks:
  - {id: a, type: t.a, inputs: {x: "${{ workflow.inputs.x }}"}}
  - {id: b, type: t.b, depends_on: [a], retry: {max_attempts: 3, initial_interval: 0s}}
  - {id: c, type: t.c, depends_on: [a], when: "${{ tasks.a.output.v != 2 }}"}
  - {id: d, type: t.d, depends_on: [b, c], trigger: all_done}
outputs:
  total: "${{ tasks.d.output.v }}"
""",
    "rules": """
name: rules
on_failure: continue
tasks:
  - {id: a, type: t, retry: {max_attempts: 1}}
  - {id: ok, type: t}
  - {id: success_only, type: t, depends_on: [a]}
  - {id: done, type: t, depends_on: [a], trigger: all_done}
  - {id: one, type: t, depends_on: [a, ok], trigger: one_success}
  - {id: cleanup, type: t, depends_on: [a], trigger: all_failed}
""",
    "retry": """
name: retry
tasks:
  - id: a
    type: t
    retry:
      max_attempts: 3
      initial_interval: 100ms
      backoff_coefficient: 2.0
      non_retryable_errors: [Fatal]
    fallback: {type: t.backup}
  - {id: b, type: t, depends_on: [a]}
""",
    "saga": """
name: saga
on_failure: compensate
tasks:
  - {id: a, type: t, compensation: {type: undo.a}}
  - {id: b, type: t, compensation: {type: undo.b}}
  - {id: d, type: t, depends_on: [a, b], retry: {max_attempts: 2, initial_interval: 0s}}
""",
    "wait": """
name: wait
tasks:
  - {id: first, type: t}
  - id: w
    type: builtin.wait_for_event
    depends_on: [first]
    inputs: {event: approved, timeout: 10s}
  - {id: nap, type: builtin.sleep, depends_on: [first], inputs: {duration: 1s}}
""",
    "fan": """
name: fan
tasks:
  - id: plan
    type: t.plan
  - id: research
    type: t.research
    for_each: "${{ tasks.plan.output.items }}"
    max_parallel: 2
    inputs: {q: "${{ item }}", i: "${{ index }}"}
    retry: {max_attempts: 2, initial_interval: 0s}
  - id: write
    type: t.write
    inputs: {notes: "${{ tasks.research.output }}"}
""",
    "loop": """
name: loop
tasks:
  - id: write
    type: t.write
    inputs: {draft: "${{ previous }}", round: "${{ iteration }}"}
    repeat: {until: "output.ok || iteration >= 5", max_iterations: 3}
    retry: {max_attempts: 2, initial_interval: 0s}
""",
    "outputs": """
name: outputs
tasks:
  - {id: a, type: t, retry: {max_attempts: 2, initial_interval: 0s}}
outputs:
  whole: "${{ tasks.a.output }}"
  half: "${{ 1.5 * 2.0 }}"
""",
    "budget": """
name: budget
budget: {cost: 4}
tasks:
  - {id: a, type: u.one, estimate: {cost: 1}, retry: {max_attempts: 3, initial_interval: 0s}}
  - {id: b, type: u.one, depends_on: [a], estimate: {cost: 2}}
  - {id: c, type: u.one, depends_on: [a]}
""",
    "timeouts": """
name: timeouts
tasks:
  - id: slow
    type: u.slow
    timeouts: {start_to_close: 400ms, schedule_to_start: 1s}
    retry: {max_attempts: 2, initial_interval: 10ms}
""",
}
INPUTS: dict[str, dict[str, JsonValue]] = {"diamond": {"x": 1}}


def _output(rng: random.Random) -> JsonValue:
    """Outputs as workers send them, and some the log normalizes (3.0 reads as 3)."""
    return rng.choice(
        [
            None,
            {},
            {"v": rng.choice([1, 2, 3.0, 2.5])},
            {"items": [rng.randint(0, 9) for _ in range(rng.randint(0, 3))], "ok": False},
            {"ok": rng.random() < 0.5, "v": [1, {"x": "y"}]},
            "text",
            7.0,
        ]
    )


def _leased(sim: Sim) -> list[str]:
    state = sim.state
    return [
        state.task_id(t.index) for t in state.tasks if t.state in LEASED_TASK_STATES and t.worker_id
    ]


def _act(sim: Sim, rng: random.Random) -> None:
    """One random input the engine could give the execution now."""
    state = sim.state
    queued, leased = sim.queued(), _leased(sim)
    choices = ["timer", "pause", "event"] + ["dispatch"] * 4 * bool(queued)
    choices += ["ack", "succeed", "succeed", "fail", "requeue", "usage", "deadline"] * bool(leased)
    if rng.random() < 0.03:
        choices.append("cancel")
    choice = rng.choice(choices)
    if choice == "dispatch":
        task_id = rng.choice(queued)
        index = state.task(task_id).index
        sim.step(lambda m: m.dispatch(index, rng.choice(["w1", "w2"]), rng.choice(["", "p"])))
        return
    if choice == "timer":
        sim.fire_timers()
        return
    if choice == "pause":
        if state.paused:
            sim.step(lambda m: m.resume(f"r{len(sim.events)}"))
        else:
            sim.step(lambda m: m.pause("by hand", f"p{len(sim.events)}"))
        return
    if choice == "event":
        sim.step(lambda m: m.external_event("approved", {"by": "ann"}, f"e{len(sim.events)}"))
        return
    if choice == "cancel":
        sim.step(lambda m: m.cancel("enough", f"c{len(sim.events)}", rng.random() < 0.5))
        return
    task_id = rng.choice(leased)
    run = state.task(task_id)
    claim = Claim(run.phase, run.attempt, run.epoch)

    def holder(m: Machine):  # type: ignore[no-untyped-def]
        return m.check_token(task_id, claim)

    if choice == "ack":
        sim.step(lambda m: m.acknowledged(holder(m)))
    elif choice == "succeed":
        output = _output(rng)
        sim.step(lambda m: m.succeeded(holder(m), output))
    elif choice == "fail":
        error = TaskError(rng.choice(["Boom", "Fatal"]), "failed", rng.random() < 0.7)
        sim.step(lambda m: m.failed(holder(m), error))
    elif choice == "requeue":
        sim.step(lambda m: m.requeue(holder(m), "worker lost"))
    elif choice == "usage":
        amounts = {"cost": rng.choice([0.5, 1.0, 2.0])}
        report = rng.randint(1, 3)
        sim.step(lambda m: m.usage(task_id, claim, run.worker_id, amounts, report=report))
    else:
        kind = rng.choice([ev.TIMEOUT_KIND_START_TO_CLOSE, ev.TIMEOUT_KIND_HEARTBEAT])
        sim.step(lambda m: m.deadline_passed(holder(m), kind))


def _typed(value: object) -> object:
    """`value` with the type of every leaf, so that 3 and 3.0, or a tuple and a list,
    differ (== alone takes them for equal); plans are left to ==."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_typed(item) for item in value])
    if is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in fields(value) if f.name not in ("plan", "node")]
        return (type(value).__name__, {name: _typed(getattr(value, name)) for name in names})
    return (type(value).__name__, value)


def _same(replayed: ExecutionState, live: ExecutionState) -> bool:
    return replayed == live and _typed(replayed) == _typed(live)


def _replayed(sim: Sim, into: ExecutionState, start: int) -> None:
    """Folds the log from `start` on into `into` as recovery does: from the stored bytes."""
    for event in sim.events[start:]:
        evolve(into, ev.ExecutionEvent.FromString(event.SerializeToString()))


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_random_histories_fold_the_same_live_and_replayed(name: str) -> None:
    kinds: set[str] = set()
    for seed in range(25):
        rng = random.Random(f"{name}/{seed}")
        sim = Sim(WORKFLOWS[name], INPUTS.get(name))
        replayed = new_state(sim.state.execution_id, sim.plan)
        _replayed(sim, replayed, 0)
        assert _same(replayed, sim.state)
        for _ in range(80):
            if sim.state.state in (ex.EXECUTION_STATE_SUCCEEDED, ex.EXECUTION_STATE_FAILED):
                break
            start = len(sim.events)
            sim.now += rng.choice([0, 1, 7, 150])
            try:
                _act(sim, rng)
            except ExecplanError:
                continue  # refused (a stale lease, a control call not allowed now)
            _replayed(sim, replayed, start)
            assert _same(replayed, sim.state), (name, seed, sim.kinds(start))
        kinds.update(e.WhichOneof("kind") or "" for e in sim.events)
    # The histories reached the kinds folded from their values, and not only those.
    assert {"task_queued", "task_dispatched", "task_started", "task_succeeded"} <= kinds
    assert "execution_completed" in kinds
    assert len(kinds) > 6, kinds


@pytest.mark.parametrize(
    "start",
    [
        {},
        {"inputs": {"x": 3.0, "y": [1, 2.5, {"z": None}]}, "trace_context": {"traceparent": "t"}},
        {"allowance": Allowance(limits=Limits(0, 0, 0, 0))},
        {
            "allowance": Allowance(
                budget=Budget((("cost", 4.0), ("tokens", 9.0)), FAIL),
                max_for_each_items=5,
                max_attempts=7,
                limits=Limits(),
            ),
            "parent": Parent("parent-1", "review[3]", 2),
            "search_attributes": {"customer": SearchValue.of("acme"), "n": SearchValue.of(3)},
        },
        {"allowance": Allowance(budget=Budget((), ""))},
    ],
)
def test_starts_fold_the_same_live_and_replayed(start: dict[str, Any]) -> None:
    sim = Sim(WORKFLOWS["budget"])
    state = new_state("exec-2", sim.plan)
    machine = Machine(state, 5_000)
    machine.start(
        start.get("inputs", {}),
        "req-2",
        "tenant",
        start.get("trace_context", {}),
        start.get("allowance"),
        parent=start.get("parent"),
        search_attributes=start.get("search_attributes"),
    )
    assert machine.kinds[0] == "execution_started"
    replayed = new_state("exec-2", sim.plan)
    for event in machine.events:
        evolve(replayed, ev.ExecutionEvent.FromString(event.SerializeToString()))
    assert _same(replayed, state)
