"""Flow control in the runtime: the scheduler gate of concurrency limits, rate limits
and the result cache, and what follows their commits (docs/flow-control.md).

    gate = FlowGate(flow=store.flow, executions=..., evaluator=..., background=...,
                    now_ms=..., offer=scheduler.offer)
    gate.admit(state, index, now)        # a scheduler Gate (see Admissions for how)
    gate.committed(state, events)        # after a commit: cache writes, 429 pauses
    await gate.declare(plan)             # a starting execution's workflow buckets

The facts of an attempt (its keys, units and cache key: `decide/keys.py`) are
computed once per queued attempt and kept until the next one, so the breakers
(`breaker_name`), the cache write after a success and a provider's 429 all use the
keys the attempt was admitted under.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from execplan.executor.decide.keys import NO_FACTS, Facts, task_facts
from execplan.executor.decide.machine import Machine
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError
from execplan.executor.expressions.evaluation import DEFAULT_EVALUATOR, EvaluationPending, Evaluator
from execplan.executor.plan_view import PlanView
from execplan.executor.runtime.admission import (
    GRANTED,
    HIT,
    Admissions,
    Ticket,
    TicketKey,
    holder_of,
)
from execplan.executor.runtime.background import Background
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.scheduler import Verdict
from execplan.executor.state import LEASED_TASK_STATES, ExecutionState
from execplan.executor.task_errors import retry_after_of
from execplan.executor.values import from_value
from execplan.executor.waiting import CONCURRENCY_LIMIT, RATE_LIMIT, Wait
from execplan.flow.rates import settings
from execplan.store.flow import WORKFLOW, CacheEntry, FlowStore, SlotRequest, TakeRequest, Use
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from google.protobuf import struct_pb2

log = logging.getLogger("execplan.executor")

MAIN = ex.TASK_PHASE_MAIN


class FlowGate:
    def __init__(
        self,
        *,
        flow: FlowStore,
        executions: Executions,
        background: Background,
        now_ms: Callable[[], int],
        offer: Callable[[str, int], None],
        note: Callable[[str, int, Wait], None],
        evaluator: Evaluator = DEFAULT_EVALUATOR,
    ) -> None:
        self._flow = flow
        self._executions = executions
        self._background = background
        self._now_ms = now_ms
        self._evaluator = evaluator
        self.admissions = Admissions(
            flow,
            offer=offer,
            note=note,
            is_queued=self._is_queued,
            holds=self._holds,
            now_ms=now_ms,
        )
        # (execution id, index) -> (phase, attempt, facts) of the latest attempt.
        self._facts: dict[tuple[str, int], tuple[int, int, Facts]] = {}
        # Cache hits counted since start (metrics).
        self.cache_hits = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.admissions.start()

    async def stop(self) -> None:
        await self.admissions.stop()

    def forget(self, execution_id: str) -> None:
        """A Keeper of Executions."""
        for key in [k for k in self._facts if k[0] == execution_id]:
            del self._facts[key]
        self.admissions.forget(execution_id)

    async def declare(self, plan: PlanView) -> None:
        """Stores the buckets a starting execution's workflow declares (the server's
        own, set with `execplan limits set`, win)."""
        for name, bucket in plan.rate_limits:
            await self._flow.set_bucket(
                name, settings(bucket.units, bucket.period_ms, bucket.burst), WORKFLOW
            )

    # -- facts -----------------------------------------------------------------------
    def facts(self, state: ExecutionState, index: int, now_ms: int) -> Facts:
        """The facts of task `index`'s current main attempt (memoised); raises
        EvaluationError or EvaluationPending."""
        task = state.tasks[index]
        known = self._facts.get((state.execution_id, index))
        if known is not None and known[:2] == (task.phase, task.attempt):
            return known[2]
        facts = task_facts(Step(state, now_ms, self._evaluator), index)
        self._facts[(state.execution_id, index)] = (task.phase, task.attempt, facts)
        return facts

    def breaker_name(self, state: ExecutionState, index: int, *, strict: bool = False) -> str:
        """The breaker a task's main attempt counts on: its type, or `type[key]`.
        `strict` (the gate) lets EvaluationPending/Error through; otherwise a key that
        cannot be known now counts on the type's own breaker."""
        node = state.node(index)
        if node.breaker is None or node.breaker.key is None:
            return node.type
        try:
            key = self.facts(state, index, self._now_ms()).breaker_key
        except (EvaluationError, EvaluationPending):
            if strict:
                raise
            return node.type
        return f"{node.type}[{key}]"

    # -- the gate --------------------------------------------------------------------
    def admit(self, state: ExecutionState, index: int, now_ms: int) -> Verdict | None:
        node = state.node(index)
        task = state.tasks[index]
        if node.flow is None or task.phase != MAIN:
            return None
        key: TicketKey = (state.execution_id, index, task.phase, task.attempt, task.epoch)
        ticket = self.admissions.get(key)
        if ticket is None:
            try:
                facts = self.facts(state, index, now_ms)
            except EvaluationError as error:
                problem = error  # `error` is unbound once the except clause ends
                return Verdict(refuse=lambda machine: machine.binding_failed(index, problem))
            ticket = self.admissions.ask(self._ticket(key, state, index, facts, now_ms))
        if ticket.state == HIT:
            return Verdict(refuse=lambda machine: self._answer(machine, key, ticket))
        if ticket.state == GRANTED:
            return Verdict(dispatched=lambda: self.admissions.dispatched(key))
        return Verdict(wait=ticket.wait or _pending(ticket, now_ms))

    def _ticket(
        self, key: TicketKey, state: ExecutionState, index: int, facts: Facts, now_ms: int
    ) -> Ticket:
        node = state.node(index)
        task_id = state.task_id(index)  # a for_each instance's own: each holds its slot
        slot = None
        if facts.limit is not None:
            name, value, most = facts.limit
            slot = SlotRequest(name, value, most, holder_of(state.execution_id, task_id))
        take = TakeRequest(tuple(Use(*u) for u in facts.uses)) if facts.uses else None
        # The cache answers a task's first attempt; a retry runs (something failed).
        cache_key = facts.cache_key if state.tasks[index].attempt <= 1 else ""
        return Ticket(
            key, task_id, node.type, slot, take, cache_key, now_ms, fairness=state.fairness_key
        )

    def _answer(self, machine: Machine, key: TicketKey, ticket: Ticket) -> None:
        entry = ticket.hit
        assert entry is not None
        hit = ev.CacheHit(key=entry.key, execution_id=entry.execution_id, task_id=entry.task_id)
        hit.stored_at.FromMilliseconds(entry.stored_ms)
        output = struct_pb2.Value.FromString(entry.payload)
        machine.cached(key[1], from_value(output), hit)
        self.admissions.answered(key)
        self.cache_hits += 1

    # -- after a commit --------------------------------------------------------------
    def committed(self, state: ExecutionState, events: Sequence[ev.ExecutionEvent]) -> None:
        """Stores the output of cached tasks that succeeded, pauses the rate-limit keys
        of attempts a provider throttled, and lets the admissions sweep ended ones."""
        if not uses_flow(state):
            return
        ended = False
        for event in events:
            kind = event.WhichOneof("kind")
            if kind == "task_succeeded":
                ended = True
                self._store_output(state, event)
            elif kind == "task_failed":
                ended = True
                self._throttled(state, event.task_failed)
            elif kind in ("task_timed_out", "task_requeued", "task_cancelled"):
                ended = True
        if ended:
            self.admissions.kick()

    def _current_facts(self, state: ExecutionState, task_id: str, phase: int) -> Facts:
        index = state.index_of(task_id)
        if index is None or phase != MAIN:
            return NO_FACTS
        known = self._facts.get((state.execution_id, index))
        if known is not None:
            return known[2]
        try:  # after a restart: the same inputs give the same facts
            return self.facts(state, index, self._now_ms())
        except (EvaluationError, EvaluationPending):
            return NO_FACTS

    def _store_output(self, state: ExecutionState, event: ev.ExecutionEvent) -> None:
        body = event.task_succeeded
        if body.HasField("cache_hit") or body.phase != MAIN:
            return
        index = state.index_of(body.task_id)
        node = state.node(index) if index is not None else None
        if node is None or node.flow is None or node.flow.cache is None:
            return
        facts = self._current_facts(state, body.task_id, body.phase)
        if not facts.cache_key:
            return
        now = self._now_ms()
        ttl = node.flow.cache.ttl_ms
        entry = CacheEntry(
            node.type,
            facts.cache_key,
            body.output.SerializeToString(deterministic=True),
            now,
            now + ttl if ttl else 0,
            state.execution_id,
            body.task_id,
        )
        self._background.spawn(self._flow.put_cache(entry), "cache-write")

    def _throttled(self, state: ExecutionState, failed: ev.TaskFailed) -> None:
        wait_ms = retry_after_of(failed.error)
        if not wait_ms:
            return
        facts = self._current_facts(state, failed.task_id, failed.phase)
        keys = [(name, key) for name, key, _ in facts.uses]
        if keys:
            log.info(
                "rate limit keys %s paused for %d ms (a provider's retry-after)", keys, wait_ms
            )
            self._background.spawn(self._flow.pause_keys(keys, wait_ms), "rate-limit-pause")

    # -- what the admissions ask of the executions -----------------------------------
    def _is_queued(self, key: TicketKey) -> bool:
        state = self._executions.get(key[0])
        if state is None:
            return False
        task = state.tasks[key[1]]
        return (
            task.state == ex.TASK_STATE_QUEUED and (task.phase, task.attempt, task.epoch) == key[2:]
        )

    def _holds(self, execution_id: str, task_id: str) -> bool | None:
        state = self._executions.get(execution_id)
        if state is None:
            if self._executions.finished(execution_id):
                return False  # finished here: nothing of it runs any more
            if self._executions.reloading(execution_id):
                return True  # back in a moment: keep it
            return None  # not ours (disowned): its new owner reconciles
        index = state.index_of(task_id)
        if index is None:
            return False
        task = state.tasks[index]
        return task.phase == MAIN and task.state in LEASED_TASK_STATES

    async def adopt(self, state: ExecutionState) -> None:
        """An execution recovered, reloaded or claimed here: reconcile its slots."""
        if uses_flow(state):
            await self.admissions.adopt(state.execution_id)


def uses_flow(state: ExecutionState) -> bool:
    """Does a task of the execution have flow control, a sub-plan's included? (Asked
    for every execution of every round: most have no sub-plan, and a generator over
    none costs more than the rest of the check.)"""
    if state.plan.has_flow:
        return True
    return bool(state.scopes) and any(scope.plan.has_flow for scope in state.scopes)


def _pending(ticket: Ticket, now_ms: int) -> Wait:
    """What a ticket the admissions have not served yet waits for."""
    if ticket.slot is not None:
        return Wait(CONCURRENCY_LIMIT, ticket.slot.name, ticket.slot.key, now_ms,
                    message="asking for a concurrency-limit slot")  # fmt: skip
    if ticket.take is not None:
        use = ticket.take.uses[0]
        return Wait(RATE_LIMIT, use.name, use.key, now_ms, message="asking for rate-limit tokens")
    return Wait(0, "", "", now_ms, message="looking up the result cache")
