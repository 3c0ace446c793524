"""Live partial output (`ctx.stream`): chunks from worker streams to subscribers.

    streams = StreamHub(max_backlog=10_000)
    subscription = streams.subscribe(execution_id, task_id="")   # "" = every task
    streams.publish(execution_id, task_id, chunk, phase=1, attempt=2, now_ms=now)
    streams.committed(state)                   # after a commit: end what finished
    async for item in subscription.items(): ...               # StreamChunk
    async for item in merged(events, subscription): ...       # events and chunks

Chunks are never stored: they go to whoever subscribes at that moment and are
forgotten. Each subscription has its own queue of at most `max_backlog` chunks
(and 32 MiB); a subscriber that falls that far behind is dropped (its iteration raises
`SubscriberTooSlow`) while the others go on, so one slow reader can neither grow
memory nor slow the worker or the engine. A subscription ends when its execution
ends (or, with a task id, when that task ends for good).

Chunks are numbered 1, 2, 3... per attempt in arrival order (`StreamChunk.index`);
the counters live as long as the execution is live here (`forget`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

from execplan.aio import cancel_and_wait
from execplan.errors import SubscriberTooSlow
from execplan.executor.state import TERMINAL_TASK_STATES, ExecutionState
from execplan.v1 import events_pb2 as ev
from execplan.v1 import executor_service_pb2 as pb

# Bytes of chunks one subscriber may have waiting, whatever their number: a worker
# waits with at most 8 MiB of chunks, so one burst from it always fits.
MAX_BACKLOG_BYTES = 32 * 1024 * 1024
# (execution, task, phase, attempt): the numbering of one attempt's chunks.
_AttemptKey = tuple[str, str, int, int]
_END = object()  # the subscription ended (execution or task finished, hub closed)


class StreamSubscription:
    """One subscriber's queue. `queue` may also carry other items (events merged
    in by `merged`); only chunks count against the backlog."""

    def __init__(self, execution_id: str, task_id: str, max_backlog: int) -> None:
        self.execution_id = execution_id
        self.task_id = task_id
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.max_backlog = max_backlog
        self.pending = 0
        self.pending_bytes = 0
        self.dropped = False
        self.ended = False

    def offer(self, chunk: pb.StreamChunk, size: int) -> None:
        if self.dropped or self.ended:
            return
        if self.pending >= self.max_backlog or self.pending_bytes + size > MAX_BACKLOG_BYTES:
            self.dropped = True
            self.queue.put_nowait(_END)
            return
        self.pending += 1
        self.pending_bytes += size
        self.queue.put_nowait(chunk)

    def taken(self, chunk: pb.StreamChunk) -> None:
        """The subscriber took `chunk` off its queue."""
        self.pending -= 1
        self.pending_bytes -= chunk.ByteSize()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(_END)

    async def items(self) -> AsyncIterator[pb.StreamChunk]:
        """Chunks until the subscription ends; SubscriberTooSlow if it was dropped."""
        while True:
            item = await self.queue.get()
            if item is _END:
                self._raise_if_dropped()
                return
            if isinstance(item, pb.StreamChunk):
                self.taken(item)
                yield item

    def _raise_if_dropped(self) -> None:
        if self.dropped:
            raise SubscriberTooSlow(
                f"dropped: more than {self.max_backlog} chunks of live output waited for "
                "this subscriber; reconnect (events are kept, chunks are not)"
            )


class StreamHub:
    def __init__(self, max_backlog: int = 10_000) -> None:
        self._max_backlog = max_backlog
        self._subscribers: dict[str, set[StreamSubscription]] = {}
        self._counters: dict[_AttemptKey, int] = {}

    def subscribe(self, execution_id: str, task_id: str = "") -> StreamSubscription:
        subscription = StreamSubscription(execution_id, task_id, self._max_backlog)
        self._subscribers.setdefault(execution_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: StreamSubscription) -> None:
        subs = self._subscribers.get(subscription.execution_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscribers[subscription.execution_id]

    def subscribers(self, execution_id: str) -> int:
        return len(self._subscribers.get(execution_id, ()))

    def publish(
        self,
        execution_id: str,
        task_id: str,
        chunk: pb.StreamChunk,
        *,
        phase: int,
        attempt: int,
        now_ms: int,
    ) -> None:
        """Numbers `chunk` (filling in who and when) and hands it to the subscribers."""
        key = (execution_id, task_id, phase, attempt)
        index = self._counters[key] = self._counters.get(key, 0) + 1
        subs = self._subscribers.get(execution_id)
        if not subs:
            return
        chunk.execution_id = execution_id
        chunk.task_id = task_id
        chunk.phase = phase  # type: ignore[assignment]
        chunk.attempt = attempt
        chunk.index = index
        chunk.received_at.FromMilliseconds(now_ms)
        size = chunk.ByteSize()
        for subscription in list(subs):
            if not subscription.task_id or subscription.task_id == task_id:
                subscription.offer(chunk, size)

    def committed(self, state: ExecutionState) -> None:
        """After a commit: end the subscriptions whose execution or task finished."""
        subs = self._subscribers.get(state.execution_id)
        if not subs:
            return
        for subscription in list(subs):
            if state.terminal or (
                subscription.task_id and task_finished(state, subscription.task_id)
            ):
                subscription.end()

    def forget(self, execution_id: str) -> None:
        """The execution left this engine: its chunk counters go."""
        for key in [k for k in self._counters if k[0] == execution_id]:
            del self._counters[key]

    def close(self) -> None:
        for subs in self._subscribers.values():
            for subscription in subs:
                subscription.end()
        self._subscribers.clear()


def task_finished(state: ExecutionState, task_id: str) -> bool:
    index = state.plan.index_of.get(task_id)
    return index is None or state.tasks[index].state in TERMINAL_TASK_STATES


async def merged(
    events: AsyncIterator[ev.ExecutionEvent], subscription: StreamSubscription
) -> AsyncIterator[ev.ExecutionEvent | pb.StreamChunk]:
    """`events` with the subscription's chunks interleaved as they come; ends with the
    events (the terminal one), raises SubscriberTooSlow if the chunks fell behind."""
    done = object()

    async def forward() -> None:
        try:
            async for event in events:
                subscription.queue.put_nowait(event)
        except Exception as error:  # the events' own failure, re-raised below
            subscription.queue.put_nowait(error)
        finally:
            subscription.queue.put_nowait(done)

    pump = asyncio.create_task(forward())
    try:
        while True:
            item = await subscription.queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            if item is _END:
                subscription._raise_if_dropped()
                continue  # the output ended; the events go on to the terminal one
            if isinstance(item, pb.StreamChunk):
                subscription.taken(item)
            yield cast(ev.ExecutionEvent | pb.StreamChunk, item)
    finally:
        await cancel_and_wait(pump)
