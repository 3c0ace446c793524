"""Worker registry and fair matching of queued tasks to worker slots.

Liveness and slots live in memory only (no database write per heartbeat). A
worker's capacity is the least of its registered slots, its pacing window
(executor/pacing.py) and what its last `WorkerStatus` reported free; among the
workers that can take a task, one that keeps up with its acks comes first.
With authentication on, a worker id belongs to the principal that first
registered it (`WorkerRegistry.bind`).
Fairness: ready tasks are kept per execution and per task type; a dispatch round
visits executions round-robin, grouped by fairness key, taking one task per visit,
so a 10,000-task execution cannot starve a 3-task one. Within one execution the
order is priority, then critical-path rank, then plan order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from execplan.errors import PermissionDenied
from execplan.executor.fencing import Holder
from execplan.executor.pacing import Pace
from execplan.executor.plan_view import NodeView

_V = TypeVar("_V")
# Worker ids remembered (principal and pacing) beyond those connected; the oldest
# unconnected ones are forgotten first.
MAX_REMEMBERED_WORKERS = 100_000


@dataclass(eq=False, slots=True)
class WorkerConn:
    worker_id: str
    task_types: frozenset[str]
    labels: dict[str, str]
    environment: str
    slots: int
    session: int
    # The authenticated principal of the stream; None with authentication off.
    principal: str | None = None
    pace: Pace = field(default_factory=Pace)
    leases: set[tuple[str, int]] = field(default_factory=set)
    draining: bool = False
    connected: bool = True
    # For ListWorkers only: who it says it is and when it was last heard from.
    sdk: str = ""
    connected_at_ms: int = 0
    last_seen_ms: int = 0
    # Capacity the worker's last WorkerStatus implies (held + free_slots); None: slots.
    reported: int | None = None

    @property
    def holder(self) -> Holder:
        return Holder(self.worker_id, self.principal, self.task_types)

    @property
    def capacity(self) -> int:
        capacity = self.pace.limit(self.slots)
        return capacity if self.reported is None else min(capacity, self.reported)

    @property
    def free(self) -> int:
        return 0 if self.draining or not self.connected else self.capacity - len(self.leases)

    def report(self, free_slots: int, draining: bool) -> None:
        """A WorkerStatus: `free_slots` free now, on top of the attempts it holds."""
        self.draining = draining
        self.reported = len(self.leases) + free_slots

    def accepts(self, node: NodeView) -> bool:
        if node.environment and node.environment != self.environment:
            return False
        return all(self.labels.get(key) == value for key, value in node.require_labels)

    def preference(self, node: NodeView) -> int:
        return sum(1 for key, value in node.prefer_labels if self.labels.get(key) == value)


class WorkerRegistry:
    def __init__(self) -> None:
        self.workers: dict[str, WorkerConn] = {}
        self._by_type: dict[str, list[WorkerConn]] = {}
        # Per worker id, across reconnects: the principal it is bound to
        # (authentication on) and its pacing window.
        self._owners: dict[str, str] = {}
        self._paces: dict[str, Pace] = {}

    def bind(self, worker_id: str, principal: str | None) -> None:
        """Binds a worker id to the first principal that registers it; another
        principal registering the same id is PermissionDenied."""
        if principal is None:
            return  # authentication off: nobody to tell apart
        owner = self._owners.setdefault(worker_id, principal)
        if owner != principal:
            raise PermissionDenied(
                f"worker id {worker_id[:200]!r} is registered by another principal; "
                f"{principal!r} must use a worker id of its own"
            )
        self._remember(self._owners, worker_id)

    def bind_recovered(self, worker_id: str, principal: str) -> None:
        """After a restart: a lease in the log names its holder's principal."""
        if principal:
            self._owners.setdefault(worker_id, principal)

    def pace(self, worker_id: str, slots: int) -> Pace:
        """The worker id's pacing window, kept across its reconnects."""
        pace = self._paces.get(worker_id)
        if pace is None:
            pace = self._paces[worker_id] = Pace.start(slots)
        self._remember(self._paces, worker_id)
        return pace

    def _remember(self, table: dict[str, _V], key: str) -> None:
        """Most recently used last; beyond the bound, forget unconnected ids first."""
        table[key] = table.pop(key)
        if len(table) > MAX_REMEMBERED_WORKERS:
            for old in [k for k in table if k not in self.workers][: len(table) // 10]:
                del table[old]

    def add(self, worker: WorkerConn) -> None:
        self.remove(worker.worker_id)
        self.workers[worker.worker_id] = worker
        for task_type in worker.task_types:
            self._by_type.setdefault(task_type, []).append(worker)

    def remove(self, worker_id: str) -> WorkerConn | None:
        worker = self.workers.pop(worker_id, None)
        if worker is not None:
            for task_type in worker.task_types:
                peers = self._by_type.get(task_type, [])
                if worker in peers:
                    peers.remove(worker)
        return worker

    def has_type(self, task_type: str) -> bool:
        return any(w.connected for w in self._by_type.get(task_type, ()))

    def free_for(self, task_type: str) -> bool:
        return any(w.free > 0 for w in self._by_type.get(task_type, ()))

    def pick(self, task_type: str, node: NodeView) -> WorkerConn | None:
        """A worker with a free slot that accepts the task: keeping up with its acks
        first, then the most preferred labels, then the most free slots."""
        best: WorkerConn | None = None
        best_key = (False, -1, -1)
        for worker in self._by_type.get(task_type, ()):
            if worker.free <= 0 or not worker.accepts(node):
                continue
            key = (worker.pace.keeping_up, worker.preference(node), worker.free)
            if key > best_key:
                best, best_key = worker, key
        return best

    def total_free(self) -> int:
        return sum(max(0, w.free) for w in self.workers.values())


# A heap entry: (-priority, -rank, task index, phase, attempt). Phase and attempt say
# which attempt was queued: an entry whose task has moved on (say its main attempt
# timed out in the queue and a fallback of another type was queued) is stale.
_Entry = tuple[int, int, int, int, int]


@dataclass(slots=True)
class _ExecutionQueue:
    by_type: dict[str, list[_Entry]] = field(default_factory=dict)
    # (index, phase, attempt) of every entry in a heap: a push is idempotent.
    queued: set[tuple[int, int, int]] = field(default_factory=set)

    def push(self, task_type: str, entry: _Entry) -> None:
        if entry[2:] in self.queued:
            return  # already queued (e.g. pushed again on resume)
        self.queued.add(entry[2:])
        heapq.heappush(self.by_type.setdefault(task_type, []), entry)

    def pop(self, task_type: str) -> _Entry:
        entry = heapq.heappop(self.by_type[task_type])
        self.queued.discard(entry[2:])
        return entry

    def __bool__(self) -> bool:
        return any(self.by_type.values())


class ReadyQueues:
    """Queued tasks waiting for a worker, per fairness key and execution."""

    def __init__(self) -> None:
        self._queues: dict[str, _ExecutionQueue] = {}
        self._fairness: dict[str, str] = {}
        self._keys: deque[str] = deque()
        self._executions: dict[str, deque[str]] = {}

    def push(
        self,
        execution_id: str,
        fairness_key: str,
        task_type: str,
        node: NodeView,
        *,
        phase: int,
        attempt: int,
    ) -> None:
        queue = self._queues.get(execution_id)
        if queue is None:
            queue = self._queues[execution_id] = _ExecutionQueue()
            self._fairness[execution_id] = fairness_key
            if fairness_key not in self._executions:
                self._executions[fairness_key] = deque()
                self._keys.append(fairness_key)
            self._executions[fairness_key].append(execution_id)
        queue.push(task_type, (-node.priority, -node.rank, node.index, phase, attempt))

    def drop(self, execution_id: str) -> None:
        if self._queues.pop(execution_id, None) is None:
            return
        key = self._fairness.pop(execution_id)
        ring = self._executions[key]
        ring.remove(execution_id)
        if not ring:
            del self._executions[key]
            self._keys.remove(key)

    def __len__(self) -> int:
        return len(self._queues)

    def rounds(self) -> Iterator[str]:
        """Execution ids in fair order: one per fairness key in turn, repeatedly.

        Stops after a full pass over every execution still queued.
        """
        # A snapshot interleaving the keys; order advances only through `served`, so
        # an execution that was offered a turn but got no worker keeps its place.
        rings = [list(self._executions[key]) for key in self._keys]
        for turn in range(max((len(ring) for ring in rings), default=0)):
            for ring in rings:
                if turn < len(ring):
                    yield ring[turn]

    def served(self, execution_id: str) -> None:
        """An execution got a dispatch: it and its key go to the back of their rings."""
        key = self._fairness.get(execution_id)
        if key is None:
            return
        ring = self._executions[key]
        ring.remove(execution_id)
        ring.append(execution_id)
        self._keys.remove(key)
        self._keys.append(key)

    def take(
        self,
        execution_id: str,
        still_queued: Callable[[int, int, int], bool],
        blocked_types: set[str],
    ) -> tuple[str, int] | None:
        """Pops the best queued task of an execution whose type is not blocked.

        `still_queued(index, phase, attempt)` says whether an entry is current;
        stale entries are dropped.
        """
        queue = self._queues.get(execution_id)
        if queue is None:
            return None
        best: tuple[_Entry, str] | None = None
        for task_type, heap in queue.by_type.items():
            while heap and not still_queued(*heap[0][2:]):
                queue.pop(task_type)
            if heap and task_type not in blocked_types and (best is None or heap[0] < best[0]):
                best = (heap[0], task_type)
        if not queue:
            self.drop(execution_id)
        if best is None:
            return None
        queue.pop(best[1])
        # An emptied queue stays until the next take: a task pushed back (no worker
        # free) then keeps its execution's place in the fairness ring.
        return best[1], best[0][2]

    def has_work(self, execution_id: str) -> bool:
        return execution_id in self._queues
