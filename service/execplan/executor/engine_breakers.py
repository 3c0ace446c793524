"""Circuit breakers in the engine: gating dispatches, parking and releasing tasks.

The breakers themselves (states, policy, encoding) are executor/breakers.py. Here:
loading their state at start, counting committed outcomes of breaker-guarded tasks,
refusing or parking a dispatch while a breaker is open, the half-open timer, and
letting parked tasks queue again when a breaker lets calls through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from execplan.executor import breakers as cb
from execplan.executor.engine_core import EngineCore
from execplan.executor.fencing import Claim, stale
from execplan.executor.machine import Machine
from execplan.executor.state import ExecutionState
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

log = logging.getLogger("execplan.executor")


class EngineBreakers(EngineCore):
    # -- circuit breakers (executor/breakers.py) ---------------------------------
    async def _load_breakers(self) -> None:
        for task_type, payload in await self.store.list_kv(cb.NAMESPACE):
            try:
                breaker = cb.decode(task_type, payload)
            except (ValueError, KeyError, TypeError):
                log.exception("ignoring unreadable breaker state of %s", task_type)
                continue
            self.breakers.breakers[task_type] = breaker
            if breaker.state == cb.OPEN:
                self._arm_half_open(breaker)
            elif breaker.state == cb.HALF_OPEN:
                self._arm_canary_check(breaker)

    def _release_parked(self) -> None:
        """After recovery: parked tasks whose breaker no longer holds them queue again."""
        for task_type in list(self.breakers.parked):
            breaker = self.breakers.breakers.get(task_type)
            if breaker is None or breaker.state == cb.CLOSED:
                self._unpark(task_type, None)
            elif breaker.state == cb.HALF_OPEN:
                self._unpark(task_type, breaker.policy.half_open_max_calls)

    def _has_breakers(self, state: ExecutionState) -> bool:
        plan = state.plan
        known = self._breaker_plans.get(plan.plan_id)
        if known is None:
            known = self._breaker_plans[plan.plan_id] = any(n.breaker for n in plan.nodes)
        return known

    def _breaker_gate(self, state: ExecutionState, index: int, now: int) -> cb.Breaker | None:
        node = state.plan.nodes[index]
        if node.breaker is None or state.tasks[index].phase != ex.TASK_PHASE_MAIN:
            return None
        breaker = self.breakers.get(node.type, node.breaker)
        if breaker.due(now):  # the half-open timer may not have run yet
            breaker.half_open()
            self._breaker_changed(breaker)
        elif not breaker.admits():
            self._release_canaries(breaker)
        return breaker

    def _canary_in_flight(self, key: cb.CanaryKey) -> bool:
        execution_id, index, attempt, epoch = key
        state = self._live.get(execution_id)
        if state is None:
            return False
        lease = Claim(ex.TASK_PHASE_MAIN, attempt, epoch)
        return not stale(state.tasks[index], state.plan.nodes[index], lease)

    def _release_canaries(self, breaker: cb.Breaker) -> None:
        """Frees the slots of canaries that ended without a counted result.

        A canary requeued (ack deadline, lost worker), cancelled, failed with an error
        that is not counted, or whose dispatch was never committed, says nothing about
        the task type: its slot goes to the next parked task.
        """
        freed = breaker.release_canaries(self._canary_in_flight)
        if freed:
            self._unpark(breaker.task_type, freed)

    def _breaker_refuse(self, machine: Machine, breaker: cb.Breaker, index: int) -> None:
        task = machine.state.tasks[index]
        if breaker.policy.fail_fast:
            machine.circuit_open(task, breaker.task_type)
        else:
            machine.park(task, breaker.task_type, True)
            self.breakers.park(breaker.task_type, (machine.state.execution_id, index))

    def _feed_breakers(self, state: ExecutionState, events: list[ev.ExecutionEvent]) -> None:
        now = self.now_ms()
        for event in events:
            kind = event.WhichOneof("kind")
            if kind == "task_succeeded":
                task_id, phase, failed, error = (
                    event.task_succeeded.task_id,
                    event.task_succeeded.phase,
                    False,
                    "",
                )
            elif kind == "task_failed":
                body = event.task_failed
                if body.error.type in cb.NOT_COUNTED:
                    continue
                task_id, phase, failed = body.task_id, body.phase, True
                error = f"{body.error.type}: {body.error.message}"
            elif kind == "task_timed_out":
                timeout = ev.TimeoutKind.Name(event.task_timed_out.timeout)
                task_id, phase, failed = (
                    event.task_timed_out.task_id,
                    event.task_timed_out.phase,
                    True,
                )
                error = f"Timeout: {timeout.removeprefix('TIMEOUT_KIND_').lower()}"
            else:
                continue
            node = state.plan.nodes[state.plan.index_of[task_id]]
            if phase != ex.TASK_PHASE_MAIN or node.breaker is None:
                continue
            breaker = self.breakers.get(node.type, node.breaker)
            if breaker.record(failed, now, error) is not None:
                self._breaker_changed(breaker)
        for breaker in self.breakers.breakers.values():
            if any(key[0] == state.execution_id for key in breaker.canary_keys):
                self._release_canaries(breaker)

    def _breaker_changed(self, breaker: cb.Breaker) -> None:
        log.info("circuit breaker %s is now %s", breaker.task_type, breaker.state)
        self.breakers.counted(breaker.task_type, breaker.state)
        write = asyncio.create_task(
            self.store.put_kv(cb.NAMESPACE, breaker.task_type, cb.encode(breaker))
        )
        self._background.add(write)
        write.add_done_callback(self._background.discard)
        if breaker.state == cb.OPEN:
            self._arm_half_open(breaker)
        elif breaker.state == cb.HALF_OPEN:
            self._unpark(breaker.task_type, breaker.policy.half_open_max_calls)
            self._arm_canary_check(breaker)
        else:
            self._unpark(breaker.task_type, None)

    def _arm_half_open(self, breaker: cb.Breaker) -> None:
        def tick() -> None:
            if breaker.due(self.now_ms()):
                breaker.half_open()
                self._breaker_changed(breaker)
                self._wake.set()

        delay = max(0.0, (breaker.half_open_at_ms - self.now_ms()) / 1000)
        asyncio.get_running_loop().call_later(delay, tick)

    def _arm_canary_check(self, breaker: cb.Breaker) -> None:
        """Backstop while HALF_OPEN: every `open_for`, free the slots of lost canaries."""
        period = breaker.half_open_at_ms

        def tick() -> None:
            if self._stopping or breaker.state != cb.HALF_OPEN or breaker.half_open_at_ms != period:
                return  # closed or re-opened since: a later half-open arms its own check
            self._release_canaries(breaker)
            self._wake.set()
            loop.call_later(delay, tick)

        loop = asyncio.get_running_loop()
        delay = max(0.05, breaker.policy.open_for_ms / 1000)
        loop.call_later(delay, tick)

    def _unpark(self, task_type: str, limit: int | None) -> None:
        """Lets up to `limit` (None: all) parked tasks of a type queue again, oldest first."""
        parked = self.breakers.parked.get(task_type, {})
        released = 0
        for key in list(parked):
            if limit is not None and released >= limit:
                break
            del parked[key]
            state = self._live.get(key[0])
            if state is None or state.tasks[key[1]].state != ex.TASK_STATE_PARKED:
                continue  # cancelled, timed out or finished meanwhile
            released += 1
            self._submit(key[0], _unpark_action(key[1], task_type))

    def breaker_statuses(self, task_types: list[str]) -> list[tuple[cb.Breaker, int]]:
        """Every known breaker (or those of `task_types`) with its parked-task count."""
        result = []
        for task_type in sorted(self.breakers.breakers):
            if task_types and task_type not in task_types:
                continue
            parked = 0
            for execution_id, index in self.breakers.parked.get(task_type, {}):
                state = self._live.get(execution_id)
                if state is not None and state.tasks[index].state == ex.TASK_STATE_PARKED:
                    parked += 1
            result.append((self.breakers.breakers[task_type], parked))
        return result


def _unpark_action(index: int, task_type: str) -> Callable[[Machine], None]:
    def action(machine: Machine) -> None:
        task = machine.state.tasks[index]
        if task.state == ex.TASK_STATE_PARKED:
            machine.park(task, task_type, False)

    return action
