"""Checkpoints: every `checkpoint_every` events an execution's state is snapshotted,
so recovery replays only the tail of its log.

A snapshot costs time in the number of the plan's tasks, so an execution with more
tasks than `checkpoint_every` is snapshotted every as many events as it has tasks:
then a checkpoint costs O(1) per event, and the tail a recovery replays is no longer
than the snapshot it starts from is wide (both O(tasks)). With a fixed interval a
1 -> 50,000 -> 1 fan-out took ~100 snapshots of 50,000 tasks each, 44% of the
server's CPU for it (quadratic in the plan's size).

The state is encoded at once (it moves on) and written in the background: a lost
checkpoint only means a longer replay, never lost data. A finished execution needs
none (its index row says it is done).
"""

from __future__ import annotations

from execplan.executor.runtime.background import Background
from execplan.executor.snapshot import encode_state
from execplan.executor.state import ExecutionState
from execplan.store.port import Snapshot, Store


class Checkpoints:
    def __init__(self, store: Store, background: Background, every: int) -> None:
        self._store = store
        self._background = background
        self._every = every
        # Sequence of the last checkpoint taken per execution, since it was adopted.
        self._taken: dict[str, int] = {}

    def committed(self, state: ExecutionState) -> None:
        """The execution's events up to `state.last_sequence` are durable."""
        if state.terminal:
            return
        every = max(self._every, len(state.plan.nodes))
        if state.last_sequence - self._taken.get(state.execution_id, 0) < every:
            return
        snapshot = Snapshot(state.execution_id, state.last_sequence, encode_state(state))
        self._taken[state.execution_id] = state.last_sequence
        self._background.spawn(self._store.save_snapshot(snapshot), "checkpoint")

    def forget(self, execution_id: str) -> None:
        self._taken.pop(execution_id, None)
