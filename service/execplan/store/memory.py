"""MemoryStore: a complete, non-durable `Store` kept in dicts.

For unit tests of the executor and for `open_store("memory:")`. It passes the same
contract suite as the SQLite backend. Every method runs without awaiting anything
in between its reads and writes, so on one event loop each call is atomic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

from execplan.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from execplan.search import EMPTY, Filter, SearchValue
from execplan.search.filter import matches

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
from .schedules import ScheduleRecord, ScheduleUpdate
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
        self._attributes: dict[str, dict[str, SearchValue]] = {}
        self._schedules: dict[str, ScheduleRecord] = {}

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
        self,
        record: ExecutionRecord,
        events: Sequence[StoredEvent],
        schedule: ScheduleUpdate | None = None,
    ) -> tuple[ExecutionRecord, bool]:
        self._check_open()
        check_batch_shape(record.execution_id, events)
        if record.request_id and record.request_id in self._by_request:
            return self._bare(self._by_request[record.request_id]), False
        if record.execution_id in self._executions:
            raise AlreadyExists(f"execution {record.execution_id!r} already exists")
        check_sequences(record.execution_id, 0, events)
        if schedule is not None:
            self._check_schedule(schedule)
            self._schedules[schedule.record.name] = schedule.record
        stored = dataclasses.replace(record, last_sequence=len(events))
        if record.search_attributes:
            self._attributes[record.execution_id] = dict(record.search_attributes)
        self._executions[record.execution_id] = dataclasses.replace(stored, search_attributes={})
        self._events[record.execution_id] = list(events)
        if record.request_id:
            self._by_request[record.request_id] = record.execution_id
        return stored, True

    async def find_by_request(self, request_id: str) -> ExecutionRecord | None:
        self._check_open()
        execution_id = self._by_request.get(request_id)
        return None if execution_id is None else self._bare(execution_id)

    def _bare(self, execution_id: str) -> ExecutionRecord:
        return self._executions[execution_id]

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
        if item.search_attributes:
            current = self._attributes.setdefault(item.execution_id, {})
            for name, value in item.search_attributes.items():
                if value is None:
                    current.pop(name, None)
                else:
                    current[name] = value
            if not current:
                del self._attributes[item.execution_id]
        if item.events:
            record = dataclasses.replace(record, last_sequence=item.events[-1].sequence)
        if item.state is not None:
            record = dataclasses.replace(record, state=item.state, updated_at_ms=item.updated_at_ms)
        self._executions[item.execution_id] = record

    async def read_events(
        self, execution_id: str, after_sequence: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        self._check_open()
        # Sequences are 1..n without gaps, so the list index is sequence - 1 (after a
        # partial delete_execution, counted from the first one left).
        stored = self._events.get(execution_id, [])
        offset = stored[0].sequence - 1 if stored else 0
        events = stored[max(after_sequence - offset, 0) :]
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
        filter: Filter = EMPTY,
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
            and (not filter or self._matches(filter, r))
        ]
        rows.sort(key=lambda r: (r.created_at_ms, r.execution_id), reverse=True)
        return [
            dataclasses.replace(r, search_attributes=dict(self._attributes[r.execution_id]))
            if r.execution_id in self._attributes
            else r
            for r in rows[: max(limit, 0)]
        ]

    def _matches(self, f: Filter, r: ExecutionRecord) -> bool:
        columns: Mapping[str, str | int] = {
            "state": r.state,
            "workflow_name": r.workflow_name,
            "execution_id": r.execution_id,
            "plan_id": r.plan_id,
            "fairness_key": r.fairness_key,
            "created_at_ms": r.created_at_ms,
            "updated_at_ms": r.updated_at_ms,
        }
        attributes = self._attributes.get(r.execution_id, {})
        return matches(f, columns, attributes, terminal=r.state in TERMINAL_STATES)

    async def search_attributes(
        self, execution_ids: Collection[str]
    ) -> dict[str, dict[str, SearchValue]]:
        self._check_open()
        return {i: dict(self._attributes[i]) for i in execution_ids if i in self._attributes}

    async def list_finished(
        self,
        finished_before_ms: int,
        *,
        workflows: Collection[str] = (),
        other_than: Collection[str] = (),
        limit: int = 100,
    ) -> list[ExecutionRecord]:
        self._check_open()
        rows = [
            r
            for r in self._executions.values()
            if r.state in TERMINAL_STATES
            and r.updated_at_ms < finished_before_ms
            and (not workflows or r.workflow_name in workflows)
            and r.workflow_name not in other_than
        ]
        rows.sort(key=lambda r: (r.updated_at_ms, r.execution_id))
        return rows[: max(limit, 0)]

    async def delete_execution(self, execution_id: str, max_events: int) -> bool:
        self._check_open()
        record = self._executions.get(execution_id)
        if record is None:
            return True
        if record.state not in TERMINAL_STATES:
            raise FailedPrecondition(f"execution {execution_id} is {record.state}, not finished")
        events = self._events.get(execution_id, [])
        del events[: max(max_events, 1)]
        if events:
            return False
        self._events.pop(execution_id, None)
        self._snapshots.pop(execution_id, None)
        self._attributes.pop(execution_id, None)
        del self._executions[execution_id]
        if record.request_id:
            self._by_request.pop(record.request_id, None)
        return True

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
        found = None
        if query.filter:
            found = {e for e, r in self._executions.items() if self._matches(query.filter, r)}
        return fold(rows, query, parents, workflows, found=found, attributes=self._attributes)

    # -- schedules -------------------------------------------------------------------

    async def create_schedule(self, record: ScheduleRecord) -> tuple[ScheduleRecord, bool]:
        self._check_open()
        existing = self._schedules.get(record.name)
        if existing is not None:
            return existing, False
        self._schedules[record.name] = record
        return record, True

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        self._check_open()
        return self._schedules.get(name)

    async def list_schedules(self, limit: int = 100, after: str = "") -> list[ScheduleRecord]:
        self._check_open()
        names = sorted(n for n in self._schedules if n > after)
        return [self._schedules[n] for n in names[: max(limit, 0)]]

    def _check_schedule(self, update: ScheduleUpdate) -> None:
        current = self._schedules.get(update.record.name)
        if current is None:
            raise NotFound(f"schedule {update.record.name!r} not found")
        if current.version != update.expected_version:
            raise ConcurrencyConflict(
                f"schedule {update.record.name!r} changed (version {current.version}, "
                f"expected {update.expected_version})"
            )

    async def update_schedule(self, update: ScheduleUpdate) -> None:
        self._check_open()
        self._check_schedule(update)
        self._schedules[update.record.name] = update.record

    async def delete_schedule(self, name: str) -> bool:
        self._check_open()
        return self._schedules.pop(name, None) is not None
