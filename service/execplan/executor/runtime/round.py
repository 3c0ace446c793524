"""Bookkeeping of one pump round: what was decided, for whom, and who is waiting.

A round decides for many executions and commits them together; each execution's
outcome is its own. An input whose action raises unexpectedly poisons only its
execution: that execution's uncommitted decisions are dropped, it is reloaded from
the log, and its other inputs of the round are run again. An execution whose
append is refused is handled the same way (or disowned, for OwnershipLost), while
every other execution of the round commits and acts normally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from execplan.executor.decide.machine import Machine
from execplan.executor.runtime.inbox import Answer, Input

# An input that failed to commit this many times is given up (its caller gets the
# error): a store that keeps refusing must not make the pump spin.
MAX_TRIES = 3


@dataclass(slots=True)
class Round:
    machines: dict[str, Machine] = field(default_factory=dict)
    # (future, result, execution_id): answered only after the commit.
    replies: list[tuple[Answer, Any, str]] = field(default_factory=list)
    failures: list[tuple[Answer, BaseException]] = field(default_factory=list)
    # Inputs applied per execution, to run again if that execution does not commit.
    applied: dict[str, list[Input]] = field(default_factory=dict)
    # Executions to reload after the commit, with the inputs to run again afterwards.
    redo: dict[str, list[Input]] = field(default_factory=dict)

    def fail(self, future: Answer | None, error: BaseException) -> None:
        if future is not None:
            self.failures.append((future, error))

    def drop(self, execution_id: str, error: BaseException, *, retry: bool) -> None:
        """Forget what this round decided for one execution."""
        self.machines.pop(execution_id, None)
        inputs = self.applied.pop(execution_id, [])
        waiting = {id(f) for f, _, e in self.replies if e == execution_id}
        self.replies = [r for r in self.replies if r[2] != execution_id]
        again = self.redo.setdefault(execution_id, [])
        for item in inputs:
            item.tries += 1
            if retry and item.tries < MAX_TRIES:
                again.append(item)
            elif item.future is not None and id(item.future) in waiting:
                self.failures.append((item.future, error))

    def forget(self, execution_id: str) -> list[Input]:
        """Drops what this round decided for one execution; returns the inputs it had
        applied, to run again later (not counted as tries: nothing failed)."""
        self.machines.pop(execution_id, None)
        self.replies = [r for r in self.replies if r[2] != execution_id]
        return self.applied.pop(execution_id, [])

    def settle(self) -> None:
        for future, result, _ in self.replies:
            if not future.done():
                future.set_result(result)
        for future, problem in self.failures:
            if not future.done():
                future.set_exception(problem)
