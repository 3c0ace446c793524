"""The engine: owns live executions and runs the decide -> commit -> act loop.

One pump coroutine processes everything that changes an execution. Each round it
takes every pending input (results, acks, timers, control calls), lets the
executions' Machines turn them into events, matches queued tasks to free worker
slots, commits all events of all executions in one `store.append` (group commit),
and only then carries out the effects: dispatches and cancels to workers, events to
subscribers, replies to callers. While a commit is in flight, new inputs pile up and
go into the next round together, so batching grows with load by itself.

Idle costs nothing: the pump sleeps on an asyncio.Event; timers are loop.call_at
handles; worker liveness is in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from execplan.errors import (
    ExecplanError,
    FailedPrecondition,
    FieldViolation,
    LimitExceeded,
    NotFound,
    Overloaded,
    OwnershipLost,
    StaleToken,
)
from execplan.executor import breakers as cb
from execplan.executor import effects as fx
from execplan.executor.dispatcher import ReadyQueues, WorkerConn, WorkerRegistry
from execplan.executor.evolve import evolve
from execplan.executor.hub import Hub, Subscription
from execplan.executor.inputs import resolve_inputs
from execplan.executor.machine import Machine
from execplan.executor.observer import Observers
from execplan.executor.ownership import Control, Router
from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.secrets import EnvironmentSecrets, SecretProvider
from execplan.executor.snapshot import decode_state, encode_state
from execplan.executor.state import (
    ACTIVE_TASK_STATES,
    LEASED_TASK_STATES,
    ExecutionState,
    TaskRun,
    new_state,
)
from execplan.executor.values import JsonValue, fill_struct, from_value
from execplan.executor.view import encode_execution, encode_record, state_name
from execplan.store.port import (
    Append,
    ExecutionRecord,
    Snapshot,
    Store,
    StoredEvent,
    page_cursor,
)
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2
from execplan.v1 import worker_service_pb2 as ws

log = logging.getLogger("execplan.executor")

_SUMMARY_KINDS = frozenset(
    {
        "execution_started",
        "execution_paused",
        "execution_resumed",
        "compensation_started",
        "execution_completed",
    }
)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    ack_deadline_ms: int = 5_000
    heartbeat_interval_ms: int = 2_000
    # Leases of a worker that disconnected are kept this long for it to come back.
    reconnect_grace_ms: int = 5_000
    # After a restart, how long workers get to reconnect and reclaim their attempts.
    recovery_grace_ms: int = 5_000
    # Finished executions kept in memory for fast reads.
    finished_cache: int = 2_000
    # Events between checkpoints of one execution; bounds replay at recovery.
    checkpoint_every: int = 2_000
    # Largest inputs of an execution and output of a task (serialized bytes).
    max_payload_bytes: int = 2 * 1024 * 1024
    # Back-pressure: StartExecution is refused while this many executions run,
    # or while the pump has this many unprocessed inputs.
    max_live_executions: int = 100_000
    max_inbox: int = 200_000
    # Longest an assignment ack waits to share a commit with other events.
    ack_flush_ms: int = 20


@dataclass(slots=True)
class _Input:
    execution_id: str
    action: Callable[[Machine], Any]
    future: asyncio.Future[Any] | None


Outbox = Callable[[ws.ConnectResponse], None]


class Engine:
    def __init__(
        self,
        store: Store,
        config: EngineConfig | None = None,
        *,
        secrets: SecretProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        self.secrets = secrets or EnvironmentSecrets()
        self.hub = Hub()
        self.observers = Observers()
        self.workers = WorkerRegistry()
        self._clock = clock
        self._live: dict[str, ExecutionState] = {}
        self._finished: dict[str, ExecutionState] = {}
        self._plans: dict[str, PlanView] = {}
        self._ready = ReadyQueues()
        self._inflight: dict[str, int] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._orphans: dict[str, set[tuple[str, int]]] = {}
        self._beats: dict[tuple[str, int], int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._inbox: list[_Input] = []
        self._deferred: list[_Input] = []
        self._deferred_flush: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._session = 0
        self._checkpointed: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.breakers = cb.Breakers()
        self._breaker_plans: dict[str, bool] = {}
        # Replicas (executor/ownership.py): reaches executions other replicas own.
        self.router: Router | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        await self._load_breakers()
        await self._recover()
        self._release_parked()
        self._pump_task = asyncio.create_task(self._pump(), name="execplan-engine-pump")

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.hub.close()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- plans -------------------------------------------------------------------
    async def register_plan(self, plan: plan_pb2.ExecutionPlan) -> PlanView:
        view = self._plans.get(plan.plan_id)
        if view is None:
            await self.store.put_plan(plan.plan_id, plan.SerializeToString(deterministic=True))
            view = self._plans[plan.plan_id] = decode_plan(plan)
        return view

    async def get_plan(self, plan_id: str) -> plan_pb2.ExecutionPlan:
        payload = await self.store.get_plan(plan_id)
        if payload is None:
            raise NotFound(f"plan {plan_id} not found")
        return plan_pb2.ExecutionPlan.FromString(payload)

    async def _plan_view(self, plan_id: str) -> PlanView:
        view = self._plans.get(plan_id)
        if view is None:
            view = self._plans[plan_id] = decode_plan(await self.get_plan(plan_id))
        return view

    # -- starting ----------------------------------------------------------------
    async def start_execution(
        self,
        plan: PlanView,
        inputs: dict[str, JsonValue],
        *,
        request_id: str = "",
        fairness_key: str = "",
        trace_context: dict[str, str] | None = None,
    ) -> tuple[str, bool]:
        self._check_load()
        resolved = resolve_inputs(plan, inputs)
        execution_id = _new_execution_id(self.now_ms())
        state = new_state(execution_id, plan)
        machine = Machine(state, self.now_ms())
        machine.start(resolved, request_id, fairness_key, trace_context or {})
        record = ExecutionRecord(
            execution_id=execution_id,
            plan_id=plan.plan_id,
            workflow_name=plan.workflow_name,
            state=state_name(state),
            created_at_ms=state.created_ms,
            updated_at_ms=state.updated_ms,
            last_sequence=state.last_sequence,
            request_id=request_id,
            fairness_key=fairness_key,
        )
        existing, created = await self.store.create_execution(
            record, [_stored(e) for e in machine.events]
        )
        if not created:
            return existing.execution_id, False
        self._adopt(state)
        self._apply_internal(machine)
        self._act(machine)
        self._wake.set()
        return execution_id, True

    def _check_load(self) -> None:
        if len(self._live) >= self.config.max_live_executions:
            raise Overloaded(f"{len(self._live)} executions are running; try again later", 5.0)
        if len(self._inbox) >= self.config.max_inbox:
            raise Overloaded("the executor is behind on its work; try again shortly", 1.0)

    def check_payload(self, size: int, what: str, field: str) -> None:
        if size > self.config.max_payload_bytes:
            raise LimitExceeded(
                f"{what} is {size} bytes; the limit is {self.config.max_payload_bytes}",
                [
                    FieldViolation(
                        field, f"at most {self.config.max_payload_bytes} bytes", "payload-too-large"
                    )
                ],
            )

    # -- reads -------------------------------------------------------------------
    async def load_state(self, execution_id: str, at_sequence: int = 0) -> ExecutionState:
        if not at_sequence:
            live = self._live.get(execution_id) or self._finished.get(execution_id)
            if live is not None:
                return live
        record = await self.store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"execution {execution_id} not found")
        plan = await self._plan_view(record.plan_id)
        state = await self._checkpoint(execution_id, plan, at_sequence)
        if state is None:
            state = new_state(execution_id, plan)
        while not at_sequence or state.last_sequence < at_sequence:
            wanted = 5000 if not at_sequence else min(5000, at_sequence - state.last_sequence)
            stored = await self.store.read_events(execution_id, state.last_sequence, wanted)
            for item in stored:
                evolve(state, ev.ExecutionEvent.FromString(item.payload))
            if len(stored) < wanted:
                break
        return state

    async def _checkpoint(
        self, execution_id: str, plan: PlanView, at_sequence: int
    ) -> ExecutionState | None:
        snapshot = await self.store.load_snapshot(execution_id)
        if snapshot is None or (at_sequence and snapshot.sequence > at_sequence):
            return None
        return decode_state(snapshot.payload, execution_id, plan)

    async def get_execution(self, execution_id: str, at_sequence: int = 0) -> ex.Execution:
        return encode_execution(await self.load_state(execution_id, at_sequence))

    async def list_executions(
        self, states: list[str], workflow_name: str, page_size: int, page_token: str
    ) -> tuple[list[ex.Execution], str]:
        size = min(max(page_size or 50, 1), 1000)
        records = await self.store.list_executions(
            states=states, workflow_name=workflow_name, limit=size + 1, after=page_token
        )
        page, more = records[:size], len(records) > size
        result = []
        for record in page:
            live = self._live.get(record.execution_id)
            result.append(
                encode_execution(live, with_tasks=False) if live else encode_record(record)
            )
        return result, page_cursor(page[-1]) if more and page else ""

    async def history(
        self, execution_id: str, after_sequence: int, limit: int
    ) -> list[ev.ExecutionEvent]:
        if await self.store.get_execution(execution_id) is None:
            raise NotFound(f"execution {execution_id} not found")
        stored = await self.store.read_events(execution_id, after_sequence, limit)
        return [ev.ExecutionEvent.FromString(s.payload) for s in stored]

    async def watch(
        self, execution_id: str, after_sequence: int
    ) -> AsyncIterator[ev.ExecutionEvent]:
        """Committed events after `after_sequence`, live, ending with the terminal one."""
        if self.router is not None:  # any replica may commit them: tail the store
            async for event in self.router.watch(execution_id, after_sequence):
                yield event
            return
        subscription = self.hub.subscribe(execution_id)
        try:
            state = await self.load_state(execution_id)
            last = after_sequence
            while True:
                backlog = await self.store.read_events(execution_id, last, 1000)
                for stored in backlog:
                    event = ev.ExecutionEvent.FromString(stored.payload)
                    last = event.sequence
                    yield event
                    if event.HasField("execution_completed"):
                        return
                if len(backlog) < 1000:
                    break
            if state.terminal and state.last_sequence <= last:
                return
            while True:
                item = await subscription.queue.get()
                if item is None:
                    if subscription.overflowed:
                        subscription = self._resubscribe(execution_id, subscription)
                        async for event in self.watch(execution_id, last):
                            yield event
                    return
                if item.sequence <= last:
                    continue
                last = item.sequence
                yield item
                if item.HasField("execution_completed"):
                    return
        finally:
            self.hub.unsubscribe(execution_id, subscription)

    def _resubscribe(
        self, execution_id: str, old: Subscription[ev.ExecutionEvent]
    ) -> Subscription[ev.ExecutionEvent]:
        self.hub.unsubscribe(execution_id, old)
        return self.hub.subscribe(execution_id)

    # -- control -----------------------------------------------------------------
    async def pause(self, execution_id: str, reason: str, request_id: str) -> str:
        if routed := await self._route(Control("pause", execution_id, request_id, reason)):
            return routed
        return await self._control(execution_id, lambda m: m.pause(reason, request_id))

    async def resume(self, execution_id: str, request_id: str) -> str:
        if routed := await self._route(Control("resume", execution_id, request_id)):
            return routed
        return await self._control(execution_id, lambda m: m.resume(request_id))

    async def cancel(self, execution_id: str, reason: str, request_id: str, terminate: bool) -> str:
        kind = "terminate" if terminate else "cancel"
        if routed := await self._route(Control(kind, execution_id, request_id, reason)):
            return routed
        return await self._control(execution_id, lambda m: m.cancel(reason, request_id, terminate))

    async def send_event(
        self, execution_id: str, name: str, data: JsonValue, request_id: str
    ) -> str:
        control = Control("send_event", execution_id, request_id, name=name, data=data)
        if routed := await self._route(control):
            return routed
        task_id: str = await self._submit_wait(
            execution_id, lambda m: m.external_event(name, data, request_id)
        )
        return task_id

    async def _route(self, control: Control) -> str:
        """Replicas: the reply of the owner when another replica owns the execution."""
        if self.router is None or control.execution_id in self._live:
            return ""
        return await self.router.forward(control)

    async def _control(self, execution_id: str, action: Callable[[Machine], None]) -> str:
        await self._submit_wait(execution_id, action)
        return state_name(await self.load_state(execution_id))

    async def _submit_wait(self, execution_id: str, action: Callable[[Machine], Any]) -> Any:
        if execution_id not in self._live:
            state = await self.load_state(execution_id)
            name = state_name(state)
            raise FailedPrecondition(f"execution {execution_id} is {name}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(execution_id, action, future)
        return await future

    def _submit(
        self,
        execution_id: str,
        action: Callable[[Machine], Any],
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self._inbox.append(_Input(execution_id, action, future))
        self._wake.set()

    # -- workers -----------------------------------------------------------------
    def connect_worker(
        self,
        registration: ws.WorkerRegistration,
        outbox: Outbox,
    ) -> tuple[WorkerConn, list[ws.AttemptRef]]:
        """Registers a worker stream; returns it and the `running` attempts it lost."""
        self._session += 1
        old = self.workers.workers.get(registration.worker_id)
        worker = WorkerConn(
            worker_id=registration.worker_id,
            task_types=frozenset(registration.task_types),
            labels=dict(registration.labels),
            environment=registration.environment,
            slots=max(1, registration.slots),
            session=self._session,
        )
        claimed: set[tuple[str, int]] = set()
        revoked: list[ws.AttemptRef] = []
        for ref in registration.running:
            key = self._lease_key(ref)
            if key is not None and self._holds(key, registration.worker_id, ref):
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
            self._requeue_later(execution_id, index, registration.worker_id, 0, "worker restarted")
        self._wake.set()
        return worker, revoked

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
        for execution_id, index in self._orphans.pop(worker_id, set()):
            self._requeue_later(execution_id, index, worker_id, 0, "worker lost")

    def _requeue_later(
        self, execution_id: str, index: int, worker_id: str, epoch: int, reason: str
    ) -> None:
        def action(machine: Machine) -> None:
            task = machine.state.tasks[index]
            if (
                task.state in LEASED_TASK_STATES
                and task.worker_id == worker_id
                and (not epoch or task.epoch == epoch)
            ):
                machine.requeue(task, reason)

        if execution_id in self._live:
            self._submit(execution_id, action)

    def _lease_key(self, ref: ws.AttemptRef) -> tuple[str, int] | None:
        state = self._live.get(ref.execution_id)
        if state is None:
            return None
        index = state.plan.index_of.get(ref.task_id)
        return None if index is None else (ref.execution_id, index)

    def _holds(self, key: tuple[str, int], worker_id: str, ref: ws.AttemptRef) -> bool:
        task = self._live[key[0]].tasks[key[1]]
        return (
            task.state in LEASED_TASK_STATES
            and task.worker_id == worker_id
            and task.attempt == ref.token.attempt
            and task.epoch == ref.token.lease_epoch
            and task.phase == ref.phase
        )

    def worker_message(
        self, worker: WorkerConn, request: ws.ConnectRequest
    ) -> list[ws.ResultRejected]:
        """Handles acks, heartbeats and results from a worker. Returns immediate rejections."""
        rejected: list[ws.ResultRejected] = []
        now = self.now_ms()
        for heartbeat in request.heartbeats:
            key = self._lease_key(heartbeat.attempt)
            if key is not None and key in worker.leases:
                self._beats[key] = now
        for ack in request.acks:
            self._from_worker(worker, ack.attempt, _acknowledge, deferred=True)
        for result in request.results:
            outcome = result.WhichOneof("outcome")
            if outcome == "output" and result.output.ByteSize() > self.config.max_payload_bytes:
                error = {
                    "type": "PayloadTooLarge",
                    "message": f"output of {result.output.ByteSize()} bytes exceeds the limit "
                    f"of {self.config.max_payload_bytes}",
                    "retryable": False,
                }
                self._from_worker(worker, result.attempt, _fail(error))
            elif outcome == "output":
                self._from_worker(worker, result.attempt, _succeed(from_value(result.output)))
            else:
                error = {
                    "type": result.error.type or "Error",
                    "message": result.error.message,
                    "retryable": result.error.retryable,
                }
                self._from_worker(worker, result.attempt, _fail(error))
        if request.HasField("status"):
            worker.draining = request.status.draining
        return rejected

    def _from_worker(
        self,
        worker: WorkerConn,
        ref: ws.AttemptRef,
        handle: Callable[[Machine, TaskRun], None],
        *,
        deferred: bool = False,
    ) -> None:
        attempt_ref = ws.AttemptRef()
        attempt_ref.CopyFrom(ref)

        def action(machine: Machine) -> None:
            try:
                task = machine.check_token(
                    attempt_ref.task_id,
                    attempt_ref.phase,
                    attempt_ref.token.attempt,
                    attempt_ref.token.lease_epoch,
                )
                if task.worker_id != worker.worker_id:
                    raise StaleToken(
                        f"attempt is leased to {task.worker_id}, not {worker.worker_id}"
                    )
            except StaleToken as error:
                log.info("rejected message from %s: %s", worker.worker_id, error)
                self._send(
                    worker.worker_id,
                    ws.ConnectResponse(
                        rejections=[ws.ResultRejected(attempt=attempt_ref, reason=str(error))]
                    ),
                )
                return
            handle(machine, task)

        if ref.execution_id in self._live:
            if deferred:
                self._submit_deferred(ref.execution_id, action)
            else:
                self._submit(ref.execution_id, action)
        else:
            self._send(
                worker.worker_id,
                ws.ConnectResponse(
                    rejections=[
                        ws.ResultRejected(attempt=attempt_ref, reason="execution is not running")
                    ]
                ),
            )

    def _submit_deferred(self, execution_id: str, action: Callable[[Machine], Any]) -> None:
        """Work that need not force a commit of its own (assignment acks).

        An ack only records DISPATCHED -> RUNNING; nothing outside the engine acts on
        it. So it rides along with the next round that commits anyway (usually the
        attempt's own result, for short tasks), or after `ack_flush_ms` at the latest:
        one fsync per chain step instead of two. Losing an uncommitted ack in a crash
        is harmless: the lease is reclaimed by the worker or re-dispatched.
        """
        self._deferred.append(_Input(execution_id, action, None))
        if self._deferred_flush is None:
            self._deferred_flush = asyncio.get_running_loop().call_later(
                self.config.ack_flush_ms / 1000, self._flush_deferred
            )

    def _flush_deferred(self) -> None:
        self._deferred_flush = None
        if self._deferred:
            self._wake.set()

    def _send(self, worker_id: str, message: ws.ConnectResponse) -> None:
        outbox = self._outboxes.get(worker_id)
        if outbox is not None:
            outbox(message)

    # -- the pump ----------------------------------------------------------------
    async def _pump(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the engine alive; the round's executions are reloaded
                log.exception("engine round failed")

    async def _round(self) -> None:
        # Deferred inputs go first: an ack always precedes its attempt's result.
        batch, self._inbox = self._deferred + self._inbox, []
        self._deferred = []
        if self._deferred_flush is not None:
            self._deferred_flush.cancel()
            self._deferred_flush = None
        now = self.now_ms()
        machines: dict[str, Machine] = {}
        replies: list[tuple[asyncio.Future[Any], Any]] = []
        asked: dict[asyncio.Future[Any], str] = {}
        failures: list[tuple[asyncio.Future[Any], BaseException]] = []
        for item in batch:
            state = self._live.get(item.execution_id)
            if state is None:
                if item.future is not None:
                    failures.append(
                        (
                            item.future,
                            FailedPrecondition(f"execution {item.execution_id} is not running"),
                        )
                    )
                continue
            machine = machines.get(item.execution_id)
            if machine is None:
                machine = machines[item.execution_id] = Machine(state, now)
            mark = len(machine.effects)
            try:
                result = item.action(machine)
            except ExecplanError as error:
                if item.future is not None:
                    failures.append((item.future, error))
                continue
            self._apply_internal(machine, mark)
            if item.future is not None:
                replies.append((item.future, result))
                asked[item.future] = item.execution_id
        self._dispatch_round(machines, now)
        appends = [
            Append(
                execution_id=execution_id,
                events=tuple(_stored(e) for e in machine.events),
                state=state_name(machine.state),
                updated_at_ms=machine.state.updated_ms,
            )
            for execution_id, machine in machines.items()
            if machine.events
        ]
        if appends:
            began = time.perf_counter()
            try:
                await self.store.append(appends)
            except OwnershipLost as lost:
                replies = self._lost(lost, machines, replies, asked)
            except Exception as error:
                log.exception("commit failed; reloading %d executions", len(appends))
                for append in appends:
                    await self._reload(append.execution_id)
                for future, _ in replies:
                    if not future.done():
                        future.set_exception(error)
                return
            self.observers.round_committed(
                len(appends), sum(len(a.events) for a in appends), time.perf_counter() - began
            )
        for machine in machines.values():
            if machine.events:
                self._act(machine)
        for future, result in replies:
            if not future.done():
                future.set_result(result)
        for future, problem in failures:
            if not future.done():
                future.set_exception(problem)

    def _lost(
        self,
        lost: OwnershipLost,
        machines: dict[str, Machine],
        replies: list[tuple[asyncio.Future[Any], Any]],
        asked: dict[asyncio.Future[Any], str],
    ) -> list[tuple[asyncio.Future[Any], Any]]:
        """Another replica owns these now: forget them; the rest of the round committed."""
        self.disown(lost.execution_ids)
        gone = set(lost.execution_ids)
        for execution_id in gone:
            machines.pop(execution_id, None)
        for future, _ in replies:
            if asked[future] in gone and not future.done():
                future.set_exception(lost)
        return [r for r in replies if asked[r[0]] not in gone]

    def _apply_internal(self, machine: Machine, start: int = 0) -> None:
        """Effects that stay inside the engine; safe before commit (see module doc)."""
        state = machine.state
        for effect in machine.effects[start:]:
            if isinstance(effect, fx.TaskReady):
                task = state.tasks[effect.index]
                node = state.plan.nodes[effect.index]
                task_type = node.type
                if task.phase != ex.TASK_PHASE_MAIN:
                    side = (
                        node.fallback if task.phase == ex.TASK_PHASE_FALLBACK else node.compensation
                    )
                    task_type = side.type if side else node.type
                if not self.workers.has_type(task_type):
                    task.status_message = f"waiting for a worker with task type {task_type}"
                self._ready.push(state.execution_id, state.fairness_key, task_type, node)
                if node.timeouts.schedule_to_start_ms or node.timeouts.schedule_to_close_ms:
                    self._watch_queue(state, effect.index)
            elif isinstance(effect, fx.ReleaseLease):
                key = (state.execution_id, effect.index)
                worker = self.workers.workers.get(effect.worker_id)
                if worker is not None:
                    worker.leases.discard(key)
                self._beats.pop(key, None)
                self._inflight[state.execution_id] = max(
                    0, self._inflight.get(state.execution_id, 0) - 1
                )

    def _dispatch_round(self, machines: dict[str, Machine], now: int) -> None:
        if not len(self._ready) or self.workers.total_free() <= 0:
            return
        blocked: set[str] = set()
        progress = True
        while progress and len(self._ready):
            progress = False
            for execution_id in list(self._ready.rounds()):
                state = self._live.get(execution_id)
                if state is None or state.terminal:
                    self._ready.drop(execution_id)
                    continue
                if state.paused:
                    continue
                limit = state.plan.max_parallel
                if limit and self._inflight.get(execution_id, 0) >= limit:
                    continue
                picked = self._ready.take(
                    execution_id,
                    _queued_in(state),
                    blocked,
                )
                if picked is None:
                    continue
                task_type, index = picked
                node = state.plan.nodes[index]
                gate = self._breaker_gate(state, index, now)
                if gate is not None and not gate.admits():
                    machine = machines.get(execution_id)
                    if machine is None:
                        machine = machines[execution_id] = Machine(state, now)
                    mark = len(machine.effects)
                    self._breaker_refuse(machine, gate, index)
                    self._apply_internal(machine, mark)
                    progress = True
                    continue
                worker = self.workers.pick(task_type, node)
                if worker is None:
                    if not self.workers.free_for(task_type):
                        blocked.add(task_type)
                    else:
                        state.tasks[index].status_message = "no worker matches its placement"
                    self._ready.push(execution_id, state.fairness_key, task_type, node)
                    continue
                machine = machines.get(execution_id)
                if machine is None:
                    machine = machines[execution_id] = Machine(state, now)
                mark = len(machine.effects)
                if machine.dispatch(index, worker.worker_id):
                    if gate is not None:
                        gate.admitted()
                    self._ready.served(execution_id)
                    worker.leases.add((execution_id, index))
                    self._inflight[execution_id] = self._inflight.get(execution_id, 0) + 1
                self._apply_internal(machine, mark)
                progress = True

    def _act(self, machine: Machine) -> None:
        """External effects, after the machine's events are durable."""
        state = machine.state
        for effect in machine.effects:
            if isinstance(effect, fx.SendDispatch):
                self._send_dispatch(state, effect)
            elif isinstance(effect, fx.CancelLease):
                ref = _ref(state, effect.index, effect.phase, effect.attempt, effect.epoch)
                self._send(
                    effect.worker_id,
                    ws.ConnectResponse(
                        cancels=[ws.CancelAttempt(attempt=ref, reason=effect.reason)]
                    ),
                )
            elif isinstance(effect, fx.ArmTimer):
                self._arm(state.execution_id, effect.timer_id, effect.fire_at_ms)
        if self._has_breakers(state):
            self._feed_breakers(state, machine.events)
        if self.observers.observers:
            self.observers.committed(state, machine.events)
        if self.hub.wants(state.execution_id):
            self.hub.publish(state.execution_id, machine.events)
        if self.hub.has_watchers_of_all() and any(
            e.WhichOneof("kind") in _SUMMARY_KINDS for e in machine.events
        ):
            self.hub.publish_summary(encode_execution(state, with_tasks=False))
        if (
            not state.terminal
            and state.last_sequence - self._checkpointed.get(state.execution_id, 0)
            >= self.config.checkpoint_every
        ):
            self._take_checkpoint(state)
        machine.events = []
        machine.effects = []
        if state.terminal:
            self._retire(state)

    def _take_checkpoint(self, state: ExecutionState) -> None:
        # Encoded now (the state moves on), written in the background: a lost
        # checkpoint only means a longer replay, never lost data.
        snapshot = Snapshot(state.execution_id, state.last_sequence, encode_state(state))
        self._checkpointed[state.execution_id] = state.last_sequence
        task = asyncio.create_task(self.store.save_snapshot(snapshot))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _send_dispatch(self, state: ExecutionState, effect: fx.SendDispatch) -> None:
        node = state.plan.nodes[effect.index]
        key = (state.execution_id, effect.index)
        self._beats[key] = self.now_ms()
        dispatch = ws.Dispatch(
            attempt=_ref(state, effect.index, effect.phase, effect.attempt, effect.epoch),
            task_type=effect.task_type,
            idempotency_key=effect.idempotency_key,
            heartbeat_timeout_ms=node.timeouts.heartbeat_ms,
            trace_context=state.trace_context,
            workflow_name=state.plan.workflow_name,
        )
        fill_struct(dispatch.inputs, effect.inputs)
        if node.secrets:
            dispatch.secrets.update(self.secrets.resolve(node.secrets))
        timeouts = node.timeouts
        if timeouts.start_to_close_ms:
            deadline = self.now_ms() + timeouts.start_to_close_ms
            dispatch.start_to_close_deadline.FromMilliseconds(deadline)
            self._watch_lease(
                state.execution_id,
                effect.index,
                effect.epoch,
                timeouts.start_to_close_ms,
                ev.TIMEOUT_KIND_START_TO_CLOSE,
            )
        if timeouts.heartbeat_ms:
            self._watch_heartbeat(
                state.execution_id, effect.index, effect.epoch, timeouts.heartbeat_ms
            )
        self._watch_ack(state.execution_id, effect.index, effect.epoch)
        if self.observers.observers:
            self.observers.dispatching(state, dispatch)
        self._send(effect.worker_id, ws.ConnectResponse(dispatches=[dispatch]))

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
        limit = state.plan.nodes[index].timeouts.schedule_to_start_ms
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
        timeouts = state.plan.nodes[task.index].timeouts
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
        return breaker

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

    # -- bookkeeping -------------------------------------------------------------
    def _adopt(self, state: ExecutionState) -> None:
        self._live[state.execution_id] = state
        self._inflight[state.execution_id] = sum(
            1 for t in state.tasks if t.state in LEASED_TASK_STATES
        )

    def _retire(self, state: ExecutionState) -> None:
        execution_id = state.execution_id
        self._live.pop(execution_id, None)
        self._ready.drop(execution_id)
        self._inflight.pop(execution_id, None)
        self._checkpointed.pop(execution_id, None)
        for key in [k for k in self._timers if k[0] == execution_id]:
            self._timers.pop(key).cancel()
        self._finished[execution_id] = state
        while len(self._finished) > self.config.finished_cache:
            self._finished.pop(next(iter(self._finished)))

    async def _reload(self, execution_id: str) -> None:
        """Drops in-memory state that may be ahead of the store and rebuilds it."""
        self._live.pop(execution_id, None)
        self._ready.drop(execution_id)
        for worker in self.workers.workers.values():
            worker.leases = {k for k in worker.leases if k[0] != execution_id}
        try:
            state = await self.load_state(execution_id)
        except ExecplanError:
            log.exception("cannot reload execution %s", execution_id)
            return
        if not state.terminal:
            self._resume_state(state)

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

    def _resume_state(self, state: ExecutionState) -> None:
        """Re-creates the in-memory side of a state rebuilt from the log."""
        self._adopt(state)
        machine = Machine(state, self.now_ms())
        for task in state.tasks:
            node = state.plan.nodes[task.index]
            if task.state == ex.TASK_STATE_QUEUED:
                machine.effects.append(fx.TaskReady(task.index))
            elif task.state in LEASED_TASK_STATES:
                # The worker may still be running it: give it time to reconnect and
                # reclaim the lease before re-dispatching (a recorded re-lease).
                self._orphans.setdefault(task.worker_id, set()).add(
                    (state.execution_id, node.index)
                )
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
        for worker_id in {t.worker_id for t in state.tasks if t.state in LEASED_TASK_STATES}:
            loop.call_later(self.config.recovery_grace_ms / 1000, self._expire_orphans, worker_id)
        self._wake.set()

    # -- introspection for tests and metrics -------------------------------------
    @property
    def live_count(self) -> int:
        return len(self._live)


def _unpark_action(index: int, task_type: str) -> Callable[[Machine], None]:
    def action(machine: Machine) -> None:
        task = machine.state.tasks[index]
        if task.state == ex.TASK_STATE_PARKED:
            machine.park(task, task_type, False)

    return action


def _acknowledge(machine: Machine, task: TaskRun) -> None:
    machine.acknowledged(task)


def _succeed(output: JsonValue) -> Callable[[Machine, TaskRun], None]:
    return lambda machine, task: machine.succeeded(task, output)


def _fail(error: dict[str, Any]) -> Callable[[Machine, TaskRun], None]:
    return lambda machine, task: machine.failed(task, error)


def _queued_in(state: ExecutionState) -> Callable[[int], bool]:
    return lambda index: state.tasks[index].state == ex.TASK_STATE_QUEUED


def _stored(event: ev.ExecutionEvent) -> StoredEvent:
    stamp = event.recorded_at
    return StoredEvent(
        execution_id=event.execution_id,
        sequence=event.sequence,
        kind=event.WhichOneof("kind") or "",
        recorded_at_ms=stamp.seconds * 1000 + stamp.nanos // 1_000_000,
        payload=event.SerializeToString(),
    )


def _ref(state: ExecutionState, index: int, phase: int, attempt: int, epoch: int) -> ws.AttemptRef:
    return ws.AttemptRef(
        execution_id=state.execution_id,
        task_id=state.plan.nodes[index].task_id,
        phase=phase,  # type: ignore[arg-type]
        token=ev.AttemptToken(attempt=attempt, lease_epoch=epoch),
    )


def _new_execution_id(now_ms: int) -> str:
    # Time-ordered (sorts by creation) and unique without coordination.
    return f"{now_ms:012x}{uuid.uuid4().hex[:20]}"
