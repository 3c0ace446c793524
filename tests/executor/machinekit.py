"""Drives a Machine by hand: compile YAML, feed inputs, record every event.

Each step makes a fresh Machine over the same state, as the engine does per batch,
and keeps the emitted events so a test can check exact sequences and replay them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from execplan.executor.decide import effects as fx
from execplan.executor.decide.evolve import evolve
from execplan.executor.decide.fencing import Claim
from execplan.executor.decide.machine import Machine
from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.state import (
    Allowance,
    ExecutionState,
    Limits,
    TaskRun,
    new_state,
    task_state_name,
)
from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue
from execplan.executor.view import encode_execution
from execplan.planner import compile_source
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.wire.plan_codec import encode_plan


def compile_plan(source: str) -> PlanView:
    result = compile_source(source)
    assert result.plan is not None, [d for d in result.diagnostics]
    return decode_plan(encode_plan(result.plan))


class Sim:
    def __init__(
        self,
        source: str,
        inputs: dict[str, JsonValue] | None = None,
        allowance: Allowance | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.plan = compile_plan(source)
        self.state: ExecutionState = new_state("exec-1", self.plan)
        self.now = 1_000_000
        self.events: list[ev.ExecutionEvent] = []
        self.effects: list[fx.Effect] = []
        if limits is not None:  # recorded, as the engine records its own
            allowance = replace(allowance or Allowance(), limits=limits)
        self.step(lambda m: m.start(inputs or {}, "req-1", "", {}, allowance))

    def step(self, action: Callable[[Machine], Any]) -> list[ev.ExecutionEvent]:
        machine = Machine(self.state, self.now)
        action(machine)
        assert machine.kinds == [e.WhichOneof("kind") for e in machine.events]
        self.events.extend(machine.events)
        self.effects.extend(machine.effects)
        return machine.events

    # -- worker side ---------------------------------------------------------------
    def task(self, task_id: str) -> TaskRun:
        return self.state.task(task_id)

    def status(self, task_id: str) -> str:
        return task_state_name(self.task(task_id).state)

    def queued(self) -> list[str]:
        return [
            self.state.task_id(t.index) for t in self.state.tasks if t.state == ex.TASK_STATE_QUEUED
        ]

    def dispatch(self, task_id: str, worker: str = "w1") -> tuple[int, int]:
        index = self.state.task(task_id).index
        self.step(lambda m: m.dispatch(index, worker))
        run = self.task(task_id)
        return run.attempt, run.epoch

    def ack(self, task_id: str) -> None:
        run = self.task(task_id)
        self.step(
            lambda m: m.acknowledged(
                m.check_token(task_id, Claim(run.phase, run.attempt, run.epoch))
            )
        )

    def succeed(self, task_id: str, output: JsonValue) -> None:
        run = self.task(task_id)
        token = Claim(run.phase, run.attempt, run.epoch)
        self.step(lambda m: m.succeeded(m.check_token(task_id, token), output))

    def fail(self, task_id: str, kind: str = "Boom", retryable: bool = True) -> None:
        run = self.task(task_id)
        token = Claim(run.phase, run.attempt, run.epoch)
        error = TaskError(kind, "failed", retryable)
        self.step(lambda m: m.failed(m.check_token(task_id, token), error))

    def run(self, task_id: str, output: JsonValue) -> None:
        """Dispatch, acknowledge and succeed one queued task."""
        self.dispatch(task_id)
        self.ack(task_id)
        self.succeed(task_id, output)

    def fire_timers(self) -> None:
        """Advances the clock to the earliest timer and fires every timer due."""
        if not self.state.timers:
            return
        self.now = max(self.now, min(t.fire_at_ms for t in self.state.timers.values()))
        due = [t.timer_id for t in self.state.timers.values() if t.fire_at_ms <= self.now]
        for timer_id in due:
            self.step(partial(Machine.timer_fired, timer_id=timer_id))

    def kinds(self, start: int = 0) -> list[str]:
        return [describe(e) for e in self.events[start:]]

    def replayed(self) -> ExecutionState:
        fresh = new_state(self.state.execution_id, self.plan)
        for event in self.events:
            evolve(fresh, event)
        return fresh

    def assert_replay_matches(self) -> None:
        replayed = self.replayed()
        assert encode_execution(replayed) == encode_execution(self.state)
        assert replayed == self.state  # every field, usage and attempts included
        sequences = [e.sequence for e in self.events]
        assert sequences == list(range(1, len(sequences) + 1))

    def assert_deterministic(self) -> None:
        """The recorded log replays through the Machine decision by decision."""
        from execplan.executor.decide import replay  # noqa: PLC0415

        result = replay.replay(self.plan, self.events, execution_id=self.state.execution_id)
        assert result.deterministic, result.divergence


def describe(event: ev.ExecutionEvent) -> str:
    """`kind` or `kind:task_id` for a compact, exact sequence check."""
    kind = event.WhichOneof("kind")
    assert kind is not None
    body = getattr(event, kind)
    task_id = getattr(body, "task_id", "")
    return f"{kind}:{task_id}" if task_id else kind
