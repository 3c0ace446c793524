"""The budget rule, as pure functions (docs/usage.md, "Budgets").

    over = exceeded(budget, spent, reserved, estimate)       # None: the attempt may go
    over.message("research[4]")                              # one line for people
    fan = fan_out_exceeded(budget, spent, reserved, items_estimate, count=218)

For every limit of the budget, with `spent`, `reserved` and `estimate` counted toward
it (`usage.spent`: the `tokens` limit counts tokens_in, tokens_out and tokens):

- with an estimate: `spent + reserved + estimate > limit` holds the attempt back;
- without one (0): the attempt is held back once `spent + reserved >= limit`.

The first limit (in name order) that holds it back is the one reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from execplan.usage import Budget, format_amount, spent

# Sums of floats drift by a few ulps; a limit is not exceeded by rounding alone.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Exceeded:
    """Why a budget holds an attempt (or a for_each) back."""

    counter: str
    limit: float
    spent: float
    reserved: float
    estimate: float
    # For a for_each: the items the estimate is for (0 for one attempt).
    items: int = 0

    def message(self, task_id: str, budget_task_id: str = "") -> str:
        whose = f"the budget of {budget_task_id}" if budget_task_id else "the budget"
        amount = format_amount
        if self.items:
            per = self.estimate / self.items if self.items else 0.0
            left = max(0.0, self.limit - self.spent - self.reserved)
            return (
                f"for_each {task_id}: {self.items:,} items x {self.counter} {amount(per)} = "
                f"{amount(self.estimate)} exceeds what is left of {whose}: {amount(left)} of "
                f"{self.counter} {amount(self.limit)} ({amount(self.spent)} spent, "
                f"{amount(self.reserved)} reserved)"
            )
        held = f" + {amount(self.reserved)} reserved" if self.reserved else ""
        if self.estimate:
            return (
                f"{self.counter} {amount(self.spent)} spent{held} + {amount(self.estimate)} "
                f"estimated for {task_id} would exceed {whose} of {amount(self.limit)}"
            )
        return (
            f"{self.counter} {amount(self.spent)} spent{held} has reached {whose} of "
            f"{amount(self.limit)}; {task_id} is not dispatched"
        )


def exceeded(
    budget: Budget | None,
    used: Mapping[str, float],
    reserved: Mapping[str, float],
    estimate: Mapping[str, float],
) -> Exceeded | None:
    """The first limit of `budget` the next attempt would go over, or None."""
    if budget is None:
        return None
    for name, limit in budget.limits:
        s, r, e = spent(name, used), spent(name, reserved), spent(name, estimate)
        over = s + r + e > limit + _EPSILON if e > 0 else s + r >= limit - _EPSILON
        if over:
            return Exceeded(name, limit, s, r, e)
    return None


def fan_out_exceeded(
    budget: Budget | None,
    used: Mapping[str, float],
    reserved: Mapping[str, float],
    items_estimate: Mapping[str, float],
    count: int,
) -> Exceeded | None:
    """Would `count` items whose estimates add up to `items_estimate` go over a limit?
    Only limits the estimate counts toward are checked (items without an estimate are
    checked one by one when they are dispatched)."""
    if budget is None or count <= 0:
        return None
    for name, limit in budget.limits:
        total = spent(name, items_estimate)
        if total <= 0:
            continue
        s, r = spent(name, used), spent(name, reserved)
        if s + r + total > limit + _EPSILON:
            return Exceeded(name, limit, s, r, total, items=count)
    return None
