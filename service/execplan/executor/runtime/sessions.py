"""Worker streams as the runtime sees them: connect, messages, disconnect.

A worker connects (reclaiming the attempts it still runs, listed as `running`),
sends acks, heartbeats and results, and disconnects; the leases of a lost worker
are kept for a grace period, then requeued (`leases.py`). With authentication on, a
worker id belongs to the principal that first registered it. Everything that
changes an execution becomes an input for the pump, checked by the fencing rule
(`decide/fencing.py`: the lease, the worker, its principal, its task types) when the
pump applies it; assignment acks are deferred so they share a commit with other
work, and a result for an attempt still DISPATCHED is an implied ack. A message for
an execution being reloaded is held until it is back. Acks feed the worker's pacing
window (`pacing.py`); a missed ack deadline shrinks it (`missed_ack`).

What goes back to a worker (dispatches, cancels, rejections) is put on its outbox,
which the worker servicer drains onto the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from execplan.errors import FailedPrecondition, InvalidArgument, StaleToken
from execplan.executor.decide import fencing
from execplan.executor.decide.machine import Machine
from execplan.executor.decide.retry import worker_retryable
from execplan.executor.observability.observer import Observers
from execplan.executor.runtime.config import EngineConfig
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Inbox, Reply
from execplan.executor.runtime.leases import LeaseKey, Leases
from execplan.executor.runtime.progress import ProgressCoalescer
from execplan.executor.runtime.streams import StreamHub
from execplan.executor.runtime.subplans import Compiler, compile_sub_plan, inputs_of
from execplan.executor.runtime.workers import WorkerConn, WorkerRegistry
from execplan.executor.state import TaskRun
from execplan.executor.task_errors import (
    INVALID_OUTPUT,
    PAYLOAD_TOO_LARGE,
    SUB_PLAN_NOT_ALLOWED,
    TaskError,
    retry_after_of,
)
from execplan.executor.values import from_struct, from_value, non_finite
from execplan.flow.capacity import Capacity
from execplan.search import SearchValue, check_attributes
from execplan.search.codec import decode_map
from execplan.usage.codec import decode_usage
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import plan_pb2
from execplan.v1 import worker_service_pb2 as ws

log = logging.getLogger("execplan.executor")

Outbox = Callable[[ws.ConnectResponse], None]
# What a worker's report does to its (fenced) task, on the machine.
Report = Callable[[Machine, TaskRun], Any]
# A chunk of live output is at most this big (the SDKs split text and bytes).
MAX_CHUNK_BYTES = 64 * 1024 + 1024


class WorkerSessions:
    def __init__(
        self,
        *,
        config: EngineConfig,
        workers: WorkerRegistry,
        leases: Leases,
        executions: Executions,
        inbox: Inbox,
        observers: Observers,
        streams: StreamHub,
        progress: ProgressCoalescer,
        now_ms: Callable[[], int],
        compiler: Compiler | None = None,
        keep_plan: Callable[[plan_pb2.ExecutionPlan], Awaitable[None]] | None = None,
    ) -> None:
        self._compiler = compiler
        self._keep_plan = keep_plan
        # Sub-plans being compiled (a dynamic task's answer; runtime/subplans.py).
        self._compiling: set[asyncio.Task[None]] = set()
        self._config = config
        self._workers = workers
        self._leases = leases
        self._executions = executions
        self._inbox = inbox
        self._observers = observers
        self._streams = streams
        self._progress = progress
        self._now_ms = now_ms
        self._outboxes: dict[str, Outbox] = {}
        self._session = 0
        self._probations: set[asyncio.TimerHandle] = set()

    def send(self, worker_id: str, message: ws.ConnectResponse) -> None:
        outbox = self._outboxes.get(worker_id)
        if outbox is not None:
            outbox(message)

    # -- a stream begins and ends ----------------------------------------------------
    def connect(
        self, registration: ws.WorkerRegistration, outbox: Outbox, principal: str | None = None
    ) -> tuple[WorkerConn, list[ws.AttemptRef]]:
        """Registers a worker stream; returns it and the `running` attempts it lost.

        `principal`: the authenticated caller (None with authentication off). A worker
        id registered by another principal is PermissionDenied (WorkerRegistry.bind).
        """
        self._workers.bind(registration.worker_id, principal)
        self._session += 1
        now = self._now_ms()
        old = self._workers.workers.get(registration.worker_id)
        slots = max(1, registration.slots)
        worker = WorkerConn(
            worker_id=registration.worker_id,
            task_types=frozenset(registration.task_types),
            labels=dict(registration.labels),
            environment=registration.environment,
            slots=slots,
            session=self._session,
            sdk=registration.sdk,
            connected_at_ms=now,
            last_seen_ms=now,
            principal=principal,
            pace=self._workers.pace(registration.worker_id, slots),
            resources=_capacity(registration.capacity),
        )
        claimed: set[LeaseKey] = set()
        revoked: list[ws.AttemptRef] = []
        for ref in registration.running:
            key = self._lease_key(ref)
            if key is not None and not self._stale(key, ref, worker):
                claimed.add(key)
            else:
                revoked.append(ref)
        previous = (old.leases if old else set()) | self._leases.reclaim(worker.worker_id)
        self._workers.add(worker)
        self._outboxes[worker.worker_id] = outbox
        for key in claimed:
            self._leases.attach(key, worker.worker_id, now)
        self._observers.worker_connected(worker)
        for execution_id, index in previous - claimed:
            # Only the lease it held: not one granted since.
            self._leases.requeue(execution_id, index, worker.worker_id, "worker restarted")
        self._inbox.wake()
        return worker, revoked

    def disconnect(self, worker: WorkerConn) -> None:
        current = self._workers.workers.get(worker.worker_id)
        if current is not worker:
            return  # a newer stream of the same worker already took over
        worker.connected = False
        self._observers.worker_disconnected(worker)
        self._outboxes.pop(worker.worker_id, None)
        leases = set(worker.leases)
        self._workers.remove(worker.worker_id)
        self._leases.orphan(worker.worker_id, leases, self._config.reconnect_grace_ms)

    def _lease_key(self, ref: ws.AttemptRef) -> LeaseKey | None:
        state = self._executions.get(ref.execution_id)
        if state is None:
            return None
        index = state.index_of(ref.task_id)
        return None if index is None else (ref.execution_id, index)

    def _stale(self, key: LeaseKey, ref: ws.AttemptRef, worker: WorkerConn) -> str:
        """'' when `ref` names the current lease of `worker` (fencing.stale)."""
        state = self._executions.get(key[0])
        if state is None:
            return "execution is not running"
        return fencing.stale(state.tasks[key[1]], state.node(key[1]), _claim(ref, worker))

    # -- messages --------------------------------------------------------------------
    def message(self, worker: WorkerConn, request: ws.ConnectRequest) -> None:
        """Acks, heartbeats, results and status from a worker."""
        now = worker.last_seen_ms = self._now_ms()
        # Each repeated field is looked at by its length first: iterating even an empty
        # one costs more, and a message carries one or two kinds of the five.
        chunks, heartbeats, acks = request.chunks, request.heartbeats, request.acks
        usage, results = request.usage, request.results
        if chunks:
            for chunk in chunks:  # before the results: output precedes its end
                self._chunk(worker, chunk, now)
        if heartbeats:
            for heartbeat in heartbeats:
                self._heartbeat(worker, heartbeat, now)
        if acks:
            # An ack whose result is in the same message (a quick handler's; the SDKs
            # hold acks back a little for this) is implied by the result: one input,
            # not two. Not with usage reports in the message: they are applied before
            # the results, and the log shows an attempt's start before its usage.
            answered: set[bytes] = set()
            if results and not usage:
                answered = _answered(results)
            for ack in acks:
                if answered and ack.attempt.SerializeToString() in answered:
                    continue
                self._report(worker, ack.attempt, None, deferred=True)
        if usage:
            # Usage before results: an attempt's usage counts before its result can end
            # the execution (a report for a finished execution is refused).
            for report in usage:
                self._usage(worker, report)
        if results:
            for result in results:
                self._result(worker, result)
        if request.HasField("status"):
            worker.report(request.status.free_slots, request.status.draining)
            self._inbox.wake()

    def _heartbeat(self, worker: WorkerConn, heartbeat: ws.TaskHeartbeat, now: int) -> None:
        """Extends the lease it names, or tells the worker that lease is not its own;
        its progress and search attributes become inputs (progress coalesced)."""
        ref = heartbeat.attempt
        if self._executions.reloading(ref.execution_id):
            return  # checked again by the next heartbeat, once the execution is back
        key = self._lease_key(ref)
        if key is None:
            reason = "execution is not running" if ref.execution_id not in self._executions else ""
            self.reject(worker, ref, reason or f"unknown task {ref.task_id[:200]!r}")
            return
        reason = self._stale(key, ref, worker)
        if reason:
            self.reject(worker, ref, reason)
            return
        self._leases.beat(key[0], key[1], ref.token.lease_epoch, now)
        if heartbeat.search_attributes:
            updates = self._attributes(worker, heartbeat.search_attributes)
            if updates:
                task_id = ref.task_id
                self._report(worker, ref, lambda m, task: _set_attributes(m, task_id, updates))
        if heartbeat.HasField("progress"):
            value = from_value(heartbeat.progress)
            attempt_ref = ws.AttemptRef()
            attempt_ref.CopyFrom(ref)
            self._progress.offer(
                key,
                heartbeat.progress.SerializeToString(deterministic=True),
                lambda: self._report(worker, attempt_ref, lambda m, task: m.progress(task, value)),
            )

    def _attributes(self, worker: WorkerConn, attributes: Any) -> dict[str, SearchValue | None]:
        """A worker's search attributes, checked; {} (and a warning) when they are not
        acceptable: the SDKs check them first, so this is a worker bug, and not one
        worth failing its task for."""
        updates = decode_map(attributes)
        try:
            check_attributes(updates, "search_attributes")
        except InvalidArgument as error:
            problems = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
            log.warning("search attributes from %s ignored: %s", worker.worker_id, problems)
            return {}
        return updates

    def _chunk(self, worker: WorkerConn, chunk: ws.TaskStreamChunk, now: int) -> None:
        """Partial output of the attempt's current lease goes to its subscribers; any
        other is dropped without a word (its heartbeats and result get the rejection)."""
        ref = chunk.attempt
        key = self._lease_key(ref)
        if key is None or self._stale(key, ref, worker):
            return
        content = chunk.WhichOneof("content")
        if content is None or chunk.ByteSize() > MAX_CHUNK_BYTES:
            log.warning("stream chunk from %s dropped: empty or over 64 KiB", worker.worker_id)
            return
        out = pb.StreamChunk()
        if content == "text":
            out.text = chunk.text
        elif content == "data":
            out.data = chunk.data
        else:
            out.json.CopyFrom(chunk.json)
        self._streams.publish(
            ref.execution_id,
            ref.task_id,
            out,
            phase=ref.phase,
            attempt=ref.token.attempt,
            now_ms=now,
        )

    def _result(self, worker: WorkerConn, result: ws.TaskResult) -> None:
        outcome = result.WhichOneof("outcome")
        limit = self._config.max_payload_bytes
        if outcome is not None and self._progress.tracking():
            key = self._lease_key(result.attempt)
            if key is not None:
                self._progress.flush(key)  # the last progress, recorded before the result
        if result.search_attributes and outcome is not None:
            updates = self._attributes(worker, result.search_attributes)
            if updates:
                task_id = result.attempt.task_id
                self._report(
                    worker, result.attempt, lambda m, task: _set_attributes(m, task_id, updates)
                )
        if outcome is None:
            # Not a failure of the task: a worker bug. The lease stays until a proper
            # result or its timeouts; taking it as a failure would decide for the worker.
            self.reject(
                worker,
                result.attempt,
                "malformed result: set either `output` or `error`; the attempt stays leased",
            )
        elif outcome == "sub_plan":
            self._sub_plan(worker, result)
        elif outcome == "output" and (size := result.output.ByteSize()) > limit:
            message = f"output of {size} bytes exceeds the limit of {limit}"
            self._report(worker, result.attempt, _fail(TaskError(PAYLOAD_TOO_LARGE, message)))
        elif outcome == "output":
            output = from_value(result.output)
            if (where := non_finite(output)) is not None:
                message = f"output{where} is not a JSON number (NaN or an infinity)"
                invalid = _fail(TaskError(INVALID_OUTPUT, message))
                self._report(worker, result.attempt, _with_usage(result, worker, invalid))
                return
            report: Report = lambda m, task: m.succeeded(task, output)  # noqa: E731
            self._report(worker, result.attempt, _with_usage(result, worker, report))
        else:
            message = result.error.message
            if (size := result.error.ByteSize()) > limit:  # stored in the history: bounded
                message = f"{message[:4096]} ... (truncated: an error of {size} bytes)"
            kind = (result.error.type or "Error")[:256]
            details = None
            if result.error.HasField("details") and size <= limit:
                details = from_struct(result.error.details)
            error = TaskError(
                kind,
                message,
                worker_retryable(result.error),
                details,
                retry_after_ms=retry_after_of(result.error),
            )
            self._report(worker, result.attempt, _with_usage(result, worker, _fail(error)))

    def _sub_plan(self, worker: WorkerConn, result: ws.TaskResult) -> None:
        """A dynamic task's answer: compiled off the pump, then reported (its lease is
        checked then, like any result's). A task that is not dynamic fails."""
        ref = ws.AttemptRef()
        ref.CopyFrom(result.attempt)
        state = self._executions.get(ref.execution_id)
        index = state.index_of(ref.task_id) if state is not None else None
        if state is None or index is None or not state.node(index).dynamic:
            message = "a sub-plan answers only a task with `dynamic: true`"
            self._report(worker, ref, _fail(TaskError(SUB_PLAN_NOT_ALLOWED, message)))
            return
        answer = ws.SubPlan()
        answer.CopyFrom(result.sub_plan)
        # What the agent used writing it counts whatever becomes of the sub-plan.
        used = ws.TaskResult(attempt=ref, usage=result.usage)

        async def compiled() -> None:
            plan = await compile_sub_plan(self._compiler, answer, self._config.max_payload_bytes)
            if isinstance(plan, TaskError):
                self._report(worker, ref, _with_usage(used, worker, _fail(plan)))
                return
            if self._keep_plan is not None:  # GetPlan answers for it once it is recorded
                await self._keep_plan(plan)
            inputs = inputs_of(answer)
            accept: Report = lambda m, task: m.sub_plan(task, plan, inputs)  # noqa: E731
            self._report(worker, ref, _with_usage(used, worker, accept))

        task = asyncio.create_task(compiled(), name="execplan-sub-plan")
        self._compiling.add(task)
        task.add_done_callback(self._compiling.discard)

    def _report(
        self,
        worker: WorkerConn,
        ref: ws.AttemptRef,
        report: Report | None,
        *,
        deferred: bool = False,
    ) -> None:
        """Submits a worker's ack (`report` None) or result. A stale one is rejected
        only after its round committed (the state it was checked against is durable
        then; a round that did not commit runs it again on the reloaded state, round.py).

        A result for an attempt still DISPATCHED is an implied ack: `task_started` is
        recorded first, then the result. Either way the ack counts as timely for the
        worker's pacing window."""
        # `ref` is kept as it is, not copied: a request is never changed once received.
        attempt_ref = ref
        execution_id = ref.execution_id
        retry = lambda: self._report(worker, attempt_ref, report, deferred=deferred)  # noqa: E731
        if self._executions.hold(execution_id, retry):
            return
        if execution_id not in self._executions:
            self.reject(worker, attempt_ref, "execution is not running")
            return
        claim = _claim(attempt_ref, worker)
        task_id = ref.task_id

        def action(machine: Machine) -> str:
            try:
                task = fencing.check(machine.state, task_id, claim)
            except StaleToken as error:
                return str(error)
            if task.state == ex.TASK_STATE_DISPATCHED:
                machine.acknowledged(task)
                worker.pace.acked(worker.slots)  # this round's dispatch sees the window
            if report is not None:
                report(machine, task)
            return ""

        def done(reason: str | None, error: BaseException | None) -> None:
            if error is None:
                if reason:
                    self.reject(worker, attempt_ref, reason)
            elif isinstance(error, FailedPrecondition):  # the execution ended meanwhile
                self.reject(worker, attempt_ref, "execution is not running")
            else:
                log.warning("message from %s not applied: %s", worker.worker_id, error)

        future = Reply(done)
        if deferred:
            self._inbox.submit_deferred(execution_id, action, future)
        else:
            self._inbox.submit(execution_id, action, future)

    def _usage(self, worker: WorkerConn, report: ws.UsageReport) -> None:
        """Records a UsageReport (decide/budgets.py: also for an attempt that ended, each
        report number once) and acknowledges it once the round committed."""
        ref = ws.AttemptRef()
        ref.CopyFrom(report.attempt)
        number = report.sequence
        amounts = decode_usage(report.usage)
        execution_id = ref.execution_id
        if self._executions.hold(execution_id, lambda: self._usage(worker, report)):
            return
        if execution_id not in self._executions:
            self._usage_ack(worker, ref, number, "the execution is not running here")
            return
        claim = _claim(ref, worker)

        def action(machine: Machine) -> str:
            return machine.usage(ref.task_id, claim, worker.worker_id, amounts, number)

        def done(reason: str | None, error: BaseException | None) -> None:
            if error is None:
                self._usage_ack(worker, ref, number, reason or "")
            elif isinstance(error, FailedPrecondition):  # the execution ended meanwhile
                self._usage_ack(worker, ref, number, "the execution has ended")
            else:  # not recorded: no ack, so the worker sends it again
                log.warning("usage report from %s not applied: %s", worker.worker_id, error)

        self._inbox.submit(execution_id, action, Reply(done))

    def _usage_ack(self, worker: WorkerConn, ref: ws.AttemptRef, number: int, reason: str) -> None:
        if reason:
            log.info("usage report %d from %s refused: %s", number, worker.worker_id, reason)
        ack = ws.UsageAck(attempt=ref, sequence=number, recorded=not reason, reason=reason)
        self.send(worker.worker_id, ws.ConnectResponse(usage_acks=[ack]))

    # -- pacing ----------------------------------------------------------------------
    def missed_ack(self, worker_id: str) -> None:
        """An ack deadline of the worker passed: shrink its window; after repeated
        misses, a timed probation (pacing.py)."""
        worker = self._workers.workers.get(worker_id)
        if worker is None:
            return  # gone: its leases are handled as orphans, not as missed acks
        probation_ms = worker.pace.missed(self._now_ms(), self._config.ack_deadline_ms)
        if not probation_ms:
            return
        log.warning(
            "worker %s missed %d ack deadlines in a row; no dispatches for %d ms",
            worker_id,
            worker.pace.misses,
            probation_ms,
        )
        pace = worker.pace

        def probe() -> None:
            self._probations.discard(handle)
            pace.probation_over()
            self._inbox.wake()

        handle = asyncio.get_running_loop().call_later(probation_ms / 1000, probe)
        self._probations.add(handle)

    def stop(self) -> None:
        for handle in self._probations:
            handle.cancel()
        self._probations.clear()
        for task in self._compiling:
            task.cancel()

    def reject(self, worker: WorkerConn, ref: ws.AttemptRef, reason: str) -> None:
        log.info("rejected message from %s: %s", worker.worker_id, reason)
        self.send(
            worker.worker_id,
            ws.ConnectResponse(rejections=[ws.ResultRejected(attempt=ref, reason=reason)]),
        )


def _answered(results: Iterable[ws.TaskResult]) -> set[bytes]:
    """The attempts of `results` that `_result` submits at once, with the implied ack
    (an output or an error): not a sub-plan (compiled first) nor a malformed result
    (rejected, the lease kept: its ack still counts). Each is told by its bytes: one
    call, where its five fields are five (an ack with other bytes for the same
    attempt, say with unknown fields, is then applied on its own, which is harmless)."""
    return {
        r.attempt.SerializeToString()
        for r in results
        if r.WhichOneof("outcome") in ("output", "error")
    }


def _claim(ref: ws.AttemptRef, worker: WorkerConn) -> fencing.Claim:
    token = ref.token
    return fencing.Claim(ref.phase, token.attempt, token.lease_epoch, worker.holder)


def _fail(error: TaskError) -> Report:
    return lambda machine, task: machine.failed(task, error)


def _with_usage(result: ws.TaskResult, worker: WorkerConn, report: Report) -> Report:
    """`report`, preceded by the usage the result carries (TaskResult.usage), recorded
    in the same round as the result itself."""
    if not result.HasField("usage") or not result.usage.counters:
        return report
    amounts = decode_usage(result.usage)
    ref = result.attempt
    claim = _claim(ref, worker)

    def both(machine: Machine, task: TaskRun) -> None:
        refused = machine.usage(ref.task_id, claim, worker.worker_id, amounts)
        if refused:
            log.warning("usage of a result from %s not recorded: %s", worker.worker_id, refused)
        report(machine, task)

    return both


def _set_attributes(machine: Machine, task_id: str, updates: dict[str, SearchValue | None]) -> None:
    try:
        machine.set_search_attributes(task_id, updates)
    except InvalidArgument as error:  # too many for one execution: refused, nothing emitted
        log.warning(
            "search attributes of %s/%s ignored: %s", machine.state.execution_id, task_id, error
        )


def _capacity(declared: ws.WorkerCapacity) -> Capacity:
    """A registration's capacity; negative numbers (a buggy worker) count as none."""
    return Capacity(
        cpu_millis=max(declared.cpu_millis, 0),
        memory_bytes=max(declared.memory_bytes, 0),
        gpu=max(declared.gpu, 0),
        custom={name: max(n, 0) for name, n in declared.custom.items()},
    )
