"""GetUsage and SetBudget requests (docs/usage.md).

    response = await get_usage(store, request)   # added up by the store
    requested = budget_change(set_budget_request)  # checked, for the engine

Checks what the store cannot: one scope at most (an execution or a workflow), a known
grouping (with USAGE_GROUPING_ATTRIBUTE, a `group_attribute` named as a search
attribute is: the server's own `execplan_` names too, e.g. `execplan_schedule`),
timestamps a `Timestamp` may hold (0001-01-01 to 9999-12-31, nanos below one second)
and `since` not after `until`. An execution that is not stored is NOT_FOUND; a
workflow with nothing recorded is a zero total (usage may come later).
"""

from __future__ import annotations

from typing import Literal

from execplan import search
from execplan.errors import FieldViolation, InvalidArgument, NotFound
from execplan.search.attributes import name_problem
from execplan.search.codec import encode_value
from execplan.store import Store
from execplan.store.port import UsageQuery, UsageTotals
from execplan.usage import (
    COST,
    COUNTER_PATTERN,
    MAX_COUNTERS,
    TOKENS,
    Budget,
    check_amount,
    valid_counter,
)
from execplan.usage.codec import budget_action, budget_limits, encode_usage
from execplan.v1 import executor_service_pb2 as pb
from google.protobuf import timestamp_pb2

_GROUP_BY = {
    pb.USAGE_GROUPING_UNSPECIFIED: "",
    pb.USAGE_GROUPING_WORKFLOW: "workflow",
    pb.USAGE_GROUPING_EXECUTION: "execution",
    pb.USAGE_GROUPING_TASK: "task",
    pb.USAGE_GROUPING_ATTRIBUTE: "attribute",
}
# What google.protobuf.Timestamp may hold: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def _ms(request: pb.GetUsageRequest, field: Literal["since", "until"]) -> int | None:
    if not request.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 10**9:
        raise InvalidArgument(
            f"{field} is not a valid timestamp",
            [FieldViolation(field, "between 0001-01-01 and 9999-12-31, nanos below 1e9")],
        )
    return stamp.seconds * 1000 + stamp.nanos // 1_000_000


def usage_query(request: pb.GetUsageRequest) -> UsageQuery:
    """The store query of a request; InvalidArgument naming the field otherwise."""
    if request.execution_id and request.workflow_name:
        raise InvalidArgument(
            "give execution_id or workflow_name, not both",
            [FieldViolation("workflow_name", "not with execution_id")],
        )
    group_by = _GROUP_BY.get(request.group_by)
    if group_by is None:
        raise InvalidArgument(
            f"unknown group_by {request.group_by}",
            [FieldViolation("group_by", "one of the UsageGrouping values")],
        )
    _check_group_attribute(request, group_by)
    since, until = _ms(request, "since"), _ms(request, "until")
    if since is not None and until is not None and since > until:
        raise InvalidArgument("since is after until", [FieldViolation("since", "at most until")])
    found = search.parse(request.filter) if request.filter else search.EMPTY
    return UsageQuery(
        request.execution_id,
        request.workflow_name,
        since,
        until,
        group_by,
        found,
        request.group_attribute,
    )


def _check_group_attribute(request: pb.GetUsageRequest, group_by: str) -> None:
    name = request.group_attribute
    if group_by != "attribute":
        if name:
            raise InvalidArgument(
                "group_attribute is only for group_by USAGE_GROUPING_ATTRIBUTE",
                [FieldViolation("group_attribute", "empty unless group_by is ATTRIBUTE")],
            )
        return
    if not name:
        raise InvalidArgument(
            "group_by USAGE_GROUPING_ATTRIBUTE needs group_attribute",
            [FieldViolation("group_attribute", "the name of a search attribute")],
        )
    problem = name_problem(name, server=True)
    if problem:
        raise InvalidArgument(
            f"group_attribute {name[:80]!r} is not a search attribute name: {problem}",
            [FieldViolation("group_attribute", problem)],
        )


def encode_totals(totals: UsageTotals) -> pb.GetUsageResponse:
    response = pb.GetUsageResponse(executions=totals.executions)
    encode_usage(totals.counters, response.usage)
    for group in totals.groups:
        out = response.groups.add(key=group.key, executions=group.executions)
        encode_usage(group.counters, out.usage)
        if group.value is not None:
            out.value.CopyFrom(encode_value(group.value))
    return response


async def get_usage(store: Store, request: pb.GetUsageRequest) -> pb.GetUsageResponse:
    query = usage_query(request)
    if query.execution_id and await store.get_execution(query.execution_id) is None:
        raise NotFound(f"execution {query.execution_id} not found")
    return encode_totals(await store.usage(query))


def budget_change(request: pb.SetBudgetRequest) -> Budget:
    """The limits a SetBudget request sets and its action ("" keeps the one in force);
    InvalidArgument naming the field when a limit is not a valid amount or name."""
    if not request.HasField("budget"):
        raise InvalidArgument("budget is required", [FieldViolation("budget", "the limits to set")])
    limits = budget_limits(request.budget)
    for name, limit in limits.items():
        where = f"budget.{name}" if name in (COST, TOKENS) else f"budget.counters[{name[:80]!r}]"
        if not valid_counter(name):
            raise InvalidArgument(
                f"counter name {name[:80]!r} is not {COUNTER_PATTERN}",
                [FieldViolation(where, f"a name {COUNTER_PATTERN}")],
            )
        problem = check_amount(limit)
        if problem is not None:
            raise InvalidArgument(f"{where}: {problem}", [FieldViolation(where, problem)])
    if len(limits) > MAX_COUNTERS:
        raise InvalidArgument(
            f"{len(limits)} limits; at most {MAX_COUNTERS}",
            [FieldViolation("budget.counters", f"at most {MAX_COUNTERS} limits")],
        )
    action = budget_action(request.budget)
    if not limits and not action:
        raise InvalidArgument(
            "the budget sets nothing",
            [FieldViolation("budget", "set a limit (cost, tokens, counters) or on_exceeded")],
        )
    return Budget(tuple(sorted(limits.items())), action)
