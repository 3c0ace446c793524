"""Fan-out of committed events to subscribers (WatchExecution / WatchExecutions).

Publish happens only after commit and in sequence order, so a subscriber never sees
an event the store could lose. Queues are per subscriber; a subscriber that falls
behind by more than `max_backlog` is closed and reconnects from its last sequence
(the store has everything), instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

T = TypeVar("T")


class Subscription(Generic[T]):
    def __init__(self, max_backlog: int) -> None:
        self.queue: asyncio.Queue[T | None] = asyncio.Queue()
        self.max_backlog = max_backlog
        self.overflowed = False

    def offer(self, item: T) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= self.max_backlog:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(item)

    def close(self) -> None:
        self.queue.put_nowait(None)


@dataclass(frozen=True, slots=True)
class SummaryFilter:
    """Which execution summaries a WatchExecutions subscriber wants: empty `states`
    or `workflow_name` admits every one."""

    states: frozenset[int] = frozenset()
    workflow_name: str = ""

    def admits(self, state: int, workflow_name: str) -> bool:
        return (not self.states or state in self.states) and (
            not self.workflow_name or workflow_name == self.workflow_name
        )


class Hub:
    def __init__(self, max_backlog: int = 100_000) -> None:
        self._max_backlog = max_backlog
        self._by_execution: dict[str, set[Subscription[ev.ExecutionEvent]]] = {}
        self._all: dict[Subscription[ex.Execution], SummaryFilter] = {}

    def subscribe(self, execution_id: str) -> Subscription[ev.ExecutionEvent]:
        sub: Subscription[ev.ExecutionEvent] = Subscription(self._max_backlog)
        self._by_execution.setdefault(execution_id, set()).add(sub)
        return sub

    def unsubscribe(self, execution_id: str, sub: Subscription[ev.ExecutionEvent]) -> None:
        subs = self._by_execution.get(execution_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_execution[execution_id]

    def subscribe_all(self, wanted: SummaryFilter = SummaryFilter()) -> Subscription[ex.Execution]:
        sub: Subscription[ex.Execution] = Subscription(self._max_backlog)
        self._all[sub] = wanted
        return sub

    def unsubscribe_all(self, sub: Subscription[ex.Execution]) -> None:
        self._all.pop(sub, None)

    def wants(self, execution_id: str) -> bool:
        return execution_id in self._by_execution

    def publish(self, execution_id: str, events: Iterable[ev.ExecutionEvent]) -> None:
        subs = self._by_execution.get(execution_id)
        if subs:
            for event in events:
                for sub in subs:
                    sub.offer(event)

    def watchers(self, execution_id: str) -> int:
        """Open WatchExecution subscriptions of one execution (tests, diagnostics)."""
        return len(self._by_execution.get(execution_id, ()))

    def watchers_of_all(self) -> int:
        """Open WatchExecutions subscriptions (tests, diagnostics)."""
        return len(self._all)

    def wants_summary(self, state: int, workflow_name: str) -> bool:
        """Whether a summary of an execution now in `state` reaches anyone: checked
        before encoding one (a watcher of terminal states only, as a client waiting for
        results is, wants no summary of each start)."""
        return any(wanted.admits(state, workflow_name) for wanted in self._all.values())

    def publish_summary(self, execution: ex.Execution) -> None:
        for sub, wanted in self._all.items():
            if wanted.admits(execution.state, execution.workflow_name):
                sub.offer(execution)

    def close(self) -> None:
        for subs in self._by_execution.values():
            for event_sub in subs:
                event_sub.close()
        for summary_sub in self._all:
            summary_sub.close()
        self._by_execution.clear()
        self._all.clear()
