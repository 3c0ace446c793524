"""In-memory deadlines of attempts and the durable timers of executions.

Ack, start_to_close, heartbeat, schedule_to_start and schedule_to_close deadlines
are loop.call_later handles that only submit an input for the pump; the input
checks the attempt (phase, attempt, epoch) still is the one the deadline was set for,
so a stale handle does nothing. After a restart `_rearm_lease` re-creates them from
the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from execplan.executor import effects as fx
from execplan.executor.engine_core import EngineCore
from execplan.executor.machine import Machine
from execplan.executor.state import ACTIVE_TASK_STATES, LEASED_TASK_STATES, ExecutionState, TaskRun
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex


class EngineDeadlines(EngineCore):
    # -- in-memory deadlines -----------------------------------------------------
    def _watch_ack(self, execution_id: str, index: int, epoch: int) -> None:
        def check() -> None:
            def action(machine: Machine) -> None:
                task = machine.state.tasks[index]
                if task.state == ex.TASK_STATE_DISPATCHED and task.epoch == epoch:
                    machine.requeue(task, "assignment not acknowledged in time")

            if execution_id in self._live:
                self._submit(execution_id, action)

        asyncio.get_running_loop().call_later(self.config.ack_deadline_ms / 1000, check)

    def _watch_lease(
        self, execution_id: str, index: int, epoch: int, delay_ms: int, kind: int
    ) -> None:
        def check() -> None:
            self._submit_timeout(execution_id, index, epoch, kind)

        asyncio.get_running_loop().call_later(delay_ms / 1000, check)

    def _watch_heartbeat(self, execution_id: str, index: int, epoch: int, limit_ms: int) -> None:
        def check() -> None:
            state = self._live.get(execution_id)
            if state is None or state.tasks[index].epoch != epoch:
                return
            if state.tasks[index].state not in LEASED_TASK_STATES:
                return
            silent = self.now_ms() - self._beats.get((execution_id, index), 0)
            if silent >= limit_ms:
                self._submit_timeout(execution_id, index, epoch, ev.TIMEOUT_KIND_HEARTBEAT)
            else:
                asyncio.get_running_loop().call_later((limit_ms - silent) / 1000, check)

        asyncio.get_running_loop().call_later(limit_ms / 1000, check)

    def _submit_timeout(self, execution_id: str, index: int, epoch: int, kind: int) -> None:
        def action(machine: Machine) -> None:
            task = machine.state.tasks[index]
            if task.state in LEASED_TASK_STATES and task.epoch == epoch:
                worker_id, attempt, phase = task.worker_id, task.attempt, task.phase
                machine.effects.append(
                    fx.CancelLease(index, worker_id, attempt, epoch, phase, "timed out")
                )
                name = ev.TimeoutKind.Name(kind).removeprefix("TIMEOUT_KIND_").lower()  # type: ignore[arg-type]
                machine.failed(
                    task, {"type": "Timeout", "message": f"{name} timeout", "retryable": True}, kind
                )

        if execution_id in self._live:
            self._submit(execution_id, action)

    def _arm(self, execution_id: str, timer_id: str, fire_at_ms: int) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (fire_at_ms - self.now_ms()) / 1000)
        key = (execution_id, timer_id)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self._submit(execution_id, lambda m: m.timer_fired(timer_id))

        self._timers[key] = loop.call_later(delay, fire)

    def _watch_queue(self, state: ExecutionState, index: int) -> None:
        """schedule_to_start (queued -> acked) of this attempt; schedule_to_close once."""
        task = state.tasks[index]
        limit = state.plan.nodes[index].timeouts_for(task.phase).schedule_to_start_ms
        if limit:
            phase, attempt = task.phase, task.attempt

            def late(machine: Machine) -> None:
                run = machine.state.tasks[index]
                if (
                    run.phase == phase
                    and run.attempt == attempt
                    and run.state in (ex.TASK_STATE_QUEUED, ex.TASK_STATE_DISPATCHED)
                    and machine.now_ms >= run.queued_ms + limit
                ):
                    machine.deadline_passed(run, ev.TIMEOUT_KIND_SCHEDULE_TO_START)

            self._deadline(state.execution_id, task.queued_ms + limit, late)
        if task.attempt == 1:
            self._watch_total(state, index)

    def _watch_total(self, state: ExecutionState, index: int) -> None:
        """schedule_to_close: first queued -> final result, across all attempts."""
        task = state.tasks[index]
        limit = state.plan.nodes[index].timeouts.schedule_to_close_ms
        if not limit or task.phase != ex.TASK_PHASE_MAIN or not task.first_queued_ms:
            return

        def late(machine: Machine) -> None:
            run = machine.state.tasks[index]
            if (
                run.phase == ex.TASK_PHASE_MAIN
                and run.state in ACTIVE_TASK_STATES
                and run.state != ex.TASK_STATE_WAITING
            ):
                machine.deadline_passed(run, ev.TIMEOUT_KIND_SCHEDULE_TO_CLOSE, give_up=True)

        self._deadline(state.execution_id, task.first_queued_ms + limit, late)

    def _rearm_lease(self, state: ExecutionState, task: TaskRun) -> None:
        """After a restart: the in-memory deadlines of a leased attempt, from the log."""
        timeouts = state.plan.nodes[task.index].timeouts_for(task.phase)
        now = self.now_ms()
        if timeouts.start_to_close_ms and task.attempts:
            left = task.attempts[-1].dispatched_ms + timeouts.start_to_close_ms - now
            self._watch_lease(
                state.execution_id,
                task.index,
                task.epoch,
                max(0, left),
                ev.TIMEOUT_KIND_START_TO_CLOSE,
            )
        if timeouts.heartbeat_ms:
            self._beats[(state.execution_id, task.index)] = now
            self._watch_heartbeat(state.execution_id, task.index, task.epoch, timeouts.heartbeat_ms)
        if task.state == ex.TASK_STATE_DISPATCHED and timeouts.schedule_to_start_ms:
            self._watch_queue(state, task.index)

    def _deadline(self, execution_id: str, at_ms: int, action: Callable[[Machine], None]) -> None:
        def fire() -> None:
            if execution_id in self._live:
                self._submit(execution_id, action)

        delay = max(0.0, (at_ms - self.now_ms()) / 1000)
        asyncio.get_running_loop().call_later(delay, fire)
