"""Circuit breakers in the runtime: the gate before dispatch, parking, half-open.

The breaker itself (states, policy, encoding) is `decide/breaker.py`; one exists per
task type, shared by every execution of this engine. `BreakerGate` owns them and
the tasks parked behind them:

* `admit` (a scheduler `Gate`): an OPEN breaker, or a HALF_OPEN one whose canary
  slots are taken, refuses the dispatch; the machine then parks the task (no attempt
  spent) or, with `on_open: fail_fast`, fails it with `CircuitOpen`. A HALF_OPEN
  breaker counts the attempts it lets through as canaries.
* `committed`: outcomes of breaker-guarded main attempts are counted once durable.
* transitions are written to the store (`put_kv("breakers", type, ...)`, in the
  background) and reloaded at start; the half-open timer and, while HALF_OPEN, a
  periodic check that frees the slots of canaries that ended without a counted
  result (requeued, cancelled, never committed) are tracked and cancelled by `stop`.
* parked tasks queue again (an input per task) when their breaker lets calls through.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from execplan.executor.decide import breaker as cb
from execplan.executor.decide import fencing
from execplan.executor.decide.machine import Machine
from execplan.executor.plan_view import BreakerView
from execplan.executor.runtime.background import Background
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Inbox
from execplan.executor.runtime.scheduler import Verdict
from execplan.executor.state import ExecutionState
from execplan.executor.task_errors import timeout_name
from execplan.store.port import Store
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

log = logging.getLogger("execplan.executor")


class BreakerGate:
    def __init__(
        self,
        *,
        store: Store,
        background: Background,
        executions: Executions,
        inbox: Inbox,
        now_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._background = background
        self._executions = executions
        self._inbox = inbox
        self._now_ms = now_ms
        self.breakers: dict[str, cb.Breaker] = {}
        # task type -> (execution id, task index) in parking order (dict as ordered set).
        self.parked: dict[str, dict[tuple[str, int], None]] = {}
        # (task type, new state) -> transitions since start; exported as metrics.
        self.transitions: Counter[tuple[str, str]] = Counter()
        self._timers: set[asyncio.TimerHandle] = set()
        self._stopped = False
        # The breaker a task counts on: its type, or `type[key]` with a keyed breaker
        # (`circuit_breaker.key`, evaluated by the flow gate); the engine sets it.
        self.name_of: Callable[..., str] = _type_of

    def _breaker(self, task_type: str, policy: BreakerView) -> cb.Breaker:
        breaker = self.breakers.get(task_type)
        if breaker is None:
            breaker = self.breakers[task_type] = cb.Breaker(task_type, policy)
        elif breaker.policy != policy:
            breaker.policy = policy  # the newest plan's policy wins
        return breaker

    # -- lifecycle -------------------------------------------------------------------
    async def load(self) -> None:
        for task_type, payload in await self._store.list_kv(cb.NAMESPACE):
            try:
                breaker = cb.decode(task_type, payload)
            except (ValueError, KeyError, TypeError):
                log.exception("ignoring unreadable breaker state of %s", task_type)
                continue
            self.breakers[task_type] = breaker
            if breaker.state == cb.OPEN:
                self._arm_half_open(breaker)
            elif breaker.state == cb.HALF_OPEN:
                self._arm_canary_check(breaker)

    def park_recovered(self, state: ExecutionState) -> None:
        """A recovered execution's PARKED tasks, back behind their breakers."""
        for task in state.tasks:
            node = state.node(task.index)
            if task.state == ex.TASK_STATE_PARKED and node.breaker is not None:
                self._park(self.name_of(state, task.index), (state.execution_id, task.index))

    def release_parked(self) -> None:
        """After recovery: parked tasks whose breaker no longer holds them queue again."""
        for task_type in list(self.parked):
            breaker = self.breakers.get(task_type)
            if breaker is None or breaker.state == cb.CLOSED:
                self._unpark(task_type, None)
            elif breaker.state == cb.HALF_OPEN:
                self._unpark(task_type, breaker.policy.half_open_max_calls)

    def stop(self) -> None:
        self._stopped = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _later(self, delay_s: float, fire: Callable[[], None]) -> None:
        def run() -> None:
            self._timers.discard(handle)
            fire()

        handle = asyncio.get_running_loop().call_later(delay_s, run)
        self._timers.add(handle)

    # -- the gate --------------------------------------------------------------------
    def admit(self, state: ExecutionState, index: int, now_ms: int) -> Verdict | None:
        node = state.node(index)
        if node.breaker is None or state.tasks[index].phase != ex.TASK_PHASE_MAIN:
            return None
        breaker = self._breaker(self.name_of(state, index, strict=True), node.breaker)
        if breaker.due(now_ms):  # the half-open timer may not have run yet
            breaker.half_open()
            self._changed(breaker)
        elif not breaker.admits():
            self._release_canaries(breaker)
        if not breaker.admits():
            return Verdict(refuse=lambda machine: self._refuse(machine, breaker, index))
        if breaker.state != cb.HALF_OPEN:
            return None

        def canary() -> None:
            task = state.tasks[index]
            breaker.admitted((state.execution_id, index, task.attempt, task.epoch))

        return Verdict(dispatched=canary)

    def _refuse(self, machine: Machine, breaker: cb.Breaker, index: int) -> None:
        task = machine.state.tasks[index]
        if breaker.policy.fail_fast:
            machine.circuit_open(task, breaker.task_type)
        else:
            machine.park(task, breaker.task_type, True)
            self._park(breaker.task_type, (machine.state.execution_id, index))

    def _park(self, task_type: str, key: tuple[str, int]) -> None:
        self.parked.setdefault(task_type, {})[key] = None

    def _canary_in_flight(self, key: cb.CanaryKey) -> bool:
        execution_id, index, attempt, epoch = key
        state = self._executions.get(execution_id)
        claim = fencing.Claim(ex.TASK_PHASE_MAIN, attempt, epoch)
        return state is not None and fencing.holds(state, index, claim)

    def _release_canaries(self, breaker: cb.Breaker) -> None:
        """Frees the slots of canaries that ended without a counted result.

        A canary requeued (ack deadline, lost worker), cancelled, failed with an error
        that is not counted, or whose dispatch was never committed, says nothing about
        the task type: its slot goes to the next parked task.
        """
        freed = breaker.release_canaries(self._canary_in_flight)
        if freed:
            self._unpark(breaker.task_type, freed)

    # -- outcomes --------------------------------------------------------------------
    def committed(self, state: ExecutionState, events: Sequence[ev.ExecutionEvent]) -> None:
        """Counts the outcomes of breaker-guarded main attempts among `events`."""
        if not _has_breakers(state):
            return
        now = self._now_ms()
        for event in events:
            outcome = _outcome(event)
            if outcome is None:
                continue
            task_id, phase, failed, error = outcome
            index = state.task(task_id).index
            node = state.node(index)
            if phase != ex.TASK_PHASE_MAIN or node.breaker is None:
                continue
            breaker = self._breaker(self.name_of(state, index), node.breaker)
            if breaker.record(failed, now, error) is not None:
                self._changed(breaker)
        for breaker in self.breakers.values():
            if any(key[0] == state.execution_id for key in breaker.canary_keys):
                self._release_canaries(breaker)

    def _changed(self, breaker: cb.Breaker) -> None:
        log.info("circuit breaker %s is now %s", breaker.task_type, breaker.state)
        self.transitions[(breaker.task_type, breaker.state)] += 1
        write = self._store.put_kv(cb.NAMESPACE, breaker.task_type, cb.encode(breaker))
        self._background.spawn(write, "breaker-write")
        if breaker.state == cb.OPEN:
            self._arm_half_open(breaker)
        elif breaker.state == cb.HALF_OPEN:
            self._unpark(breaker.task_type, breaker.policy.half_open_max_calls)
            self._arm_canary_check(breaker)
        else:
            self._unpark(breaker.task_type, None)

    def _arm_half_open(self, breaker: cb.Breaker) -> None:
        def tick() -> None:
            if breaker.due(self._now_ms()):
                breaker.half_open()
                self._changed(breaker)
                self._inbox.wake()

        self._later(max(0.0, (breaker.half_open_at_ms - self._now_ms()) / 1000), tick)

    def _arm_canary_check(self, breaker: cb.Breaker) -> None:
        """Backstop while HALF_OPEN: every `open_for`, free the slots of lost canaries."""
        period = breaker.half_open_at_ms
        delay = max(0.05, breaker.policy.open_for_ms / 1000)

        def tick() -> None:
            if self._stopped or breaker.state != cb.HALF_OPEN or breaker.half_open_at_ms != period:
                return  # closed or re-opened since: a later half-open arms its own check
            self._release_canaries(breaker)
            self._inbox.wake()
            self._later(delay, tick)

        self._later(delay, tick)

    def _unpark(self, task_type: str, limit: int | None) -> None:
        """Lets up to `limit` (None: all) parked tasks of a type queue again, oldest first."""
        parked = self.parked.get(task_type, {})
        released = 0
        for key in list(parked):
            if limit is not None and released >= limit:
                break
            del parked[key]
            state = self._executions.get(key[0])
            if state is None or state.tasks[key[1]].state != ex.TASK_STATE_PARKED:
                continue  # cancelled, timed out or finished meanwhile
            released += 1
            self._inbox.submit(key[0], _unpark(key[1], task_type))

    def statuses(self, task_types: list[str]) -> list[tuple[cb.Breaker, int]]:
        """Every known breaker (or those of `task_types`) with its parked-task count."""
        result = []
        for task_type in sorted(self.breakers):
            if task_types and task_type not in task_types:
                continue
            parked = 0
            for execution_id, index in self.parked.get(task_type, {}):
                state = self._executions.get(execution_id)
                if state is not None and state.tasks[index].state == ex.TASK_STATE_PARKED:
                    parked += 1
            result.append((self.breakers[task_type], parked))
        return result


def _outcome(event: ev.ExecutionEvent) -> tuple[str, int, bool, str] | None:
    """(task id, phase, failed, error text) of an attempt outcome a breaker counts."""
    kind = event.WhichOneof("kind")
    if kind == "task_succeeded":
        body = event.task_succeeded
        return body.task_id, body.phase, False, ""
    if kind == "task_failed":
        failed = event.task_failed
        if failed.error.type in cb.NOT_COUNTED:
            return None
        return failed.task_id, failed.phase, True, f"{failed.error.type}: {failed.error.message}"
    if kind == "task_timed_out":
        timed = event.task_timed_out
        return timed.task_id, timed.phase, True, f"Timeout: {timeout_name(timed.timeout)}"
    return None


def _unpark(index: int, task_type: str) -> Callable[[Machine], None]:
    def action(machine: Machine) -> None:
        task = machine.state.tasks[index]
        if task.state == ex.TASK_STATE_PARKED:
            machine.park(task, task_type, False)

    return action


def _type_of(state: ExecutionState, index: int, *, strict: bool = False) -> str:
    return state.node(index).type


def _has_breakers(state: ExecutionState) -> bool:
    """Does a task of the execution have a breaker, a sub-plan's included? (Asked for
    every execution of every round: most have no sub-plan, and a generator over none
    costs more than the rest of the check.)"""
    if state.plan.has_breakers:
        return True
    return bool(state.scopes) and any(scope.plan.has_breakers for scope in state.scopes)
