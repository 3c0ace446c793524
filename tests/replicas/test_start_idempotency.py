"""A StartExecution repeated on another replica that has the plan registered already
(so it leaves the request_id lookup to the store's create_execution): the same
execution, created once; a different request with that request_id is refused."""

from __future__ import annotations

import pytest
from execplan.client import AlreadyExistsError, ExecutorClient

from .test_routing import CHAIN, replica


async def test_a_repeat_on_a_replica_with_the_plan_cached(pg_dsn: str) -> None:
    async with (
        replica(pg_dsn, "a") as a,
        replica(pg_dsn, "b") as b,
        ExecutorClient(a.address) as on_a,
        ExecutorClient(b.address) as on_b,
    ):
        # b registers (and caches) the plan with a start of its own.
        await on_b.start(source=CHAIN, inputs={"x": 0}, request_id="b-only")
        first = await on_a.start(source=CHAIN, inputs={"x": 1}, request_id="r-1")
        again = await on_b.start(source=CHAIN, inputs={"x": 1}, request_id="r-1")
        assert first.created and not again.created
        assert (again.execution_id, again.plan_id) == (first.execution_id, first.plan_id)
        with pytest.raises(AlreadyExistsError) as caught:
            await on_b.start(source=CHAIN, inputs={"x": 2}, request_id="r-1")
        assert caught.value.reason == "REQUEST_ID_REUSED"
        assert caught.value.metadata["executionId"] == first.execution_id
        started = [e async for e in on_a.list() if e.workflow_name == "chain"]
        assert len(started) == 2  # b-only and r-1, each once
