"""MemoryStore: a complete, non-durable `Store` kept in dicts.

For unit tests of the executor and for `open_store("memory:")`. It passes the same
contract suite as the SQLite backend. Every method runs without awaiting anything
in between its reads and writes, so on one event loop each call is atomic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from execplan.errors import AlreadyExists, ConcurrencyConflict, NotFound, Unavailable

from .checks import check_batch_shape, check_sequences
from .flow import FlowStore
from .flow_memory import MemoryFlowStore
from .port import (
    TERMINAL_STATES,
    Append,
    ExecutionRecord,
    Snapshot,
    Store,
    StoredEvent,
    UsageQuery,
    UsageTotals,
    decode_cursor,
)
from .usage import fold


class MemoryStore(Store):
    def __init__(self) -> None:
        self._open = False
        self._plans: dict[str, bytes] = {}
        self._executions: dict[str, ExecutionRecord] = {}
        self._by_request: dict[str, str] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._kv: dict[tuple[str, str], bytes] = {}
        self._flow = MemoryFlowStore()

    @property
    def flow(self) -> FlowStore:
        return self._flow

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise Unavailable("store is not open")

    async def put_plan(self, plan_id: str, payload: bytes) -> None:
        self._check_open()
        self._plans.setdefault(plan_id, bytes(payload))

    async def get_plan(self, plan_id: str) -> bytes | None:
        self._check_open()
        return self._plans.get(plan_id)

    async def create_execution(
        self, record: ExecutionRecord, events: Sequence[StoredEvent]
    ) -> tuple[ExecutionRecord, bool]:
        self._check_open()
        check_batch_shape(record.execution_id, events)
        if record.request_id and record.request_id in self._by_request:
            return self._executions[self._by_request[record.request_id]], False
        if record.execution_id in self._executions:
            raise AlreadyExists(f"execution {record.execution_id!r} already exists")
        check_sequences(record.execution_id, 0, events)
        stored = dataclasses.replace(record, last_sequence=len(events))
        self._executions[record.execution_id] = stored
        self._events[record.execution_id] = list(events)
        if record.request_id:
            self._by_request[record.request_id] = record.execution_id
        return stored, True

    async def find_by_request(self, request_id: str) -> ExecutionRecord | None:
        self._check_open()
        execution_id = self._by_request.get(request_id)
        return None if execution_id is None else self._executions[execution_id]

    async def append(self, batch: Sequence[Append]) -> None:
        self._check_open()
        for item in batch:
            check_batch_shape(item.execution_id, item.events)
        first_error: Exception | None = None
        for item in batch:
            try:
                self._apply(item)
            except (NotFound, ConcurrencyConflict) as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def _apply(self, item: Append) -> None:
        record = self._executions.get(item.execution_id)
        if record is None:
            raise NotFound(f"execution {item.execution_id!r} not found")
        check_sequences(item.execution_id, record.last_sequence, item.events)
        self._events[item.execution_id].extend(item.events)
        if item.events:
            record = dataclasses.replace(record, last_sequence=item.events[-1].sequence)
        if item.state is not None:
            record = dataclasses.replace(record, state=item.state, updated_at_ms=item.updated_at_ms)
        self._executions[item.execution_id] = record

    async def read_events(
        self, execution_id: str, after_sequence: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        self._check_open()
        # Sequences are 1..n without gaps, so the list index is sequence - 1.
        events = self._events.get(execution_id, [])[max(after_sequence, 0) :]
        return events if limit is None else events[: max(limit, 0)]

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        self._check_open()
        return self._executions.get(execution_id)

    async def list_executions(
        self,
        *,
        states: Collection[str] = (),
        workflow_name: str = "",
        limit: int = 100,
        after: str = "",
        parent_execution_id: str = "",
    ) -> list[ExecutionRecord]:
        self._check_open()
        wanted = frozenset(states)
        bound = decode_cursor(after) if after else None
        rows = [
            r
            for r in self._executions.values()
            if (not wanted or r.state in wanted)
            and (not workflow_name or r.workflow_name == workflow_name)
            and (not parent_execution_id or r.parent_execution_id == parent_execution_id)
            and (bound is None or (r.created_at_ms, r.execution_id) < bound)
        ]
        rows.sort(key=lambda r: (r.created_at_ms, r.execution_id), reverse=True)
        return rows[: max(limit, 0)]

    async def list_active(self) -> list[ExecutionRecord]:
        self._check_open()
        rows = [r for r in self._executions.values() if r.state not in TERMINAL_STATES]
        return sorted(rows, key=lambda r: (r.created_at_ms, r.execution_id))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._check_open()
        if snapshot.execution_id not in self._executions:
            raise NotFound(f"execution {snapshot.execution_id!r} not found")
        current = self._snapshots.get(snapshot.execution_id)
        if current is None or current.sequence <= snapshot.sequence:
            self._snapshots[snapshot.execution_id] = snapshot

    async def load_snapshot(self, execution_id: str) -> Snapshot | None:
        self._check_open()
        return self._snapshots.get(execution_id)

    async def put_kv(self, namespace: str, key: str, payload: bytes) -> None:
        self._check_open()
        self._kv[(namespace, key)] = payload

    async def insert_kv(self, namespace: str, key: str, payload: bytes) -> bytes:
        self._check_open()
        return self._kv.setdefault((namespace, key), payload)

    async def get_kv(self, namespace: str, key: str) -> bytes | None:
        self._check_open()
        return self._kv.get((namespace, key))

    async def list_kv(self, namespace: str) -> list[tuple[str, bytes]]:
        self._check_open()
        return sorted((k, v) for (ns, k), v in self._kv.items() if ns == namespace)

    async def usage(self, query: UsageQuery) -> UsageTotals:
        self._check_open()
        workflows = {e: r.workflow_name for e, r in self._executions.items()}
        parents = {e: r.parent_execution_id for e, r in self._executions.items()}
        rows = [
            (
                e.execution_id,
                workflows[e.execution_id],
                e.recorded_at_ms,
                e.usage.task_id,
                dict(e.usage.counters),
            )
            for events in self._events.values()
            for e in events
            if e.usage is not None
        ]
        return fold(rows, query, parents, workflows)
