"""Matching queued tasks to free worker slots, fairly, behind gates.

Each pump round, after the inputs are decided and before the commit, `dispatch`
visits the executions with ready tasks in fair order (`queues.py`), skips paused
ones and those at their `max_parallel`, takes each one's best task, asks every
`Gate` whether it may go now, picks a worker (`workers.py`) and lets the machine
decide the dispatch. A task no worker can take goes back to its queue with a hint
callers see in its `status_message` ("waiting for a worker with task type X").

A **gate** is a check before a dispatch with state shared across executions. The
circuit breakers are one (`breakers.py`), flow control another (`flow.py`:
concurrency limits, rate limits, the result cache): `admit` returns None (the gate
does not apply), a `Verdict` that refuses (the machine decides what happens instead:
park it, fail it, complete it from the cache), one that makes it wait (`wait`: the
task leaves the ready queue, its reason shown in `get`, until the gate `offer`s it
again) or one that admits and wants to know when the dispatch was decided.

Resources: a task whose `resources` fit no free worker now is held out of the ready
queue the same way (its `Wait` says what is short, or that no live worker could ever
fit it) and offered again when a lease that took resources ends or a worker
connects, so it never holds up the tasks queued behind it.

`absorb` carries out the effects that stay inside the engine, right after a
decision (so a task queued by it can be dispatched in the same round):
`TaskReady` queues the task and arms its queue deadlines, `ReleaseLease` frees the
worker slot.

A dispatch whose inputs need the expression sandbox first decides nothing yet: the
task stays QUEUED, out of the ready queue, and is offered again once the outcome is
in (`evaluations.py`). A refusal that needs one (what follows a failure may evaluate
an expression) suspends its execution, as an input would (`pump.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Generic, Protocol, TypeVar

from execplan.executor.decide import effects as fx
from execplan.executor.decide.machine import Machine
from execplan.executor.decide.step import DEFAULT_LIMITS
from execplan.executor.expressions.evaluation import EvaluationPending, Request
from execplan.executor.plan_view import NO_REQUEST
from execplan.executor.runtime.deadlines import Deadlines
from execplan.executor.runtime.evaluations import Evaluations
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Inbox, Input
from execplan.executor.runtime.leases import Leases
from execplan.executor.runtime.queues import ReadyQueues
from execplan.executor.runtime.workers import WorkerConn, WorkerRegistry
from execplan.executor.state import ExecutionState, Limits
from execplan.executor.waiting import Wait
from execplan.v1 import execution_pb2 as ex

# Suspends an execution whose decision waits for an evaluation (Pump.suspend).
Suspend = Callable[[str, Request], None]


@dataclass(frozen=True, slots=True)
class Verdict:
    # Decide this instead of the dispatch (the task does not go now).
    refuse: Callable[[Machine], None] | None = None
    # Called once the dispatch is decided (e.g. to count a slot the gate gave out).
    dispatched: Callable[[], None] | None = None
    # Not now: the task waits out of the ready queue until the gate offers it again.
    wait: Wait | None = None


class Gate(Protocol):
    def admit(self, state: ExecutionState, index: int, now_ms: int) -> Verdict | None:
        """May task `index` of `state` be dispatched now? None: not this gate's task."""
        ...


V = TypeVar("V")


class ByExecution(Generic[V]):
    """Entries by execution id and task index, kept per execution so forgetting one
    execution is O(its own entries), whatever the number of others."""

    def __init__(self) -> None:
        self._by: dict[str, dict[int, V]] = {}

    def __bool__(self) -> bool:
        return bool(self._by)

    def get(self, execution_id: str, index: int) -> V | None:
        entries = self._by.get(execution_id)
        return entries.get(index) if entries is not None else None

    def put(self, execution_id: str, index: int, value: V) -> None:
        self._by.setdefault(execution_id, {})[index] = value

    def pop(self, execution_id: str, index: int) -> None:
        entries = self._by.get(execution_id)
        if entries is not None and entries.pop(index, None) is not None and not entries:
            del self._by[execution_id]

    def drop(self, execution_id: str) -> None:
        self._by.pop(execution_id, None)

    def items(self) -> Iterator[tuple[str, int, V]]:
        for execution_id, entries in self._by.items():
            for index, value in entries.items():
                yield execution_id, index, value

    def take_all(self) -> list[tuple[str, int, V]]:
        """Every entry, leaving the table empty."""
        taken = list(self.items())
        self._by.clear()
        return taken


class Scheduler:
    def __init__(
        self,
        *,
        executions: Executions,
        workers: WorkerRegistry,
        leases: Leases,
        deadlines: Deadlines,
        evaluations: Evaluations[Input],
        inbox: Inbox,
        gates: tuple[Gate, ...] = (),
        limits: Limits = DEFAULT_LIMITS,
        missing_type: Callable[[str], None] | None = None,
    ) -> None:
        """`missing_type(task_type)`: a task was queued that no worker has (the engine
        connects its built-in HTTP worker the first time builtin.http is needed)."""
        self._limits = limits
        self._executions = executions
        self._workers = workers
        self._leases = leases
        self._deadlines = deadlines
        self._evaluations = evaluations
        self._inbox = inbox
        self._gates = gates
        self._missing_type = missing_type
        self._ready = ReadyQueues()
        # Why a queued attempt waits: shown as the task's status while that attempt is
        # still the one queued (see `hint`).
        self._hints: ByExecution[tuple[int, int, int, str]] = ByExecution()
        # Flow control or resources: (phase, attempt, epoch, wait); shown as
        # TaskRun.waiting while that attempt is queued.
        self._waits: ByExecution[tuple[int, int, int, Wait]] = ByExecution()
        # Tasks held out of the ready queue for resources: (task type, phase, attempt).
        self._for_resources: ByExecution[tuple[str, int, int]] = ByExecution()
        self._generation = -1
        # The worker the last `_one` dispatched to (None: it dispatched nothing).
        self._used: WorkerConn | None = None

    def forget(self, execution_id: str) -> None:
        self._ready.drop(execution_id)
        for table in (self._hints, self._waits, self._for_resources):
            table.drop(execution_id)

    def hint(self, state: ExecutionState, index: int) -> str:
        """Why task `index` waits in its queue ("" when nothing is known)."""
        found = self._hints.get(state.execution_id, index)
        task = state.tasks[index]
        if found is None or task.state != ex.TASK_STATE_QUEUED:
            return ""
        phase, attempt, epoch, reason = found
        return reason if (task.phase, task.attempt, task.epoch) == (phase, attempt, epoch) else ""

    def waiting(self, state: ExecutionState, index: int) -> Wait | None:
        """What task `index` waits for, when it is flow control or resources."""
        found = self._waits.get(state.execution_id, index)
        task = state.tasks[index]
        if found is None or task.state != ex.TASK_STATE_QUEUED:
            return None
        phase, attempt, epoch, wait = found
        return wait if (task.phase, task.attempt, task.epoch) == (phase, attempt, epoch) else None

    def waits(self) -> list[tuple[str, str, Wait]]:
        """(execution id, task id, wait) of every task waiting for flow control or
        resources now, oldest first."""
        out = []
        for execution_id, index, _ in self._waits.items():
            state = self._executions.get(execution_id)
            if state is None:
                continue
            wait = self.waiting(state, index)
            if wait is not None:
                out.append((execution_id, state.task_id(index), wait))
        out.sort(key=lambda item: item[2].since_ms)
        return out

    def _wait(self, state: ExecutionState, index: int, reason: str) -> None:
        task = state.tasks[index]
        self._hints.put(state.execution_id, index, (task.phase, task.attempt, task.epoch, reason))

    def _set_wait(self, state: ExecutionState, index: int, wait: Wait) -> None:
        task = state.tasks[index]
        old = self._waits.get(state.execution_id, index)
        same = old is not None and old[:3] == (task.phase, task.attempt, task.epoch)
        if same and old is not None and old[3].kind == wait.kind:
            wait.since_ms = old[3].since_ms  # still waiting for the same kind of thing
        self._waits.put(state.execution_id, index, (task.phase, task.attempt, task.epoch, wait))

    def note_wait(self, execution_id: str, index: int, wait: Wait) -> None:
        """A gate learned more about why a held task waits (shown in `get`)."""
        state = self._executions.get(execution_id)
        if state is not None and state.tasks[index].state == ex.TASK_STATE_QUEUED:
            self._set_wait(state, index, wait)

    def offer(self, execution_id: str, index: int) -> None:
        """A gate that made task `index` wait lets it try again (if it still waits)."""
        state = self._executions.get(execution_id)
        if state is None:
            return
        task = state.tasks[index]
        if task.state != ex.TASK_STATE_QUEUED:
            return
        node = state.node(index)
        self._offer(execution_id, node.type_for(task.phase), index, task.phase, task.attempt)

    def _offer_resources(self) -> None:
        """Capacity changed: tasks held for resources try again."""
        for execution_id, index, (task_type, phase, attempt) in self._for_resources.take_all():
            self._offer(execution_id, task_type, index, phase, attempt)

    def _machine(self, machines: dict[str, Machine], state: ExecutionState, now: int) -> Machine:
        machine = machines.get(state.execution_id)
        if machine is None:
            machine = Machine(state, now, self._evaluations.evaluator, self._limits)
            machines[state.execution_id] = machine
        return machine

    def _offer(
        self, execution_id: str, task_type: str, index: int, phase: int, attempt: int
    ) -> None:
        """A task whose dispatch waited for its inputs' evaluation goes back to the
        ready queue, if it is still the same queued attempt."""
        state = self._executions.get(execution_id)
        if state is None or not _queued_in(state)(index, phase, attempt):
            return
        node = state.node(index)
        self._ready.push(
            execution_id,
            state.fairness_key,
            task_type,
            node,
            index=index,
            phase=phase,
            attempt=attempt,
        )
        self._inbox.wake()

    # -- effects that stay inside the engine -----------------------------------------
    def absorb(self, machine: Machine, start: int = 0) -> None:
        """The internal effects of `machine` from `start` on; safe before the commit."""
        state = machine.state
        for effect in machine.effects[start:]:
            if isinstance(effect, fx.TaskReady):
                self._queue(state, effect.index)
            elif isinstance(effect, fx.ReleaseLease):
                self._leases.released(state.execution_id, effect.index)

    def _queue(self, state: ExecutionState, index: int) -> None:
        task = state.tasks[index]
        node = state.node(index)
        task_type = node.type_for(task.phase)
        if not self._workers.has_type(task_type):
            if self._missing_type is not None:
                self._missing_type(task_type)
            if not self._workers.has_type(task_type):  # `missing_type` may have started one
                self._wait(state, index, f"waiting for a worker with task type {task_type}")
        self._ready.push(
            state.execution_id,
            state.fairness_key,
            task_type,
            node,
            index=index,
            phase=task.phase,
            attempt=task.attempt,
        )
        timeouts = node.timeouts_for(task.phase)
        if timeouts.schedule_to_start_ms or node.timeouts.schedule_to_close_ms:
            self._deadlines.queued(state, index)

    # -- the dispatch round ----------------------------------------------------------
    def dispatch(self, machines: dict[str, Machine], now: int, suspend: Suspend) -> None:
        """Dispatches what can go now; decisions land in `machines` (one per execution)."""
        if self._for_resources and (
            self._leases.freed or self._workers.generation != self._generation
        ):
            self._offer_resources()
        self._leases.freed = False
        self._generation = self._workers.generation
        if not len(self._ready) or self._workers.total_free() <= 0:
            return
        blocked: set[str] = set()
        progress = True
        while progress and len(self._ready):
            progress = False
            for execution_id in list(self._ready.rounds()):
                state = self._executions.get(execution_id)
                if state is None or state.terminal:
                    self._ready.drop(execution_id)
                    continue
                if state.paused:
                    continue
                limit = state.plan.max_parallel
                if limit and self._leases.inflight(execution_id) >= limit:
                    continue
                picked = self._ready.take(execution_id, _queued_in(state), blocked)
                if picked is None:
                    continue
                if self._one(machines, state, picked, now, blocked, suspend):
                    progress = True
                    # Only a dispatch takes a slot, of the worker it went to: the
                    # others' are counted again once that one has none left.
                    used = self._used
                    if used is not None and used.free <= 0 and self._workers.total_free() <= 0:
                        return  # the rest waits for a free slot, as at the top

    def _one(  # noqa: PLR0917
        self,
        machines: dict[str, Machine],
        state: ExecutionState,
        picked: tuple[str, int],
        now: int,
        blocked: set[str],
        suspend: Suspend,
    ) -> bool:
        """Dispatches, refuses or holds (waits) one task; False when it went back to
        its queue or waits for an evaluation."""
        task_type, index = picked
        execution_id = state.execution_id
        node = state.node(index)
        self._used = None
        dispatched = self._ask_gates(machines, state, picked, now, suspend)
        if not isinstance(dispatched, list):
            return dispatched
        task = state.tasks[index]
        request = node.request if task.phase == ex.TASK_PHASE_MAIN else NO_REQUEST
        worker = self._workers.pick(task_type, node, request)
        if worker is None:
            wait = self._workers.placement_wait(task_type, node, request, now)
            if wait is not None:  # held out of the ready queue, as above
                self._set_wait(state, index, wait)
                held = (task_type, task.phase, task.attempt)
                self._for_resources.put(execution_id, index, held)
                return True
            if not self._workers.free_for(task_type):
                blocked.add(task_type)
            else:
                self._wait(state, index, "no worker matches its placement")
            self._ready.push(
                execution_id,
                state.fairness_key,
                task_type,
                node,
                index=index,
                phase=task.phase,
                attempt=task.attempt,
            )
            return False
        machine = self._machine(machines, state, now)
        mark = len(machine.effects)
        try:
            leased = machine.dispatch(index, worker.worker_id, worker.principal or "")
        except EvaluationPending as pending:
            task = state.tasks[index]
            offer = (execution_id, task_type, index, task.phase, task.attempt)
            self._evaluations.start(pending.request, lambda: self._offer(*offer))
            return False
        if leased:
            for done in dispatched:
                done()
            self._ready.served(execution_id)
            self._hints.pop(execution_id, index)
            self._waits.pop(execution_id, index)
            epoch = state.tasks[index].epoch
            self._leases.granted(execution_id, index, worker.worker_id, epoch, request)
            self._used = worker
        self.absorb(machine, mark)
        return True

    def _ask_gates(
        self,
        machines: dict[str, Machine],
        state: ExecutionState,
        picked: tuple[str, int],
        now: int,
        suspend: Suspend,
    ) -> list[Callable[[], None]] | bool:
        """Every gate's say on a task: the callbacks of those that admit it, or, when
        one refuses, holds it or waits for an evaluation, what `_one` returns."""
        task_type, index = picked
        execution_id = state.execution_id
        dispatched: list[Callable[[], None]] = []
        for gate in self._gates:
            try:
                verdict = gate.admit(state, index, now)
            except EvaluationPending as pending:  # a key needs the sandbox first
                task = state.tasks[index]
                self._evaluations.start(
                    pending.request,
                    partial(self._offer, execution_id, task_type, index, task.phase, task.attempt),
                )
                return False
            if verdict is None:
                continue
            if verdict.refuse is not None:
                machine = self._machine(machines, state, now)
                mark = len(machine.effects)
                try:
                    verdict.refuse(machine)
                except EvaluationPending as pending:
                    suspend(execution_id, pending.request)
                    return False
                self.absorb(machine, mark)
                return True
            if verdict.wait is not None:
                # Out of the ready queue: the tasks behind it get their turn (progress).
                self._set_wait(state, index, verdict.wait)
                return True
            if verdict.dispatched is not None:
                dispatched.append(verdict.dispatched)
        return dispatched


def _queued_in(state: ExecutionState) -> Callable[[int, int, int], bool]:
    """Is this ready-queue entry (index, phase, attempt) the task's queued attempt?"""

    def current(index: int, phase: int, attempt: int) -> bool:
        task = state.tasks[index]
        return (
            task.state == ex.TASK_STATE_QUEUED and task.phase == phase and task.attempt == attempt
        )

    return current
