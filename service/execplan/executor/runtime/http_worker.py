"""`builtin.http` runs inside the executor as a worker of its own.

The executor connects an in-process worker for the task type `builtin.http` to its
own worker sessions, exactly as a remote one registers: so an HTTP task is queued,
gated (limits, rate limits, breakers, cache), leased with a fencing token, timed
out, retried and recorded like any other task, and nothing in the core knows it is
special. The worker acknowledges each dispatch at once, heartbeats while the call
runs, and reports the response (`execplan.httpcall.client`) as a result:

    output   {"status": 200, "headers": {...}, "body": <JSON or text>}
    usage    what the response says the call used, by the task's `usage` input
             (`execplan.httpcall.usage_map`), beside the output
    error    HttpStatus / RateLimited (with retry_after) / HttpError / HttpTimeout /
             ResponseTooLarge / HttpRequestInvalid / HttpOriginNotAllowed /
             UsageMappingError

At most `slots` calls run at once (its slots); each is an asyncio task off the pump,
so a slow server holds up nothing else. A cancel (timeout, cancelled execution)
cancels the call. After a restart its attempts are re-leased like any worker's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from execplan.aio import cancel_and_wait
from execplan.executor.expressions.bindings import Literal, Template
from execplan.executor.plan_view import NodeView
from execplan.executor.runtime.workers import WorkerConn
from execplan.executor.values import fill_value, from_struct
from execplan.httpcall import rules, usage_map
from execplan.httpcall.client import HttpCaller, HttpFailure, HttpOutcome, build_request
from execplan.usage.codec import encode_usage
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws

log = logging.getLogger("execplan.executor")

TYPE = "builtin.http"
WORKER_ID = "builtin.http"
HEARTBEAT_S = 2.0

Connect = Callable[
    [ws.WorkerRegistration, Callable[[ws.ConnectResponse], None], "str | None"],
    "tuple[WorkerConn, list[ws.AttemptRef]]",
]


def plan_origin(node: NodeView) -> str:
    """The origin a builtin.http node may call: the literal start of its `url`."""
    url = dict(node.inputs.fields).get("url")
    if isinstance(url, Literal) and isinstance(url.value, str):
        return rules.literal_origin(url.value, whole=True)
    if isinstance(url, Template) and url.parts and isinstance(url.parts[0], str):
        return rules.literal_origin(url.parts[0], whole=False)
    raise rules.HttpRuleError("the url does not name its origin literally")


class HttpWorker:
    def __init__(
        self,
        *,
        connect: Connect,
        message: Callable[[WorkerConn, ws.ConnectRequest], None],
        node_of: Callable[[str, str], NodeView | None],
        now_ms: Callable[[], int],
        slots: int = 32,
        allow: frozenset[str] = frozenset(),
    ) -> None:
        self._connect = connect
        self._message = message
        self._node_of = node_of
        self._now_ms = now_ms
        self._slots = slots
        self._allow = allow
        self._caller: HttpCaller | None = None
        self._conn: WorkerConn | None = None
        self._calls: dict[tuple[str, str, int, int, int], asyncio.Task[None]] = {}

    def start(self) -> None:
        """Connects (once) to the engine's worker sessions."""
        if self._conn is not None:
            return
        self._caller = HttpCaller(max_concurrent=self._slots, allow=self._allow)
        registration = ws.WorkerRegistration(
            worker_id=WORKER_ID,
            task_types=[TYPE],
            slots=self._slots,
            sdk="execplan-executor",
        )
        self._conn, _ = self._connect(registration, self._receive, None)

    async def stop(self) -> None:
        calls, self._calls = list(self._calls.values()), {}
        await cancel_and_wait(*calls)
        if self._caller is not None:
            await self._caller.close()

    # -- what the engine sends -------------------------------------------------------
    def _receive(self, response: ws.ConnectResponse) -> None:
        for dispatch in response.dispatches:
            key = _key(dispatch.attempt)
            self._calls[key] = asyncio.get_running_loop().create_task(
                self._run(key, dispatch), name=f"execplan-http-{dispatch.attempt.task_id}"
            )
        for cancel in response.cancels:
            call = self._calls.pop(_key(cancel.attempt), None)
            if call is not None:
                call.cancel()

    async def _run(self, key: tuple[str, str, int, int, int], dispatch: ws.Dispatch) -> None:
        conn = self._conn
        assert conn is not None and self._caller is not None
        ref = dispatch.attempt
        self._message(conn, ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=ref)]))
        beat = asyncio.get_running_loop().create_task(self._heartbeats(conn, ref))
        used: dict[str, float] = {}
        try:
            outcome, used = await self._call(dispatch)
        except asyncio.CancelledError:
            return  # cancelled by the engine: no result, as for any cancelled attempt
        except Exception as error:  # a bug here must not leave the attempt hanging
            log.exception("builtin.http failed unexpectedly")
            outcome = HttpOutcome(error=_failure("HttpError", str(error), retryable=True))
        finally:
            beat.cancel()
            self._calls.pop(key, None)
        self._message(conn, ws.ConnectRequest(results=[_result(ref, outcome, used)]))

    async def _call(self, dispatch: ws.Dispatch) -> tuple[HttpOutcome, dict[str, float]]:
        """The response, and the usage it holds by the task's `usage` mapping."""
        assert self._caller is not None
        ref = dispatch.attempt
        node = self._node_of(ref.execution_id, ref.task_id)
        inputs = from_struct(dispatch.inputs)
        try:
            if node is None:
                raise rules.HttpRuleError("the task is not running here any more")
            timeout = rules.DEFAULT_TIMEOUT_MS
            if dispatch.HasField("start_to_close_deadline"):
                left = dispatch.start_to_close_deadline.ToMilliseconds() - self._now_ms()
                timeout = max(1, min(left, rules.MAX_TIMEOUT_MS))
            request = build_request(inputs, plan_origin(node), timeout)
            # Checked before sending: a bad mapping spends nothing.
            mapping = usage_map.parse(inputs[usage_map.KEY]) if usage_map.KEY in inputs else {}
        except rules.HttpRuleError as error:
            failed = _failure("HttpRequestInvalid", str(error), retryable=False)
            return HttpOutcome(error=failed), {}
        outcome = await self._caller.call(request, dict(dispatch.secrets))
        if outcome.error is not None or not mapping:
            return outcome, {}  # a status not expected is not measured
        try:
            return outcome, usage_map.measure(mapping, outcome.output)
        except usage_map.UsageMappingError as error:  # never silently zero
            return HttpOutcome(error=_failure("UsageMappingError", str(error), retryable=False)), {}

    async def _heartbeats(self, conn: WorkerConn, ref: ws.AttemptRef) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self._message(conn, ws.ConnectRequest(heartbeats=[ws.TaskHeartbeat(attempt=ref)]))


def _key(ref: ws.AttemptRef) -> tuple[str, str, int, int, int]:
    return (ref.execution_id, ref.task_id, ref.phase, ref.token.attempt, ref.token.lease_epoch)


def _failure(kind: str, message: str, *, retryable: bool) -> HttpFailure:
    return HttpFailure(kind, message, retryable)


def _result(ref: ws.AttemptRef, outcome: HttpOutcome, used: dict[str, float]) -> ws.TaskResult:
    result = ws.TaskResult(attempt=ref)
    if outcome.error is None:
        fill_value(result.output, outcome.output)
        if used:  # beside the output: counted with the result (docs/usage.md)
            encode_usage(used, result.usage)
        return result
    failure = outcome.error
    retry = ex.ERROR_RETRY_RETRYABLE if failure.retryable else ex.ERROR_RETRY_NON_RETRYABLE
    result.error.CopyFrom(
        ex.ErrorInfo(
            type=failure.type, message=failure.message, retryable=failure.retryable, retry=retry
        )
    )
    if failure.retry_after_ms:
        result.error.retry_after.FromMilliseconds(failure.retry_after_ms)
    return result
