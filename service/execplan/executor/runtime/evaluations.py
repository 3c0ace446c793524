"""The engine's side of expression evaluation: the memo, the sandbox, held inputs.

The pump decides synchronously on the event loop, so an expression too expensive to
run inline (expressions/evaluation.py) cannot be waited for where the Machine meets it:

1. The Machine's evaluator (`LiveEvaluator`) looks the evaluation up in a memo of
   finished ones, by (execution, field, source) and exactly the values handed in.
   A hit returns the value (or raises the error) and the decision goes on.
2. A miss raises EvaluationPending. The pump drops what the execution decided in
   this round (it is reloaded from the log, as after a failed commit), *holds* its
   inputs (those of the round and any that arrive meanwhile, in order) and the
   sandbox starts on the evaluation.
3. When the sandbox answers (a value, a CEL error, or the budget it exceeded) the
   outcome goes into the memo and the held inputs are submitted again, in order: the
   same inputs on the same state meet the same evaluation, a hit this time. So the
   log reads exactly as if the evaluation had been instant.

A budget failure thus becomes an ordinary event, committed like any decision
(`task_failed` of type ExpressionBudgetExceeded, or the execution's failure for an
output): after a restart the fold sees it and nothing evaluates that expression
again. A crash before that commit loses only the evaluation, which runs again, off
the loop and within its budget, when its input comes back.

A dispatch whose inputs miss is simpler: nothing was decided yet, so the task stays
QUEUED and is offered to workers again when the outcome is in (`start(..., then)`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from execplan.errors import Unavailable
from execplan.executor.expressions.evaluation import EvaluationPending, InlineFirst, Request, settle
from execplan.executor.expressions.sandbox import ExpressionBudget, Outcome, Sandbox
from execplan.executor.values import JsonValue

log = logging.getLogger("execplan.executor")

Item = TypeVar("Item")

# The memo keeps finished evaluations until their inputs come back (usually the next
# round); these bounds only stop it from growing without end.
MEMO_ENTRIES = 4096
MEMO_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class _Entry:
    handed: dict[str, Any]
    outcome: Outcome


class Memo:
    """Finished evaluations, the least recently used dropped first."""

    def __init__(self, entries: int = MEMO_ENTRIES, max_bytes: int = MEMO_BYTES) -> None:
        self._entries: OrderedDict[tuple[str, str, str], _Entry] = OrderedDict()
        self._max_entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, request: Request) -> Outcome | None:
        entry = self._entries.get(request.key)
        if entry is None or not same(entry.handed, request.handed):
            return None
        self._entries.move_to_end(request.key)
        return entry.outcome

    def put(self, request: Request, outcome: Outcome) -> None:
        old = self._entries.pop(request.key, None)
        if old is not None:
            self._bytes -= _cost(old.outcome)
        self._entries[request.key] = _Entry(request.handed, outcome)
        self._bytes += _cost(outcome)
        while self._entries and (
            len(self._entries) > self._max_entries or self._bytes > self._max_bytes
        ):
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= _cost(dropped.outcome)

    def __len__(self) -> int:
        return len(self._entries)


def _cost(outcome: Outcome) -> int:
    return outcome.size + outcome.handed_size


def same(a: Any, b: Any) -> bool:
    """Equal values handed in. `==`, except that NaN equals NaN: a NaN in a context
    must not make every lookup miss (and the input wait for ever).

    Numbers, strings and booleans at one field of one execution come from the same
    recorded data on both sides, so `==` taking 1 for True never matters here."""
    if a is b or a == b:
        return True
    if isinstance(a, float) and isinstance(b, float):
        return math.isnan(a) and math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return False


class LiveEvaluator(InlineFirst):
    """The engine Machines' evaluator: memo hits, or EvaluationPending."""

    def __init__(self, memo: Memo) -> None:
        self._memo = memo

    def heavy(self, request: Request) -> JsonValue:
        outcome = self._memo.get(request)
        if outcome is None:
            raise EvaluationPending(request)
        return settle(outcome, request)


@dataclass(slots=True)
class _Hold(Generic[Item]):
    inputs: list[Item]
    release: Callable[[list[Item]], None]
    waiting: set[tuple[str, str, str]] = field(default_factory=set)  # request keys
    reloaded: bool = False


class Evaluations(Generic[Item]):
    """Owns the sandbox and the memo; holds the inputs of executions that wait."""

    def __init__(self, budget: ExpressionBudget | None = None) -> None:
        self.sandbox = Sandbox(budget)
        self.memo = Memo()
        self.evaluator = LiveEvaluator(self.memo)
        self._running: dict[tuple[str, str, str], list[Callable[[], None]]] = {}
        self._held: dict[str, _Hold[Item]] = {}

    # -- evaluations --------------------------------------------------------------
    def start(self, request: Request, then: Callable[[], None]) -> None:
        """Evaluates `request` in the sandbox (once, however many ask); `then()` runs
        on the event loop when its outcome is in the memo."""
        waiters = self._running.get(request.key)
        if waiters is not None:
            waiters.append(then)
            return
        self._running[request.key] = [then]
        loop = asyncio.get_running_loop()
        try:
            future = self.sandbox.submit(request.source, request.handed)
        except RuntimeError:  # closed: the engine is stopping
            self._running.pop(request.key, None)
            return

        def done(future: concurrent.futures.Future[Outcome]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(self._finished, request, future)

        future.add_done_callback(done)

    async def run(self, request: Request) -> None:
        """Evaluates `request` and memoizes its outcome (for code that may await)."""
        if self.sandbox.closed:
            raise Unavailable("the executor is shutting down")
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.start(request, lambda: None if finished.done() else finished.set_result(None))
        await finished

    def _finished(self, request: Request, future: concurrent.futures.Future[Outcome]) -> None:
        waiters = self._running.pop(request.key, [])
        if future.cancelled():  # the sandbox was closed under it: the engine is stopping
            return
        error = future.exception()
        if error is not None:
            log.error("expression sandbox failed on %s", request.field, exc_info=error)
            outcome = Outcome(error=f"the expression sandbox failed: {error}")
        else:
            outcome = future.result()
        self.memo.put(request, outcome)
        for then in waiters:
            then()

    # -- executions whose inputs wait for an evaluation ------------------------------
    def holds(self, execution_id: str) -> bool:
        return execution_id in self._held

    def hold(self, execution_id: str, item: Item) -> None:
        self._held[execution_id].inputs.append(item)

    def suspend(
        self,
        execution_id: str,
        inputs: list[Item],
        request: Request,
        release: Callable[[list[Item]], None],
    ) -> None:
        """Holds `inputs` (and later ones, see `hold`) until `request` is evaluated and
        the execution reloaded (`reloaded`); then `release(inputs)`, in order. An
        execution suspended again meanwhile (a dispatch round decided for it) waits
        for both evaluations and the new reload."""
        hold = self._held.get(execution_id)
        if hold is None:
            hold = self._held[execution_id] = _Hold(list(inputs), release)
        else:
            hold.inputs.extend(inputs)
        hold.reloaded = False
        hold.waiting.add(request.key)
        self.start(request, lambda: self._evaluated(execution_id, request.key))

    def reloaded(self, execution_id: str) -> None:
        hold = self._held.get(execution_id)
        if hold is not None:
            hold.reloaded = True
            self._maybe_release(execution_id, hold)

    def _evaluated(self, execution_id: str, key: tuple[str, str, str]) -> None:
        hold = self._held.get(execution_id)
        if hold is not None:
            hold.waiting.discard(key)
            self._maybe_release(execution_id, hold)

    def _maybe_release(self, execution_id: str, hold: _Hold[Item]) -> None:
        if hold.reloaded and not hold.waiting:
            del self._held[execution_id]
            hold.release(hold.inputs)

    def close(self) -> None:
        self.sandbox.close()
