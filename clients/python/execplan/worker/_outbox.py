"""The outgoing queue of the worker stream: whatever is queued goes in one message.

Acks, heartbeats, results and status changes are appended here by the stream
thread; the writer takes everything at once into a single ConnectRequest. While a
write is in flight new items pile up and leave together in the next message,
so batching grows with load (one stream message costs ~130 us of CPU; sixteen
items in one message cost about the same, see NOTES.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from execplan.v1 import worker_service_pb2

from ._context import AttemptKey


@dataclass
class Outbox:
    acks: list[worker_service_pb2.AssignmentAck] = field(default_factory=list)
    heartbeats: list[worker_service_pb2.TaskHeartbeat] = field(default_factory=list)
    # Keyed so that a revoked attempt's result can be dropped before it is sent;
    # dicts keep insertion order, so results leave in completion order.
    results: dict[AttemptKey, worker_service_pb2.TaskResult] = field(default_factory=dict)
    status: worker_service_pb2.WorkerStatus | None = None
    # Run once the message carrying the current acks has been written: handlers
    # start only after their ack is on the wire, so an ack always precedes its result.
    after_write: list[Callable[[], None]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.acks or self.heartbeats or self.results or self.status)

    def take(
        self,
    ) -> tuple[worker_service_pb2.ConnectRequest | None, list[Callable[[], None]]]:
        callbacks, self.after_write = self.after_write, []
        if self.empty():
            return None, callbacks
        request = worker_service_pb2.ConnectRequest(
            acks=self.acks,
            heartbeats=self.heartbeats,
            results=list(self.results.values()),
        )
        if self.status is not None:
            request.status.CopyFrom(self.status)
        self.acks, self.heartbeats, self.results, self.status = [], [], {}, None
        return request, callbacks

    def reset_connection(self) -> None:
        """Forget what only made sense on the lost stream; results stay queued."""
        self.acks.clear()
        self.heartbeats.clear()
        self.after_write.clear()
        self.status = None
