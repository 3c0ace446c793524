"""Inputs waiting for the pump: everything that may change an execution goes here.

    inbox.submit(execution_id, lambda machine: machine.pause("why", ""), future)

An input is an action on the execution's `Machine`, applied in the pump's next
round; its `future` (if any) is answered only after that round committed. Inputs
that need no commit of their own (assignment acks) are `submit_deferred`: they
ride along with the next round that commits anyway, or after `ack_flush_ms`.
Submitting wakes the pump; nothing is processed here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from execplan import hops
from execplan.executor.decide.machine import Machine

Action = Callable[[Machine], Any]

log = logging.getLogger("execplan.executor")


class Answer(Protocol):
    """Where an input's result goes once its round committed: an asyncio future (an
    RPC awaits it) or a `Reply`."""

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Reply:
    """An answer that calls `callback(result, error)` when the round settles, in the
    pump, for a submitter that awaits nothing (a worker's ack or result: whether to
    send a rejection). An asyncio future would run its done callback one loop turn
    later, through a handle of its own: one per worker result."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[Any, BaseException | None], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any, /) -> None:
        self._finish(result, None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._finish(None, exception)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._callback(result, error)
        except Exception:  # as a future's done callback would: logged, the round goes on
            log.exception("answering an input failed")


@dataclass(slots=True)
class Input:
    execution_id: str
    action: Action
    future: Answer | None
    # Rounds this input already went through without committing (see round.py).
    tries: int = 0


class Inbox:
    def __init__(self, ack_flush_ms: int) -> None:
        self._ack_flush_s = ack_flush_ms / 1000
        self._inputs: list[Input] = []
        self._deferred: list[Input] = []
        self._flush: asyncio.TimerHandle | None = None
        self.woken = asyncio.Event()

    def __len__(self) -> int:
        return len(self._inputs)

    def submit(self, execution_id: str, action: Action, future: Answer | None = None) -> None:
        if hops.ON:
            hops.mark("server.submit")
        self._inputs.append(Input(execution_id, action, future))
        self.woken.set()

    def again(self, inputs: list[Input]) -> None:
        """Inputs of a round that did not commit (or were held for an evaluation), for
        the next round. They go before anything submitted meanwhile: inputs for the
        same execution that arrived during the commit or the reload came after them,
        and an execution takes its inputs in the order they arrived."""
        self._inputs[:0] = inputs
        self.woken.set()

    def submit_deferred(
        self, execution_id: str, action: Action, future: Answer | None = None
    ) -> None:
        """Work that need not force a commit of its own (assignment acks).

        An ack only records DISPATCHED -> RUNNING; nothing outside the engine acts on
        it. So it rides along with the next round that commits anyway (usually the
        attempt's own result, for short tasks), or after `ack_flush_ms` at the latest:
        one fsync per chain step instead of two. Losing an uncommitted ack in a crash
        is harmless: the lease is reclaimed by the worker or re-dispatched.
        """
        self._deferred.append(Input(execution_id, action, future))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self._ack_flush_s, self._flushed)

    def _flushed(self) -> None:
        self._flush = None
        if self._deferred:
            self.woken.set()

    def wake(self) -> None:
        self.woken.set()

    def take(self) -> list[Input]:
        """Everything pending, deferred inputs first: an ack precedes its result."""
        batch, self._inputs = self._deferred + self._inputs, []
        self._deferred = []
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        return batch

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
