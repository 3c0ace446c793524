"""Fuzzing the wire: malformed and truncated protobuf bytes to every RPC of every
service, and random message sequences on the worker stream. The server never
answers INTERNAL or UNKNOWN, never goes down, and its store stays consistent: a
normal workflow runs afterwards and every history is gap-free.

The server runs on its own thread and loop for the whole module, so hypothesis
drives it from plain synchronous tests (grpc's sync client).
Case counts are recorded in docs/security.md (`pytest --hypothesis-show-statistics`).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.config import ServerConfig
from execplan.executor.runtime.engine import EngineConfig
from execplan.server import Component, ExecplanServer, ExecutorComponent, PlannerComponent
from execplan.v1 import (
    execution_pb2,
    executor_service_pb2,
    executor_service_pb2_grpc,
    planner_service_pb2,
    worker_service_pb2,
)
from execplan.worker import Worker
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .rpcs import ALL_RPCS, OPEN_RPCS, Rpc

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
# Worker sessions take ~10-50 ms each (stream setup, paced writes).
FUZZ_STREAMS = settings(FUZZ, max_examples=250)
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
TASK_TYPE = "fz.t"
WORKFLOW = f"""
name: fuzzed
tasks:
  - {{id: a, type: {TASK_TYPE}, retry: {{max_attempts: 50, initial_interval: 10ms}}}}
  - {{id: b, type: {TASK_TYPE}, retry: {{max_attempts: 50, initial_interval: 10ms}}}}
  - {{id: c, type: {TASK_TYPE}, depends_on: [a, b]}}
"""


class Served:
    """An execplan server on a thread of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.address = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        config = ServerConfig(
            listen="127.0.0.1:0",
            db_path=str(self.root / "execplan.db"),
            grace_seconds=0.5,
            max_message_bytes=1024 * 1024,
        )
        engine = EngineConfig(ack_deadline_ms=500, reconnect_grace_ms=200, recovery_grace_ms=200)
        executor = ExecutorComponent(config.db_path, config=engine, silence_ms=2_000)
        components: list[Component] = [executor, PlannerComponent(config)]
        async with ExecplanServer(config, components) as server:
            self.address = server.address
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Served:
        self._thread.start()
        assert self._ready.wait(15), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with Served(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


@pytest.fixture(scope="module")
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.address) as ch:
        yield ch


def _identity(b: bytes) -> bytes:
    return b


def call_raw(channel: grpc.Channel, rpc: Rpc, payloads: list[bytes]) -> grpc.StatusCode:
    kw: dict[str, Any] = {"request_serializer": _identity, "response_deserializer": _identity}
    try:
        if not rpc.client_streaming and not rpc.server_streaming:
            channel.unary_unary(rpc.path, **kw)(payloads[0], timeout=5)
        elif not rpc.client_streaming:
            for _ in channel.unary_stream(rpc.path, **kw)(payloads[0], timeout=0.5):
                pass
        else:
            for _ in channel.stream_stream(rpc.path, **kw)(iter(payloads), timeout=2):
                pass
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# Valid messages of each RPC's request type, to truncate and mutate.
def _seeds() -> list[bytes]:
    struct = struct_pb2.Struct()
    struct.update({"k": [1, "two", {"three": None}]})
    messages: list[Any] = [
        planner_service_pb2.CompilePlanRequest(source=WORKFLOW),
        executor_service_pb2.StartExecutionRequest(source=WORKFLOW, inputs=struct),
        executor_service_pb2.GetExecutionRequest(execution_id="x" * 30),
        executor_service_pb2.ListExecutionsRequest(page_size=3),
        executor_service_pb2.SendEventRequest(execution_id="e", request_id="r"),
        worker_service_pb2.ConnectRequest(
            register=worker_service_pb2.WorkerRegistration(
                worker_id="w", task_types=["a"], labels={"k": "v"}, slots=2
            )
        ),
    ]
    return [m.SerializeToString() for m in messages]


SEEDS = _seeds()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "spliced"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    seed = draw(st.sampled_from(SEEDS))
    if kind == "truncated":
        return seed[: draw(st.integers(0, max(0, len(seed) - 1)))]
    if kind == "flipped":
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    cut = draw(st.integers(0, len(seed)))
    return seed[:cut] + draw(st.binary(max_size=40)) + seed[cut:]


@FUZZ
@given(st.sampled_from(ALL_RPCS + OPEN_RPCS), st.lists(damaged(), min_size=1, max_size=4))
def test_malformed_bytes_on_every_rpc(
    channel: grpc.Channel, rpc: Rpc, payloads: list[bytes]
) -> None:
    code = call_raw(channel, rpc, payloads)
    assert code not in BAD, f"{rpc.path} answered {code.name} to {payloads!r}"


def test_every_rpc_survives_its_hardest_inputs(channel: grpc.Channel) -> None:
    """Deterministic corner cases on every RPC: empty, one invalid tag, a huge length
    prefix, deeply nested Struct bytes, and a message over the size limit."""
    nested = b""
    for _ in range(200):  # Value{list_value{values{...}}}: past protobuf's recursion limit
        nested = b"\x32" + _varint(len(nested) + 2) + b"\x0a" + _varint(len(nested)) + nested
    cases = [b"", b"\x00", b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f", nested, b"\x0a" * 2_000_000]
    for rpc in ALL_RPCS + OPEN_RPCS:
        for payload in cases:
            code = call_raw(channel, rpc, [payload])
            assert code not in BAD, f"{rpc.path} answered {code.name} to {payload[:20]!r}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- the worker stream -----------------------------------------------------------------
def _ref(rng: random.Random, dispatched: list[Any]) -> Any:
    phase: Any = rng.randrange(0, 4)  # also values the enum does not name
    ref = worker_service_pb2.AttemptRef(
        execution_id=rng.choice(["", "x", "nope", "\u00e9" * 3]),
        task_id=rng.choice(["a", "b", "c", "", "zz"]),
        phase=phase,
    )
    if dispatched and rng.random() < 0.7:
        ref.CopyFrom(rng.choice(dispatched))
        if rng.random() < 0.5:  # a stale or forged fencing token
            ref.token.attempt = max(0, ref.token.attempt + rng.randint(-2, 2))
            ref.token.lease_epoch = max(0, ref.token.lease_epoch + rng.randint(-2, 2))
    return ref


STEPS = ["ack", "beat", "ok", "err", "status", "reg", "junk"]


@st.composite
def worker_sessions(draw: st.DrawFn) -> tuple[list[str], int, list[bytes]]:
    """A sequence of message kinds (usually a registration first), a seed for the
    details (used on grpc's request thread, where hypothesis cannot draw), and
    garbage for the `junk` steps."""
    steps = draw(st.lists(st.sampled_from(STEPS), max_size=8))
    if draw(st.integers(0, 9)) > 0:
        steps.insert(0, "register")
    return steps, draw(st.integers(0, 2**32)), draw(st.lists(damaged(), min_size=8, max_size=8))


def _realize(step: str, rng: random.Random, dispatched: list[Any], junk: list[bytes]) -> bytes:
    m = worker_service_pb2.ConnectRequest()
    if step == "register":
        m.register.worker_id = rng.choice(["fz-1", "fz-2", ""])
        m.register.task_types.extend(rng.sample([TASK_TYPE, TASK_TYPE, "", "other"], 2))
        m.register.slots = rng.randrange(0, 4)
    elif step == "ack":
        m.acks.add().attempt.CopyFrom(_ref(rng, dispatched))
    elif step == "beat":
        m.heartbeats.add().attempt.CopyFrom(_ref(rng, dispatched))
    elif step == "ok":
        result = m.results.add()
        result.attempt.CopyFrom(_ref(rng, dispatched))
        result.output.string_value = rng.choice(["", "ok", "\u2603" * 10])
    elif step == "err":
        result = m.results.add()
        result.attempt.CopyFrom(_ref(rng, dispatched))
        result.error.type = rng.choice(["", "Boom"])
        result.error.retryable = rng.random() < 0.5
    elif step == "status":
        m.status.free_slots = rng.choice([0, 1, 2**32 - 1])
        m.status.draining = rng.random() < 0.5
    elif step == "reg":
        m.register.worker_id = "again"
    else:
        return rng.choice(junk)
    return m.SerializeToString()


@FUZZ_STREAMS
@given(worker_sessions())
def test_random_worker_stream_sequences(
    channel: grpc.Channel, session: tuple[list[str], int, list[bytes]]
) -> None:
    steps, seed, junk = session
    rng = random.Random(seed)
    dispatched: list[Any] = []

    def requests() -> Iterator[bytes]:
        for step in steps:
            yield _realize(step, rng, dispatched, junk)
            time.sleep(0.002)  # let dispatches arrive, so later steps can answer them

    connect = next(r for r in ALL_RPCS if r.name == "Connect")
    call = channel.stream_stream(
        connect.path, request_serializer=_identity, response_deserializer=_identity
    )(requests(), timeout=3)
    try:
        for raw in call:
            reply = worker_service_pb2.ConnectResponse.FromString(raw)
            dispatched.extend(d.attempt for d in reply.dispatches)
    except grpc.RpcError as err:
        code = err.code()
        assert code not in BAD, f"{code.name} for {steps!r} (seed {seed})"


@pytest.fixture(scope="module", autouse=True)
def work_in_flight(served: Served, channel: grpc.Channel) -> Iterator[list[str]]:
    """Executions of the fuzzed task type, started before the fuzz so fuzz workers
    receive real dispatches (and answer them with valid and forged tokens); after the
    module they must still finish normally with a well-behaved worker."""
    stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
    ids = [
        stub.StartExecution(
            executor_service_pb2.StartExecutionRequest(source=WORKFLOW)
        ).execution_id
        for _ in range(3)
    ]
    yield ids
    asyncio.run(_finish_normally(served.address, ids))
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def _finish_normally(address: str, ids: list[str]) -> None:
    worker = Worker(address)
    worker.task(TASK_TYPE)(lambda inputs, ctx: {"ok": True})
    running = asyncio.create_task(worker.serve())
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(ch)
            fresh = await stub.StartExecution(
                executor_service_pb2.StartExecutionRequest(source=WORKFLOW)
            )
            for execution_id in ids:
                await _check_finishes(stub, execution_id)
            final = await _check_finishes(stub, fresh.execution_id)
            assert final == execution_pb2.EXECUTION_STATE_SUCCEEDED
    finally:
        await worker.stop()
        running.cancel()


async def _check_finishes(stub: Any, execution_id: str) -> Any:
    """Waits for a terminal state (fuzzed results may legitimately fail a task);
    checks the history is gap-free; returns the state."""
    terminal = {
        execution_pb2.EXECUTION_STATE_SUCCEEDED,
        execution_pb2.EXECUTION_STATE_FAILED,
    }
    async with asyncio.timeout(30):
        while True:
            got = await stub.GetExecution(
                executor_service_pb2.GetExecutionRequest(execution_id=execution_id)
            )
            if got.execution.state in terminal:
                break
            await asyncio.sleep(0.05)
    history = await stub.GetExecutionHistory(
        executor_service_pb2.GetExecutionHistoryRequest(execution_id=execution_id)
    )
    sequences = [e.sequence for e in history.events]
    assert sequences == list(range(1, len(sequences) + 1)), "history has gaps or repeats"
    return got.execution.state
