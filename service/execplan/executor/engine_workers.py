"""Worker streams as the engine sees them.

A worker connects (and reclaims the attempts it still runs), sends acks, heartbeats
and results, and disconnects; leases of a lost worker are kept for a grace period,
then requeued. Everything that changes an execution becomes an input for the pump
(`_submit`); assignment acks are deferred so they share a commit with other work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from execplan.errors import FailedPrecondition, StaleToken
from execplan.executor.dispatcher import WorkerConn
from execplan.executor.engine_core import EngineCore, Outbox, _Input
from execplan.executor.fencing import Claim, lease_of, stale
from execplan.executor.machine import Machine
from execplan.executor.retry import worker_retryable
from execplan.executor.state import TaskRun
from execplan.executor.values import JsonValue, from_value
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws

log = logging.getLogger("execplan.executor")


class EngineWorkers(EngineCore):
    # -- workers -----------------------------------------------------------------
    def connect_worker(
        self,
        registration: ws.WorkerRegistration,
        outbox: Outbox,
        principal: str | None = None,
    ) -> tuple[WorkerConn, list[ws.AttemptRef]]:
        """Registers a worker stream; returns it and the `running` attempts it lost.

        `principal`: the authenticated caller (None with authentication off). A worker
        id registered by another principal is PermissionDenied (WorkerRegistry.bind).
        """
        self.workers.bind(registration.worker_id, principal)
        self._session += 1
        old = self.workers.workers.get(registration.worker_id)
        slots = max(1, registration.slots)
        worker = WorkerConn(
            worker_id=registration.worker_id,
            task_types=frozenset(registration.task_types),
            labels=dict(registration.labels),
            environment=registration.environment,
            slots=slots,
            session=self._session,
            sdk=registration.sdk,
            connected_at_ms=self.now_ms(),
            last_seen_ms=self.now_ms(),
            principal=principal,
            pace=self.workers.pace(registration.worker_id, slots),
        )
        claimed: set[tuple[str, int]] = set()
        revoked: list[ws.AttemptRef] = []
        for ref in registration.running:
            key = self._lease_key(ref)
            if key is not None and not self._fence(key, ref, worker):
                claimed.add(key)
            else:
                revoked.append(ref)
        previous = (old.leases if old else set()) | self._orphans.pop(registration.worker_id, set())
        worker.leases = claimed
        self.workers.add(worker)
        self._outboxes[worker.worker_id] = outbox
        for key in claimed:
            self._beats[key] = self.now_ms()
        self.observers.worker_connected(worker)
        for execution_id, index in previous - claimed:
            # Only the lease it held: not one granted since.
            self._requeue_later(execution_id, index, registration.worker_id, "worker restarted")
        self._wake.set()
        return worker, revoked

    def worker_statuses(self, task_types: list[str]) -> list[WorkerConn]:
        """Connected workers (those registered for one of `task_types`, if given), by id."""
        wanted = set(task_types)
        return [
            worker
            for _, worker in sorted(self.workers.workers.items())
            if worker.connected and (not wanted or wanted & worker.task_types)
        ]

    def disconnect_worker(self, worker: WorkerConn) -> None:
        current = self.workers.workers.get(worker.worker_id)
        if current is not worker:
            return  # a newer stream of the same worker already took over
        worker.connected = False
        self.observers.worker_disconnected(worker)
        self._outboxes.pop(worker.worker_id, None)
        leases = set(worker.leases)
        self.workers.remove(worker.worker_id)
        if leases:
            self._orphans.setdefault(worker.worker_id, set()).update(leases)
            loop = asyncio.get_running_loop()
            loop.call_later(
                self.config.reconnect_grace_ms / 1000, self._expire_orphans, worker.worker_id
            )

    def _expire_orphans(self, worker_id: str) -> None:
        worker = self.workers.workers.get(worker_id)
        held = worker.leases if worker is not None and worker.connected else set()
        for execution_id, index in self._orphans.pop(worker_id, set()) - held:
            self._requeue_later(execution_id, index, worker_id, "worker lost")

    def _requeue_later(self, execution_id: str, index: int, worker_id: str, reason: str) -> None:
        """Requeues the lease `worker_id` holds on the task now, if it still does when
        the pump gets to it (a lease granted in between is left alone)."""
        held = self._reloading.get(execution_id)
        if held is not None:
            held.append(lambda: self._requeue_later(execution_id, index, worker_id, reason))
            return
        state = self._live.get(execution_id)
        if state is None:
            return
        task = state.tasks[index]
        if task.worker_id != worker_id:
            return
        lease = lease_of(task)

        def action(machine: Machine) -> None:
            run = machine.state.tasks[index]
            if run.worker_id == worker_id and not stale(
                run, machine.state.plan.nodes[index], lease
            ):
                machine.requeue(run, reason)

        self._submit(execution_id, action)

    def _lease_key(self, ref: ws.AttemptRef) -> tuple[str, int] | None:
        state = self._live.get(ref.execution_id)
        if state is None:
            return None
        index = state.plan.index_of.get(ref.task_id)
        return None if index is None else (ref.execution_id, index)

    def _fence(self, key: tuple[str, int], ref: ws.AttemptRef, worker: WorkerConn) -> str:
        """'' when `ref` names the current lease of `worker` (fencing.stale)."""
        state = self._live[key[0]]
        return stale(state.tasks[key[1]], state.plan.nodes[key[1]], _claim(ref, worker))

    def worker_message(
        self, worker: WorkerConn, request: ws.ConnectRequest
    ) -> list[ws.ResultRejected]:
        """Handles acks, heartbeats and results from a worker. Returns immediate rejections."""
        rejected: list[ws.ResultRejected] = []
        now = worker.last_seen_ms = self.now_ms()
        for heartbeat in request.heartbeats:
            self._heartbeat(worker, heartbeat.attempt, now)
        for ack in request.acks:
            self._from_worker(worker, ack.attempt, None, deferred=True)
        for result in request.results:
            self._result(worker, result)
        if request.HasField("status"):
            worker.report(request.status.free_slots, request.status.draining)
            self._wake.set()
        return rejected

    def _heartbeat(self, worker: WorkerConn, ref: ws.AttemptRef, now: int) -> None:
        """Extends the lease it names, or tells the worker that lease is not its own."""
        if ref.execution_id in self._reloading:
            return  # checked again by the next heartbeat, once the execution is back
        key = self._lease_key(ref)
        if key is None:
            reason = "execution is not running" if ref.execution_id not in self._live else ""
            self._reject(worker, ref, reason or f"unknown task {ref.task_id[:200]!r}")
            return
        reason = self._fence(key, ref, worker)
        if reason:
            self._reject(worker, ref, reason)
        else:
            self._beats[key] = now

    def _result(self, worker: WorkerConn, result: ws.TaskResult) -> None:
        outcome = result.WhichOneof("outcome")
        limit = self.config.max_payload_bytes
        if outcome is None:
            # Not a failure of the task: a worker bug. The lease stays until a proper
            # result or its timeouts; taking it as a failure would decide for the worker.
            self._reject(
                worker,
                result.attempt,
                "malformed result: set either `output` or `error`; the attempt stays leased",
            )
        elif outcome == "output" and (size := result.output.ByteSize()) > limit:
            error = {
                "type": "PayloadTooLarge",
                "message": f"output of {size} bytes exceeds the limit of {limit}",
                "retryable": False,
            }
            self._from_worker(worker, result.attempt, _fail(error))
        elif outcome == "output":
            self._from_worker(worker, result.attempt, _succeed(from_value(result.output)))
        else:
            message = result.error.message
            if (size := result.error.ByteSize()) > limit:  # stored in the history: bounded
                message = f"{message[:4096]} ... (truncated: an error of {size} bytes)"
            error = {
                "type": (result.error.type or "Error")[:256],
                "message": message,
                "retryable": worker_retryable(result.error),
            }
            self._from_worker(worker, result.attempt, _fail(error))

    def _from_worker(
        self,
        worker: WorkerConn,
        ref: ws.AttemptRef,
        handle: Callable[[Machine, TaskRun], None] | None,
        *,
        deferred: bool = False,
    ) -> None:
        """Submits a worker's ack (`handle` None) or result. A stale one is rejected only after its
        round committed (the state it was checked against is durable then; a round
        that did not commit runs it again on the reloaded state, engine_round.py).

        A result for an attempt still DISPATCHED is an implied ack: `task_started` is
        recorded first, then the result. Either way the ack counts as timely for the
        worker's pacing window."""
        attempt_ref = ws.AttemptRef()
        attempt_ref.CopyFrom(ref)
        execution_id = ref.execution_id
        held = self._reloading.get(execution_id)
        if held is not None:  # back in `_live` once the reload finishes
            held.append(lambda: self._from_worker(worker, attempt_ref, handle, deferred=deferred))
            return
        if execution_id not in self._live:
            self._reject(worker, attempt_ref, "execution is not running")
            return
        claim = _claim(attempt_ref, worker)

        def action(machine: Machine) -> str:
            try:
                task = machine.check_token(attempt_ref.task_id, claim)
            except StaleToken as error:
                return str(error)
            if task.state == ex.TASK_STATE_DISPATCHED:
                machine.acknowledged(task)
                worker.pace.acked(worker.slots)  # this round's dispatch sees the window
            if handle is not None:
                handle(machine, task)
            return ""

        def done(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                if future.result():
                    self._reject(worker, attempt_ref, future.result())
            elif isinstance(error, FailedPrecondition):  # the execution ended meanwhile
                self._reject(worker, attempt_ref, "execution is not running")
            else:
                log.warning("message from %s not applied: %s", worker.worker_id, error)

        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(done)
        if deferred:
            self._submit_deferred(execution_id, action, future)
        else:
            self._submit(execution_id, action, future)

    def _reject(self, worker: WorkerConn, ref: ws.AttemptRef, reason: str) -> None:
        log.info("rejected message from %s: %s", worker.worker_id, reason)
        self._send(
            worker.worker_id,
            ws.ConnectResponse(rejections=[ws.ResultRejected(attempt=ref, reason=reason)]),
        )

    def _submit_deferred(
        self,
        execution_id: str,
        action: Callable[[Machine], Any],
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        """Work that need not force a commit of its own (assignment acks).

        An ack only records DISPATCHED -> RUNNING; nothing outside the engine acts on
        it. So it rides along with the next round that commits anyway (usually the
        attempt's own result, for short tasks), or after `ack_flush_ms` at the latest:
        one fsync per chain step instead of two. Losing an uncommitted ack in a crash
        is harmless: the lease is reclaimed by the worker or re-dispatched.
        """
        self._deferred.append(_Input(execution_id, action, future))
        if self._deferred_flush is None:
            self._deferred_flush = asyncio.get_running_loop().call_later(
                self.config.ack_flush_ms / 1000, self._flush_deferred
            )

    def _flush_deferred(self) -> None:
        self._deferred_flush = None
        if self._deferred:
            self._wake.set()


def _claim(ref: ws.AttemptRef, worker: WorkerConn) -> Claim:
    return Claim(ref.phase, ref.token.attempt, ref.token.lease_epoch, worker.holder)


def _succeed(output: JsonValue) -> Callable[[Machine, TaskRun], None]:
    return lambda machine, task: machine.succeeded(task, output)


def _fail(error: dict[str, Any]) -> Callable[[Machine, TaskRun], None]:
    return lambda machine, task: machine.failed(task, error)
