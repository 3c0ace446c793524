"""RegisterPlan keeps every version of a workflow by name; GetPlan resolves `NAME`
(the latest registered) and `NAME@VERSION` exactly. On SQLite and PostgreSQL (the
names live in the store, shared by replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from execplan.client import (
    AlreadyExistsError,
    ExecutorClient,
    InvalidArgumentError,
    NotFoundError,
)
from store.pg import pg_dsn, pg_server, where  # type: ignore[import-not-found]

from tests.support.server import serving

__all__ = ["pg_dsn", "pg_server", "where"]  # fixtures, imported for pytest

REVIEW = """
name: review
version: "{version}"
tasks:
  - id: check
    type: t.check{suffix}
"""


def review(version: str, suffix: str = "") -> str:
    return REVIEW.format(version=version, suffix=suffix)


@pytest.fixture
async def client(where: str) -> AsyncIterator[ExecutorClient]:
    async with serving(where) as (server, _), ExecutorClient(server.address) as client:
        yield client


async def test_every_version_is_kept_and_the_latest_is_the_default(
    client: ExecutorClient,
) -> None:
    one = await client.register(source=review("1"))
    two = await client.register(source=review("2", "_v2"))
    assert (one.workflow_name, one.workflow_version, one.created) == ("review", "1", True)
    assert (two.workflow_version, two.created) == ("2", True)
    assert one.plan_id != two.plan_id
    assert (await client.get_plan(workflow="review@1")).plan_id == one.plan_id
    assert (await client.get_plan(workflow="review@2")).plan_id == two.plan_id
    assert (await client.get_plan(workflow="review")).plan_id == two.plan_id
    # Registering v1 again, unchanged, is a no-op: it does not become the latest.
    again = await client.register(source=review("1"))
    assert (again.plan_id, again.created) == (one.plan_id, False)
    assert (await client.get_plan(workflow="review")).plan_id == two.plan_id


async def test_a_version_is_immutable(client: ExecutorClient) -> None:
    first = await client.register(source=review("1"))
    with pytest.raises(AlreadyExistsError) as caught:
        await client.register(source=review("1", "_changed"))
    assert caught.value.reason == "VERSION_EXISTS"
    assert caught.value.metadata == {"workflow": "review@1", "planId": first.plan_id}
    assert (await client.get_plan(workflow="review@1")).plan_id == first.plan_id


async def test_concurrent_registrations_of_one_version_have_one_winner(
    client: ExecutorClient,
) -> None:
    attempts = [client.register(source=review("7", f"_{i}")) for i in range(6)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(e, AlreadyExistsError) for e in lost)
    assert (await client.get_plan(workflow="review@7")).plan_id == won[0].plan_id


async def test_an_unversioned_workflow_moves_with_each_registration(
    client: ExecutorClient,
) -> None:
    first = await client.register(source=review("").replace('version: ""\n', ""))
    second = await client.register(source=review("", "_b").replace('version: ""\n', ""))
    assert first.workflow_version == "" and second.created
    assert (await client.get_plan(workflow="review")).plan_id == second.plan_id


async def test_register_from_a_plan_or_a_workflow_message(client: ExecutorClient) -> None:
    plan = await client.compile(review("3"))
    assert await client.register_plan(plan) == plan.plan_id
    from execplan.v1 import workflow_pb2  # noqa: PLC0415

    message = workflow_pb2.Workflow(name="review", version="4")
    message.tasks.add(id="check", type="t.check")
    registered = await client.register(workflow=message)
    assert registered.workflow_version == "4"
    assert (await client.get_plan(workflow="review")).plan_id == registered.plan_id


async def test_unknown_names_and_bad_requests(client: ExecutorClient) -> None:
    with pytest.raises(NotFoundError, match="review@9 is not registered"):
        await client.get_plan(workflow="review@9")
    with pytest.raises(NotFoundError, match="nothing is not registered"):
        await client.get_plan(workflow="nothing")
    with pytest.raises(InvalidArgumentError, match="not both"):
        await client.get_plan("sha256:x", workflow="review")
    spaced = review("1 beta")
    with pytest.raises(InvalidArgumentError, match="without spaces"):
        await client.register(source=spaced)


async def test_plans_of_a_newer_format_register_but_do_not_start(
    client: ExecutorClient,
) -> None:
    # A plan this executor cannot run (a format above plan_view.RUNNABLE_FORMAT_VERSION,
    # e.g. hand-written) is refused at the start instead of run wrong.
    from execplan.client import FailedPreconditionError  # noqa: PLC0415

    plan = await client.compile("name: later\ntasks:\n  - {id: a, type: t}\n")
    plan.format_version = 99
    plan.plan_id = "sha256:" + "9" * 64
    with pytest.raises(FailedPreconditionError, match="format_version 99"):
        await client.start(plan=plan)
