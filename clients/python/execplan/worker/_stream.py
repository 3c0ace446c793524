"""The worker's connection: one WorkerService.Connect stream on a dedicated thread.

Why a thread of its own: acks and heartbeats keep leases alive, so nothing a
handler does may delay them. An async handler that calls time.sleep() blocks the
user's loop and a CPU-bound sync handler holds the GIL only in slices; a separate
thread with its own asyncio loop keeps reading, acking and heartbeating anyway.

Protocol, as the executor expects it (docs/worker-protocol.md has the whole of it):

1. connect, send `register` (with `running`: attempts still in progress or whose
   result is not yet delivered), wait for `registered`; revoked attempts are
   cancelled locally and their queued results dropped;
2. per incoming message: one ack per dispatch, all in one outgoing message, and
   the handlers start at once. The acks are held back for up to `ACK_HOLD_S`, so a
   quick handler's result travels in the same message as its ack (one stream
   message each way per task instead of two); they never leave after their results,
   as one writer sends everything queued, acks first in each message;
3. every heartbeat interval: one message with a heartbeat for each running attempt
   (earlier, and only for attempts with new progress, when ctx.heartbeat() asks);
4. results go through the Outbox, batched with whatever else is ready;
5. `cancels` and `rejections` (of an ack or a result: the executor no longer leases
   that attempt to us) cancel locally and drop the result;
6. a local drain (`drain()`, SIGTERM): status{draining}, finish running attempts,
   deliver their results, half-close, wait for the server to end the stream, return.
   The server's `drain` (it is shutting down) does the same on this connection and
   then reconnects, so the worker is back as soon as the server (or its successor)
   listens again;
7. a broken stream: reconnect as the retry policy says (client/_backoff.py: the
   first retry at once, then full jitter capped at 2 s, or the server's RetryInfo
   delay), unless the code is fatal (bad request, auth). Every try but the
   worker's very first waits for the channel to be ready (wait_for_ready), so it
   starts the moment the server is back (the channel retries its connection
   every 0.1-1 s, see _channel.py), well within the executor's 5 s reconnect grace;
8. a drain or stop interrupts every wait at once: a stream that is not connected
   and has nothing left to deliver ends without waiting for a connection; results
   it still holds are given up after `_DRAIN_DELIVERY_S` disconnected (the executor
   re-leases those attempts after its reconnect grace anyway).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from execplan import hops
from execplan.client._backoff import Backoff
from execplan.client._channel import Security, open_channel
from execplan.client.errors import decode_details, translate
from execplan.v1 import execution_pb2, worker_service_pb2, worker_service_pb2_grpc
from google.protobuf import timestamp_pb2

from ._context import AttemptInfo, AttemptKey, PreviousError, TaskContext
from ._handoff import Handoff
from ._outbox import Outbox
from ._runner import encode_error

_log = logging.getLogger("execplan.worker")

SDK = "python/0.1"
# Codes that no retry can fix: the registration or credentials are wrong.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_DEFAULT_HEARTBEAT_S = 10.0
# A server that never ends the stream after our half-close must not hang shutdown.
_CLOSE_TIMEOUT_S = 5.0
# Draining and disconnected: how long results may wait for a connection to deliver
# them on (the executor's reconnect grace; after it the attempts are re-leased).
_DRAIN_DELIVERY_S = 5.0
# How long acks wait for a result to ride with (at most 1/20 of the ack deadline).
# Nothing on the executor waits for an ack but its deadline (5 s by default) and the
# worker's pacing window, which a result counts for as well.
ACK_HOLD_S = 0.005

StartHandler = Callable[[worker_service_pb2.Dispatch, TaskContext], Callable[[], None]]


@dataclass(frozen=True)
class StreamConfig:
    address: str | None
    worker_id: str
    task_types: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    environment: str = ""
    slots: int = 8
    security: Security = field(default_factory=Security)
    capacity: worker_service_pb2.WorkerCapacity | None = None


@dataclass(eq=False)
class _Attempt:
    dispatch: worker_service_pb2.Dispatch
    ctx: TaskContext
    canceller: Callable[[], None] = lambda: None


class StreamThread:
    """Owns the channel and the stream; every public method is thread-safe."""

    def __init__(self, config: StreamConfig) -> None:
        self._config = config
        self._start_handler: StartHandler = _not_started
        self._thread = threading.Thread(
            target=self._thread_main, name=f"execplan-worker-{config.worker_id}", daemon=True
        )
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Every call from other threads, in order (a result after the chunks and usage
        # its handler reported before returning), one wake-up per batch.
        self._handoff: Handoff | None = None
        # Everything below is touched on the stream thread only.
        self._attempts: dict[AttemptKey, _Attempt] = {}
        self._outbox = Outbox()
        self._draining = False
        self._drain_began = 0.0
        # The server said `drain` on the current connection: finish, then reconnect.
        self._server_draining = False
        self._half_closed = False
        self._stopping = False
        self._heartbeat_s = _DEFAULT_HEARTBEAT_S
        self._ack_hold_s = ACK_HOLD_S
        self._ack_flush: asyncio.TimerHandle | None = None
        self._backoff = Backoff()
        # Connection state, for a drain that must not wait on a dead server.
        self._registered = False
        # Only the very first try fails fast (a wrong address is reported at once);
        # later ones wait for the channel to connect, see the module docstring.
        self._tried = False
        self._disconnected_at = time.monotonic()
        # When the current `register` went on the wire (None: not yet, still connecting).
        self._register_sent_at: float | None = None
        self._session_task: asyncio.Task[bool] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._given_up = False

    # -- thread-safe API -------------------------------------------------------------
    def start(self, start_handler: StartHandler) -> None:
        """Connect on the stream thread; dispatches are handed to start_handler."""
        self._start_handler = start_handler
        self._thread.start()
        self._ready.wait()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def submit_result(self, key: AttemptKey, result: worker_service_pb2.TaskResult) -> None:
        self._call(self._on_result, key, result)

    def request_heartbeat(self) -> None:
        self._call(self._on_heartbeat_request)

    def send_chunks(
        self, ref: worker_service_pb2.AttemptRef, chunks: list[worker_service_pb2.TaskStreamChunk]
    ) -> None:
        self._call(self._on_chunks, AttemptKey.of(ref), ref, chunks)

    def drain(self, reason: str) -> None:
        self._call(self._begin_drain, reason)

    def stop(self) -> None:
        self._call(self._begin_stop)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        handoff = self._handoff
        if handoff is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed: the stream is gone
            handoff.call(fn, *args)

    # -- thread and reconnect loop -------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=stream_loop_factory()) as runner:
                runner.run(self._main())
        except BaseException as exc:
            self.finished.set_exception(exc)
        else:
            self.finished.set_result(None)
        finally:
            self._ready.set()  # never leave start() waiting on a thread that died early

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._handoff = Handoff(self._loop)
        self._wake = asyncio.Event()
        self._heartbeat_now = asyncio.Event()
        self._interrupt = asyncio.Event()
        main_task = asyncio.current_task()
        assert main_task is not None
        self._main_task: asyncio.Task[None] = main_task
        self._ready.set()
        channel = self._channel = open_channel(self._config.address, self._config.security)
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        try:
            await self._reconnect_loop(stub)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self._cancel_all_attempts()
            await channel.close()
            # grpc.aio's poller is shared by every loop of the process and may still
            # deliver completions of the cancelled calls to this loop; closing the loop
            # at once makes it log "Event loop is closed" on whatever loop runs next.
            await asyncio.sleep(0.05)

    async def _reconnect_loop(self, stub: worker_service_pb2_grpc.WorkerServiceAsyncStub) -> None:
        while not self._stopping:
            server_delay: float | None = None
            session = asyncio.create_task(self._session(stub))
            self._session_task = session
            try:
                await asyncio.wait({session})
            finally:
                self._session_task = None
                if not session.done():  # we are being stopped
                    session.cancel()
                    await asyncio.gather(session, return_exceptions=True)
            if self._given_up:
                if not session.cancelled():
                    session.exception()  # retrieved: a failure of a stream we gave up
                return
            try:
                if session.result():
                    return
            except grpc.aio.AioRpcError as err:
                if err.code() in FATAL_CODES:
                    raise translate(err) from err
                server_delay = decode_details(err).retry_after
                _log.warning("worker stream lost (%s: %s)", err.code().name, err.details())
            except (grpc.aio.UsageError, asyncio.InvalidStateError, ConnectionError) as exc:
                _log.warning("worker stream lost (%r)", exc)
            if self._drained() or self._given_up:
                return  # nothing left to deliver: no reason to come back
            self._interrupt.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._interrupt.wait(), self._backoff.next_delay(server_delay)
                )
            if self._drained() or self._given_up:
                return  # drained (or gave up) while we waited

    def _give_up_if_pointless(self) -> None:
        """Draining and not registered: end now if nothing is left to deliver and no
        registration is in flight; else once results have waited `_DRAIN_DELIVERY_S`
        for a connection, or a registration on the wire `_CLOSE_TIMEOUT_S` for its
        answer."""
        if not self._draining or self._registered or self._attempts or self._given_up:
            return
        # Only results matter: acks, heartbeats and status belong to a connection.
        if self._outbox.results:
            since, patience = self._disconnected_at, _DRAIN_DELIVERY_S
        elif self._registering():  # connected: the answer is a round trip away
            since, patience = self._register_sent_at or self._drain_began, _CLOSE_TIMEOUT_S
        else:
            since, patience = 0.0, 0.0
        waited = time.monotonic() - since
        if waited < patience:
            assert self._loop is not None
            self._loop.call_later(patience - waited + 0.01, self._give_up_if_pointless)
            return
        if self._outbox.results:
            _log.warning(
                "drained without reaching %s: %d results not delivered (the executor "
                "re-runs those attempts)",
                self._config.address,
                len(self._outbox.results),
            )
        self._given_up = True
        self._interrupt.set()
        task = self._session_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # it may be waiting for a connection that never comes

    def _registering(self) -> bool:
        """A session is past connecting: its `register` is on the wire, or about to be
        (the channel is connected; the write's completion may not have run yet)."""
        if self._session_task is None or self._channel is None:
            return False
        ready = self._channel.get_state() == grpc.ChannelConnectivity.READY
        return self._register_sent_at is not None or ready

    # -- one connection ---------------------------------------------------------------
    async def _session(self, stub: worker_service_pb2_grpc.WorkerServiceAsyncStub) -> bool:
        """Run one stream; True when it ended because a local drain completed."""
        call = stub.Connect(wait_for_ready=self._tried)
        self._tried = True
        tasks: list[asyncio.Task[None]] = []
        closed_cleanly = False
        self._half_closed = False
        self._server_draining = False
        try:
            first = worker_service_pb2.ConnectRequest(register=self._registration())
            if self._draining:
                first.status.CopyFrom(_DRAINING)
            await call.write(first)
            self._register_sent_at = time.monotonic()
            response = await call.read()
            if not isinstance(response, worker_service_pb2.ConnectResponse):
                return False  # EOF: the server ended the stream at once
            if not response.HasField("registered"):
                _log.warning("first server message was not `registered`; reconnecting")
                return False
            self._registered = True
            self._on_registered(response.registered)
            self._on_response(response)
            reader = asyncio.create_task(self._read_loop(call))
            writer = asyncio.create_task(self._write_loop(call))
            tasks = [reader, writer, asyncio.create_task(self._heartbeat_loop())]
            self._wake.set()  # flush what queued up while we were disconnected
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()  # raises the stream's error
                if not self._half_closed:
                    return False  # the server ended the stream early: reconnect
                # The server answered our half-close before the writer task resumed.
            else:
                writer.result()
            # We half-closed after a drain: the server ends the stream next.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), _CLOSE_TIMEOUT_S)
            closed_cleanly = True
            # After the server's drain we come back (to it, restarted, or whoever
            # listens there next); after our own we are done.
            return self._draining
        finally:
            self._registered = False
            self._register_sent_at = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            call.cancel()
            self._on_disconnected(lost=not closed_cleanly)

    async def _read_loop(self, call: _ConnectCall) -> None:
        while True:
            response = await call.read()
            if hops.ON:
                hops.mark("worker.read")
            if not isinstance(response, worker_service_pb2.ConnectResponse):
                return  # EOF
            self._on_response(response)

    async def _write_loop(self, call: _ConnectCall) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            request = self._outbox.take(time.monotonic(), keep_for=max(1.0, 2 * self._heartbeat_s))
            if request is not None:
                if hops.ON:
                    hops.mark("worker.write")
                await call.write(request)
                more = self._outbox.results or self._outbox.usage or self._outbox.chunks
                if more:  # more than fitted in one message
                    self._wake.set()
            if self._connection_done():
                self._half_closed = True
                await call.done_writing()
                return

    async def _heartbeat_loop(self) -> None:
        """A full heartbeat round each interval; progress-only rounds in between."""
        next_full = time.monotonic() + self._heartbeat_s
        while True:
            timeout = max(0.0, next_full - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heartbeat_now.wait(), timeout)
            self._heartbeat_now.clear()
            full = time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + self._heartbeat_s
            self._queue_heartbeats(only_dirty=not full)
            if not full:
                # Bound the message rate of a handler that reports progress in a loop.
                await asyncio.sleep(self._heartbeat_s / 10)

    # -- protocol handlers (stream thread) ---------------------------------------------
    def _registration(self) -> worker_service_pb2.WorkerRegistration:
        c = self._config
        running = [a.dispatch.attempt for a in self._attempts.values()]
        running += [r.attempt for r in self._outbox.results.values()]
        return worker_service_pb2.WorkerRegistration(
            worker_id=c.worker_id,
            task_types=c.task_types,
            labels=c.labels,
            environment=c.environment,
            slots=c.slots,
            running=running,
            sdk=SDK,
            capacity=c.capacity,
        )

    def _on_registered(self, registered: worker_service_pb2.WorkerRegistered) -> None:
        self._backoff.reset()
        if registered.heartbeat_interval_ms:
            self._heartbeat_s = registered.heartbeat_interval_ms / 1000
        if registered.ack_deadline_ms:
            self._ack_hold_s = min(ACK_HOLD_S, registered.ack_deadline_ms / 1000 / 20)
        self._outbox.set_limits(registered.max_output_bytes, registered.max_message_bytes)
        for ref in registered.revoked:
            _log.info("attempt %s/%s revoked on re-register", ref.execution_id, ref.task_id)
            self._cancel(ref)

    def _on_response(self, response: worker_service_pb2.ConnectResponse) -> None:
        for dispatch in response.dispatches:
            self._on_dispatch(dispatch)
        for cancel in response.cancels:
            _log.info("attempt %s/%s cancelled: %s", *_names(cancel.attempt), cancel.reason)
            self._cancel(cancel.attempt)
        for rejection in response.rejections:
            _log.info("attempt %s/%s rejected: %s", *_names(rejection.attempt), rejection.reason)
            self._cancel(rejection.attempt)
        for ack in response.usage_acks:
            if not ack.recorded:
                _log.warning(
                    "usage report %d of %s/%s refused: %s",
                    ack.sequence,
                    *_names(ack.attempt),
                    ack.reason,
                )
            self._outbox.usage_acked(AttemptKey.of(ack.attempt), ack.sequence)
        if response.HasField("drain"):
            self._on_server_drain(response.drain.reason or "server drain")
        if response.cancels or response.rejections:
            self._wake.set()
        elif response.dispatches and self._ack_flush is None:
            assert self._loop is not None
            self._ack_flush = self._loop.call_later(self._ack_hold_s, self._flush_acks)

    def _flush_acks(self) -> None:
        """The acks' hold is over: they leave now, results or not."""
        self._ack_flush = None
        if self._outbox.acks:
            self._wake.set()

    def _on_dispatch(self, dispatch: worker_service_pb2.Dispatch) -> None:
        key = AttemptKey.of(dispatch.attempt)
        self._outbox.acks.append(worker_service_pb2.AssignmentAck(attempt=dispatch.attempt))
        if key in self._attempts or key in self._outbox.results:
            return  # a re-sent dispatch of an attempt we already run: ack only
        ref = dispatch.attempt

        def on_usage(sequence: int, usage: execution_pb2.Usage) -> None:
            self._call(self._on_usage, ref, sequence, usage)

        context = TaskContext(
            _info(dispatch),
            self.request_heartbeat,
            on_usage,
            lambda chunks: self.send_chunks(ref, chunks),
        )
        attempt = _Attempt(dispatch, context)
        self._attempts[key] = attempt
        try:
            attempt.canceller = self._start_handler(dispatch, context)
        except Exception as exc:  # e.g. the pool is shut down while stopping
            _log.exception("could not start attempt %s/%s", *_names(ref))
            self._on_result(key, encode_error(ref, exc))

    def _on_result(self, key: AttemptKey, result: worker_service_pb2.TaskResult) -> None:
        if hops.ON:
            hops.mark("worker.result")
        attempt = self._attempts.pop(key, None)
        if attempt is None:
            return  # cancelled or revoked: the executor no longer wants this result
        # Search attributes set after the last heartbeat go with the result.
        for name, value in attempt.ctx.take_search_attributes().items():
            result.search_attributes[name].CopyFrom(value)
        # Progress reported since the last heartbeat (a handler that reports and returns
        # at once) leaves in a heartbeat queued before the result: the executor reads a
        # message's heartbeats first, and the attempt ends with its result.
        dirty, progress = attempt.ctx.take_progress(only_dirty=True)
        if dirty and progress is not None:
            beat = worker_service_pb2.TaskHeartbeat(attempt=attempt.dispatch.attempt)
            beat.progress.CopyFrom(progress)
            self._outbox.heartbeats.append(beat)
        self._outbox.results[key] = result
        self._wake.set()
        if self._drained():
            self._interrupt.set()
        self._give_up_if_pointless()

    def _on_usage(
        self, ref: worker_service_pb2.AttemptRef, sequence: int, usage: execution_pb2.Usage
    ) -> None:
        # Also after the attempt ended (cancelled, timed out): what was spent counts.
        report = worker_service_pb2.UsageReport(attempt=ref, sequence=sequence, usage=usage)
        self._outbox.add_usage(report)
        self._wake.set()

    def _on_heartbeat_request(self) -> None:
        self._heartbeat_now.set()

    def _on_chunks(
        self,
        key: AttemptKey,
        ref: worker_service_pb2.AttemptRef,
        chunks: list[worker_service_pb2.TaskStreamChunk],
    ) -> None:
        attempt = self._attempts.get(key)
        if attempt is None:
            return  # finished, cancelled or revoked: nobody wants its output
        for chunk in chunks:
            chunk.attempt.CopyFrom(ref)
            self._outbox.add_chunk(key, chunk)
        self._wake.set()

    def _queue_heartbeats(self, *, only_dirty: bool) -> None:
        for attempt in self._attempts.values():
            include, progress = attempt.ctx.take_progress(only_dirty=only_dirty)
            if include:
                beat = worker_service_pb2.TaskHeartbeat(
                    attempt=attempt.dispatch.attempt,
                    search_attributes=attempt.ctx.take_search_attributes(),
                )
                if progress is not None:
                    beat.progress.CopyFrom(progress)
                self._outbox.heartbeats.append(beat)
        if self._outbox.heartbeats:
            self._wake.set()

    def _cancel(self, ref: worker_service_pb2.AttemptRef) -> None:
        for key in self._matching(ref):
            self._outbox.results.pop(key, None)
            self._outbox.in_flight.pop(key, None)
            self._outbox.drop_chunks(key)
            attempt = self._attempts.pop(key, None)
            if attempt is not None:
                attempt.ctx.cancel()
                attempt.canceller()
        self._wake.set()
        if self._drained():
            self._interrupt.set()
        self._give_up_if_pointless()

    def _matching(self, ref: worker_service_pb2.AttemptRef) -> list[AttemptKey]:
        exact = AttemptKey.of(ref)
        if ref.HasField("token"):
            return [exact]
        # No token: the executor means whatever attempt of this task we hold.
        known = list(self._attempts) + list(self._outbox.results)
        return [k for k in known if k[:3] == exact[:3]]

    def _begin_drain(self, reason: str) -> None:
        if self._draining:
            return
        _log.info("draining (%s): %d attempts running", reason, len(self._attempts))
        self._draining = True
        self._drain_began = time.monotonic()
        self._outbox.status = _DRAINING
        self._wake.set()
        self._interrupt.set()
        self._give_up_if_pointless()

    def _on_server_drain(self, reason: str) -> None:
        """The server is going away: finish and deliver on this connection, take no
        new work from it; the reconnect loop then finds its successor."""
        if self._draining or self._server_draining:
            return
        _log.info("server drain (%s): %d attempts running", reason, len(self._attempts))
        self._server_draining = True
        self._outbox.status = _DRAINING
        self._wake.set()

    def _begin_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._main_task.cancel()

    def _drained(self) -> bool:
        return self._draining and not self._attempts and self._outbox.empty()

    def _connection_done(self) -> bool:
        """Nothing left to do on this connection: half-close it."""
        draining = self._draining or self._server_draining
        return draining and not self._attempts and self._outbox.empty()

    def _on_disconnected(self, *, lost: bool) -> None:
        # Attempts whose ack never left still run: they are listed as `running` on
        # re-register, and the executor keeps their leases or revokes them.
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        # The draining status rides on the next `register` message instead.
        self._outbox.reset_connection(lost=lost)
        self._disconnected_at = time.monotonic()
        self._give_up_if_pointless()

    def _cancel_all_attempts(self) -> None:
        for attempt in self._attempts.values():
            attempt.ctx.cancel()
            attempt.canceller()
        self._attempts.clear()


def stream_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The stream thread's own loop: uvloop's when it is installed (libuv, in Cython:
    less CPU for each read, write and thread wake-up the stream costs), else the
    standard one. Only this private thread's loop; the user's loop stays theirs."""
    try:
        import uvloop  # noqa: PLC0415  (optional: not a dependency of the SDK)
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _not_started(dispatch: worker_service_pb2.Dispatch, ctx: TaskContext) -> Callable[[], None]:
    raise RuntimeError("StreamThread.start() was not called")


_DRAINING = worker_service_pb2.WorkerStatus(draining=True, free_slots=0)

_ConnectCall = grpc.aio.StreamStreamCall[
    worker_service_pb2.ConnectRequest, worker_service_pb2.ConnectResponse
]


def _names(ref: worker_service_pb2.AttemptRef) -> tuple[str, str]:
    return ref.execution_id, ref.task_id


def _info(dispatch: worker_service_pb2.Dispatch) -> AttemptInfo:
    ref = dispatch.attempt
    token = ref.token
    deadline = None
    if dispatch.HasField("start_to_close_deadline"):
        deadline = _utc(dispatch.start_to_close_deadline)
    secrets, trace_context = dispatch.secrets, dispatch.trace_context
    return AttemptInfo(
        execution_id=ref.execution_id,
        task_id=ref.task_id,
        attempt=token.attempt,
        lease_epoch=token.lease_epoch,
        idempotency_key=dispatch.idempotency_key,
        task_type=dispatch.task_type,
        workflow_name=dispatch.workflow_name,
        # Copied out of the message (an empty map is the common case: ~1 us saved).
        secrets=dict(secrets) if secrets else {},
        trace_context=dict(trace_context) if trace_context else {},
        deadline=deadline,
        previous_error=(
            PreviousError.of(dispatch.previous_error)
            if dispatch.HasField("previous_error")
            else None
        ),
    )


def _utc(ts: timestamp_pb2.Timestamp) -> datetime.datetime:
    return ts.ToDatetime(tzinfo=datetime.UTC)
