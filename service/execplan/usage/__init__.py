"""Usage and budgets: the rules every layer shares (docs/usage.md).

Usage is amounts by counter name. Workers report `tokens_in`, `tokens_out`, `cost`
and any counter of their own; a budget limits `cost`, `tokens` (which counts what was
reported as `tokens_in`, `tokens_out` and `tokens`, added up) and any other counter.

    problem = check_counters({"cost": 0.2, "tokens_in": 900})   # None, or why not
    spent("tokens", {"tokens_in": 900, "tokens_out": 100})      # 1000.0
    budget = Budget.of({"cost": 10.0}, PAUSE)
    budget.limit("cost")                                        # 10.0
    budget.changed({"tokens": 5e6}, "")                         # cost and tokens

Who uses what: the planner checks budgets and estimates written in a workflow; the
wire checks what workers and callers send; the executor folds usage into state and
holds dispatches back at the budget; the store adds usage up per workflow. They all
name counters and limits through this module, so a counter valid in one place is
valid in every other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

COST = "cost"
TOKENS = "tokens"
TOKENS_IN = "tokens_in"
TOKENS_OUT = "tokens_out"
# What a `tokens` limit (and a `tokens` estimate) counts.
TOKEN_COUNTERS = (TOKENS, TOKENS_IN, TOKENS_OUT)

# Budget actions, as the proto enum value names.
PAUSE = "BUDGET_ACTION_PAUSE"
FAIL = "BUDGET_ACTION_FAIL"

# A counter name: short, lower-case, usable as a Prometheus label value and a CLI key.
COUNTER_PATTERN = "[a-z][a-z0-9_]{0,63}"
_COUNTER = re.compile(COUNTER_PATTERN)
# Counters in one report (or one budget, one estimate): what a person could read.
MAX_COUNTERS = 32
# Largest amount of one report or limit: far above any real bill (1e15 tokens or
# dollars), low enough that adding millions of them stays exact to the cent.
MAX_AMOUNT = 1e15


def valid_counter(name: str) -> bool:
    return _COUNTER.fullmatch(name) is not None


def check_counters(counters: Mapping[str, float]) -> str | None:
    """Why `counters` is not a valid usage report (or limit set), or None."""
    if len(counters) > MAX_COUNTERS:
        return f"{len(counters)} counters; at most {MAX_COUNTERS} per report"
    for name, amount in counters.items():
        if not valid_counter(name):
            return f"counter name {name[:80]!r} is not {COUNTER_PATTERN}"
        problem = check_amount(amount)
        if problem:
            return f"{name}: {problem}"
    return None


def check_amount(amount: float) -> str | None:
    if not math.isfinite(amount):
        return "amounts must be finite numbers"
    if amount < 0:
        return f"{amount:g} is negative; amounts are >= 0"
    if amount > MAX_AMOUNT:
        return f"{amount:g} is above the largest amount, {MAX_AMOUNT:g}"
    return None


def toward(limit: str) -> tuple[str, ...]:
    """The reported counters that count toward a limit (or an estimate) named `limit`."""
    return TOKEN_COUNTERS if limit == TOKENS else (limit,)


def spent(limit: str, usage: Mapping[str, float]) -> float:
    """What `usage` counts toward the limit named `limit`."""
    return sum(usage.get(c, 0.0) for c in toward(limit))


def add(into: dict[str, float], usage: Mapping[str, float]) -> None:
    """Add `usage` to `into`, counter by counter."""
    for name, amount in usage.items():
        into[name] = into.get(name, 0.0) + amount


def total(usages: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for usage in usages:
        add(out, usage)
    return out


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits by name (`cost`, `tokens`, any counter), sorted; what to do at one."""

    limits: tuple[tuple[str, float], ...] = ()
    on_exceeded: str = PAUSE

    @staticmethod
    def of(limits: Mapping[str, float], on_exceeded: str = PAUSE) -> Budget:
        return Budget(tuple(sorted(limits.items())), on_exceeded or PAUSE)

    def limit(self, name: str) -> float | None:
        for key, value in self.limits:
            if key == name:
                return value
        return None

    def changed(self, limits: Mapping[str, float], on_exceeded: str) -> Budget:
        """This budget with `limits` set (the others kept) and, unless "", the action."""
        merged = dict(self.limits)
        merged.update(limits)
        return Budget.of(merged, on_exceeded or self.on_exceeded)

    def over_default(self, default: Budget | None) -> Budget:
        """This budget, with the limits of `default` it does not set itself."""
        if default is None:
            return self
        merged = dict(default.limits)
        merged.update(self.limits)
        return Budget.of(merged, self.on_exceeded)

    def within(self, cap: Budget) -> Budget:
        """This budget with no limit above `cap`'s (a limit only `cap` sets is added);
        this budget's action, or `cap`'s when this one sets no limit."""
        merged = dict(self.limits)
        for name, most in cap.limits:
            merged[name] = min(merged.get(name, most), most)
        return Budget.of(merged, self.on_exceeded if self.limits else cap.on_exceeded)

    def __bool__(self) -> bool:
        return bool(self.limits)


def format_amount(amount: float) -> str:
    """An amount for people: whole numbers with thousands separators (`1,200,000`),
    others to 4 significant digits (6 below 0.01) or 2 decimals from 100 up
    (`0.05`, `3.142`, `0.000125`, `1,234.50`)."""
    if amount == int(amount) and abs(amount) < 1e15:
        return f"{int(amount):,}"
    if abs(amount) >= 100:
        return f"{amount:,.2f}"
    return f"{amount:.6g}" if abs(amount) < 0.01 else f"{amount:.4g}"
