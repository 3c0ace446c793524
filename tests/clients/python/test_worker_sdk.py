"""Worker SDK against a scripted fake of the executor's WorkerService
(tests/support/fake_worker_service.py: its own thread and loop, as a real executor
would run in its own process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from execplan.client import InvalidArgumentError
from execplan.client.values import from_value, to_struct
from execplan.v1 import events_pb2, execution_pb2
from execplan.v1 import worker_service_pb2 as pb
from execplan.worker import NonRetryableError, TaskContext, Worker, load_worker
from execplan.worker._stream import stream_loop_factory
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tests.support.fake_worker_service import FakeWorkerService, ServerThread

# -- helpers -------------------------------------------------------------------------------


@dataclass
class Harness:
    fake: FakeWorkerService
    server: ServerThread
    worker: Worker
    serving: asyncio.Task[None] | None = None

    def serve(self) -> asyncio.Task[None]:
        self.serving = asyncio.create_task(self.worker.serve())
        return self.serving


def ref(n: int, epoch: int = 1, execution: str = "ex-1") -> pb.AttemptRef:
    return pb.AttemptRef(
        execution_id=execution,
        task_id=f"t{n}",
        phase=execution_pb2.TASK_PHASE_MAIN,
        token=events_pb2.AttemptToken(attempt=1, lease_epoch=epoch),
    )


def dispatch(n: int, task_type: str, inputs: dict[str, object] | None = None) -> pb.Dispatch:
    return pb.Dispatch(
        attempt=ref(n),
        task_type=task_type,
        inputs=to_struct(inputs or {}),
        idempotency_key=f"ex-1/t{n}/1",
        workflow_name="wf",
        secrets={"token": "s3cret"},
        trace_context={"traceparent": "00-abc-def-01"},
    )


def has_results(r: pb.ConnectRequest) -> bool:
    return len(r.results) > 0


@contextlib.asynccontextmanager
async def harness(heartbeat_ms: int = 50, **worker_kwargs: object) -> AsyncIterator[Harness]:
    fake = FakeWorkerService(asyncio.get_running_loop(), heartbeat_ms=heartbeat_ms)
    server = ServerThread(fake)
    server.start()
    worker = Worker(server.address, worker_id="w-1", **worker_kwargs)  # type: ignore[arg-type]
    h = Harness(fake, server, worker)
    try:
        yield h
    finally:
        await worker.stop()
        if h.serving is not None:
            with contextlib.suppress(Exception):
                await h.serving
        server.stop()


def register_echo(worker: Worker) -> None:
    @worker.task("echo.async")
    async def echo_async(inputs: dict[str, object], ctx: TaskContext) -> dict[str, object]:
        return {"got": inputs, "task": ctx.task_id}

    @worker.task("echo.sync")
    def echo_sync(inputs: dict[str, object]) -> object:
        return inputs.get("x")


# -- registration --------------------------------------------------------------------------
async def test_register_message_carries_identity_capabilities_and_slots() -> None:
    async with harness(slots=3, labels={"zone": "a"}, environment="prod") as h:
        register_echo(h.worker)
        h.serve()
        first = await h.fake.next_request()
        reg = first.request.register
        assert reg.worker_id == "w-1"
        assert list(reg.task_types) == ["echo.async", "echo.sync"]
        assert dict(reg.labels) == {"zone": "a"}
        assert reg.environment == "prod"
        assert reg.slots == 3
        assert reg.sdk == "python/0.1"
        assert list(reg.running) == []


async def test_default_worker_id_is_host_pid_random() -> None:
    a, b = Worker(), Worker()
    assert a.worker_id != b.worker_id
    assert f"-{os.getpid()}-" in a.worker_id


async def test_invalid_argument_on_register_is_fatal() -> None:
    async with harness() as h:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="register.task_types", description="register at least one task type"
                )
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        h.fake.register_errors.append(
            status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT, message="no task types", details=[detail]
            )
        )
        with pytest.raises(InvalidArgumentError) as info:
            await asyncio.wait_for(h.worker.serve(), 5)
        assert info.value.violations == [("register.task_types", "register at least one task type")]
        assert isinstance(info.value.__cause__, grpc.aio.AioRpcError)


async def test_resource_exhausted_honours_retry_info_then_registers() -> None:
    async with harness() as h:
        register_echo(h.worker)
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=300_000_000))
        detail = any_pb2.Any()
        detail.Pack(retry)
        h.fake.register_errors.append(
            status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="busy", details=[detail])
        )
        h.serve()
        first = await h.fake.next_request()
        second = await h.fake.next_request(lambda r: r.HasField("register"))
        assert second.stream == 2
        assert second.at - first.at >= 0.28  # the server's hint, not the 0.2 s backoff base


# -- dispatch, ack, result -----------------------------------------------------------------
async def test_acks_for_one_message_are_batched_and_precede_results() -> None:
    async with harness() as h:
        register_echo(h.worker)
        h.serve()
        await h.fake.next_request()
        h.server.send(
            pb.ConnectResponse(
                dispatches=[
                    dispatch(1, "echo.async", {"a": 1}),
                    dispatch(2, "echo.sync", {"x": "two"}),
                    dispatch(3, "echo.sync", {"x": [1, None]}),
                ]
            )
        )
        acks = await h.fake.next_request(lambda r: len(r.acks) > 0)
        assert [a.attempt.task_id for a in acks.request.acks] == ["t1", "t2", "t3"]
        assert acks.request.acks[0].attempt == ref(1)  # the fencing token is echoed
        # Quick handlers' results may ride in the acks' message (the executor applies
        # its acks first), never in an earlier one.
        assert not [i for i in h.fake.log[: h.fake.log.index(acks)] if i.request.results]
        outputs: dict[str, object] = {}
        item = acks
        while True:
            for result in item.request.results:
                assert result.attempt.token.lease_epoch == 1
                outputs[result.attempt.task_id] = from_value(result.output)
            if len(outputs) == 3:
                break
            item = await h.fake.next_request(has_results)
        assert outputs == {"t1": {"got": {"a": 1.0}, "task": "t1"}, "t2": "two", "t3": [1.0, None]}


async def test_results_ready_together_share_one_message() -> None:
    n = 16
    async with harness(slots=n) as h:
        gate = threading.Event()

        @h.worker.task("gated")
        def gated(inputs: dict[str, object]) -> int:
            gate.wait(5)
            return 1

        h.serve()
        await h.fake.next_request()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(i, "gated") for i in range(n)]))
        await h.fake.next_request(lambda r: len(r.acks) == n)
        await asyncio.sleep(0.05)  # let every pool thread reach gate.wait
        gate.set()
        got, messages = 0, 0
        while got < n:
            item = await h.fake.next_request(has_results)
            got += len(item.request.results)
            messages += 1
        assert messages <= n // 2, f"{n} results took {messages} messages"


class Unreadable(Mapping[str, object]):
    """A mapping whose items cannot be read (a closed cursor, say)."""

    def __getitem__(self, key: str) -> object:
        raise RuntimeError("the rows are gone")

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


async def test_exceptions_become_error_info() -> None:
    class DeclinedError(NonRetryableError):
        pass

    class PermanentError(Exception):
        retryable = False

    async with harness() as h:

        @h.worker.task("fail")
        async def fail(inputs: dict[str, object]) -> None:
            kind = inputs["kind"]
            if kind == "value":
                raise ValueError("bad amount")
            if kind == "declined":
                raise DeclinedError("card declined")
            raise PermanentError("gone")

        @h.worker.task("unencodable")
        def unencodable(inputs: dict[str, object]) -> object:
            return object()

        # Refused by protobuf itself: too large for a double, not valid Unicode.
        @h.worker.task("too.large")
        def too_large(inputs: dict[str, object]) -> object:
            return {"n": 10**400}

        @h.worker.task("lone.surrogate")
        async def lone_surrogate(inputs: dict[str, object]) -> object:
            return ["\ud800"]

        # A value that contains itself: refused as too deep, not walked forever.
        @h.worker.task("cyclic")
        async def cyclic(inputs: dict[str, object]) -> object:
            loop: list[object] = []
            loop.append({"again": loop})
            return loop

        # An output whose reading raises: the attempt fails with that exception.
        @h.worker.task("unreadable")
        def unreadable(inputs: dict[str, object]) -> object:
            return {"rows": Unreadable()}

        # Errors protobuf would refuse as they are: a message that is not valid
        # Unicode (a surrogateescape'd file name), a str() that raises.
        @h.worker.task("bad.message")
        async def bad_message(inputs: dict[str, object]) -> object:
            raise FileNotFoundError(b"no /tmp/\xff".decode("utf-8", "surrogateescape"))

        @h.worker.task("unprintable")
        def unprintable(inputs: dict[str, object]) -> object:
            raise Unprintable

        h.serve()
        await h.fake.next_request()
        h.server.send(
            pb.ConnectResponse(
                dispatches=[
                    dispatch(1, "fail", {"kind": "value"}),
                    dispatch(2, "fail", {"kind": "declined"}),
                    dispatch(3, "fail", {"kind": "permanent"}),
                    dispatch(4, "unencodable"),
                    dispatch(5, "not.registered"),
                    dispatch(6, "too.large"),
                    dispatch(7, "lone.surrogate"),
                    dispatch(8, "cyclic"),
                    dispatch(9, "unreadable"),
                    dispatch(10, "bad.message"),
                    dispatch(11, "unprintable"),
                ]
            )
        )
        errors: dict[str, tuple[str, str, bool]] = {}
        while len(errors) < 11:
            item = await h.fake.next_request(has_results)
            for r in item.request.results:
                assert r.WhichOneof("outcome") == "error"
                errors[r.attempt.task_id] = (r.error.type, r.error.message, r.error.retryable)
                # `retry` decides on the executor; `retryable` says the same to old ones.
                retryable = r.error.retry == execution_pb2.ERROR_RETRY_RETRYABLE
                assert r.error.retry != execution_pb2.ERROR_RETRY_UNSPECIFIED
                assert retryable is r.error.retryable
        assert errors["t1"] == ("ValueError", "bad amount", True)
        assert errors["t2"] == ("DeclinedError", "card declined", False)
        assert errors["t3"] == ("PermanentError", "gone", False)
        assert errors["t4"][0] == "OutputEncodingError" and errors["t4"][2] is False
        assert errors["t5"][0] == "UnknownTaskType" and errors["t5"][2] is True
        assert errors["t6"][:1] == ("OutputEncodingError",) and errors["t6"][2] is False
        assert "too large" in errors["t6"][1]
        assert errors["t7"][:1] == ("OutputEncodingError",) and errors["t7"][2] is False
        assert errors["t8"][:1] == ("OutputEncodingError",) and errors["t8"][2] is False
        assert "too deep" in errors["t8"][1]
        assert errors["t9"] == ("RuntimeError", "the rows are gone", True)
        assert errors["t10"] == ("FileNotFoundError", "no /tmp/\\udcff", True)
        assert errors["t11"] == (
            "Unprintable",
            "(Unprintable: its message could not be read)",
            True,
        )


async def test_context_exposes_the_dispatch() -> None:
    seen: dict[str, object] = {}
    async with harness() as h:

        @h.worker.task("inspect")
        def inspect_ctx(inputs: dict[str, object], ctx: TaskContext) -> None:
            seen.update(
                execution_id=ctx.execution_id,
                task_id=ctx.task_id,
                attempt=ctx.attempt,
                lease_epoch=ctx.lease_epoch,
                idempotency_key=ctx.idempotency_key,
                task_type=ctx.task_type,
                workflow_name=ctx.workflow_name,
                secrets=ctx.secrets,
                trace_context=ctx.trace_context,
                deadline=ctx.deadline,
                cancelled=ctx.cancelled,
                thread=threading.current_thread().name,
            )

        h.serve()
        await h.fake.next_request()
        d = dispatch(1, "inspect")
        d.start_to_close_deadline.FromSeconds(2_000_000_000)
        h.server.send(pb.ConnectResponse(dispatches=[d]))
        item = await h.fake.next_request(has_results)
        assert item.request.results[0].output.WhichOneof("kind") == "null_value"
    assert seen["idempotency_key"] == "ex-1/t1/1"
    assert seen["secrets"] == {"token": "s3cret"}
    assert seen["trace_context"] == {"traceparent": "00-abc-def-01"}
    assert (seen["attempt"], seen["lease_epoch"], seen["cancelled"]) == (1, 1, False)
    assert (seen["task_type"], seen["workflow_name"]) == ("inspect", "wf")
    assert str(seen["deadline"]).startswith("2033-05-18 03:33:20+00:00")
    assert str(seen["thread"]).startswith("execplan-task")


async def test_previous_error_and_sub_plans_on_the_wire() -> None:
    """A dynamic task reads why its last attempt failed (`ctx.previous_error`) and
    answers with a SubPlan in any of its forms; each reaches the wire as
    TaskResult.sub_plan (docs/runtime-plans.md)."""
    from execplan.builder import Workflow as Built  # noqa: PLC0415
    from execplan.v1 import workflow_pb2  # noqa: PLC0415
    from execplan.worker import SubPlan  # noqa: PLC0415

    seen: list[object] = []
    built = Built("sub")
    built.task("a", "t.a")
    message = workflow_pb2.Workflow(name="sub")
    message.tasks.add(id="b", type="t.b")
    forms: dict[str, object] = {
        "dict": {
            "name": "sub",
            "tasks": [{"id": "a", "type": "t.a", "retry": {"initial_interval": "2s"}}],
        },
        "yaml": "name: sub\ntasks: [{id: a, type: t.a}]\n",
        "message": message,
        "builder": built,
    }
    async with harness() as h:

        @h.worker.task("agent.plan")
        def plan(inputs: dict[str, object], ctx: TaskContext) -> SubPlan:
            seen.append(ctx.previous_error)
            return SubPlan(forms[str(inputs["form"])], inputs={"goal": inputs["form"]})

        h.serve()
        await h.fake.next_request()
        dispatches = [dispatch(i, "agent.plan", {"form": f}) for i, f in enumerate(forms)]
        failed = execution_pb2.ErrorInfo(type="PlanInvalid", message="tasks[0].id: required")
        failed.details.update({"diagnostics": [{"code": "missing-required"}]})
        dispatches[0].previous_error.CopyFrom(failed)
        h.server.send(pb.ConnectResponse(dispatches=dispatches))
        results: dict[str, pb.TaskResult] = {}
        while len(results) < len(forms):
            item = await h.fake.next_request(has_results)
            results.update({r.attempt.task_id: r for r in item.request.results})
    assert all(r.WhichOneof("outcome") == "sub_plan" for r in results.values())
    as_dict, as_yaml, as_message, as_builder = (results[f"t{i}"].sub_plan for i in range(4))
    assert as_dict.WhichOneof("definition") == "source" and '"2s"' in as_dict.source
    assert as_yaml.source == forms["yaml"]
    assert as_message.workflow == message
    assert as_builder.workflow == built.build()
    assert from_value(as_dict.inputs.fields["goal"]) == "dict"
    previous = [p for p in seen if p is not None]
    assert len(previous) == 1 and seen.count(None) == 3
    error = previous[0]
    assert (error.type, error.message) == ("PlanInvalid", "tasks[0].id: required")  # type: ignore[attr-defined]
    assert error.details == {"diagnostics": [{"code": "missing-required"}]}  # type: ignore[attr-defined]


# -- heartbeats ---------------------------------------------------------------------------
async def test_heartbeats_flow_while_an_async_handler_blocks_the_loop() -> None:
    window: list[float] = []
    async with harness(heartbeat_ms=50) as h:

        @h.worker.task("hog")
        async def hog(inputs: dict[str, object], ctx: TaskContext) -> str:
            ctx.heartbeat({"pct": 10})
            window.append(time.monotonic())
            time.sleep(0.6)  # noqa: ASYNC251 - blocks the user's event loop on purpose
            window.append(time.monotonic())
            return "done"

        h.serve()
        await h.fake.next_request()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(1, "hog")]))
        await h.fake.next_request(has_results, within=5)
        start, end = window
        beats = [item for item in h.fake.log if item.request.heartbeats and start <= item.at <= end]
        # 0.6 s at 50 ms: ~12 rounds; a loop-bound heartbeat would produce none.
        assert len(beats) >= 6, len(beats)
        progress = [from_value(b.request.heartbeats[0].progress) for b in beats]
        assert progress[-1] == {"pct": 10.0}
        assert all(b.request.heartbeats[0].attempt == ref(1) for b in beats)


async def test_one_heartbeat_message_covers_every_running_attempt() -> None:
    async with harness(heartbeat_ms=50) as h:
        release = asyncio.Event()

        @h.worker.task("wait")
        async def wait(inputs: dict[str, object]) -> None:
            await release.wait()

        h.serve()
        await h.fake.next_request()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(i, "wait") for i in range(3)]))
        beat = await h.fake.next_request(lambda r: len(r.heartbeats) > 0)
        assert sorted(b.attempt.task_id for b in beat.request.heartbeats) == ["t0", "t1", "t2"]
        release.set()
        await h.fake.next_request(has_results)


# -- cancel, drain -------------------------------------------------------------------------
async def test_cancel_reaches_handlers_and_suppresses_their_results() -> None:
    events: list[str] = []
    async with harness() as h:
        stop_sync = threading.Event()

        @h.worker.task("slow.async")
        async def slow_async(inputs: dict[str, object], ctx: TaskContext) -> str:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                events.append(f"async cancelled={ctx.cancelled}")
                raise
            return "late"

        @h.worker.task("slow.sync")
        def slow_sync(inputs: dict[str, object], ctx: TaskContext) -> str:
            while not ctx.cancelled:
                time.sleep(0.01)
            events.append("sync saw cancelled")
            stop_sync.set()
            return "late"

        @h.worker.task("quick")
        def quick(inputs: dict[str, object]) -> str:
            return "quick"

        h.serve()
        await h.fake.next_request()
        h.server.send(
            pb.ConnectResponse(dispatches=[dispatch(1, "slow.async"), dispatch(2, "slow.sync")])
        )
        await h.fake.next_request(lambda r: len(r.acks) == 2)
        await asyncio.sleep(0.05)
        h.server.send(
            pb.ConnectResponse(
                cancels=[
                    pb.CancelAttempt(attempt=ref(1), reason="user"),
                    pb.CancelAttempt(attempt=ref(2), reason="user"),
                ]
            )
        )
        await asyncio.to_thread(stop_sync.wait, 5)
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(3, "quick")]))
        item = await h.fake.next_request(has_results)
        assert [r.attempt.task_id for r in item.request.results] == ["t3"]
        await asyncio.sleep(0.1)
        assert not [i for i in h.fake.log if i.request.results and i is not item]
        assert sorted(events) == ["async cancelled=True", "sync saw cancelled"]


async def test_server_drain_finishes_running_work_then_reconnects() -> None:
    """The server's drain (it is shutting down) ends this connection, not the
    worker: it finishes and delivers, half-closes, then comes back on a new stream
    (to the restarted server), taking work again."""
    async with harness() as h:

        @h.worker.task("slow")
        async def slow(inputs: dict[str, object]) -> str:
            await asyncio.sleep(0.3)
            return "finished"

        serving = h.serve()
        await h.fake.next_request()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(1, "slow")]))
        await h.fake.next_request(lambda r: len(r.acks) > 0)
        h.server.send(pb.ConnectResponse(drain=pb.Drain(reason="server shutdown")))
        status = await h.fake.next_request(lambda r: r.HasField("status"))
        assert status.request.status == pb.WorkerStatus(draining=True, free_slots=0)
        result = await h.fake.next_request(has_results)
        assert from_value(result.request.results[0].output) == "finished"
        again = await h.fake.next_request(lambda r: r.HasField("register"))
        assert again.stream == 2 and not again.request.HasField("status")
        assert list(again.request.register.running) == []  # delivered, not pending
        assert h.fake.half_closed == [1]
        assert not serving.done()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(2, "slow")]))
        result = await h.fake.next_request(has_results)
        assert result.stream == 2


async def test_local_drain_with_nothing_running_returns_promptly() -> None:
    async with harness() as h:
        register_echo(h.worker)
        serving = h.serve()
        await h.fake.next_request()
        await asyncio.wait_for(h.worker.drain(), 5)
        assert serving.done()
        status = await h.fake.next_request(lambda r: r.HasField("status"))
        assert status.request.status.draining


# -- reconnect ----------------------------------------------------------------------------
async def test_reconnect_reregisters_running_attempts_and_delivers_pending_result() -> None:
    async with harness() as h:
        release = threading.Event()

        @h.worker.task("long")
        def long(inputs: dict[str, object]) -> str:
            release.wait(10)
            return "survived"

        h.serve()
        await h.fake.next_request()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(1, "long")]))
        await h.fake.next_request(lambda r: len(r.acks) > 0)

        # The executor goes away entirely; the attempt finishes while we are offline.
        port = h.server.port
        h.server.stop()
        release.set()
        await asyncio.sleep(0.3)
        h.server = ServerThread(h.fake, port=port)
        h.server.start()

        again = await h.fake.next_request(lambda r: r.HasField("register"), within=15)
        assert list(again.request.register.running) == [ref(1)]
        result = await h.fake.next_request(has_results)
        assert result.stream == again.stream
        assert from_value(result.request.results[0].output) == "survived"


async def test_revoked_attempts_are_cancelled_and_their_results_dropped() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    async with harness() as h:

        @h.worker.task("wait")
        async def wait(inputs: dict[str, object], ctx: TaskContext) -> str:
            started.set()
            try:
                await ctx.wait_cancelled()
            finally:
                cancelled.set()
            return "never sent"

        @h.worker.task("quick")
        def quick(inputs: dict[str, object]) -> str:
            return "quick"

        h.serve()
        await h.fake.next_request()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(1, "wait")]))
        await h.fake.next_request(lambda r: len(r.acks) > 0)
        h.fake.revoke_next = [ref(1)]
        h.server.send("abort")
        again = await h.fake.next_request(lambda r: r.HasField("register"))
        assert list(again.request.register.running) == [ref(1)]
        await asyncio.wait_for(cancelled.wait(), 5)
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(2, "quick")]))
        item = await h.fake.next_request(has_results)
        assert [r.attempt.task_id for r in item.request.results] == ["t2"]


async def test_rejected_acks_and_results_cancel_the_attempt_and_drop_its_result() -> None:
    """A rejection means the executor no longer leases that attempt to us (it was
    re-queued, e.g. after a reconnect that raced a commit): stop running it."""
    started, cancelled = asyncio.Event(), asyncio.Event()
    async with harness() as h:

        @h.worker.task("wait")
        async def wait(inputs: dict[str, object], ctx: TaskContext) -> str:
            started.set()
            try:
                await ctx.wait_cancelled()
            finally:
                cancelled.set()
            return "never sent"

        @h.worker.task("quick")
        def quick(inputs: dict[str, object]) -> str:
            return "quick"

        h.serve()
        await h.fake.next_request()
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(1, "wait")]))
        await h.fake.next_request(lambda r: len(r.acks) > 0)
        # The handler starts once its ack is written; a rejection that overtakes the
        # start stops the attempt before it runs (and `cancelled` would never be set).
        await asyncio.wait_for(started.wait(), 5)
        h.server.send(
            pb.ConnectResponse(rejections=[pb.ResultRejected(attempt=ref(1), reason="stale")])
        )
        await asyncio.wait_for(cancelled.wait(), 5)
        h.server.send(pb.ConnectResponse(dispatches=[dispatch(2, "quick")]))
        item = await h.fake.next_request(has_results)
        assert [r.attempt.task_id for r in item.request.results] == ["t2"]
        await asyncio.sleep(0.1)
        assert not [i for i in h.fake.log if i.request.results and i is not item]


# -- loader --------------------------------------------------------------------------------
worker = Worker("127.0.0.1:1", worker_id="module-level")


def test_load_worker_by_module_and_attribute() -> None:
    assert load_worker(f"{__name__}") is worker
    assert load_worker(f"{__name__}:worker") is worker
    with pytest.raises(TypeError):
        load_worker(f"{__name__}:harness")
    with pytest.raises(ValueError, match="no attribute"):
        load_worker(f"{__name__}:nope")


# -- signals (Worker.run in a child process, as `execplan worker` runs it) -------------------
_SCRIPT = """
import asyncio, sys
from execplan.worker import Worker
worker = Worker(sys.argv[1], worker_id="signalled")

@worker.task("slow")
async def slow(inputs):
    await asyncio.sleep(inputs["seconds"])
    return "finished"

worker.run()
print("run returned", flush=True)
"""


async def _start_child(h: Harness, tmp_path: Path, seconds: float) -> asyncio.subprocess.Process:
    script = tmp_path / "child_worker.py"
    script.write_text(_SCRIPT)
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), h.server.address, stdout=asyncio.subprocess.PIPE
    )
    await h.fake.next_request(lambda r: r.register.worker_id == "signalled", within=20)
    h.server.send(pb.ConnectResponse(dispatches=[dispatch(1, "slow", {"seconds": seconds})]))
    await h.fake.next_request(lambda r: len(r.acks) > 0)
    return child


async def test_sigterm_drains_running_work_then_run_returns(tmp_path: Path) -> None:
    async with harness() as h:
        child = await _start_child(h, tmp_path, seconds=0.3)
        child.send_signal(signal.SIGTERM)
        status = await h.fake.next_request(lambda r: r.HasField("status"))
        assert status.request.status.draining
        result = await h.fake.next_request(has_results)
        assert from_value(result.request.results[0].output) == "finished"
        out, _ = await asyncio.wait_for(child.communicate(), 10)
        assert child.returncode == 0
        assert b"run returned" in out


async def test_second_signal_stops_at_once(tmp_path: Path) -> None:
    async with harness() as h:
        child = await _start_child(h, tmp_path, seconds=30)
        child.send_signal(signal.SIGINT)
        await h.fake.next_request(lambda r: r.HasField("status"))
        child.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(child.communicate(), 10)
        assert child.returncode == 0
        assert b"run returned" in out
        assert not [i for i in h.fake.log if i.request.results]


async def test_a_resent_dispatch_is_acked_again_but_not_run_twice() -> None:
    runs: list[str] = []
    async with harness() as h:
        release = asyncio.Event()

        @h.worker.task("once")
        async def once(inputs: dict[str, object], ctx: TaskContext) -> int:
            runs.append(ctx.task_id)
            await release.wait()
            return len(runs)

        h.serve()
        await h.fake.next_request()
        for _ in range(2):
            h.server.send(pb.ConnectResponse(dispatches=[dispatch(1, "once")]))
            await h.fake.next_request(lambda r: len(r.acks) > 0)
        release.set()
        result = await h.fake.next_request(has_results)
        await asyncio.sleep(0.1)
        assert runs == ["t1"]
        assert [i for i in h.fake.log if i.request.results] == [result]


def test_the_stream_thread_runs_on_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = stream_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
