"""Why a queued task is not dispatched yet, when that is flow control or resources
rather than a free worker slot: the runtime's live knowledge, never in the history.

`Wait` is what the scheduler, the flow gate and the worker registry report; `get`
shows it as `TaskRun.waiting` (and its message as the status), `execplan limits`
and the console list it, and metrics count it by kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from execplan.v1 import execution_pb2 as ex

CONCURRENCY_LIMIT = ex.WAIT_KIND_CONCURRENCY_LIMIT
RATE_LIMIT = ex.WAIT_KIND_RATE_LIMIT
RESOURCES = ex.WAIT_KIND_RESOURCES
UNPLACEABLE = ex.WAIT_KIND_UNPLACEABLE

KIND_NAMES = {
    CONCURRENCY_LIMIT: "concurrency_limit",
    RATE_LIMIT: "rate_limit",
    RESOURCES: "resources",
    UNPLACEABLE: "unplaceable",
}


@dataclass(slots=True)
class Wait:
    kind: int  # ex.WaitKind
    name: str
    key: str
    since_ms: int
    until_ms: int = 0
    message: str = ""

    def fill(self, target: ex.TaskWaiting) -> None:
        target.kind = self.kind  # type: ignore[assignment]
        target.name = self.name
        target.key = self.key
        target.message = self.message
        target.since.FromMilliseconds(self.since_ms)
        if self.until_ms:
            target.until.FromMilliseconds(self.until_ms)


def bracket(key: str) -> str:
    """`[key]` after a limit's name, nothing for the unkeyed one."""
    return f"[{key}]" if key else ""
