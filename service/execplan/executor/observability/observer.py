"""Hooks through which metrics, tracing and logs watch the engine.

The runtime calls these after the fact (events already committed; a dispatch
decided and committed, about to be sent) and never waits on them, so an observer
cannot change what the engine decides; `dispatching` may only add to the
dispatch's trace context. Observers must be cheap: they run on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from execplan.executor.runtime.workers import WorkerConn
from execplan.executor.state import ExecutionState
from execplan.v1 import events_pb2 as ev
from execplan.v1 import worker_service_pb2 as ws

# What one execution committed in a round: its state (after the round), its events
# of the round in sequence order, each event's kind (`kinds[i]` is
# `events[i].WhichOneof("kind")`, read once for every observer) and the time every
# one of those events carries as `recorded_at`, in ms (a Timestamp read per event
# costs more than the observers' own work with it).
Commit = tuple[ExecutionState, Sequence[ev.ExecutionEvent], Sequence[str], int]


class EngineObserver:
    """Base class with no-op hooks; subclass and override what you need."""

    def committed(self, commits: Sequence[Commit]) -> None:
        """Events became durable: what each execution of one pump round (or one start)
        committed, a `Commit` per execution. Called once per round, so an observer
        pays its per-call checks once, not once per execution."""

    def dispatching(self, state: ExecutionState, dispatch: ws.Dispatch) -> None:
        """A dispatch is about to be sent; may add to `dispatch.trace_context`."""

    def worker_connected(self, worker: WorkerConn) -> None:
        """A worker registered."""

    def worker_disconnected(self, worker: WorkerConn) -> None:
        """A worker's stream ended."""

    def round_committed(self, executions: int, events: int, seconds: float) -> None:
        """One pump round committed `events` events of `executions` executions."""


class Observers(EngineObserver):
    """Fans every hook out to several observers."""

    def __init__(self, observers: Sequence[EngineObserver] = ()) -> None:
        self.observers = list(observers)

    def add(self, observer: EngineObserver) -> None:
        self.observers.append(observer)

    def committed(self, commits: Sequence[Commit]) -> None:
        for observer in self.observers:
            observer.committed(commits)

    def dispatching(self, state: ExecutionState, dispatch: ws.Dispatch) -> None:
        for observer in self.observers:
            observer.dispatching(state, dispatch)

    def worker_connected(self, worker: WorkerConn) -> None:
        for observer in self.observers:
            observer.worker_connected(worker)

    def worker_disconnected(self, worker: WorkerConn) -> None:
        for observer in self.observers:
            observer.worker_disconnected(worker)

    def round_committed(self, executions: int, events: int, seconds: float) -> None:
        for observer in self.observers:
            observer.round_committed(executions, events, seconds)
