"""The engine: the executor's runtime, put together from parts that own their state.

    engine = Engine(store, EngineConfig(), secrets=EnvironmentSecrets())
    await engine.start()                     # breakers, recovery, then the pump
    execution_id, created = await engine.start_execution(plan, inputs)
    ...
    await engine.stop()

`Engine` builds the parts and hands each the collaborators it needs (see the table
in docs/architecture.md), and is the API the servicers call: starting executions,
control calls (forwarded to the owning replica when another one owns it), worker
streams, reads and watches. It decides nothing itself: inputs go to the `Inbox`,
the `Pump` runs them through the machines, commits and acts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

from execplan.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    LimitExceeded,
    NotFound,
    Overloaded,
)
from execplan.executor.decide import breaker as cb
from execplan.executor.decide import requests
from execplan.executor.decide.flow import Parent
from execplan.executor.decide.inputs import resolve_inputs
from execplan.executor.decide.machine import Machine
from execplan.executor.decide.usage import change_digest
from execplan.executor.expressions.evaluation import EvaluationPending
from execplan.executor.observability.observer import Observers
from execplan.executor.plan_view import NodeView, PlanView
from execplan.executor.runtime.acting import Actor
from execplan.executor.runtime.background import Background
from execplan.executor.runtime.breakers import BreakerGate
from execplan.executor.runtime.checkpoints import Checkpoints
from execplan.executor.runtime.children import Children
from execplan.executor.runtime.config import EngineConfig
from execplan.executor.runtime.deadlines import Deadlines
from execplan.executor.runtime.evaluations import Evaluations
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.flow import FlowGate
from execplan.executor.runtime.http_worker import TYPE as HTTP_TYPE
from execplan.executor.runtime.http_worker import HttpWorker
from execplan.executor.runtime.hub import Hub
from execplan.executor.runtime.inbox import Inbox, Input
from execplan.executor.runtime.leases import Leases
from execplan.executor.runtime.plan_index import PlanEntry
from execplan.executor.runtime.progress import ProgressCoalescer
from execplan.executor.runtime.pump import Pump, stored
from execplan.executor.runtime.reads import Reads
from execplan.executor.runtime.recovery import Recovery
from execplan.executor.runtime.replicas import Control, Router
from execplan.executor.runtime.scheduler import Scheduler
from execplan.executor.runtime.secrets import EnvironmentSecrets, SecretProvider
from execplan.executor.runtime.sessions import Outbox, WorkerSessions
from execplan.executor.runtime.streams import StreamHub, merged, task_finished
from execplan.executor.runtime.subplans import Compiler
from execplan.executor.runtime.workers import WorkerConn, WorkerRegistry
from execplan.executor.state import Allowance, ExecutionState, new_state
from execplan.executor.values import JsonValue
from execplan.executor.view import state_name
from execplan.executor.waiting import Wait
from execplan.search import EMPTY, Filter, SearchValue
from execplan.store.port import ExecutionRecord, Store
from execplan.store.schedules import ScheduleUpdate
from execplan.usage import Budget
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2
from execplan.v1 import worker_service_pb2 as ws
from execplan.v1.executor_service_pb2 import StreamChunk

__all__ = ["Engine", "EngineConfig"]


class Engine:
    def __init__(
        self,
        store: Store,
        config: EngineConfig | None = None,
        *,
        secrets: SecretProvider | None = None,
        clock: Callable[[], float] = time.time,
        compiler: Compiler | None = None,
    ) -> None:
        """`compiler`: the planner, for sub-plans of dynamic tasks (runtime/subplans.py);
        without one they fail with PlanInvalid."""
        self.store = store
        self.config = config = config or EngineConfig()
        self._clock = clock
        now_ms = self.now_ms
        background = self._background = Background()
        self.hub = Hub()
        # Live output of running tasks (ctx.stream), never stored.
        self.streams = streams = StreamHub(config.stream_backlog)
        self.progress = progress = ProgressCoalescer(
            interval_ms=config.progress_interval_ms, now_ms=now_ms
        )
        self.observers = Observers()
        self.workers = WorkerRegistry()
        self.executions = executions = Executions(config.finished_cache)
        self.inbox = inbox = Inbox(config.ack_flush_ms)
        # Expressions too expensive to evaluate inline, and the inputs waiting for them.
        self.evaluations = evaluations = Evaluations[Input](config.expressions)
        self.leases = leases = Leases(self.workers, executions, inbox)
        self.sessions = sessions = WorkerSessions(
            config=config,
            workers=self.workers,
            leases=leases,
            executions=executions,
            inbox=inbox,
            observers=self.observers,
            streams=streams,
            progress=progress,
            now_ms=now_ms,
            compiler=compiler,
            keep_plan=lambda plan: self.reads.keep_plan(plan),  # noqa: PLW0108 (reads: built below)
        )
        self.deadlines = deadlines = Deadlines(
            config=config,
            executions=executions,
            inbox=inbox,
            leases=leases,
            missed_ack=sessions.missed_ack,
            now_ms=now_ms,
        )
        self.breakers = breakers = BreakerGate(
            store=store, background=background, executions=executions, inbox=inbox, now_ms=now_ms
        )
        # Concurrency limits, rate limits and the result cache (docs/flow-control.md).
        self.flow = flow = FlowGate(
            flow=store.flow,
            executions=executions,
            background=background,
            now_ms=now_ms,
            # The scheduler is built after its gates: look it up when offering.
            offer=lambda execution_id, index: self.scheduler.offer(execution_id, index),  # noqa: PLW0108
            note=lambda execution_id, index, wait: self.scheduler.note_wait(  # noqa: PLW0108
                execution_id, index, wait
            ),
            evaluator=evaluations.evaluator,
        )
        breakers.name_of = flow.breaker_name
        self.scheduler = scheduler = Scheduler(
            executions=executions,
            workers=self.workers,
            leases=leases,
            deadlines=deadlines,
            evaluations=evaluations,
            inbox=inbox,
            gates=(breakers, flow),
            limits=config.limits,
            missing_type=self._missing_type,
        )
        checkpoints = Checkpoints(store, background, config.checkpoint_every)
        self.reads = reads = Reads(
            store=store,
            executions=executions,
            hub=self.hub,
            hint=scheduler.hint,
            waiting=scheduler.waiting,
            plan_cache=config.plan_cache,
            now_ms=now_ms,
        )
        # Child executions of builtin.workflow tasks (docs/runtime-plans.md).
        self.children = children = Children(
            store=store,
            executions=executions,
            inbox=inbox,
            plan_view=reads.plan_view,
            runnable=PlanView.unrunnable,
            deadlines=deadlines,
        )
        children.engine = self
        # What `executions.forget` clears: every part that keeps something per execution.
        executions.keep_with(
            (leases, scheduler, deadlines, checkpoints, children, progress, streams, flow)
        )
        self.recovery = recovery = Recovery(
            config=config,
            store=store,
            reads=reads,
            executions=executions,
            workers=self.workers,
            leases=leases,
            deadlines=deadlines,
            scheduler=scheduler,
            breakers=breakers,
            flow=flow,
            background=background,
            inbox=inbox,
            now_ms=now_ms,
            children=children,
        )
        self._actor = actor = Actor(
            sessions=sessions,
            leases=leases,
            deadlines=deadlines,
            breakers=breakers,
            flow=flow,
            checkpoints=checkpoints,
            executions=executions,
            hub=self.hub,
            streams=streams,
            observers=self.observers,
            secrets=secrets or EnvironmentSecrets(),
            now_ms=now_ms,
            children=children,
        )
        self._pump = Pump(
            store=store,
            inbox=inbox,
            executions=executions,
            scheduler=scheduler,
            actor=actor,
            recovery=recovery,
            evaluations=evaluations,
            observers=self.observers,
            now_ms=now_ms,
            limits=config.limits,
        )
        # builtin.http: a worker of the engine's own (runtime/http_worker.py).
        self.http = HttpWorker(
            connect=sessions.connect,
            message=sessions.message,
            node_of=self._node_of,
            now_ms=now_ms,
            slots=config.http_slots,
            allow=config.http_allow,
        )
        self._stopped = False

    def _missing_type(self, task_type: str) -> None:
        # The HTTP worker connects the first time a builtin.http task is queued: until
        # then no dispatch round counts its free slots.
        if task_type == HTTP_TYPE and not self._stopped:
            self.http.start()

    def _node_of(self, execution_id: str, task_id: str) -> NodeView | None:
        state = self.executions.get(execution_id)
        if state is None:
            return None
        index = state.index_of(task_id)  # a for_each instance's, a sub-plan's too
        return None if index is None else state.node(index)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.breakers.load()
        await self.recovery.recover()
        self.breakers.release_parked()
        self.flow.start()
        self._pump.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self._pump.stop()
        await self.children.stop()
        await self.http.stop()
        await self.flow.stop()
        self.evaluations.close()
        await self._background.drain()
        self.inbox.close()
        self.deadlines.stop()
        self.leases.stop()
        self.sessions.stop()
        self.breakers.stop()
        self.progress.stop()
        self.streams.close()
        self.hub.close()

    # -- starting --------------------------------------------------------------------
    async def start_execution(
        self,
        plan: PlanView,
        inputs: dict[str, JsonValue],
        *,
        request_id: str = "",
        fairness_key: str = "",
        trace_context: dict[str, str] | None = None,
        parent: Parent | None = None,
        search_attributes: Mapping[str, SearchValue] | None = None,
        schedule: Callable[[str], ScheduleUpdate] | None = None,
    ) -> tuple[str, bool]:
        """Starts an execution of `plan`; returns (execution_id, created). `parent`:
        a child execution's (a builtin.workflow task; runtime/children.py).

        Idempotent on `request_id`: when one is given and an execution was started with
        it before, nothing is written and that execution is returned (created False),
        provided the request was the same (plan, inputs, fairness key: `start_digest`);
        a different request raises AlreadyExists (REQUEST_ID_REUSED). Callers that can
        avoid side effects for a repeated request check `started_by` first.

        `search_attributes` (checked by the caller) are recorded in `execution_started`
        and indexed. `schedule(execution_id)`: the schedule row to write in the same
        transaction (a schedule's run, execplan.schedules); ConcurrencyConflict, with
        nothing written, when that row changed meanwhile.
        """
        self._check_load()
        attributes = dict(search_attributes or {})
        digest = start_digest(plan.plan_id, inputs, fairness_key, attributes) if request_id else ""
        if plan.rate_limits:
            await self.flow.declare(plan)
        resolved = resolve_inputs(plan, inputs)
        execution_id = _new_execution_id(self.now_ms())
        while True:
            state = new_state(execution_id, plan)
            machine = Machine(state, self.now_ms(), self.evaluations.evaluator, self.config.limits)
            try:
                machine.start(
                    resolved,
                    request_id,
                    fairness_key,
                    trace_context or {},
                    self._allowance(plan, parent),
                    parent=parent,
                    search_attributes=search_attributes,
                )
                break
            except EvaluationPending as pending:
                # A first task's `when` (or a sleep's inputs) needs the sandbox: nothing
                # is stored yet, so wait for it here and decide the start again.
                await self.evaluations.run(pending.request)
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
            request_digest=digest,
            parent_execution_id=parent.execution_id if parent is not None else "",
            parent_task_id=parent.task_id if parent is not None else "",
            search_attributes=attributes,
        )
        existing, created = await self.store.create_execution(
            record,
            [stored(e) for e in machine.events],
            schedule=schedule(execution_id) if schedule is not None else None,
        )
        if not created:  # a concurrent start with the same request_id got there first
            _same_request(existing, digest)
            return existing.execution_id, False
        self.executions.adopt(state)
        self.leases.adopt(state)
        self.scheduler.absorb(machine)
        self._actor.act(machine)
        self.inbox.wake()
        return execution_id, True

    def _allowance(self, plan: PlanView, parent: Parent | None = None) -> Allowance:
        """The budget (the workflow's over the server's default, limit by limit; for a
        child, no more than what was left of its parent's), the runaway caps an
        execution of `plan` starts with, and what may grow in it at run time; recorded
        in execution_started."""
        config = self.config
        budget = config.default_budget if plan.budget is None else plan.budget
        if plan.budget is not None:
            budget = plan.budget.over_default(config.default_budget)
        if parent is not None and parent.budget is not None:
            budget = (budget or Budget()).within(parent.budget)
        attempts = config.max_attempts_per_execution
        return Allowance(
            budget=budget if budget else None,
            max_for_each_items=config.max_for_each_items,
            max_attempts=attempts + len(plan.nodes) if attempts else 0,
            limits=config.limits,
        )

    async def started_by(
        self,
        request_id: str,
        plan_id: str,
        inputs: dict[str, JsonValue],
        fairness_key: str,
        search_attributes: Mapping[str, SearchValue] | None = None,
    ) -> ExecutionRecord | None:
        """The execution an earlier StartExecution with `request_id` created, if any
        (None without a request_id). AlreadyExists (REQUEST_ID_REUSED, naming that
        execution) when that request differed in plan, inputs, fairness key or
        search attributes."""
        if not request_id:
            return None
        record = await self.store.find_by_request(request_id)
        if record is not None:
            digest = start_digest(plan_id, inputs, fairness_key, search_attributes or {})
            _same_request(record, digest)
        return record

    def _check_load(self) -> None:
        if len(self.executions) >= self.config.max_live_executions:
            raise Overloaded(f"{len(self.executions)} executions are running; try again later", 5.0)
        if len(self.inbox) >= self.config.max_inbox:
            raise Overloaded("the executor is behind on its work; try again shortly", 1.0)

    def check_payload(self, size: int, what: str, field: str) -> None:
        limit = self.config.max_payload_bytes
        if size > limit:
            raise LimitExceeded(
                f"{what} is {size} bytes; the limit is {limit}",
                [FieldViolation(field, f"at most {limit} bytes", "payload-too-large")],
            )

    # -- control ---------------------------------------------------------------------
    async def pause(self, execution_id: str, reason: str, request_id: str) -> str:
        if routed := await self._route(Control("pause", execution_id, request_id, reason)):
            return routed
        repeat = (request_id, "pause", requests.digest(reason))
        return await self._control(execution_id, lambda m: m.pause(reason, request_id), repeat)

    async def resume(self, execution_id: str, request_id: str) -> str:
        if routed := await self._route(Control("resume", execution_id, request_id)):
            return routed
        repeat = (request_id, "resume", requests.digest())
        return await self._control(execution_id, lambda m: m.resume(request_id), repeat)

    async def cancel(self, execution_id: str, reason: str, request_id: str, terminate: bool) -> str:
        kind = "terminate" if terminate else "cancel"
        if routed := await self._route(Control(kind, execution_id, request_id, reason)):
            return routed
        repeat = (request_id, kind, requests.digest(reason))
        return await self._control(
            execution_id, lambda m: m.cancel(reason, request_id, terminate), repeat
        )

    async def send_event(
        self, execution_id: str, name: str, data: JsonValue, request_id: str
    ) -> str:
        control = Control("send_event", execution_id, request_id, name=name, data=data)
        if routed := await self._route(control):
            return routed
        task_id: str = await self.submit_wait(
            execution_id,
            lambda m: m.external_event(name, data, request_id),
            (request_id, "send_event", requests.digest(name, data)),
        )
        return task_id

    async def set_budget(
        self,
        execution_id: str,
        requested: Budget,
        *,
        resume: bool,
        reason: str,
        request_id: str,
        task_id: str = "",
    ) -> str:
        """Changes the limits `requested` names (its action unless ""), of the
        execution's budget or of task `task_id`'s own, and resumes a paused execution
        with `resume`; the execution's state name afterwards."""
        control = Control(
            "set_budget",
            execution_id,
            request_id,
            reason,
            budget=requested,
            resume=resume,
            task_id=task_id,
        )
        if routed := await self._route(control):
            return routed
        repeat = (request_id, "set_budget", change_digest(requested, reason, task_id))
        return await self._control(
            execution_id,
            lambda m: m.set_budget(requested, request_id, reason, resume, task_id),
            repeat,
        )

    async def _route(self, control: Control) -> str:
        """Replicas: the reply of the owner when another replica owns the execution."""
        if self.router is None or control.execution_id in self.executions:
            return ""
        return await self.router.forward(control)

    async def _control(
        self, execution_id: str, action: Callable[[Machine], object], repeat: Repeat
    ) -> str:
        await self.submit_wait(execution_id, action, repeat)
        return state_name(await self.load_state(execution_id))

    async def submit_wait(
        self, execution_id: str, action: Callable[[Machine], Any], repeat: Repeat
    ) -> Any:
        """Runs a control call's `action` on the execution's machine in the next round;
        returns its result once the round committed. A finished execution takes none,
        but a repeat of a call it recorded (same request_id and request) is answered
        as the first was (`repeat` = request_id, kind, parameter digest)."""
        if execution_id not in self.executions:
            state = await self.load_state(execution_id)
            answer = requests.repeated(state, *repeat)
            if answer is not None:
                return answer
            raise FailedPrecondition(f"execution {execution_id} is {state_name(state)}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.inbox.submit(execution_id, action, future)
        return await future

    # -- workers ---------------------------------------------------------------------
    def connect_worker(
        self, registration: ws.WorkerRegistration, outbox: Outbox, principal: str | None = None
    ) -> tuple[WorkerConn, list[ws.AttemptRef]]:
        """Registers a worker stream; returns it and the `running` attempts it lost.
        `principal`: the authenticated caller (None with authentication off)."""
        return self.sessions.connect(registration, outbox, principal)

    def disconnect_worker(self, worker: WorkerConn) -> None:
        self.sessions.disconnect(worker)

    def worker_message(self, worker: WorkerConn, request: ws.ConnectRequest) -> None:
        """Acks, heartbeats, results and status from a worker's stream."""
        self.sessions.message(worker, request)

    # -- reads -----------------------------------------------------------------------
    async def register_plan(self, plan: plan_pb2.ExecutionPlan) -> PlanView:
        return await self.reads.register_plan(plan)

    def quiet_plan(self, plan_id: str) -> PlanView | None:
        """The plan's view when starting an execution of it writes nothing before the
        store's `create_execution`: the plan is registered (its view is cached) and
        declares no token buckets (`flow.declare`). A start of it may then leave a
        repeated request_id to `create_execution`, which finds the execution that
        request_id started inside its own transaction, instead of looking it up in a
        read of its own first (`started_by`). None otherwise."""
        view = self.reads.registered(plan_id)
        return view if view is not None and not view.rate_limits else None

    async def get_plan(self, plan_id: str) -> plan_pb2.ExecutionPlan:
        return await self.reads.get_plan(plan_id)

    async def load_state(self, execution_id: str, at_sequence: int = 0) -> ExecutionState:
        return await self.reads.load_state(execution_id, at_sequence)

    async def get_execution(self, execution_id: str, at_sequence: int = 0) -> ex.Execution:
        return await self.reads.get_execution(execution_id, at_sequence)

    async def list_executions(
        self,
        states: list[str],
        workflow_name: str,
        page_size: int,
        page_token: str,
        *,
        parent_execution_id: str = "",
        search: Filter = EMPTY,
        max_bytes: int = 0,
    ) -> tuple[list[ex.Execution], str]:
        return await self.reads.list_executions(
            states,
            workflow_name,
            page_size,
            page_token,
            parent_execution_id=parent_execution_id,
            search=search,
            max_bytes=max_bytes,
        )

    async def history(
        self, execution_id: str, after_sequence: int, limit: int
    ) -> list[ev.ExecutionEvent]:
        return await self.reads.history(execution_id, after_sequence, limit)

    def watch(self, execution_id: str, after_sequence: int) -> AsyncIterator[ev.ExecutionEvent]:
        """Committed events after `after_sequence`, live, ending with the terminal one."""
        return self.reads.watch(execution_id, after_sequence)

    async def watch_with_output(
        self, execution_id: str, after_sequence: int
    ) -> AsyncIterator[ev.ExecutionEvent | StreamChunk]:
        """`watch`, with the live output of its tasks interleaved (WatchExecution with
        `stream`); SubscriberTooSlow when the output fell too far behind."""
        subscription = self.streams.subscribe(execution_id)  # before the events start
        try:
            async for item in merged(self.reads.watch(execution_id, after_sequence), subscription):
                yield item
        finally:
            self.streams.unsubscribe(subscription)

    async def watch_output(
        self, execution_id: str, task_id: str = ""
    ) -> AsyncIterator[StreamChunk]:
        """The live output of an execution's tasks (of one, with `task_id`) from now on,
        until the execution (or that task) ends (WatchTaskStream)."""
        subscription = self.streams.subscribe(execution_id, task_id)
        try:
            state = await self.load_state(execution_id)  # NotFound; after subscribing
            if task_id and task_id not in state.plan.index_of:
                raise NotFound(f"execution {execution_id} has no task {task_id[:200]!r}")
            if state.terminal or (task_id and task_finished(state, task_id)):
                return
            async for chunk in subscription.items():
                yield chunk
        finally:
            self.streams.unsubscribe(subscription)

    def forget_deleted(self, execution_ids: Collection[str]) -> None:
        """Finished executions deleted from the store (retention, purge): not kept in
        memory for reads any more."""
        for execution_id in execution_ids:
            self.executions.drop_finished(execution_id)

    async def list_plans(
        self, workflow_name: str, page_size: int, page_token: str
    ) -> tuple[list[PlanEntry], str]:
        return await self.reads.list_plans(workflow_name, page_size, page_token)

    def waiting_tasks(self) -> list[tuple[str, str, Wait]]:
        """Tasks held back by flow control or resources now, oldest first."""
        return self.scheduler.waits()

    def worker_statuses(self, task_types: list[str]) -> list[WorkerConn]:
        """Connected workers (those registered for one of `task_types`, if given), by id."""
        return self.workers.statuses(task_types)

    def breaker_statuses(self, task_types: list[str]) -> list[tuple[cb.Breaker, int]]:
        """Every known breaker (or those of `task_types`) with its parked-task count."""
        return self.breakers.statuses(task_types)

    # -- replicas (runtime/replicas.py) ----------------------------------------------
    @property
    def router(self) -> Router | None:
        """How executions other replicas own are reached (None: no replicas)."""
        return self.reads.router

    @router.setter
    def router(self, router: Router | None) -> None:
        self.reads.router = router

    async def adopt(self, execution_ids: Collection[str]) -> int:
        return await self.recovery.adopt(execution_ids)

    def disown(self, execution_ids: Collection[str]) -> None:
        self.recovery.disown(execution_ids)

    @property
    def live_ids(self) -> list[str]:
        return list(self.executions)


# A control call as `decide/requests.py` identifies it: (request_id, kind, digest).
Repeat = tuple[str, str, str]


def start_digest(
    plan_id: str,
    inputs: dict[str, JsonValue],
    fairness_key: str,
    search_attributes: Mapping[str, SearchValue] | None = None,
) -> str:
    """What makes two StartExecution requests "the same" for a reused request_id: the
    plan, the inputs as sent (before defaults), the fairness key and the search
    attributes (left out when there are none, so digests stored before they existed
    still match). Trace context is not part of it (a retry may come from another span)."""
    parts: list[object] = [plan_id, inputs, fairness_key]
    if search_attributes:
        parts.append({k: [v.kind, v.value] for k, v in search_attributes.items()})
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _same_request(existing: ExecutionRecord, digest: str) -> None:
    """Raise AlreadyExists unless `existing` was started by a request with `digest`.
    Executions stored before digests were (schema 5) have none: taken as the same."""
    if existing.request_digest and digest and existing.request_digest != digest:
        raise AlreadyExists(
            f"request_id {existing.request_id!r} already started execution "
            f"{existing.execution_id} with a different request (plan, inputs or fairness "
            "key); use a new request_id to start another execution",
            reason="REQUEST_ID_REUSED",
            metadata={
                "requestId": existing.request_id,
                "executionId": existing.execution_id,
                "planId": existing.plan_id,
            },
        )


def _new_execution_id(now_ms: int) -> str:
    # Time-ordered (sorts by creation) and unique without coordination: 80 random
    # bits (os.urandom directly: a uuid4 object per start cost 4x as much).
    return f"{now_ms:012x}{os.urandom(10).hex()}"
