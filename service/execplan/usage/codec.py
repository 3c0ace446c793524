"""Usage and budgets as protobuf messages and back (`execplan.v1.Usage`, `.Budget`).

    encode_budget(Budget.of({"cost": 10.0}))          -> workflow_pb2.Budget(cost=10.0, ...)
    decode_budget(msg, default_action=PAUSE)         -> Budget
    encode_usage({"cost": 0.2}) / decode_usage(msg)  -> Usage message / dict

`cost` and `tokens` have fields of their own in `Budget`; every other limit goes in
`counters`.
"""

from __future__ import annotations

from collections.abc import Mapping

from execplan.usage import COST, PAUSE, TOKENS, Budget
from execplan.v1 import execution_pb2, workflow_pb2

_ACTION_NAMES = {
    v: k for k, v in workflow_pb2.BudgetAction.items() if k != "BUDGET_ACTION_UNSPECIFIED"
}


def encode_budget(budget: Budget, out: workflow_pb2.Budget | None = None) -> workflow_pb2.Budget:
    msg = workflow_pb2.Budget() if out is None else out
    for name, limit in budget.limits:
        if name == COST:
            msg.cost = limit
        elif name == TOKENS:
            msg.tokens = limit
        else:
            msg.counters[name] = limit
    if budget.on_exceeded:  # "" (a change that keeps the action): UNSPECIFIED
        msg.on_exceeded = workflow_pb2.BudgetAction.Value(budget.on_exceeded)
    return msg


def budget_limits(msg: workflow_pb2.Budget) -> dict[str, float]:
    """The limits a Budget message sets (cost and tokens only when present)."""
    limits = dict(msg.counters)
    if msg.HasField("cost"):
        limits[COST] = msg.cost
    if msg.HasField("tokens"):
        limits[TOKENS] = msg.tokens
    return limits


def budget_action(msg: workflow_pb2.Budget) -> str:
    """The action a Budget message names; "" for UNSPECIFIED (or a value unknown here)."""
    return _ACTION_NAMES.get(msg.on_exceeded, "")


def decode_budget(msg: workflow_pb2.Budget, default_action: str = PAUSE) -> Budget:
    return Budget.of(budget_limits(msg), budget_action(msg) or default_action)


def decode_change(msg: workflow_pb2.Budget) -> Budget:
    """A requested change: the limits it sets and its action, "" when it names none."""
    return Budget(tuple(sorted(budget_limits(msg).items())), budget_action(msg))


def encode_usage(
    counters: Mapping[str, float], out: execution_pb2.Usage | None = None
) -> execution_pb2.Usage:
    msg = execution_pb2.Usage() if out is None else out
    for name, amount in counters.items():
        msg.counters[name] = amount
    return msg


def decode_usage(msg: execution_pb2.Usage) -> dict[str, float]:
    return dict(msg.counters)
