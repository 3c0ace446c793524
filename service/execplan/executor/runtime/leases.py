"""Who holds which attempt, in memory: the lease table.

A lease is granted when an attempt is dispatched and ends with its result, a
timeout, a cancel or a requeue (the machine's `ReleaseLease` effect). The table
keeps, per execution, each leased task's holder (worker id), lease epoch and last
heartbeat, and mirrors each connected worker's leases on its `WorkerConn.leases`
(its free slots). Heartbeats count only for the lease they name: a late heartbeat
of an earlier lease of the same task keeps nothing alive.

A worker whose stream ends leaves its leases *orphaned* for a grace period, during
which it may reconnect and claim them; those still unclaimed afterwards are
requeued (`requeue`: an input for the pump, fenced to the lease the worker held).
After a restart every lease starts orphaned, with the recovery grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from execplan.executor.decide import fencing
from execplan.executor.decide.machine import Machine
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Inbox
from execplan.executor.runtime.workers import WorkerConn, WorkerRegistry
from execplan.executor.state import ExecutionState, holds_lease
from execplan.flow.capacity import Request
from execplan.v1 import execution_pb2 as ex

# (execution id, task index)
LeaseKey = tuple[str, int]


@dataclass(slots=True)
class Lease:
    worker_id: str
    epoch: int
    beat_ms: int = 0


class Leases:
    def __init__(self, workers: WorkerRegistry, executions: Executions, inbox: Inbox) -> None:
        self._workers = workers
        self._executions = executions
        self._inbox = inbox
        self._held: dict[str, dict[int, Lease]] = {}
        self._orphans: dict[str, set[LeaseKey]] = {}
        self._grace: set[asyncio.TimerHandle] = set()
        # Set when a lease that took resources ended: tasks waiting for resources may
        # fit now (the scheduler reads and clears it).
        self.freed = False

    # -- granting and releasing ------------------------------------------------------
    def adopt(self, state: ExecutionState) -> None:
        """The leases an execution's state records (recovery, reload, takeover); each
        is then reattached to its worker or orphaned (`attach`, `orphan`)."""
        self._held[state.execution_id] = {
            task.index: Lease(task.worker_id, task.epoch)
            for task in state.tasks
            if holds_lease(task)
        }

    def granted(
        self,
        execution_id: str,
        index: int,
        worker_id: str,
        epoch: int,
        request: Request | None = None,
    ) -> None:
        """`request`: what the attempt takes of its worker's resources, when the caller
        already has it (the dispatcher: NO_REQUEST for one that is not a main
        attempt); None: looked up here."""
        self._held.setdefault(execution_id, {})[index] = Lease(worker_id, epoch)
        worker = self._workers.workers.get(worker_id)
        if worker is not None:
            key = (execution_id, index)
            worker.leases.add(key)
            if request is None:
                self._take(worker, key)
            elif not request.empty:
                worker.taken[key] = request

    def _take(self, worker: WorkerConn, key: LeaseKey) -> None:
        """The resources a leased main attempt takes of its worker's."""
        state = self._executions.get(key[0])
        if state is None:
            return
        task = state.tasks[key[1]]
        request = state.node(key[1]).request
        if task.phase == ex.TASK_PHASE_MAIN and not request.empty:
            worker.taken[key] = request

    def released(self, execution_id: str, index: int) -> None:
        lease = self._held.get(execution_id, {}).pop(index, None)
        if lease is not None:
            self._detach(lease.worker_id, (execution_id, index))

    def inflight(self, execution_id: str) -> int:
        """Attempts of the execution holding (or about to hold) a worker slot."""
        return len(self._held.get(execution_id, ()))

    def forget(self, execution_id: str) -> None:
        for index, lease in self._held.pop(execution_id, {}).items():
            self._detach(lease.worker_id, (execution_id, index))
        for keys in self._orphans.values():
            keys.difference_update([k for k in keys if k[0] == execution_id])

    def _detach(self, worker_id: str, key: LeaseKey) -> None:
        worker = self._workers.workers.get(worker_id)
        if worker is not None:
            worker.leases.discard(key)
            if worker.taken.pop(key, None) is not None:
                self.freed = True

    # -- heartbeats ------------------------------------------------------------------
    def beat(self, execution_id: str, index: int, epoch: int, now_ms: int) -> None:
        lease = self._held.get(execution_id, {}).get(index)
        if lease is not None and lease.epoch == epoch:
            lease.beat_ms = now_ms

    def last_beat(self, execution_id: str, index: int, epoch: int) -> int | None:
        """When the lease of `epoch` last showed life; None when it is not held."""
        lease = self._held.get(execution_id, {}).get(index)
        return lease.beat_ms if lease is not None and lease.epoch == epoch else None

    # -- workers coming and going ----------------------------------------------------
    def attach(self, key: LeaseKey, worker_id: str, now_ms: int) -> None:
        """A held lease is (still or again) its connected worker's: it takes a slot."""
        worker = self._workers.workers.get(worker_id)
        if worker is not None:
            worker.leases.add(key)
            self._take(worker, key)
        lease = self._held.get(key[0], {}).get(key[1])
        if lease is not None:
            lease.beat_ms = now_ms

    def orphan(self, worker_id: str, keys: Iterable[LeaseKey], grace_ms: int) -> None:
        """Leases whose worker is gone: `expired` for those unclaimed after the grace."""
        orphans = self._orphans.setdefault(worker_id, set())
        orphans.update(keys)
        if not orphans:
            del self._orphans[worker_id]
            return
        loop = asyncio.get_running_loop()

        def expire() -> None:
            self._grace.discard(handle)
            self._expire(worker_id)

        handle = loop.call_later(grace_ms / 1000, expire)
        self._grace.add(handle)

    def reclaim(self, worker_id: str) -> set[LeaseKey]:
        """The orphaned leases of a worker that connects again (they are its to claim)."""
        return self._orphans.pop(worker_id, set())

    def orphaned(self, worker_id: str) -> frozenset[LeaseKey]:
        return frozenset(self._orphans.get(worker_id, ()))

    def _expire(self, worker_id: str) -> None:
        worker = self._workers.workers.get(worker_id)
        held = worker.leases if worker is not None and worker.connected else set()
        for execution_id, index in self._orphans.pop(worker_id, set()) - held:
            self.requeue(execution_id, index, worker_id, "worker lost")

    def requeue(self, execution_id: str, index: int, worker_id: str, reason: str) -> None:
        """Requeues the lease `worker_id` holds on the task now, if it still holds it
        when the pump gets to it (a lease granted in between is left alone)."""
        if self._executions.hold(
            execution_id, lambda: self.requeue(execution_id, index, worker_id, reason)
        ):
            return
        state = self._executions.get(execution_id)
        if state is None or state.tasks[index].worker_id != worker_id:
            return
        claim = fencing.lease_of(state.tasks[index])

        def action(machine: Machine) -> None:
            task = machine.state.tasks[index]
            if task.worker_id == worker_id and fencing.holds(machine.state, index, claim):
                machine.requeue(task, reason)

        self._inbox.submit(execution_id, action)

    def stop(self) -> None:
        for handle in self._grace:
            handle.cancel()
        self._grace.clear()
