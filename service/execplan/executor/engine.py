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

`Engine` is put together from one mixin per concern; this module holds its
lifecycle, starting executions, control calls and the pump's round:

    engine_core.py       EngineConfig, shared state, _submit/_send/now_ms, bookkeeping
    engine_reads.py      plans, load_state, get/list executions, history, watch
    engine_workers.py    worker streams: connect, disconnect, acks/heartbeats/results
    engine_deadlines.py  in-memory deadlines and durable timers
    engine_breakers.py   circuit breakers: gates, parking, half-open
    engine_dispatch.py   a round's effects: before commit, dispatch, after commit
    engine_recovery.py   recovery, reload after a failed commit, replica adopt/disown
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from execplan.errors import (
    AlreadyExists,
    ExecplanError,
    FailedPrecondition,
    FieldViolation,
    LimitExceeded,
    Overloaded,
    OwnershipLost,
    StoreError,
)
from execplan.executor import requests
from execplan.executor.engine_core import EngineConfig, _Input
from execplan.executor.engine_recovery import EngineRecovery
from execplan.executor.engine_round import Round
from execplan.executor.evaluation import EvaluationPending
from execplan.executor.inputs import resolve_inputs
from execplan.executor.machine import Machine
from execplan.executor.ownership import Control
from execplan.executor.plan_view import PlanView
from execplan.executor.state import new_state
from execplan.executor.values import JsonValue
from execplan.executor.view import state_name
from execplan.store.port import Append, ExecutionRecord, StoredEvent
from execplan.v1 import events_pb2 as ev

__all__ = ["Engine", "EngineConfig"]

log = logging.getLogger("execplan.executor")


class Engine(EngineRecovery):
    """Owns live executions; every concern is a mixin (see the module docstring)."""

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
        self.evaluations.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.hub.close()

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
        """Starts an execution of `plan`; returns (execution_id, created).

        Idempotent on `request_id`: when one is given and an execution was started with
        it before, nothing is written and that execution is returned (created False),
        provided the request was the same (plan, inputs, fairness key: `start_digest`);
        a different request raises AlreadyExists (REQUEST_ID_REUSED). Callers that can
        avoid side effects for a repeated request check `started_by` first.
        """
        self._check_load()
        digest = start_digest(plan.plan_id, inputs, fairness_key) if request_id else ""
        resolved = resolve_inputs(plan, inputs)
        execution_id = _new_execution_id(self.now_ms())
        while True:
            state = new_state(execution_id, plan)
            machine = self._machine(state, self.now_ms())
            try:
                machine.start(resolved, request_id, fairness_key, trace_context or {})
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
        )
        existing, created = await self.store.create_execution(
            record, [_stored(e) for e in machine.events]
        )
        if not created:  # a concurrent start with the same request_id got there first
            _same_request(existing, digest)
            return existing.execution_id, False
        self._adopt(state)
        self._apply_internal(machine)
        self._act(machine)
        self._wake.set()
        return execution_id, True

    async def started_by(
        self, request_id: str, plan_id: str, inputs: dict[str, JsonValue], fairness_key: str
    ) -> ExecutionRecord | None:
        """The execution an earlier StartExecution with `request_id` created, if any
        (None without a request_id). AlreadyExists (REQUEST_ID_REUSED, naming that
        execution) when that request differed in plan, inputs or fairness key."""
        if not request_id:
            return None
        record = await self.store.find_by_request(request_id)
        if record is not None:
            _same_request(record, start_digest(plan_id, inputs, fairness_key))
        return record

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

    # -- control -----------------------------------------------------------------
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
        task_id: str = await self._submit_wait(
            execution_id,
            lambda m: m.external_event(name, data, request_id),
            (request_id, "send_event", requests.digest(name, data)),
        )
        return task_id

    async def _route(self, control: Control) -> str:
        """Replicas: the reply of the owner when another replica owns the execution."""
        if self.router is None or control.execution_id in self._live:
            return ""
        return await self.router.forward(control)

    async def _control(
        self, execution_id: str, action: Callable[[Machine], None], repeat: _Repeat
    ) -> str:
        await self._submit_wait(execution_id, action, repeat)
        return state_name(await self.load_state(execution_id))

    async def _submit_wait(
        self, execution_id: str, action: Callable[[Machine], Any], repeat: _Repeat
    ) -> Any:
        """Runs a control call's `action` on the live execution. A finished one takes
        none, but a repeat of a call it recorded (same request_id and request) is
        answered as the first was (`repeat` = request_id, kind, parameter digest)."""
        if execution_id not in self._live:
            state = await self.load_state(execution_id)
            answer = requests.repeated(state, *repeat)
            if answer is not None:
                return answer
            name = state_name(state)
            raise FailedPrecondition(f"execution {execution_id} is {name}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(execution_id, action, future)
        return await future

    # -- the pump ----------------------------------------------------------------
    async def _pump(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug outside the per-input guard (dispatch, effects). Nothing of the
                # round is lost for good: uncommitted attempts are still covered by
                # their leases and deadlines, and callers' RPCs time out.
                log.exception("engine round failed")

    async def _round(self) -> None:
        # Deferred inputs go first: an ack always precedes its attempt's result.
        batch, self._inbox = self._deferred + self._inbox, []
        self._deferred = []
        if self._deferred_flush is not None:
            self._deferred_flush.cancel()
            self._deferred_flush = None
        now = self.now_ms()
        work = Round()
        for item in batch:
            self._decide(item, work, now)
        self._dispatch_round(work, now)
        await self._commit(work)
        for machine in work.machines.values():
            if machine.events:
                self._act(machine)
        work.settle()
        for execution_id, inputs in work.redo.items():
            await self._reload(execution_id)
            for item in inputs:
                self._inbox.append(item)
            self.evaluations.reloaded(execution_id)
            self._wake.set()

    def _decide(self, item: _Input, work: Round, now: int) -> None:
        """Applies one input to its execution's Machine (no I/O; nothing leaves yet)."""
        execution_id = item.execution_id
        if self.evaluations.holds(execution_id):  # waiting for the expression sandbox
            self.evaluations.hold(execution_id, item)
            return
        if execution_id in work.redo:  # poisoned earlier this round: after the reload
            work.redo[execution_id].append(item)
            return
        state = self._live.get(execution_id)
        if state is None:
            work.fail(item.future, FailedPrecondition(f"execution {execution_id} is not running"))
            return
        machine = work.machines.get(execution_id)
        if machine is None:
            machine = work.machines[execution_id] = self._machine(state, now)
        mark = len(machine.effects)
        try:
            result = item.action(machine)
        except EvaluationPending as pending:
            self._suspend(execution_id, [item], work, pending.request)
            return
        except ExecplanError as error:  # refused before anything was emitted
            work.fail(item.future, error)
            return
        except Exception as error:
            # The state may hold emitted-but-uncommitted events: keep the execution
            # out of this round and rebuild it from the log (bug-tolerance, not flow).
            log.exception("input for execution %s failed; reloading it", execution_id)
            work.fail(item.future, RuntimeError(f"internal error: {error}"))
            work.drop(execution_id, error, retry=True)
            self._live.pop(execution_id, None)
            self._ready.drop(execution_id)
            return
        self._apply_internal(machine, mark)
        work.applied.setdefault(execution_id, []).append(item)
        if item.future is not None:
            work.replies.append((item.future, result, execution_id))

    async def _commit(self, work: Round) -> None:
        """One group commit of the round; executions that did not commit are dropped
        from it (reloaded, or disowned when another replica owns them)."""
        appends = [
            Append(
                execution_id=execution_id,
                events=tuple(_stored(e) for e in machine.events),
                state=state_name(machine.state),
                updated_at_ms=machine.state.updated_ms,
            )
            for execution_id, machine in work.machines.items()
            if machine.events
        ]
        if not appends:
            return
        began = time.perf_counter()
        try:
            failed = await self.store.append_each(appends)
        except Exception as error:  # the store as a whole failed: nothing committed
            log.exception("commit of %d executions failed", len(appends))
            failed = {a.execution_id: StoreError(f"commit failed: {error}") for a in appends}
        lost = [e for e, refusal in failed.items() if isinstance(refusal, OwnershipLost)]
        if lost:
            self.disown(lost)
        for execution_id, refusal in failed.items():
            owned_elsewhere = isinstance(refusal, OwnershipLost)
            if not owned_elsewhere:
                log.warning("append of %s refused (%s); reloading it", execution_id, refusal)
            work.drop(execution_id, refusal, retry=not owned_elsewhere)
            if owned_elsewhere:
                work.redo.pop(execution_id, None)
        self.observers.round_committed(
            len(appends) - len(failed),
            sum(len(a.events) for a in appends if a.execution_id not in failed),
            time.perf_counter() - began,
        )

    # -- introspection for tests and metrics -------------------------------------
    @property
    def live_count(self) -> int:
        return len(self._live)


# A control call as `executor/requests.py` identifies it: (request_id, kind, digest).
_Repeat = tuple[str, str, str]


def _stored(event: ev.ExecutionEvent) -> StoredEvent:
    stamp = event.recorded_at
    return StoredEvent(
        execution_id=event.execution_id,
        sequence=event.sequence,
        kind=event.WhichOneof("kind") or "",
        recorded_at_ms=stamp.seconds * 1000 + stamp.nanos // 1_000_000,
        payload=event.SerializeToString(),
    )


def start_digest(plan_id: str, inputs: dict[str, JsonValue], fairness_key: str) -> str:
    """What makes two StartExecution requests "the same" for a reused request_id: the
    plan, the inputs as sent (before defaults) and the fairness key. Trace context is
    not part of it (a retry may come from another span)."""
    canonical = json.dumps(
        [plan_id, inputs, fairness_key], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
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
    # Time-ordered (sorts by creation) and unique without coordination.
    return f"{now_ms:012x}{uuid.uuid4().hex[:20]}"
