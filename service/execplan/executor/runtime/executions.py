"""The executions this engine runs, and the one way to let go of one.

    executions.adopt(state)          # started here, recovered, reloaded or claimed
    executions.get(execution_id)     # the live state, or None
    executions.retire(state)         # it finished: forget it, keep it for reads
    executions.forget(execution_id)  # drop it from memory everywhere (reload, disown)
    executions.suspend(execution_id)  # its state is suspect: out of service until reloaded
    executions.hold(execution_id, retry)  # while it reloads: run `retry` once it is back

Every runtime part that keeps something per execution (leases, ready queues,
deadlines, checkpoints) is a `Keeper` registered here, so `forget` clears an
execution from all of them at once: there is no second list to keep in step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from execplan.executor.state import ExecutionState


class Keeper(Protocol):
    def forget(self, execution_id: str) -> None:
        """Drop everything kept for the execution (it may be adopted again later)."""
        ...


class Executions:
    def __init__(self, finished_cache: int) -> None:
        self._live: dict[str, ExecutionState] = {}
        # Recently finished, for fast reads; oldest first.
        self._finished: OrderedDict[str, ExecutionState] = OrderedDict()
        self._finished_cache = finished_cache
        self._keepers: Sequence[Keeper] = ()
        # Executions being reloaded after a failed commit: work held until they are back.
        self._reloading: dict[str, list[Callable[[], None]]] = {}

    def keep_with(self, keepers: Sequence[Keeper]) -> None:
        """The parts `forget` clears (set once, when the engine is put together)."""
        self._keepers = tuple(keepers)

    def __contains__(self, execution_id: str) -> bool:
        return execution_id in self._live

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._live))

    def get(self, execution_id: str) -> ExecutionState | None:
        return self._live.get(execution_id)

    def __getitem__(self, execution_id: str) -> ExecutionState:
        """The live state; KeyError when the execution is not live here."""
        return self._live[execution_id]

    def recent(self, execution_id: str) -> ExecutionState | None:
        """The live state, or a recently finished one (reads)."""
        return self._live.get(execution_id) or self._finished.get(execution_id)

    def finished(self, execution_id: str) -> bool:
        """Did the execution finish on this engine recently?"""
        return execution_id in self._finished

    def adopt(self, state: ExecutionState) -> None:
        self._finished.pop(state.execution_id, None)
        self._live[state.execution_id] = state

    def retire(self, state: ExecutionState) -> None:
        self.forget(state.execution_id)
        self._finished[state.execution_id] = state
        while len(self._finished) > self._finished_cache:
            self._finished.popitem(last=False)

    def drop_finished(self, execution_id: str) -> None:
        """A finished execution was deleted from the store: no more reads from memory."""
        self._finished.pop(execution_id, None)

    def forget(self, execution_id: str) -> ExecutionState | None:
        """Drops the execution from memory and from every keeper; returns its state."""
        state = self._live.pop(execution_id, None)
        for keeper in self._keepers:
            keeper.forget(execution_id)
        return state

    # -- reloads -----------------------------------------------------------------------
    def suspend(self, execution_id: str) -> None:
        """Takes the execution out of service until it is reloaded: it is no longer
        live (nothing decides or dispatches for it), work for it is `hold`, and what
        the keepers have for it stays until the reload `forget`s and rebuilds it."""
        self._reloading.setdefault(execution_id, [])
        self._live.pop(execution_id, None)

    def reloading(self, execution_id: str) -> bool:
        return execution_id in self._reloading

    def hold(self, execution_id: str, retry: Callable[[], None]) -> bool:
        """While the execution reloads, keep `retry` for when it is back; False otherwise."""
        held = self._reloading.get(execution_id)
        if held is None:
            return False
        held.append(retry)
        return True

    def reloaded(self, execution_id: str) -> None:
        """The reload ended (back in memory, or given up): run what was held."""
        for retry in self._reloading.pop(execution_id, []):
            retry()
