"""The read side of the engine: plans, and executions as callers see them.

Plans are decoded once and cached (a bounded number; a running execution holds its
own). An execution is read from memory while it is live or recently finished,
otherwise rebuilt from its latest checkpoint plus the events after it (optionally
as of an earlier sequence: time travel). `watch` follows an execution's committed
events live; `list_executions` and `history` page through the store.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from functools import partial

from execplan.errors import NotFound
from execplan.executor.decide.evolve import evolve
from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.runtime import plan_index
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.hub import Hub
from execplan.executor.runtime.replicas import Router
from execplan.executor.snapshot import decode_state
from execplan.executor.state import ExecutionState, new_state
from execplan.executor.view import (
    Hint,
    Waiting,
    encode_execution,
    encode_record,
    without_payloads,
)
from execplan.search import EMPTY, Filter
from execplan.store.port import Store, page_cursor
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2

# What a repeated message field adds to its entry's own size: the tag and the length.
ENTRY_OVERHEAD_BYTES = 16


class Reads:
    def __init__(
        self,
        *,
        store: Store,
        executions: Executions,
        hub: Hub,
        hint: Hint,
        waiting: Waiting | None = None,
        plan_cache: int,
        now_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._executions = executions
        self._hub = hub
        self._hint = hint
        self._waiting = waiting
        self._plan_cache = plan_cache
        self._now_ms = now_ms
        self._plans: OrderedDict[str, PlanView] = OrderedDict()
        # Registrations under way: a burst of starts of one new plan (200 clients
        # sending the same workflow at once) stores and decodes it once, not per start.
        self._registering: dict[str, asyncio.Future[PlanView]] = {}
        # Replicas: reaches executions other replicas own (runtime/replicas.py).
        self.router: Router | None = None

    # -- plans -----------------------------------------------------------------------
    async def register_plan(self, plan: plan_pb2.ExecutionPlan) -> PlanView:
        view = self._cached(plan.plan_id)
        if view is not None:
            return view
        registering = self._registering.get(plan.plan_id)
        if registering is None:
            # A task of its own, so a caller that is cancelled (its client went away)
            # cancels neither the registration nor the other callers waiting on it.
            registering = asyncio.ensure_future(self._register(plan))
            self._registering[plan.plan_id] = registering
            registering.add_done_callback(partial(self._registered, plan.plan_id))
        return await asyncio.shield(registering)

    def _registered(self, plan_id: str, registering: asyncio.Future[PlanView]) -> None:
        del self._registering[plan_id]
        if not registering.cancelled():
            registering.exception()  # retrieved, also when every caller was cancelled

    async def _register(self, plan: plan_pb2.ExecutionPlan) -> PlanView:
        await self._store.put_plan(plan.plan_id, plan.SerializeToString(deterministic=True))
        if await self._store.get_kv(plan_index.NAMESPACE, plan.plan_id) is None:
            entry = plan_index.PlanEntry.of(plan, self._now_ms())
            await self._store.put_kv(plan_index.NAMESPACE, plan.plan_id, entry.encode())
        return self._cache(decode_plan(plan))

    def registered(self, plan_id: str) -> PlanView | None:
        """The plan's view when it is in the cache: `register_plan` of it would then
        write nothing."""
        return self._cached(plan_id)

    async def keep_plan(self, plan: plan_pb2.ExecutionPlan) -> None:
        """Stores a plan for GetPlan without listing it (a sub-plan: it belongs to the
        execution whose dynamic task answered with it, not to ListPlans)."""
        if self._cached(plan.plan_id) is None:
            await self._store.put_plan(plan.plan_id, plan.SerializeToString(deterministic=True))

    async def list_plans(
        self, workflow_name: str, page_size: int, page_token: str
    ) -> tuple[list[plan_index.PlanEntry], str]:
        entries = await self._store.list_kv(plan_index.NAMESPACE)
        decoded = (plan_index.PlanEntry.decode(payload) for _, payload in entries)
        return plan_index.list_page(decoded, workflow_name, page_size, page_token)

    async def get_plan(self, plan_id: str) -> plan_pb2.ExecutionPlan:
        payload = await self._store.get_plan(plan_id)
        if payload is None:
            raise NotFound(f"plan {plan_id} not found")
        return plan_pb2.ExecutionPlan.FromString(payload)

    async def plan_view(self, plan_id: str) -> PlanView:
        view = self._cached(plan_id)
        if view is None:
            view = self._cache(decode_plan(await self.get_plan(plan_id)))
        return view

    def cached_plans(self) -> int:
        return len(self._plans)

    def _cached(self, plan_id: str) -> PlanView | None:
        view = self._plans.get(plan_id)
        if view is not None:
            self._plans.move_to_end(plan_id)
        return view

    def _cache(self, view: PlanView) -> PlanView:
        self._plans[view.plan_id] = view
        while len(self._plans) > self._plan_cache:
            self._plans.popitem(last=False)
        return view

    # -- executions ------------------------------------------------------------------
    async def load_state(
        self, execution_id: str, at_sequence: int = 0, *, fresh: bool = False
    ) -> ExecutionState:
        """The state now (from memory unless `fresh`), or as of `at_sequence`."""
        if not at_sequence and not fresh:
            known = self._executions.recent(execution_id)
            if known is not None:
                return known
        record = await self._store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"execution {execution_id} not found")
        plan = await self.plan_view(record.plan_id)
        state = await self._checkpoint(execution_id, plan, at_sequence)
        if state is None:
            state = new_state(execution_id, plan)
        while not at_sequence or state.last_sequence < at_sequence:
            wanted = 5000 if not at_sequence else min(5000, at_sequence - state.last_sequence)
            stored = await self._store.read_events(execution_id, state.last_sequence, wanted)
            for item in stored:
                evolve(state, ev.ExecutionEvent.FromString(item.payload))
            if len(stored) < wanted:
                break
        return state

    async def _checkpoint(
        self, execution_id: str, plan: PlanView, at_sequence: int
    ) -> ExecutionState | None:
        snapshot = await self._store.load_snapshot(execution_id)
        if snapshot is None or (at_sequence and snapshot.sequence > at_sequence):
            return None
        return decode_state(snapshot.payload, execution_id, plan)

    async def get_execution(self, execution_id: str, at_sequence: int = 0) -> ex.Execution:
        state = await self.load_state(execution_id, at_sequence)
        live = not at_sequence and execution_id in self._executions
        if not live:
            return encode_execution(state)
        return encode_execution(state, hint=self._hint, waiting=self._waiting)

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
        """`parent_execution_id`: only the children of that execution. `max_bytes`
        (0: none): the page also ends before the execution that would take its encoded
        size past it (the first one is always taken, and one larger than `max_bytes` by
        itself is listed without its inputs and outputs), so big inputs and outputs
        cannot make a page larger than a response may be."""
        size = max(1, page_size)  # the default and the cap are the caller's (the wire's)
        records = await self._store.list_executions(
            states=states,
            workflow_name=workflow_name,
            limit=size + 1,
            after=page_token,
            parent_execution_id=parent_execution_id,
            filter=search,
        )
        result: list[ex.Execution] = []
        used = 0
        for record in records[:size]:
            # Recently finished ones are still in memory: their task counts too.
            live = self._executions.recent(record.execution_id)
            execution = encode_execution(live, with_tasks=False) if live else encode_record(record)
            if max_bytes and execution.ByteSize() > max_bytes:
                execution = without_payloads(execution)  # alone it would not fit
            used += execution.ByteSize() + ENTRY_OVERHEAD_BYTES
            if max_bytes and result and used > max_bytes:
                break
            result.append(execution)
        more = len(records) > len(result)
        return result, page_cursor(records[len(result) - 1]) if more and result else ""

    async def history(
        self, execution_id: str, after_sequence: int, limit: int
    ) -> list[ev.ExecutionEvent]:
        if await self._store.get_execution(execution_id) is None:
            raise NotFound(f"execution {execution_id} not found")
        stored = await self._store.read_events(execution_id, after_sequence, limit)
        return [ev.ExecutionEvent.FromString(s.payload) for s in stored]

    async def watch(
        self, execution_id: str, after_sequence: int
    ) -> AsyncIterator[ev.ExecutionEvent]:
        """Committed events after `after_sequence`, live, ending with the terminal one."""
        if self.router is not None:  # any replica may commit them: tail the store
            async for event in self.router.watch(execution_id, after_sequence):
                yield event
            return
        last = after_sequence
        while True:
            # Subscribe before reading the log, so nothing committed in between is
            # missed; events already read are skipped by sequence.
            subscription = self._hub.subscribe(execution_id)
            try:
                state = await self.load_state(execution_id)
                while True:
                    backlog = await self._store.read_events(execution_id, last, 1000)
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
                    if item is None and not subscription.overflowed:
                        return  # the hub closed: the server is shutting down
                    if item is None or item.sequence > last + 1:
                        break  # fell behind or missed one: catch up from the log
                    if item.sequence <= last:
                        continue
                    last = item.sequence
                    yield item
                    if item.HasField("execution_completed"):
                        return
            finally:
                self._hub.unsubscribe(execution_id, subscription)
