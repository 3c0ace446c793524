"""GetUsage grouped by a search attribute (`group_by="attribute:customer"`), through
the Python client against a real server on SQLite and on PostgreSQL: runs started
with customer=acme and globex, one without, and a child an acme run started (its
spend is acme's: the nearest ancestor's value); the typed value beside each key; a
bad or missing name is INVALID_ARGUMENT naming group_attribute."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import InvalidArgumentError
from execplan.v1 import execution_pb2 as ex
from execplan.worker import TaskContext

if TYPE_CHECKING:
    from tests.store.pg import pg_dsn, pg_server
    from tests.support.server import Env, environment
else:  # tests/ is on sys.path (tests/support/__init__.py)
    from store.pg import pg_dsn, pg_server
    from support.server import Env, environment

__all__ = ["pg_dsn", "pg_server"]  # fixtures, imported for pytest

CHILD = """
name: ba-review
version: "1"
tasks:
  - {id: check, type: ba.spend, inputs: {cost: 2}}
"""
PARENT = """
name: ba-parent
tasks:
  - {id: plan, type: ba.spend, inputs: {cost: 1}}
  - {id: review, type: builtin.workflow, workflow: ba-review@1, depends_on: [plan]}
"""
LEAF = """
name: ba-leaf
inputs: {cost: {type: number, default: 4}}
tasks:
  - {id: work, type: ba.spend, inputs: {cost: "${{ workflow.inputs.cost }}"}}
"""


async def _spend(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    ctx.usage(cost=float(inputs["cost"]), tokens_in=10)
    return {}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or an empty PostgreSQL database (tests/store/pg.py)."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("pg_dsn")
        return dsn
    return str(tmp_path / "execplan.db")


@pytest.fixture
async def env(database: str, tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(Env, tmp_path, db=database) as env:
        yield env


def _groups(response: Any) -> list[tuple[str, float, int]]:
    return [(g.key, g.usage.counters["cost"], g.executions) for g in response.groups]


async def test_each_customer_pays_for_what_its_runs_started(env: Env) -> None:
    await env.client.register(source=CHILD)
    env.worker({"ba.spend": _spend})
    started = {
        "acme": await env.start(PARENT, search_attributes={"customer": "acme"}),
        "globex": await env.start(LEAF, search_attributes={"customer": "globex", "tier": 2}),
        "none": await env.start(LEAF, {"cost": 8}),
    }
    for execution_id in started.values():
        done = await env.finish(execution_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    parent = await env.client.get(started["acme"])
    (child_id,) = [t.child_execution_id for t in parent.tasks if t.child_execution_id]
    assert not (await env.client.get(child_id)).search_attributes  # none of its own

    by = await env.client.usage(group_by="attribute:customer")
    assert _groups(by) == [("(none)", 8.0, 1), ('"globex"', 4.0, 1), ('"acme"', 3.0, 2)]
    assert [g.value.WhichOneof("value") for g in by.groups] == [
        None,
        "string_value",
        "string_value",
    ]
    assert [g.value.string_value for g in by.groups][1:] == ["globex", "acme"]
    assert (by.usage.counters["cost"], by.executions) == (15.0, 4)
    assert by.groups[2].usage.counters["tokens_in"] == 20.0
    # The child's own usage, asked for alone, is still acme's (its parent's value).
    child = await env.client.usage(execution_id=child_id, group_by="attribute:customer")
    assert _groups(child) == [('"acme"', 2.0, 1)]
    # With a filter and a workflow scope; an int attribute renders as a number.
    leaves = await env.client.usage(
        workflow_name="ba-leaf", filter="tier = 2", group_by="attribute:tier"
    )
    assert _groups(leaves) == [("2", 4.0, 1)]
    assert leaves.groups[0].value.int_value == 2
    # A grouping nobody set: all under (none); the server's own names may be used.
    region = await env.client.usage(group_by="attribute:execplan_schedule")
    assert _groups(region) == [("(none)", 15.0, 4)]
    with pytest.raises(ValueError, match="'attribute:NAME'"):
        await env.client.usage(group_by="customer")


@pytest.mark.parametrize(
    ("group_by", "words"),
    [
        ("attribute:", "needs group_attribute"),
        ("attribute:no-dash", "is not a search attribute name"),
        ("attribute:" + "x" * 65, "at most 64 characters"),
    ],
)
async def test_a_bad_attribute_name_names_group_attribute(
    env: Env, group_by: str, words: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await env.client.usage(group_by=group_by)
    assert words in str(caught.value)
    assert [v.field for v in caught.value.violations] == ["group_attribute"]
