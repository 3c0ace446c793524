"""The budget rule (execplan.usage.gate): which limit holds an attempt back, with and
without an estimate, tokens counted from tokens_in/tokens_out/tokens, rounding not
mistaken for overspending, and the for_each pre-check with its message."""

from __future__ import annotations

from execplan.usage import FAIL, PAUSE, Budget
from execplan.usage.gate import exceeded, fan_out_exceeded

BUDGET = Budget.of({"cost": 10.0, "tokens": 1000.0})


def test_an_attempt_goes_while_its_estimate_fits() -> None:
    assert exceeded(BUDGET, {"cost": 9.0}, {"cost": 0.5}, {"cost": 0.5}) is None
    over = exceeded(BUDGET, {"cost": 9.0}, {"cost": 0.5}, {"cost": 0.6})
    assert over is not None
    assert (over.counter, over.limit, over.spent, over.reserved, over.estimate) == (
        "cost",
        10.0,
        9.0,
        0.5,
        0.6,
    )
    assert over.message("research[4]") == (
        "cost 9 spent + 0.5 reserved + 0.6 estimated for research[4] would exceed the budget of 10"
    )


def test_without_an_estimate_the_limit_itself_stops_it() -> None:
    assert exceeded(BUDGET, {"cost": 9.99}, {}, {}) is None
    over = exceeded(BUDGET, {"cost": 10.0}, {}, {})
    assert over is not None and over.estimate == 0
    assert over.message("write", "research") == (
        "cost 10 spent has reached the budget of research of 10; write is not dispatched"
    )


def test_tokens_count_every_token_counter() -> None:
    used = {"tokens_in": 600.0, "tokens_out": 300.0, "tokens": 50.0}
    assert exceeded(BUDGET, used, {}, {"tokens": 50.0}) is None
    over = exceeded(BUDGET, used, {}, {"tokens_in": 51.0})
    assert over is not None and over.counter == "tokens" and over.spent == 950.0


def test_rounding_is_not_overspending() -> None:
    tenths = {"cost": sum([0.1] * 10)}  # 0.9999999999999999
    assert exceeded(Budget.of({"cost": 1.1}), tenths, {}, {"cost": 0.1}) is None
    assert exceeded(Budget.of({"cost": 1.0}), tenths, {}, {}) is not None


def test_no_budget_or_no_limit_never_holds_back() -> None:
    assert exceeded(None, {"cost": 1e12}, {}, {}) is None
    assert exceeded(Budget((), FAIL), {"cost": 1e12}, {}, {}) is None
    assert exceeded(BUDGET, {"searches": 1e9}, {}, {"searches": 1.0}) is None


def test_the_for_each_pre_check_names_the_count_and_the_budget() -> None:
    assert fan_out_exceeded(BUDGET, {"cost": 1.0}, {}, {"cost": 9.0}, 90) is None
    over = fan_out_exceeded(BUDGET, {"cost": 0.3}, {}, {"cost": 54.5}, 218)
    assert over is not None and over.items == 218
    assert over.message("research") == (
        "for_each research: 218 items x cost 0.25 = 54.5 exceeds what is left of the "
        "budget: 9.7 of cost 10 (0.3 spent, 0 reserved)"
    )
    # Limits the estimate does not count toward are left to each dispatch.
    assert fan_out_exceeded(BUDGET, {"tokens": 5000.0}, {}, {"cost": 1.0}, 3) is None


def test_a_childs_budget_is_no_larger_than_what_its_parent_has_left() -> None:
    own = Budget.of({"cost": 5.0, "searches": 10.0}, FAIL)
    left = Budget.of({"cost": 0.5, "tokens": 1000.0}, PAUSE)
    assert own.within(left) == Budget.of({"cost": 0.5, "searches": 10.0, "tokens": 1000.0}, FAIL)
    # A child without a budget of its own gets what is left, with the parent's action.
    assert Budget().within(left) == left
    assert Budget.of({"cost": 0.1}).within(left).limit("cost") == 0.1
