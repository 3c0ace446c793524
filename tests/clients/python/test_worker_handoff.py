"""The worker's thread hop (execplan.worker._handoff): order kept, one wake-up per batch."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVarTuple

import pytest
from execplan.worker._handoff import Handoff

_Ts = TypeVarTuple("_Ts")


class _CountingLoop(asyncio.SelectorEventLoop):
    """Counts call_soon_threadsafe, i.e. the wake-ups a Handoff asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.wakeups = 0

    def call_soon_threadsafe(
        self,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self.wakeups += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def _in_thread(fn: Callable[[], None]) -> None:
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join()


def test_calls_from_another_thread_run_in_order_after_one_wakeup() -> None:
    loop = _CountingLoop()
    try:
        handoff = Handoff(loop)
        seen: list[int] = []

        def hundred_calls() -> None:
            for i in range(100):
                handoff.call(seen.append, i)

        _in_thread(hundred_calls)
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == list(range(100))
        assert loop.wakeups == 1
        # The next batch asks for a wake-up of its own.
        _in_thread(lambda: handoff.call(seen.append, 100))
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == list(range(101))
        assert loop.wakeups == 2
    finally:
        loop.close()


def test_a_failing_call_is_reported_and_the_rest_still_run() -> None:
    loop = asyncio.new_event_loop()
    try:
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        handoff = Handoff(loop)
        seen: list[str] = []

        def fail() -> None:
            raise ValueError("boom")

        handoff.call(seen.append, "before")
        handoff.call(fail)
        handoff.call(seen.append, "after")
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["before", "after"]
        assert [type(c["exception"]) for c in reported] == [ValueError]
    finally:
        loop.close()


@pytest.mark.parametrize("hop", ["handoff", "call_soon_threadsafe"])
def test_base_exceptions_are_what_the_loop_makes_of_its_own_callbacks(hop: str) -> None:
    """A CancelledError (any BaseException) is reported and the rest run; SystemExit
    and KeyboardInterrupt end the loop's run, and the calls after them run when it
    runs again: the same with a Handoff as with call_soon_threadsafe."""
    loop = asyncio.new_event_loop()
    try:
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        handoff = Handoff(loop)
        call: Any = handoff.call if hop == "handoff" else loop.call_soon_threadsafe
        seen: list[str] = []

        def raising(exc: BaseException) -> None:
            raise exc

        call(seen.append, "a")
        call(raising, asyncio.CancelledError())
        call(seen.append, "b")
        call(raising, KeyboardInterrupt())
        call(seen.append, "c")
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["a", "b"]
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["a", "b", "c"]
        assert [type(c["exception"]) for c in reported] == [asyncio.CancelledError]
        call(seen.append, "d")  # the Handoff still works
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["a", "b", "c", "d"]
    finally:
        loop.close()


def test_a_closed_loop_raises_as_call_soon_threadsafe_does() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    handoff = Handoff(loop)
    with pytest.raises(RuntimeError):
        handoff.call(print)
    with pytest.raises(RuntimeError):  # and again: nothing was left pending
        handoff.call(print)


def test_a_call_from_inside_a_call_on_the_same_thread_neither_hangs_nor_is_lost() -> None:
    """A signal handler or a finalizer can run in the middle of `call`, on the thread
    that is in it, and call again."""
    loop = asyncio.new_event_loop()
    try:
        handoff = Handoff(loop)
        seen: list[str] = []

        class Interrupted(list[Any]):
            # Stands in for an interruption right after the outer call queued itself.
            def append(self, item: Any) -> None:
                super().append(item)
                if item[1] == ("outer",):
                    handoff.call(seen.append, "inner")

        handoff._calls = Interrupted()
        caller = threading.Thread(target=handoff.call, args=(seen.append, "outer"), daemon=True)
        caller.start()
        caller.join(timeout=5)
        assert not caller.is_alive(), "the caller waits for itself"
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == ["outer", "inner"]
    finally:
        loop.close()
