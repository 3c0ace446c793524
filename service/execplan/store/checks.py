"""Validation shared by every backend, so they all reject exactly the same appends.

Backends call `check_batch_shape` before queueing work (pure, no I/O) and
`check_sequences` with the execution's current `last_sequence` read inside the
transaction that will write the events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from execplan.errors import ConcurrencyConflict, ExecplanError, InvalidArgument

from .port import Append, StoredEvent


def check_batch_shape(execution_id: str, events: Sequence[StoredEvent]) -> None:
    """Every event belongs to `execution_id`; a caller bug, not a conflict."""
    for event in events:
        if event.execution_id != execution_id:
            raise InvalidArgument(
                f"event {event.sequence} belongs to {event.execution_id!r}, not to {execution_id!r}"
            )


def check_sequences(execution_id: str, last_sequence: int, events: Sequence[StoredEvent]) -> None:
    """Events must continue the log exactly: `last_sequence + 1`, `+ 2`, ...

    A duplicate means another writer got there first; a gap means the caller's view is
    stale or broken. Both are the optimistic-concurrency failure.
    """
    expected = last_sequence + 1
    for event in events:
        if event.sequence != expected:
            kind = "already exists" if event.sequence < expected else "leaves a gap"
            raise ConcurrencyConflict(
                f"execution {execution_id!r}: event sequence {event.sequence} {kind} "
                f"(next is {expected})"
            )
        expected += 1


async def failures_of(
    batch: Sequence[Append], futures: Sequence[asyncio.Future[object]]
) -> dict[str, ExecplanError]:
    """Awaits one group-commit future per Append; {execution_id: error} of those not
    written (the `append_each` result of every group-committing backend)."""
    failures: dict[str, ExecplanError] = {}
    for item, future in zip(batch, futures, strict=True):
        try:
            await future
        except ExecplanError as exc:
            failures[item.execution_id] = exc
    return failures
