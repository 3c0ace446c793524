"""Rebuilding the in-memory side of executions from the log.

At start (`_recover`), after a failed commit (`_reload`), and when replicas hand
executions over (`adopt`, `disown`; executor/ownership.py): live tables, ready
queues, orphaned leases, deadlines, timers and parked tasks are re-created from the
state the events fold to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from execplan.errors import ExecplanError
from execplan.executor import effects as fx
from execplan.executor.engine_dispatch import EngineDispatch
from execplan.executor.engine_reads import EngineReads
from execplan.executor.engine_workers import EngineWorkers
from execplan.executor.state import ACTIVE_TASK_STATES, LEASED_TASK_STATES, ExecutionState
from execplan.v1 import execution_pb2 as ex

log = logging.getLogger("execplan.executor")


class EngineRecovery(EngineReads, EngineWorkers, EngineDispatch):
    async def _reload(self, execution_id: str) -> None:
        """Drops in-memory state that may be ahead of the store and rebuilds it.

        While the log is read, the execution is out of `_live`: worker messages for
        it are held (`_reloading`) and submitted once it is back, not rejected.
        """
        self._live.pop(execution_id, None)
        self._ready.drop(execution_id)
        self._reloading.setdefault(execution_id, [])
        for worker in self.workers.workers.values():
            worker.leases = {k for k in worker.leases if k[0] != execution_id}
        try:
            state = await self.load_state(execution_id)
            if not state.terminal:
                self._resume_state(state, reattach=True)
        except ExecplanError:
            log.exception("cannot reload execution %s", execution_id)
        finally:
            for held in self._reloading.pop(execution_id, []):
                held()

    # -- replicas: executions moving between owners (executor/ownership.py) ------
    async def adopt(self, execution_ids: Collection[str]) -> int:
        """Load executions this replica has just claimed and resume them as after a
        restart (dispatched attempts become orphans, re-leased after the grace)."""
        adopted = 0
        for execution_id in execution_ids:
            if execution_id in self._live:
                continue
            self._finished.pop(execution_id, None)
            try:
                state = await self.load_state(execution_id)
            except ExecplanError:
                log.exception("cannot adopt execution %s", execution_id)
                continue
            if not state.terminal and execution_id not in self._live:
                self._resume_state(state)
                adopted += 1
        return adopted

    def disown(self, execution_ids: Collection[str]) -> None:
        """Drop executions another replica owns now; their callers get Unavailable."""
        for execution_id in execution_ids:
            state = self._live.pop(execution_id, None)
            if state is None:
                continue
            log.warning("execution %s is owned by another replica now", execution_id)
            self._ready.drop(execution_id)
            self._inflight.pop(execution_id, None)
            self._checkpointed.pop(execution_id, None)
            for key in [k for k in self._timers if k[0] == execution_id]:
                self._timers.pop(key).cancel()
            for worker in self.workers.workers.values():
                worker.leases = {k for k in worker.leases if k[0] != execution_id}

    @property
    def live_ids(self) -> list[str]:
        return list(self._live)

    # -- recovery ----------------------------------------------------------------
    async def _recover(self) -> None:
        records = await self.store.list_active()
        for record in records:
            state = await self.load_state(record.execution_id)
            if not state.terminal:
                self._resume_state(state)
        if records:
            log.info("recovered %d executions", len(records))

    def _resume_state(self, state: ExecutionState, *, reattach: bool = False) -> None:
        """Re-creates the in-memory side of a state rebuilt from the log.

        `reattach` (a reload on this replica): leases of a worker still connected here
        stay with it. Otherwise (a restart, adopting another replica's executions) a
        worker of the same id may be connected here while its attempt ran elsewhere.
        """
        self._adopt(state)
        machine = self._machine(state, self.now_ms())
        for task in state.tasks:
            node = state.plan.nodes[task.index]
            if task.state == ex.TASK_STATE_QUEUED:
                machine.effects.append(fx.TaskReady(task.index))
            elif task.state in LEASED_TASK_STATES:
                key = (state.execution_id, node.index)
                # The log says whose lease it is: a worker id keeps its principal.
                self.workers.bind_recovered(task.worker_id, task.principal)
                worker = self.workers.workers.get(task.worker_id)
                if reattach and worker is not None and worker.connected:
                    # Its worker is still connected: the lease stays with it, taking
                    # a slot and accepting heartbeats; no re-dispatch after a grace.
                    worker.leases.add(key)
                    self._beats[key] = self.now_ms()
                else:
                    # The worker may still be running it: give it time to reconnect
                    # and reclaim the lease before re-dispatching (a recorded re-lease).
                    self._orphans.setdefault(task.worker_id, set()).add(key)
                self._rearm_lease(state, task)
            if task.state == ex.TASK_STATE_PARKED and node.breaker is not None:
                self.breakers.park(node.type, (state.execution_id, task.index))
            if task.state in ACTIVE_TASK_STATES and task.state != ex.TASK_STATE_QUEUED:
                self._watch_total(state, task.index)
        self._apply_internal(machine)
        for timer in state.timers.values():
            if timer.timer_id:
                self._arm(state.execution_id, timer.timer_id, timer.fire_at_ms)
        loop = asyncio.get_running_loop()
        orphaned = {t.worker_id for t in state.tasks if t.state in LEASED_TASK_STATES}
        for worker_id in orphaned & set(self._orphans):
            loop.call_later(self.config.recovery_grace_ms / 1000, self._expire_orphans, worker_id)
        self._wake.set()
