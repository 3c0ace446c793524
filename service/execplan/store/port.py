"""The store port: the narrow interface the executor persists through.

What it holds, per execution: an append-only event log keyed by
`(execution_id, sequence)` (the primary key *is* the optimistic-concurrency check),
one index row (`ExecutionRecord`) for listing and recovery, the latest snapshot;
plus content-addressed plans and a small namespaced key/value map. Executor replicas
on one database need more of a store: `ReplicaStore` below.

How to use it::

    store = open_store("sqlite:///var/lib/execplan/db.sqlite")   # or "memory:"
    await store.open()
    record, created = await store.create_execution(record, first_events)
    await store.append([Append(execution_id, events, state="RUNNING", updated_at_ms=now)])
    ...
    await store.close()

Every backend (memory, SQLite, PostgreSQL) passes the one contract suite in
`tests/store/contract.py`. Payloads are opaque bytes (serialized protobuf); no backend
ever parses them. Errors come from `execplan.errors`: `NotFound`,
`ConcurrencyConflict`, `AlreadyExists`, `InvalidArgument` (bad cursor),
`Unavailable` (closed store) and `StoreError` (the backend failed; nothing was
acknowledged).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from execplan.errors import ExecplanError, FieldViolation, InvalidArgument
from execplan.records import record
from execplan.search import EMPTY, Filter, SearchValue

from .flow import FlowStore
from .schedules import ScheduleRecord, ScheduleUpdate

# The names of the execution states nothing leaves: the one list every layer uses
# (the executor's enum set, the SQL "active" predicate and indexes are built from it).
TERMINAL_STATE_NAMES: tuple[str, ...] = (
    "SUCCEEDED",
    "FAILED",
    "COMPENSATED",
    "COMPENSATION_FAILED",
    "CANCELLED",
    "TERMINATED",
)
TERMINAL_STATES: frozenset[str] = frozenset(TERMINAL_STATE_NAMES)


def _no_attributes() -> Mapping[str, SearchValue]:
    return MappingProxyType({})


def _no_updates() -> Mapping[str, SearchValue | None]:
    return MappingProxyType({})


@record
class UsageRecord:
    """Usage an event records (a `task_usage` event), given to the store beside the
    opaque payload: the store keeps it in the same transaction as the event, so what
    was committed is counted once, and adds it up per workflow and time range."""

    task_id: str
    counters: tuple[tuple[str, float], ...]


@record
class StoredEvent:
    """One entry of an execution's log; `payload` is a serialized `ExecutionEvent`.
    `usage` is set by the writer on events that record usage; reads leave it None
    (the payload has it)."""

    execution_id: str
    sequence: int
    kind: str
    recorded_at_ms: int
    payload: bytes
    usage: UsageRecord | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """The index row of one execution; `state` is the ExecutionState name, e.g. "RUNNING"."""

    execution_id: str
    plan_id: str
    workflow_name: str
    state: str
    created_at_ms: int
    updated_at_ms: int
    last_sequence: int
    request_id: str = ""
    fairness_key: str = ""
    # Digest of the StartExecution request that created it (plan, inputs, fairness
    # key): a reused `request_id` must come with the same request. "" for executions
    # created before the digest was stored (schema version 5), or without request_id.
    request_digest: str = ""
    # A child execution (a builtin.workflow task): the execution and the task
    # (`review`, `review[3]`) that started it.
    parent_execution_id: str = ""
    parent_task_id: str = ""
    # Typed key/values to find it by (execplan.search). Written by create_execution
    # and Append.search_attributes; filled in by list_executions and
    # search_attributes(), left empty by the other reads (one more query each).
    search_attributes: Mapping[str, SearchValue] = field(default_factory=_no_attributes)


@record
class Append:
    """Events to add to one execution, atomically; optionally updates its index row.

    The first event's sequence must be `last_sequence + 1` and the rest consecutive.
    `state`/`updated_at_ms` are written to the index row when `state` is given;
    `search_attributes` are set (None removes one) in the same transaction.
    """

    execution_id: str
    events: tuple[StoredEvent, ...]
    state: str | None = None
    updated_at_ms: int = 0
    search_attributes: Mapping[str, SearchValue | None] = field(default_factory=_no_updates)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Folded state of an execution as of `sequence` (opaque payload)."""

    execution_id: str
    sequence: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Which usage `Store.usage` adds up: recorded in `[since_ms, until_ms)` (None:
    unbounded), of one execution or of a workflow's executions (with every execution
    they started, at any depth), or of everything; split by `group_by`."""

    execution_id: str = ""
    workflow_name: str = ""
    since_ms: int | None = None
    until_ms: int | None = None
    group_by: str = ""  # "", "workflow", "execution", "task" or "attribute"
    # Only executions this filter finds, with every execution they started.
    filter: Filter = EMPTY
    # group_by "attribute": this search attribute's value on the execution, or else on
    # its nearest ancestor that has it (store/usage.py).
    group_attribute: str = ""


@dataclass(frozen=True, slots=True)
class UsageGroup:
    key: str
    counters: dict[str, float]
    executions: int
    # group_by "attribute": the value `key` renders (None: the executions without one).
    value: SearchValue | None = None


@dataclass(frozen=True, slots=True)
class UsageTotals:
    counters: dict[str, float]
    # Executions with usage in the range (each child on its own).
    executions: int
    # Largest cost first, then by key; empty without `group_by`.
    groups: tuple[UsageGroup, ...] = ()


class Store(abc.ABC):
    """Persistence port of the executor. All methods are coroutine-safe.

    `list_executions` orders newest first: `(created_at_ms DESC, execution_id DESC)`,
    paginated by the opaque cursor `page_cursor(last_record_of_previous_page)`.
    """

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema. Call once before anything else."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending group commits, then release resources. Idempotent."""

    @abc.abstractmethod
    async def put_plan(self, plan_id: str, payload: bytes) -> None:
        """Store a plan once; a second put of the same id is ignored (ids are digests)."""

    @abc.abstractmethod
    async def get_plan(self, plan_id: str) -> bytes | None: ...

    @abc.abstractmethod
    async def create_execution(
        self,
        record: ExecutionRecord,
        events: Sequence[StoredEvent],
        schedule: ScheduleUpdate | None = None,
    ) -> tuple[ExecutionRecord, bool]:
        """Insert the index row, its search attributes and the first events atomically.

        Events must be numbered 1..n; the stored `last_sequence` is n. When
        `record.request_id` is set and already used, returns `(existing, False)` and
        writes nothing (the schedule update included); otherwise `(stored_record,
        True)`. A reused `execution_id` raises `AlreadyExists`. With `schedule`, that
        schedule row is updated in the same transaction (a schedule's run and its
        "last slot" commit together), or, when its version moved on,
        `ConcurrencyConflict` and nothing is written.
        """

    @abc.abstractmethod
    async def find_by_request(self, request_id: str) -> ExecutionRecord | None:
        """The execution created with this (non-empty) `request_id`, if any."""

    @abc.abstractmethod
    async def append(self, batch: Sequence[Append]) -> None:
        """Durably append; returns only after the commit that contains the events.

        Each `Append` is atomic on its own: a duplicate or gapped sequence raises
        `ConcurrencyConflict`, an unknown execution `NotFound`, and nothing of that
        Append is written. Other Appends (of this call or of concurrent callers) are
        unaffected; this call raises the error of its first failing Append after the
        rest are committed.
        """

    async def append_each(self, batch: Sequence[Append]) -> dict[str, ExecplanError]:
        """Like `append`, but reports every Append that was not written instead of
        raising: {execution_id: error}. Empty when all committed. Callers that act
        on a group commit (the engine) need to know which executions committed.

        This default appends one by one; backends with group commit override it.
        """
        failures: dict[str, ExecplanError] = {}
        for item in batch:
            try:
                await self.append([item])
            except ExecplanError as exc:
                failures[item.execution_id] = exc
        return failures

    @abc.abstractmethod
    async def read_events(
        self, execution_id: str, after_sequence: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with `sequence > after_sequence`, ascending; [] for unknown ids."""

    @abc.abstractmethod
    async def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...

    @abc.abstractmethod
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
        """Newest first; filters combine with AND; `after` is a `page_cursor`;
        `parent_execution_id` keeps only that execution's children; `filter` is the
        filter language's (execplan.search). Records come with their search attributes."""

    @abc.abstractmethod
    async def search_attributes(
        self, execution_ids: Collection[str]
    ) -> dict[str, dict[str, SearchValue]]:
        """The search attributes of these executions (those without any are left out)."""

    @abc.abstractmethod
    async def list_finished(
        self,
        finished_before_ms: int,
        *,
        workflows: Collection[str] = (),
        other_than: Collection[str] = (),
        limit: int = 100,
    ) -> list[ExecutionRecord]:
        """Executions in a terminal state whose last change (their end) is before
        `finished_before_ms`, oldest first: retention's candidates. `workflows`: only
        these; `other_than`: none of these."""

    @abc.abstractmethod
    async def delete_execution(self, execution_id: str, max_events: int) -> bool:
        """Delete a finished execution in bounded steps: each call removes at most
        `max_events` of its events (one short transaction, so the writer never stalls)
        and, once none are left, its snapshot, search attributes and index row.
        Returns True when the execution is gone (also when it never existed).
        `FailedPrecondition` if it is not in a terminal state."""

    @abc.abstractmethod
    async def list_active(self) -> list[ExecutionRecord]:
        """Every execution not in a terminal state (recovery), oldest first."""

    @abc.abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the execution's snapshot unless the stored one is newer."""

    @abc.abstractmethod
    async def load_snapshot(self, execution_id: str) -> Snapshot | None: ...

    @abc.abstractmethod
    async def put_kv(self, namespace: str, key: str, payload: bytes) -> None:
        """Insert or replace."""

    @abc.abstractmethod
    async def insert_kv(self, namespace: str, key: str, payload: bytes) -> bytes:
        """Insert unless the key exists; the payload stored under it afterwards (this
        one, or the one an earlier or concurrent insert wrote). First writer wins."""

    @abc.abstractmethod
    async def get_kv(self, namespace: str, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def list_kv(self, namespace: str) -> list[tuple[str, bytes]]:
        """All entries of a namespace, ordered by key."""

    @property
    def flow(self) -> FlowStore:
        """Flow-control state kept with this store: concurrency-limit holders, token
        buckets, the task result cache (`flow.py`). Memory, SQLite and PostgreSQL
        keep it; a store without it cannot run plans that use flow control."""
        raise NotImplementedError(f"{type(self).__name__} keeps no flow-control state")

    @abc.abstractmethod
    async def usage(self, query: UsageQuery) -> UsageTotals:
        """Usage recorded by events with `StoredEvent.usage`, added up (see UsageQuery).
        A usage row is kept when its execution is purged: spend stays on the books."""

    # -- schedules (store/schedules.py) -----------------------------------------------

    @abc.abstractmethod
    async def create_schedule(self, record: ScheduleRecord) -> tuple[ScheduleRecord, bool]:
        """Insert; when the name is taken, `(existing, False)` and nothing written."""

    @abc.abstractmethod
    async def get_schedule(self, name: str) -> ScheduleRecord | None: ...

    @abc.abstractmethod
    async def list_schedules(self, limit: int = 100, after: str = "") -> list[ScheduleRecord]:
        """By name; `after`: the last name of the previous page."""

    @abc.abstractmethod
    async def update_schedule(self, update: ScheduleUpdate) -> None:
        """Replace the row if its version is still `update.expected_version`, else
        `ConcurrencyConflict`; `NotFound` if there is none."""

    @abc.abstractmethod
    async def delete_schedule(self, name: str) -> bool:
        """True when a schedule was deleted."""


@dataclass(frozen=True, slots=True)
class Owner:
    """The identity a replica's store writes as: appends of executions owned by
    another (replica, epoch) are refused with `OwnershipLost`."""

    replica_id: str
    epoch: int


class CommitListener(Protocol):
    """Commit notifications of every replica, per execution (`ReplicaStore.listener`)."""

    closed: asyncio.Event

    def waiter(self, execution_id: str) -> AbstractContextManager[asyncio.Event]:
        """An Event set whenever a commit touches `execution_id` (and on close)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ReplicaStore(Protocol):
    """A store several executor replicas share (docs/replicas.md): each replica holds
    a lease, owns the executions it started or claimed, and its appends are fenced
    by its `owner`. The PostgreSQL store is one; the executor names only this port."""

    @property
    def owner(self) -> Owner | None:
        """Who this store writes as; None before `register_replica`."""
        ...

    async def register_replica(self, replica_id: str, address: str, lease_ms: int) -> Owner:
        """A new epoch and lease for `replica_id`; sets and returns `owner`."""
        ...

    async def renew_lease(self, lease_ms: int) -> bool:
        """Extend the lease; False when it expired (this epoch owns nothing any more)."""
        ...

    async def release_lease(self) -> None:
        """End the lease now, so the others may claim our executions at once."""
        ...

    async def claim_executions(self, limit: int) -> list[str]:
        """Take over up to `limit` active executions whose owner is not live."""
        ...

    async def owner_of(self, execution_id: str) -> tuple[str, str] | None:
        """(replica_id, advertised address) of the live owner of an execution."""
        ...

    async def listener(self) -> CommitListener:
        """A started listener for commit notifications of any replica."""
        ...

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...

    async def read_events(
        self, execution_id: str, after_sequence: int = 0, limit: int | None = None
    ) -> list[StoredEvent]: ...


def page_cursor(record: ExecutionRecord) -> str:
    """Opaque cursor that resumes `list_executions` after `record`."""
    raw = f"{record.created_at_ms}:{record.execution_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """`(created_at_ms, execution_id)` of a `page_cursor`; `InvalidArgument` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, sep, execution_id = raw.partition(":")
        if not sep:
            raise ValueError("no separator")
        if not -(2**63) <= int(created) < 2**63:  # what every backend's integer holds
            raise ValueError("timestamp out of range")
        return int(created), execution_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(
            f"invalid page cursor {cursor[:64]!r}",
            [FieldViolation("page_token", "not a token this server issued")],
        ) from exc
