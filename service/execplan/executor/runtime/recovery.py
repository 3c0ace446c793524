"""Rebuilding the in-memory side of executions from the log.

At start (`recover`), after a failed commit (`reload`), and when replicas hand
executions over (`adopt`, `disown`; runtime/replicas.py): the state is folded from
the latest checkpoint plus the log tail, and the runtime parts pick it up again:
leases (reattached to a still-connected worker, or orphaned until its worker
reconnects or the grace ends), deadlines, durable timers, ready queues and parked
tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from execplan.errors import ExecplanError
from execplan.executor.decide import effects as fx
from execplan.executor.decide.machine import Machine
from execplan.executor.runtime.background import Background
from execplan.executor.runtime.breakers import BreakerGate
from execplan.executor.runtime.children import Children
from execplan.executor.runtime.config import EngineConfig
from execplan.executor.runtime.deadlines import Deadlines
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.flow import FlowGate, uses_flow
from execplan.executor.runtime.inbox import Inbox
from execplan.executor.runtime.leases import LeaseKey, Leases
from execplan.executor.runtime.reads import Reads
from execplan.executor.runtime.scheduler import Scheduler
from execplan.executor.runtime.workers import WorkerRegistry
from execplan.executor.state import ACTIVE_TASK_STATES, ExecutionState, holds_lease
from execplan.store.port import Store
from execplan.v1 import execution_pb2 as ex

log = logging.getLogger("execplan.executor")


class Recovery:
    def __init__(
        self,
        *,
        config: EngineConfig,
        store: Store,
        reads: Reads,
        executions: Executions,
        workers: WorkerRegistry,
        leases: Leases,
        deadlines: Deadlines,
        scheduler: Scheduler,
        breakers: BreakerGate,
        flow: FlowGate,
        background: Background,
        inbox: Inbox,
        now_ms: Callable[[], int],
        children: Children,
    ) -> None:
        self._children = children
        self._config = config
        self._store = store
        self._reads = reads
        self._executions = executions
        self._workers = workers
        self._leases = leases
        self._deadlines = deadlines
        self._scheduler = scheduler
        self._breakers = breakers
        self._flow = flow
        self._background = background
        self._inbox = inbox
        self._now_ms = now_ms

    async def recover(self) -> None:
        """At start: every execution this engine owns that has not finished."""
        records = await self._store.list_active()
        for record in records:
            state = await self._reads.load_state(record.execution_id)
            if not state.terminal:
                self.resume(state)
        if records:
            log.info("recovered %d executions", len(records))

    async def reload(self, execution_id: str) -> None:
        """Drops in-memory state that may be ahead of the store and rebuilds it.

        While the log is read, the execution is out of memory: worker messages for it
        are held (`Executions.hold`) and submitted once it is back, not rejected.
        """
        self._executions.suspend(execution_id)
        self._executions.forget(execution_id)
        try:
            state = await self._reads.load_state(execution_id, fresh=True)
            if not state.terminal:
                self.resume(state, reattach=True)
        except ExecplanError:
            log.exception("cannot reload execution %s", execution_id)
        finally:
            self._executions.reloaded(execution_id)

    # -- replicas: executions moving between owners ----------------------------------
    async def adopt(self, execution_ids: Collection[str]) -> int:
        """Loads executions this replica has just claimed and resumes them as after a
        restart (dispatched attempts become orphans, re-leased after the grace)."""
        adopted = 0
        for execution_id in execution_ids:
            if execution_id in self._executions:
                continue
            try:
                state = await self._reads.load_state(execution_id, fresh=True)
            except ExecplanError:
                log.exception("cannot adopt execution %s", execution_id)
                continue
            if not state.terminal and execution_id not in self._executions:
                self.resume(state)
                adopted += 1
        return adopted

    def disown(self, execution_ids: Collection[str]) -> None:
        """Drops executions another replica owns now; their callers get Unavailable."""
        for execution_id in execution_ids:
            if self._executions.forget(execution_id) is not None:
                log.warning("execution %s is owned by another replica now", execution_id)

    # -- the in-memory side of a state rebuilt from the log --------------------------
    def resume(self, state: ExecutionState, *, reattach: bool = False) -> None:
        """`reattach` (a reload on this replica): leases of a worker still connected
        here stay with it. Otherwise (a restart, adopting another replica's
        executions) a worker of the same id may be connected here while its attempt
        ran elsewhere: every lease is orphaned until its worker claims it."""
        self._executions.adopt(state)
        self._leases.adopt(state)
        machine = Machine(state, self._now_ms(), limits=self._config.limits)
        orphans: dict[str, list[LeaseKey]] = {}
        now = self._now_ms()
        for task in state.tasks:
            if task.state == ex.TASK_STATE_QUEUED and not machine.waits_for_child(task):
                machine.effects.append(fx.TaskReady(task.index))
            elif holds_lease(task):
                key = (state.execution_id, task.index)
                # The log says whose lease it is: a worker id keeps its principal.
                self._workers.bind_recovered(task.worker_id, task.principal)
                worker = self._workers.workers.get(task.worker_id)
                attached = reattach and worker is not None and worker.connected
                if attached:
                    # Its worker is still connected: the lease stays with it, taking a
                    # slot and accepting heartbeats; no re-dispatch after a grace.
                    self._leases.attach(key, task.worker_id, now)
                else:
                    # The worker may still be running it: give it time to reconnect and
                    # claim the lease before re-dispatching (a recorded re-lease).
                    orphans.setdefault(task.worker_id, []).append(key)
                self._deadlines.rearm(state, task, reattached=attached)
            if task.state in ACTIVE_TASK_STATES and task.state != ex.TASK_STATE_QUEUED:
                self._deadlines.whole_task(state, task.index)
        self._breakers.park_recovered(state)
        if uses_flow(state):  # the store's slot holders of it, against its leases
            self._background.spawn(self._flow.adopt(state), "flow-adopt")
        self._scheduler.absorb(machine)
        self._children.resume(state, machine)
        for timer in state.timers.values():
            if timer.timer_id:
                self._deadlines.arm(state.execution_id, timer.timer_id, timer.fire_at_ms)
        for worker_id, keys in orphans.items():
            self._leases.orphan(worker_id, keys, self._config.recovery_grace_ms)
        self._inbox.wake()
