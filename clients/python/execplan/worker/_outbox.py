"""The outgoing queue of the worker stream: whatever is queued goes in one message.

Acks, heartbeats, results and status changes are appended here by the stream
thread; the writer takes everything at once into a single ConnectRequest. While a
write is in flight new items pile up and leave together in the next message,
so batching grows with load (one stream message costs ~130 us of CPU; sixteen
items in one message cost about the same, see docs/benchmarks.md).
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
    # Results written recently, with the time of writing. The protocol has no result
    # ack, and a write into a stream that is already dying succeeds locally and is
    # lost; so when the stream breaks, these are queued again and listed as running
    # on re-register. The executor revokes those it already recorded (we drop them)
    # and keeps the lease of the lost ones (we deliver them): no result is lost.
    in_flight: dict[AttemptKey, tuple[float, worker_service_pb2.TaskResult]] = field(
        default_factory=dict
    )

    def empty(self) -> bool:
        return not (self.acks or self.heartbeats or self.results or self.status)

    def take(
        self, now: float, keep_for: float
    ) -> tuple[worker_service_pb2.ConnectRequest | None, list[Callable[[], None]]]:
        """One request with everything queued; results stay in_flight for keep_for s."""
        callbacks, self.after_write = self.after_write, []
        for key, (written, _) in list(self.in_flight.items()):
            if now - written > keep_for:
                del self.in_flight[key]
        if self.empty():
            return None, callbacks
        request = worker_service_pb2.ConnectRequest(
            acks=self.acks,
            heartbeats=self.heartbeats,
            results=list(self.results.values()),
        )
        if self.status is not None:
            request.status.CopyFrom(self.status)
        for key, result in self.results.items():
            self.in_flight[key] = (now, result)
        self.acks, self.heartbeats, self.results, self.status = [], [], {}, None
        return request, callbacks

    def reset_connection(self, *, lost: bool) -> None:
        """Forget what only made sense on the old stream; results stay queued."""
        if lost:
            pending = {key: result for key, (_, result) in self.in_flight.items()}
            self.results = pending | self.results
        self.in_flight.clear()
        self.acks.clear()
        self.heartbeats.clear()
        self.after_write.clear()
        self.status = None
