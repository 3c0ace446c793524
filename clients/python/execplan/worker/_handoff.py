"""Calls from other threads into one event loop, in order, with one wake-up per batch.

The worker crosses threads twice per attempt: the stream thread starts the handler
on the user's loop, and the handler's result comes back to the stream thread.
`loop.call_soon_threadsafe` writes to the loop's self-pipe on every call: a system
call each, and a thread wake-up each when the loop sleeps. A Handoff queues the
calls and asks its loop to run them only when none is pending, so the dispatches
of one stream message, or the results of handlers that finished in one turn of
the user's loop, cross in one hop. Calls run in the order they were made, as with
`call_soon_threadsafe`, so everything one side sends through the same Handoff
(a result and the chunks or usage reported before it) keeps its order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

_Call = tuple[Callable[..., None], tuple[Any, ...]]


class Handoff:
    """`call(fn, *args)` from any thread runs `fn(*args)` on `loop` soon."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Reentrant: a signal handler or a finalizer (run by a garbage collection the
        # append below may trigger) can call in on the thread that holds it; with a
        # plain Lock that thread would wait for itself forever.
        self._lock = threading.RLock()
        self._calls: list[_Call] = []
        # A `_run` is queued on the loop and has not taken the calls yet.
        self._scheduled = False

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        """Queue fn(*args); RuntimeError (from the loop) if the loop is closed."""
        with self._lock:
            self._calls.append((fn, args))
            if self._scheduled:
                return  # the pending `_run` takes this call too
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:
            with self._lock:
                self._scheduled = False
                self._calls.clear()  # a closed loop runs nothing any more
            raise

    def _run(self) -> None:
        with self._lock:
            # Cleared before the calls are taken: a call that gets in between (on this
            # thread, see above) then schedules a run of its own, or is taken here.
            self._scheduled = False
            calls, self._calls = self._calls, []
        pending = iter(calls)
        for fn, args in pending:
            try:
                fn(*args)
            except (SystemExit, KeyboardInterrupt):
                # As from the loop's own callbacks: they end run_forever, and the calls
                # after this one stay queued, to run if the loop runs again.
                self._requeue(list(pending))
                raise
            except BaseException as exc:  # as the loop reports a failing callback
                self._loop.call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc}
                )

    def _requeue(self, calls: list[_Call]) -> None:
        """Put `calls` back in front of the queue (on the loop's thread)."""
        if not calls:
            return
        with self._lock:
            self._calls[:0] = calls
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon(self._run)
