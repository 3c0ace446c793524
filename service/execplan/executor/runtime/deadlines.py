"""Every timer of the runtime that belongs to an execution, tracked so none outlives it.

Attempt deadlines (ack, start_to_close, heartbeat, schedule_to_start,
schedule_to_close) are in memory only: an entry in one heap ordered by due time,
swept by a single loop timer armed for the earliest entry (a `loop.call_later` per
dispatch, two closures and a set entry each, cost ~5% of the server's CPU on a
fan-out); the ack deadlines armed at the same ms (a round's dispatches, sent
together) share one entry. A due entry submits an input for the pump; the input
checks (`fencing`) that the lease it was armed for is still the current one, so an
entry that comes due late does nothing. An ack deadline is checked before it becomes an input: an
attempt acknowledged long ago does not cost a round. Durable timers
(retry backoff, sleep, wait timeouts) are recorded as events (`timer_scheduled`) and
armed here once committed. `forget(execution_id)` cancels all of an execution's
handles (it finished, was reloaded or moved to another replica); `rearm` creates
them again from a state rebuilt from the log; `stop` cancels everything. A missed
ack deadline also tells the worker's pacing (`missed_ack`, runtime/sessions.py).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from functools import partial

from execplan.executor.decide import fencing
from execplan.executor.decide.machine import Machine
from execplan.executor.runtime.config import EngineConfig
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Inbox
from execplan.executor.runtime.leases import Leases
from execplan.executor.state import ACTIVE_TASK_STATES, ExecutionState, TaskRun
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex


class Deadlines:
    def __init__(
        self,
        *,
        config: EngineConfig,
        executions: Executions,
        inbox: Inbox,
        leases: Leases,
        missed_ack: Callable[[str], None],
        now_ms: Callable[[], int],
    ) -> None:
        self._config = config
        self._executions = executions
        self._inbox = inbox
        self._leases = leases
        self._missed_ack = missed_ack
        self._now_ms = now_ms
        # Attempt deadlines: (due ms, tie-breaker, the execution's _Armed, fire); an
        # entry of ack deadlines (`_AckBatch`) has no _Armed: each of its own has one.
        self._heap: list[tuple[int, int, _Armed | None, Callable[[], None]]] = []
        # The ack deadlines armed last, all due at the same ms (a round's dispatches
        # are sent together): one heap entry for them all, not one each.
        self._acks: _AckBatch | None = None
        self._order = itertools.count()
        # Per execution with deadlines armed. `forget` drops the entry: its deadlines
        # still in the heap name an _Armed no longer current and are skipped when they
        # come due, so forgetting costs nothing per deadline.
        self._armed: dict[str, _Armed] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_due = 0
        # Durable timers by execution id and timer id: re-arming one replaces it.
        self._timers: dict[str, dict[str, asyncio.TimerHandle]] = {}

    def pending(self, execution_id: str) -> int:
        """Deadlines armed for an execution and not fired yet (tests, introspection)."""
        timers = len(self._timers.get(execution_id, ()))
        armed = self._armed.get(execution_id)
        return (armed.count if armed is not None else 0) + timers

    def forget(self, execution_id: str) -> None:
        self._armed.pop(execution_id, None)
        for handle in self._timers.pop(execution_id, {}).values():
            handle.cancel()

    def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._heap.clear()
        self._acks = None
        self._armed.clear()
        for timers in self._timers.values():
            for handle in timers.values():
                handle.cancel()
        self._timers.clear()

    def _after(self, execution_id: str, delay_ms: int, fire: Callable[[], None]) -> None:
        self._at(execution_id, self._now_ms() + max(0, delay_ms), fire)

    def _at(self, execution_id: str, at_ms: int, fire: Callable[[], None]) -> None:
        self._push(at_ms, self._count(execution_id), fire)

    def _count(self, execution_id: str) -> _Armed:
        """One more deadline of the execution is armed."""
        armed = self._armed.get(execution_id)
        if armed is None:
            armed = self._armed[execution_id] = _Armed(execution_id)
        armed.count += 1
        return armed

    def _push(self, at_ms: int, armed: _Armed | None, fire: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (at_ms, next(self._order), armed, fire))
        if self._sweep is None or at_ms < self._sweep_due:
            self._arm_sweep(at_ms)

    def _arm_sweep(self, due_ms: int) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_due = due_ms
        delay = max(0, due_ms - self._now_ms()) / 1000
        self._sweep = asyncio.get_running_loop().call_later(delay, self._swept)

    def _swept(self) -> None:
        """Fires every deadline that is due, then waits for the next one."""
        self._sweep = None
        heap = self._heap
        now = self._now_ms()
        while heap and heap[0][0] <= now:
            _, _, armed, fire = heapq.heappop(heap)
            if armed is None or self._live(armed):
                fire()
        if not self._armed:
            heap.clear()  # only deadlines of forgotten executions are left
            self._acks = None  # nothing more may join a batch no longer in the heap
        if heap and self._sweep is None:
            self._arm_sweep(heap[0][0])

    def _live(self, armed: _Armed) -> bool:
        """A deadline comes due: False when its execution was forgotten since."""
        if self._armed.get(armed.execution_id) is not armed:
            return False
        armed.count -= 1
        if not armed.count:
            del self._armed[armed.execution_id]
        return True

    def _submit(self, execution_id: str, action: Callable[[Machine], None]) -> None:
        if execution_id in self._executions:
            self._inbox.submit(execution_id, action)

    # -- durable timers --------------------------------------------------------------
    def arm(self, execution_id: str, timer_id: str, fire_at_ms: int) -> None:
        timers = self._timers.setdefault(execution_id, {})
        old = timers.pop(timer_id, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            armed = self._timers.get(execution_id)
            if armed is not None and armed.pop(timer_id, None) is not None and not armed:
                del self._timers[execution_id]
            self._inbox.submit(execution_id, lambda m: m.timer_fired(timer_id))

        delay = max(0.0, (fire_at_ms - self._now_ms()) / 1000)
        timers[timer_id] = asyncio.get_running_loop().call_later(delay, fire)

    # -- a leased attempt ------------------------------------------------------------
    def dispatched(self, state: ExecutionState, index: int, claim: fencing.Claim) -> None:
        """The attempt's lease was sent to its worker: its ack, start_to_close and
        heartbeat deadlines start now."""
        self._watch_ack(state.execution_id, index, claim, self._config.ack_deadline_ms)
        timeouts = state.node(index).timeouts_for(claim.phase)
        if timeouts.start_to_close_ms:
            self._watch_timeout(
                state.execution_id,
                index,
                claim,
                timeouts.start_to_close_ms,
                ev.TIMEOUT_KIND_START_TO_CLOSE,
            )
        if timeouts.heartbeat_ms:
            self._watch_heartbeat(state.execution_id, index, claim, timeouts.heartbeat_ms)

    def _watch_ack(
        self, execution_id: str, index: int, claim: fencing.Claim, delay_ms: int
    ) -> None:
        due = self._now_ms() + max(0, delay_ms)
        armed = self._count(execution_id)
        batch = self._acks
        if batch is None or batch.due_ms != due or batch.fired:
            batch = self._acks = _AckBatch(due)
            self._push(due, None, partial(self._acks_due, batch))
        batch.acks.append((armed, index, claim))

    def _acks_due(self, batch: _AckBatch) -> None:
        batch.fired = True
        for armed, index, claim in batch.acks:
            if self._live(armed):
                self._ack_due(armed.execution_id, index, claim)

    def _ack_due(self, execution_id: str, index: int, claim: fencing.Claim) -> None:
        state = self._executions.get(execution_id)
        if state is None or not _unacknowledged(state, index, claim):
            return  # acknowledged (or moved on) in time: no round for it

        def action(machine: Machine) -> None:
            if _unacknowledged(machine.state, index, claim):
                task = machine.state.tasks[index]
                self._missed_ack(task.worker_id)
                machine.requeue(task, "assignment not acknowledged in time")

        self._submit(execution_id, action)

    def _watch_timeout(
        self, execution_id: str, index: int, claim: fencing.Claim, delay_ms: int, kind: int
    ) -> None:
        action = _timed_out(index, claim, kind)
        self._after(execution_id, delay_ms, lambda: self._submit(execution_id, action))

    def _watch_heartbeat(
        self, execution_id: str, index: int, claim: fencing.Claim, limit_ms: int
    ) -> None:
        def check() -> None:
            last = self._leases.last_beat(execution_id, index, claim.epoch)
            if last is None:
                return  # the lease ended (or moved on)
            silent = self._now_ms() - last
            if silent >= limit_ms:
                self._submit(execution_id, _timed_out(index, claim, ev.TIMEOUT_KIND_HEARTBEAT))
            else:
                self._after(execution_id, limit_ms - silent, check)

        self._after(execution_id, limit_ms, check)

    # -- a queued attempt and the task as a whole ------------------------------------
    def queued(self, state: ExecutionState, index: int) -> None:
        """schedule_to_start (queued -> acked) of this attempt; schedule_to_close once."""
        task = state.tasks[index]
        limit = state.node(index).timeouts_for(task.phase).schedule_to_start_ms
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

            execution_id = state.execution_id
            self._at(execution_id, task.queued_ms + limit, lambda: self._submit(execution_id, late))
        if task.attempt == 1:
            self.whole_task(state, index)

    def whole_task(self, state: ExecutionState, index: int) -> None:
        """schedule_to_close: first queued -> final result, across all attempts."""
        task = state.tasks[index]
        limit = state.node(index).timeouts.schedule_to_close_ms
        if not limit or task.phase != ex.TASK_PHASE_MAIN or not task.first_queued_ms:
            return

        def late(machine: Machine) -> None:
            run = machine.state.tasks[index]
            if (
                run.phase == ex.TASK_PHASE_MAIN
                and run.state in ACTIVE_TASK_STATES
                and run.state != ex.TASK_STATE_WAITING
            ):
                machine.deadline_passed(run, ev.TIMEOUT_KIND_SCHEDULE_TO_CLOSE)

        execution_id = state.execution_id
        self._at(
            execution_id, task.first_queued_ms + limit, lambda: self._submit(execution_id, late)
        )

    # -- a builtin.workflow task's child ---------------------------------------------
    def child_running(self, state: ExecutionState, index: int) -> None:
        """The task's child execution runs (started, or found again after a restart):
        the task's start_to_close counts from its start. (schedule_to_close is armed
        by `whole_task`; heartbeat and schedule_to_start do not apply to a child.)"""
        task = state.tasks[index]
        limit = state.node(index).timeouts_for(task.phase).start_to_close_ms
        if limit and task.state == ex.TASK_STATE_RUNNING:
            self._watch_timeout(
                state.execution_id,
                index,
                fencing.lease_of(task),
                task.started_ms + limit - self._now_ms(),
                ev.TIMEOUT_KIND_START_TO_CLOSE,
            )

    # -- after a restart or a reload -------------------------------------------------
    def rearm(self, state: ExecutionState, task: TaskRun, *, reattached: bool) -> None:
        """The in-memory deadlines of a leased attempt, from the log. `reattached`: its
        worker is still connected here (a reload), so its ack deadline runs on; after
        a restart or a takeover the reconnect grace decides instead."""
        timeouts = state.node(task.index).timeouts_for(task.phase)
        claim = fencing.lease_of(task)
        now = self._now_ms()
        dispatched_ms = task.attempts[-1].dispatched_ms if task.attempts else now
        if reattached and task.state == ex.TASK_STATE_DISPATCHED:
            left = dispatched_ms + self._config.ack_deadline_ms - now
            self._watch_ack(state.execution_id, task.index, claim, left)
        if timeouts.start_to_close_ms and task.attempts:
            self._watch_timeout(
                state.execution_id,
                task.index,
                claim,
                dispatched_ms + timeouts.start_to_close_ms - now,
                ev.TIMEOUT_KIND_START_TO_CLOSE,
            )
        if timeouts.heartbeat_ms:
            self._leases.beat(state.execution_id, task.index, task.epoch, now)
            self._watch_heartbeat(state.execution_id, task.index, claim, timeouts.heartbeat_ms)
        if task.state == ex.TASK_STATE_DISPATCHED and timeouts.schedule_to_start_ms:
            self.queued(state, task.index)


class _Armed:
    """The attempt deadlines of one execution in the heap: how many are live."""

    __slots__ = ("count", "execution_id")

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self.count = 0


class _AckBatch:
    """Ack deadlines due at the same ms, in one heap entry: (its execution's _Armed,
    the task's index, the lease's claim) each."""

    __slots__ = ("acks", "due_ms", "fired")

    def __init__(self, due_ms: int) -> None:
        self.due_ms = due_ms
        self.acks: list[tuple[_Armed, int, fencing.Claim]] = []
        self.fired = False


def _unacknowledged(state: ExecutionState, index: int, claim: fencing.Claim) -> bool:
    return state.tasks[index].state == ex.TASK_STATE_DISPATCHED and fencing.holds(
        state, index, claim
    )


def _timed_out(index: int, claim: fencing.Claim, kind: int) -> Callable[[Machine], None]:
    def action(machine: Machine) -> None:
        if fencing.holds(machine.state, index, claim):
            machine.deadline_passed(machine.state.tasks[index], kind)

    return action
