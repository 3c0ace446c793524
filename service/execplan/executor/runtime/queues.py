"""Queued tasks waiting for a worker, kept so that dispatch is fair.

Ready tasks are kept per execution and per task type; a dispatch round visits
executions round-robin, grouped by fairness key, taking one task per visit, so a
10,000-task execution cannot starve a 3-task one. Within one execution the order
is priority, then critical-path rank, then plan order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from execplan.executor.plan_view import NodeView

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
        index: int,
        phase: int,
        attempt: int,
    ) -> None:
        """Queues task `index` (which runs `node`: a for_each instance runs its task's)."""
        queue = self._queues.get(execution_id)
        if queue is None:
            queue = self._queues[execution_id] = _ExecutionQueue()
            self._fairness[execution_id] = fairness_key
            if fairness_key not in self._executions:
                self._executions[fairness_key] = deque()
                self._keys.append(fairness_key)
            self._executions[fairness_key].append(execution_id)
        queue.push(task_type, (-node.priority, -node.rank, index, phase, attempt))

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
        best: _Entry | None = None
        best_type = ""
        empty = True
        for task_type, heap in queue.by_type.items():
            while heap:
                _, _, index, phase, attempt = heap[0]
                if still_queued(index, phase, attempt):
                    break
                queue.pop(task_type)
            if heap:
                empty = False
                if task_type not in blocked_types and (best is None or heap[0] < best):
                    best, best_type = heap[0], task_type
        if empty:
            self.drop(execution_id)
        if best is None:
            return None
        queue.pop(best_type)
        # An emptied queue stays until the next take: a task pushed back (no worker
        # free) then keeps its execution's place in the fairness ring.
        return best_type, best[2]
