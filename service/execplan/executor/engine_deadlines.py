"""In-memory deadlines of attempts and the durable timers of executions.

Ack, start_to_close, heartbeat, schedule_to_start and schedule_to_close deadlines
are loop.call_later handles that only submit an input for the pump; the input
checks the attempt (phase, attempt, epoch) still is the one the deadline was set for
(fencing.stale), so a stale handle does nothing. After a restart `_rearm_lease`
re-creates them from the log. A missed ack deadline also shrinks the worker's
pacing window (executor/pacing.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from execplan.executor import effects as fx
from execplan.executor.engine_core import EngineCore
from execplan.executor.fencing import Claim, lease_of, stale
from execplan.executor.machine import Machine
from execplan.executor.state import ACTIVE_TASK_STATES, ExecutionState, TaskRun
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

log = logging.getLogger("execplan.executor")


class EngineDeadlines(EngineCore):
    # -- in-memory deadlines -----------------------------------------------------
    def _watch_ack(self, execution_id: str, index: int, lease: Claim) -> None:
        def check() -> None:
            def action(machine: Machine) -> None:
                task = machine.state.tasks[index]
                node = machine.state.plan.nodes[index]
                if task.state == ex.TASK_STATE_DISPATCHED and not stale(task, node, lease):
                    self._missed_ack(task.worker_id)
                    machine.requeue(task, "assignment not acknowledged in time")

            if execution_id in self._live:
                self._submit(execution_id, action)

        asyncio.get_running_loop().call_later(self.config.ack_deadline_ms / 1000, check)

    def _missed_ack(self, worker_id: str) -> None:
        """Shrinks the worker's window; after repeated misses, a timed probation."""
        worker = self.workers.workers.get(worker_id)
        if worker is None:
            return  # gone: its leases are handled as orphans, not as missed acks
        probation_ms = worker.pace.missed(self.now_ms(), self.config.ack_deadline_ms)
        if probation_ms:
            log.warning(
                "worker %s missed %d ack deadlines in a row; no dispatches for %d ms",
                worker_id,
                worker.pace.misses,
                probation_ms,
            )
            pace = worker.pace

            def probe() -> None:
                pace.probation_over()
                self._wake.set()

            asyncio.get_running_loop().call_later(probation_ms / 1000, probe)

    def _watch_lease(
        self, execution_id: str, index: int, lease: Claim, delay_ms: int, kind: int
    ) -> None:
        def check() -> None:
            self._submit_timeout(execution_id, index, lease, kind)

        asyncio.get_running_loop().call_later(delay_ms / 1000, check)

    def _watch_heartbeat(self, execution_id: str, index: int, lease: Claim, limit_ms: int) -> None:
        def check() -> None:
            state = self._live.get(execution_id)
            if state is None or stale(state.tasks[index], state.plan.nodes[index], lease):
                return
            silent = self.now_ms() - self._beats.get((execution_id, index), 0)
            if silent >= limit_ms:
                self._submit_timeout(execution_id, index, lease, ev.TIMEOUT_KIND_HEARTBEAT)
            else:
                asyncio.get_running_loop().call_later((limit_ms - silent) / 1000, check)

        asyncio.get_running_loop().call_later(limit_ms / 1000, check)

    def _submit_timeout(self, execution_id: str, index: int, lease: Claim, kind: int) -> None:
        def action(machine: Machine) -> None:
            task = machine.state.tasks[index]
            if not stale(task, machine.state.plan.nodes[index], lease):
                worker_id, attempt, phase, epoch = (
                    task.worker_id,
                    task.attempt,
                    task.phase,
                    task.epoch,
                )
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
        lease = lease_of(task)
        if timeouts.start_to_close_ms and task.attempts:
            left = task.attempts[-1].dispatched_ms + timeouts.start_to_close_ms - now
            self._watch_lease(
                state.execution_id,
                task.index,
                lease,
                max(0, left),
                ev.TIMEOUT_KIND_START_TO_CLOSE,
            )
        if timeouts.heartbeat_ms:
            self._beats[(state.execution_id, task.index)] = now
            self._watch_heartbeat(state.execution_id, task.index, lease, timeouts.heartbeat_ms)
        if task.state == ex.TASK_STATE_DISPATCHED and timeouts.schedule_to_start_ms:
            self._watch_queue(state, task.index)

    def _deadline(self, execution_id: str, at_ms: int, action: Callable[[Machine], None]) -> None:
        def fire() -> None:
            if execution_id in self._live:
                self._submit(execution_id, action)

        delay = max(0.0, (at_ms - self.now_ms()) / 1000)
        asyncio.get_running_loop().call_later(delay, fire)
