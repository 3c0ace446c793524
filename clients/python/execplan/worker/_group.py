"""Several executor replicas: one stream per address, slots split between them.

`Worker(address="host1:7070,host2:7070")` (or a comma list in $EXECPLAN_ADDRESS)
connects to EVERY replica, so whichever replica owns an execution can dispatch its
tasks here (docs/replicas.md). Each stream registers `slots // n` slots (the first
`slots % n` get one more; at least one each), so the worker never runs more than
`slots` attempts at once; the cost is that one busy replica cannot borrow the slots
another leaves idle. Results go back on the stream that carried the dispatch.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

from execplan.client._channel import ADDRESS_ENV

from ._stream import StreamThread


def split_addresses(address: str | None) -> list[str | None]:
    """`[address]` for one address (None: the SDK default), else each of a comma list."""
    raw = address or os.environ.get(ADDRESS_ENV) or ""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    return [address] if len(parts) <= 1 else list(parts)


def split_slots(slots: int, n: int) -> list[int]:
    return [max(1, slots // n + (1 if i < slots % n else 0)) for i in range(n)]


class StreamGroup:
    """The StreamThread API the Worker uses, over several streams."""

    def __init__(self, streams: list[StreamThread]) -> None:
        self.streams = streams
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._left = len(streams)
        self._lock = threading.Lock()
        for stream in streams:
            stream.finished.add_done_callback(self._one_finished)

    def _one_finished(self, done: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._left -= 1
            error = done.exception()
            if self.finished.done():
                return
            if error is not None:
                self.finished.set_exception(error)
                for stream in self.streams:
                    stream.stop()
            elif self._left == 0:
                self.finished.set_result(None)

    def drain(self, reason: str) -> None:
        for stream in self.streams:
            stream.drain(reason)

    def stop(self) -> None:
        for stream in self.streams:
            stream.stop()

    def join(self, timeout: float | None = None) -> None:
        for stream in self.streams:
            stream.join(timeout)
