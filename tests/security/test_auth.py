"""Authentication and roles, for every RPC of every service (docs/security.md).

Table: each caller (no credentials, an unknown token, and each role by token over
TLS, then by client certificate over mutual TLS) x each RPC, called with an empty
request. An allowed call may still fail (INVALID_ARGUMENT, NOT_FOUND, ...) but never
with UNAUTHENTICATED or PERMISSION_DENIED; a denied one fails with exactly those.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2
from execplan.wire.auth import TokenFileError, TokenTable, allowed, hash_token
from execplan.worker import Worker
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import TOKENS, WORKER_TYPES, Pki, ServerFactory, bearer, secure_channel
from .rpcs import ALL_RPCS, Rpc, call_raw

PLANNER = "execplan.v1.PlannerService"
EXECUTOR = "execplan.v1.ExecutorService"
WORKER = "execplan.v1.WorkerService"

# Written out, not derived from execplan.wire.auth: this is the specification.
MAY_CALL = {
    "client": {PLANNER, EXECUTOR},
    "worker": {WORKER},
    "admin": {PLANNER, EXECUTOR, WORKER},
}
# A viewer reads: whole services above, single methods here.
VIEWER_MAY_CALL = {
    f"/{PLANNER}/CompilePlan",
    f"/{PLANNER}/ValidateWorkflow",
    *(
        f"/{EXECUTOR}/{name}"
        for name in (
            "GetExecution",
            "ListExecutions",
            "WatchExecution",
            "WatchExecutions",
            "GetExecutionHistory",
            "GetPlan",
            "ListPlans",
            "ReplayExecution",
            "ListCircuitBreakers",
            "ListWorkers",
            "ListLimits",
            "GetUsage",
            "WatchTaskStream",
            "GetSchedule",
            "ListSchedules",
        )
    ),
}
# Server-wide settings and deleting history: admins only, not clients.
ADMIN_ONLY = {
    f"/{EXECUTOR}/{name}"
    for name in ("SetRateLimit", "DeleteRateLimit", "PurgeCache", "PurgeExecutions")
}


def may_call(role: str, rpc: Rpc) -> bool:
    if role == "viewer":
        return rpc.path in VIEWER_MAY_CALL
    if role == "client" and rpc.path in ADMIN_ONLY:
        return False
    return rpc.service in MAY_CALL[role]


DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def expected(role: str | None, rpc: Rpc) -> grpc.StatusCode | None:
    """The auth code the call must get, or None when it must pass authorization."""
    if role is None:
        return grpc.StatusCode.UNAUTHENTICATED
    return None if may_call(role, rpc) else grpc.StatusCode.PERMISSION_DENIED


def test_the_table_covers_every_rpc() -> None:
    assert len(ALL_RPCS) == 36
    for rpc in ALL_RPCS:
        for role in (*MAY_CALL, "viewer"):
            assert allowed(role, rpc.path) == may_call(role, rpc), (role, rpc.path)


def check(rpc: Rpc, role: str | None, got: grpc.StatusCode) -> str | None:
    want = expected(role, rpc)
    if want is None and got in DENIED:
        return f"{role} {rpc.path}: got {got.name}, expected to pass auth"
    if want is not None and got != want:
        return f"{role} {rpc.path}: got {got.name}, expected {want.name}"
    return None


async def run_table(
    channel: grpc.aio.Channel, callers: dict[str | None, tuple[tuple[str, str], ...]]
) -> None:
    problems = []
    for rpc in ALL_RPCS:
        for role, metadata in callers.items():
            got = await call_raw(channel, rpc, metadata=metadata, deadline=2.0)
            problem = check(rpc, role, got)
            if problem:
                problems.append(problem)
    assert not problems, "\n".join(problems)


async def test_every_rpc_by_token_role_over_tls(secured: ServerFactory, pki: Pki) -> None:
    async with secured(tls=True) as server, secure_channel(pki, server.address) as channel:
        await run_table(
            channel,
            {
                None: (),
                "client": bearer("client"),
                "worker": bearer("worker"),
                "admin": bearer("admin"),
                "viewer": bearer("viewer"),
            },
        )
        # Unknown token, malformed header: UNAUTHENTICATED everywhere, never echoed.
        for metadata in ((("authorization", "Bearer nope"),), (("authorization", "Basic x"),)):
            for rpc in ALL_RPCS:
                assert await call_raw(channel, rpc, metadata=metadata) == (
                    grpc.StatusCode.UNAUTHENTICATED
                ), rpc.path


@pytest.mark.parametrize("role", ["client", "worker", "admin"])
async def test_every_rpc_by_certificate_role_over_mtls(
    secured: ServerFactory, pki: Pki, role: str
) -> None:
    async with (
        secured(mtls=True) as server,
        secure_channel(pki, server.address, f"ci-{role}") as channel,
    ):
        await run_table(channel, {role: ()})
        # A token wins over the certificate: the worker cert with the client token.
        if role == "worker":
            await run_table(channel, {"client": bearer("client")})


async def test_plaintext_loopback_with_tokens(secured: ServerFactory) -> None:
    async with secured(tls=False) as server, grpc.aio.insecure_channel(server.address) as ch:
        await run_table(ch, {None: (), "client": bearer("client"), "worker": bearer("worker")})


async def test_unlisted_certificate_is_unauthenticated(secured: ServerFactory, pki: Pki) -> None:
    async with secured(mtls=True) as server:
        async with secure_channel(pki, server.address, "stranger") as channel:
            for rpc in ALL_RPCS:
                assert await call_raw(channel, rpc) == grpc.StatusCode.UNAUTHENTICATED
        # No client certificate at all: the TLS handshake itself fails.
        async with secure_channel(pki, server.address) as channel:
            code = await call_raw(channel, ALL_RPCS[0], metadata=bearer("admin"))
            assert code == grpc.StatusCode.UNAVAILABLE


async def test_health_and_reflection_stay_open(secured: ServerFactory, pki: Pki) -> None:
    async with secured(mtls=False) as server, secure_channel(pki, server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        call = reflect()
        await call.write(b"\x3a\x01\x2a")  # list_services: "*"
        assert await call.read() != grpc.aio.EOF
        call.cancel()


async def test_sdks_over_mtls_with_token_and_task_type_limits(
    secured: ServerFactory, pki: Pki
) -> None:
    """ExecutorClient and Worker with TLS + token: a listed type runs end to end; a
    worker registering an unlisted type is refused with PERMISSION_DENIED."""
    async with secured(mtls=True) as server:
        tls: dict[str, Any] = {
            "tls_ca": pki.ca,
            "tls_cert": pki.cert("stranger"),
            "tls_key": pki.key("stranger"),
        }
        worker = Worker(server.address, token=TOKENS["worker"], **tls)
        worker.task(WORKER_TYPES[0])(lambda inputs, ctx: {"echo": inputs["v"]})
        running = asyncio.create_task(worker.serve())
        try:
            async with ExecutorClient(server.address, token=TOKENS["client"], **tls) as client:
                source = (
                    f"name: s\ntasks:\n  - {{id: a, type: {WORKER_TYPES[0]}, inputs: {{v: 7}}}}\n"
                )
                started = await client.start(source=source)
                async with asyncio.timeout(15):
                    async for event in client.watch(started.execution_id):
                        if event.HasField("execution_completed"):
                            break
                execution = await client.get(started.execution_id)
                assert execution.state == execution_pb2.EXECUTION_STATE_SUCCEEDED, execution.error
        finally:
            await worker.stop()
            running.cancel()
        rogue = Worker(server.address, token=TOKENS["worker"], **tls)
        rogue.task("sec.not-allowed")(lambda inputs, ctx: {})
        with pytest.raises(Exception, match=r"PERMISSION_DENIED|may not register") as info:
            async with asyncio.timeout(10):
                await rogue.serve()
        assert "sec.not-allowed" in str(info.value)


async def test_client_token_cannot_connect_as_worker(secured: ServerFactory, pki: Pki) -> None:
    async with secured(tls=True) as server:
        worker = Worker(server.address, token=TOKENS["client"], tls_ca=pki.ca)
        worker.task(WORKER_TYPES[0])(lambda inputs, ctx: {})
        with pytest.raises(Exception, match=r"PERMISSION_DENIED|may not call"):
            async with asyncio.timeout(10):
                await worker.serve()


def test_token_file_parsing() -> None:
    table = TokenTable.parse(
        f"a client sha256:{hash_token('x')}  # comment\n\n"
        "b worker cert:w1 t.a,t.b\nc worker cert:w2 *\n"
    )
    assert table.by_hash[hash_token("x")].role == "client"
    assert table.by_cert["w1"].task_types == frozenset({"t.a", "t.b"})
    assert table.by_cert["w2"].task_types is None
    for bad in (
        "a client plaintext-token",
        "a superuser sha256:" + "0" * 64,
        "a client sha256:abc",
        "a client cert:x t.a",
        "a",
    ):
        with pytest.raises(TokenFileError):
            TokenTable.parse(bad)
