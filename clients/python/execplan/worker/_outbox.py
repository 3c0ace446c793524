"""The outgoing queue of the worker stream: whatever is queued goes in one message.

Acks, heartbeats, results and status changes are appended here by the stream
thread; the writer takes everything at once into a single ConnectRequest. While a
write is in flight new items pile up and leave together in the next message,
so batching grows with load (one stream message costs ~130 us of CPU; sixteen
items in one message cost about the same, see docs/benchmarks.md).

Sizes: a message over the server's limit would break the stream, and the worker
would send it again after every reconnect. So `take` puts only as many results
into a message as fit under `max_message_bytes` (the rest leave in the next one),
and a result whose output exceeds `max_output_bytes` is replaced by an error result
of type `PayloadTooLarge` (not retryable): the attempt fails instead of the stream.
Both limits come from the server's `WorkerRegistered`; until then (or from an older
server that does not send them) this channel's own message limit applies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from execplan.client._channel import _MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from execplan.v1 import execution_pb2, worker_service_pb2

from ._context import AttemptKey
from ._runner import make_error

_log = logging.getLogger("execplan.worker")

# Room for everything in a message but the results (acks, heartbeats, status) and for
# a result's envelope (attempt reference, field tags).
ENVELOPE_BYTES = 64 * 1024
# A handler's error message is cut to this many characters when its result is too big.
_ERROR_MESSAGE_CHARS = 4096
# Usage reports per message (each ~100 bytes) and kept while unacknowledged.
MAX_USAGE_PER_MESSAGE = 1000
MAX_UNACKED_USAGE = 10_000
# Partial output (ctx.stream) waiting to be written: above this, newer chunks are
# dropped (they are live data; the result stays the task's output).
MAX_PENDING_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass
class Outbox:
    acks: list[worker_service_pb2.AssignmentAck] = field(default_factory=list)
    heartbeats: list[worker_service_pb2.TaskHeartbeat] = field(default_factory=list)
    # Keyed so that a revoked attempt's result can be dropped before it is sent;
    # dicts keep insertion order, so results leave in completion order.
    results: dict[AttemptKey, worker_service_pb2.TaskResult] = field(default_factory=dict)
    status: worker_service_pb2.WorkerStatus | None = None
    # Partial output in the order produced; leaves before any result of its attempt.
    chunks: list[tuple[AttemptKey, worker_service_pb2.TaskStreamChunk]] = field(
        default_factory=list
    )
    chunk_bytes: int = 0
    dropped_chunks: int = 0
    # Results written recently, with the time of writing. The protocol has no result
    # ack, and a write into a stream that is already dying succeeds locally and is
    # lost; so when the stream breaks, these are queued again and listed as running
    # on re-register. The executor revokes those it already recorded (we drop them)
    # and keeps the lease of the lost ones (we deliver them): no result is lost.
    in_flight: dict[AttemptKey, tuple[float, worker_service_pb2.TaskResult]] = field(
        default_factory=dict
    )
    # Usage reports (docs/usage.md): queued ones leave before any result of the same
    # message; a sent one stays in `usage_unacked` until the executor's UsageAck, and is
    # queued again after a reconnect (the executor counts each report once).
    usage: list[worker_service_pb2.UsageReport] = field(default_factory=list)
    usage_unacked: dict[tuple[AttemptKey, int], worker_service_pb2.UsageReport] = field(
        default_factory=dict
    )
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_output_bytes: int = MAX_MESSAGE_BYTES - ENVELOPE_BYTES

    def set_limits(self, max_output_bytes: int, max_message_bytes: int) -> None:
        """The server's limits from `WorkerRegistered` (0: not sent, keep ours)."""
        if max_message_bytes:
            self.max_message_bytes = min(max_message_bytes, MAX_MESSAGE_BYTES)
        room = self.max_message_bytes - ENVELOPE_BYTES
        self.max_output_bytes = min(max_output_bytes or room, room)

    def empty(self) -> bool:
        return not (
            self.acks or self.heartbeats or self.results or self.status or self.usage or self.chunks
        )

    def add_usage(self, report: worker_service_pb2.UsageReport) -> None:
        self.usage.append(report)
        # A server that never acknowledges (an older one) must not grow this forever.
        while len(self.usage) + len(self.usage_unacked) > MAX_UNACKED_USAGE:
            if self.usage_unacked:
                del self.usage_unacked[next(iter(self.usage_unacked))]
            else:
                del self.usage[0]

    def usage_acked(self, key: AttemptKey, sequence: int) -> None:
        self.usage_unacked.pop((key, sequence), None)

    def add_chunk(self, key: AttemptKey, chunk: worker_service_pb2.TaskStreamChunk) -> None:
        size = chunk.ByteSize()
        if self.chunk_bytes + size > MAX_PENDING_CHUNK_BYTES:
            self.dropped_chunks += 1
            if self.dropped_chunks == 1 or self.dropped_chunks % 1000 == 0:
                _log.warning(
                    "%d stream chunks dropped: the connection is not keeping up",
                    self.dropped_chunks,
                )
            return
        self.chunks.append((key, chunk))
        self.chunk_bytes += size

    def drop_chunks(self, key: AttemptKey) -> None:
        kept = [(k, c) for k, c in self.chunks if k != key]
        if len(kept) != len(self.chunks):
            self.chunks = kept
            self.chunk_bytes = sum(c.ByteSize() for _, c in kept)

    def take(self, now: float, keep_for: float) -> worker_service_pb2.ConnectRequest | None:
        """One request with everything queued (acks first: the executor applies an
        ack before a result of the same message); results stay in_flight for
        keep_for s."""
        # Oldest first (kept in the order written, see below): only the expired ones
        # are visited, not every result of the last keep_for seconds on every write
        # (thousands at a few thousand tasks/s).
        expired = []
        for key, (written, _) in self.in_flight.items():
            if now - written <= keep_for:
                break
            expired.append(key)
        for key in expired:
            del self.in_flight[key]
        if self.empty():
            return None
        request = worker_service_pb2.ConnectRequest(acks=self.acks, heartbeats=self.heartbeats)
        if self.status is not None:
            request.status.CopyFrom(self.status)
        # Usage first: the executor handles it before the results of the same message,
        # so an attempt's usage is counted before its result can end the execution.
        sent = self.usage[:MAX_USAGE_PER_MESSAGE]
        self.usage = self.usage[MAX_USAGE_PER_MESSAGE:]
        for report in sent:
            self.usage_unacked[(AttemptKey.of(report.attempt), report.sequence)] = report
        request.usage.extend(sent)
        budget = self.max_message_bytes - request.ByteSize()
        chunks_sent = 0
        for _, chunk in self.chunks:
            size = chunk.ByteSize() + 8
            if size > budget and (request.chunks or request.results):
                break
            budget -= size
            request.chunks.append(chunk)
            chunks_sent += 1
        if chunks_sent:
            del self.chunks[:chunks_sent]
            self.chunk_bytes = max(0, self.chunk_bytes - sum(c.ByteSize() for c in request.chunks))
        for key in list(self.results) if not self.usage else ():
            result = self.fit(self.results[key])
            size = result.ByteSize() + 8  # the field's tag and length
            if size > budget and (request.results or request.chunks):
                break  # the next message takes it (the caller writes again)
            budget -= size
            request.results.append(result)
            self.in_flight.pop(key, None)  # a re-sent result moves to the newest end
            self.in_flight[key] = (now, result)
            del self.results[key]
        self.acks, self.heartbeats, self.status = [], [], None
        return request

    def fit(self, result: worker_service_pb2.TaskResult) -> worker_service_pb2.TaskResult:
        """`result`, or an error result in its place if it is too big to send."""
        limit = self.max_output_bytes
        outcome = result.WhichOneof("outcome")
        if outcome in ("output", "sub_plan"):
            # A dynamic task's sub-plan is its answer: the same limit as an output.
            size = result.output.ByteSize() if outcome == "output" else result.sub_plan.ByteSize()
            if size <= limit:
                return result
            what = "output" if outcome == "output" else "sub-plan"
            error = make_error(
                "PayloadTooLarge",
                f"{what} of {size} bytes exceeds the server's limit of {limit} bytes",
                retryable=False,
            )
            return _replaced(result, error)
        if result.error.ByteSize() <= limit:
            return result
        # An error too big to send (a huge message or details): keep what decides
        # retries (type, retryable), cut the message, drop the details.
        error = execution_pb2.ErrorInfo(
            type=result.error.type[:256],
            message=result.error.message[:_ERROR_MESSAGE_CHARS] + " ... (truncated)",
            retryable=result.error.retryable,
            retry=result.error.retry,
        )
        return _replaced(result, error)

    def reset_connection(self, *, lost: bool) -> None:
        """Forget what only made sense on the old stream; results stay queued."""
        if lost:
            pending = {key: result for key, (_, result) in self.in_flight.items()}
            self.results = pending | self.results
        # Reports not acknowledged may not have been recorded: send them again, first.
        self.usage = list(self.usage_unacked.values()) + self.usage
        self.usage_unacked.clear()
        self.in_flight.clear()
        self.acks.clear()
        self.heartbeats.clear()
        # Live output of the old stream: nobody resumes it (chunks are not stored).
        self.chunks.clear()
        self.chunk_bytes = 0
        self.status = None


def _replaced(
    result: worker_service_pb2.TaskResult, error: execution_pb2.ErrorInfo
) -> worker_service_pb2.TaskResult:
    """`result` with `error` as its outcome; its usage still counts."""
    out = worker_service_pb2.TaskResult(attempt=result.attempt, error=error)
    if result.HasField("usage"):
        out.usage.CopyFrom(result.usage)
    return out
