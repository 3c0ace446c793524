"""The effects of a pump round (executor/engine.py runs the round itself).

Before the commit: internal effects (ready queues, released leases) and matching
queued tasks to free worker slots, behind the circuit breakers. After the commit:
external effects (dispatches and cancels to workers, timers, breakers, observers,
subscribers, checkpoints), then retiring finished executions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from execplan.executor import breakers as cb
from execplan.executor import effects as fx
from execplan.executor.engine_breakers import EngineBreakers
from execplan.executor.engine_core import _Input
from execplan.executor.engine_deadlines import EngineDeadlines
from execplan.executor.engine_round import Round
from execplan.executor.evaluation import EvaluationPending, Request
from execplan.executor.fencing import Claim
from execplan.executor.machine import Machine
from execplan.executor.snapshot import encode_state
from execplan.executor.state import ExecutionState
from execplan.executor.values import fill_struct
from execplan.executor.view import encode_execution
from execplan.store.port import Snapshot
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws

_SUMMARY_KINDS = frozenset(
    {
        "execution_started",
        "execution_paused",
        "execution_resumed",
        "compensation_started",
        "execution_completed",
    }
)


class EngineDispatch(EngineDeadlines, EngineBreakers):
    def _apply_internal(self, machine: Machine, start: int = 0) -> None:
        """Effects that stay inside the engine; safe before commit (see module doc)."""
        state = machine.state
        for effect in machine.effects[start:]:
            if isinstance(effect, fx.TaskReady):
                task = state.tasks[effect.index]
                node = state.plan.nodes[effect.index]
                task_type = node.type_for(task.phase)
                if not self.workers.has_type(task_type):
                    task.status_message = f"waiting for a worker with task type {task_type}"
                self._ready.push(
                    state.execution_id,
                    state.fairness_key,
                    task_type,
                    node,
                    phase=task.phase,
                    attempt=task.attempt,
                )
                timeouts = node.timeouts_for(task.phase)
                if timeouts.schedule_to_start_ms or node.timeouts.schedule_to_close_ms:
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

    def _dispatch_round(self, work: Round, now: int) -> None:
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
                    machine = work.machines.get(execution_id)
                    if machine is None:
                        machine = work.machines[execution_id] = self._machine(state, now)
                    mark = len(machine.effects)
                    if self._refuse(work, machine, gate, index):
                        self._apply_internal(machine, mark)
                        progress = True
                    continue
                worker = self.workers.pick(task_type, node)
                if worker is None:
                    if not self.workers.free_for(task_type):
                        blocked.add(task_type)
                    else:
                        state.tasks[index].status_message = "no worker matches its placement"
                    task = state.tasks[index]
                    self._ready.push(
                        execution_id,
                        state.fairness_key,
                        task_type,
                        node,
                        phase=task.phase,
                        attempt=task.attempt,
                    )
                    continue
                machine = work.machines.get(execution_id)
                if machine is None:
                    machine = work.machines[execution_id] = self._machine(state, now)
                mark = len(machine.effects)
                if self._dispatch(machine, task_type, index, worker.worker_id, worker.principal):
                    if gate is not None:
                        gate.admitted(_canary_key(state, index))
                    self._ready.served(execution_id)
                    worker.leases.add((execution_id, index))
                    self._inflight[execution_id] = self._inflight.get(execution_id, 0) + 1
                self._apply_internal(machine, mark)
                progress = True

    def _refuse(self, work: Round, machine: Machine, gate: cb.Breaker, index: int) -> bool:
        """The breaker refuses the task; False if that waits for an expression (what
        follows a failure may evaluate one): then the execution is suspended."""
        try:
            self._breaker_refuse(machine, gate, index)
        except EvaluationPending as pending:
            self._suspend(machine.state.execution_id, [], work, pending.request)
            return False
        return True

    def _dispatch(
        self, machine: Machine, task_type: str, index: int, worker_id: str, principal: str | None
    ) -> bool:
        """Leases the task to the worker; False if its inputs failed to resolve or need
        the sandbox first. Then nothing was decided yet: the task stays QUEUED, out of
        the ready queue until the evaluation is done, then it is offered again."""
        try:
            return machine.dispatch(index, worker_id, principal or "")
        except EvaluationPending as pending:
            task = machine.state.tasks[index]
            offer = (machine.state.execution_id, task_type, index, task.phase, task.attempt)
            self.evaluations.start(pending.request, lambda: self._offer(*offer))
            return False

    def _offer(
        self, execution_id: str, task_type: str, index: int, phase: int, attempt: int
    ) -> None:
        """A task whose dispatch waited for its inputs' evaluation goes back to the
        ready queue, if it is still the same queued attempt."""
        state = self._live.get(execution_id)
        if state is None or not _queued_in(state)(index, phase, attempt):
            return
        node = state.plan.nodes[index]
        self._ready.push(
            execution_id, state.fairness_key, task_type, node, phase=phase, attempt=attempt
        )
        self._wake.set()

    def _suspend(
        self, execution_id: str, inputs: list[_Input], work: Round, request: Request
    ) -> None:
        """A decision needs an expression evaluated in the sandbox first: forget what the
        execution decided this round, reload it after the commit, and hold its inputs
        (this round's, then later ones) until the outcome is in the memo; then they run
        again, in order, and meet the evaluation as a memo hit (executor/evaluations.py)."""
        held = [*work.forget(execution_id), *inputs]
        self._live.pop(execution_id, None)
        self._ready.drop(execution_id)
        self._reloading.setdefault(execution_id, [])  # worker messages wait for the reload
        work.redo.setdefault(execution_id, [])
        self.evaluations.suspend(execution_id, held, request, self._resubmit)

    def _resubmit(self, inputs: list[_Input]) -> None:
        self._inbox.extend(inputs)
        self._wake.set()

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
            heartbeat_timeout_ms=node.timeouts_for(effect.phase).heartbeat_ms,
            trace_context=state.trace_context,
            workflow_name=state.plan.workflow_name,
        )
        fill_struct(dispatch.inputs, effect.inputs)
        if node.secrets:
            dispatch.secrets.update(self.secrets.resolve(node.secrets))
        timeouts = node.timeouts_for(effect.phase)
        lease = Claim(effect.phase, effect.attempt, effect.epoch)
        if timeouts.start_to_close_ms:
            deadline = self.now_ms() + timeouts.start_to_close_ms
            dispatch.start_to_close_deadline.FromMilliseconds(deadline)
            self._watch_lease(
                state.execution_id,
                effect.index,
                lease,
                timeouts.start_to_close_ms,
                ev.TIMEOUT_KIND_START_TO_CLOSE,
            )
        if timeouts.heartbeat_ms:
            self._watch_heartbeat(state.execution_id, effect.index, lease, timeouts.heartbeat_ms)
        self._watch_ack(state.execution_id, effect.index, lease)
        if self.observers.observers:
            self.observers.dispatching(state, dispatch)
        self._send(effect.worker_id, ws.ConnectResponse(dispatches=[dispatch]))


def _queued_in(state: ExecutionState) -> Callable[[int, int, int], bool]:
    """Is this ready-queue entry (index, phase, attempt) the task's queued attempt?"""

    def current(index: int, phase: int, attempt: int) -> bool:
        task = state.tasks[index]
        return (
            task.state == ex.TASK_STATE_QUEUED and task.phase == phase and task.attempt == attempt
        )

    return current


def _canary_key(state: ExecutionState, index: int) -> tuple[str, int, int, int]:
    task = state.tasks[index]
    return (state.execution_id, index, task.attempt, task.epoch)


def _ref(state: ExecutionState, index: int, phase: int, attempt: int, epoch: int) -> ws.AttemptRef:
    return ws.AttemptRef(
        execution_id=state.execution_id,
        task_id=state.plan.nodes[index].task_id,
        phase=phase,  # type: ignore[arg-type]
        token=ev.AttemptToken(attempt=attempt, lease_epoch=epoch),
    )
