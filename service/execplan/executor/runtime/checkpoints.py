"""Checkpoints: every `checkpoint_every` events an execution's state is snapshotted,
so recovery replays only the tail of its log.

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
        if state.last_sequence - self._taken.get(state.execution_id, 0) < self._every:
            return
        snapshot = Snapshot(state.execution_id, state.last_sequence, encode_state(state))
        self._taken[state.execution_id] = state.last_sequence
        self._background.spawn(self._store.save_snapshot(snapshot), "checkpoint")

    def forget(self, execution_id: str) -> None:
        self._taken.pop(execution_id, None)
