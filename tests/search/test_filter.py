"""The filter language: what parses to what, what fails and how it says so."""

from __future__ import annotations

import pytest
from execplan.errors import InvalidArgument
from execplan.search import SearchValue, check_attributes, merge, parse
from execplan.search.filter import MAX_CLAUSES, MAX_IN_VALUES, describe, matches


def shown(text: str) -> list[str]:
    return [describe(c) for c in parse(text).clauses]


def test_clauses_and_their_types() -> None:
    assert shown(
        'customer = "acme" AND state IN (running, Paused) AND created_at >= 2026-01-01'
    ) == [
        'customer = "acme"',
        "state IN (RUNNING, PAUSED)",
        "created_at_ms >= 2026-01-01T00:00:00Z",
    ]
    assert shown("priority > 3 and score <= -1.5e2 AND vip != TRUE") == [
        "priority > 3",
        "score <= -150.0",
        "vip != true",
    ]
    assert shown("workflow = nightly AND attr.state = 'x' AND tier NOT IN (a, b)") == [
        'workflow_name = "nightly"',
        'state = "x"',
        'tier NOT IN ("a", "b")',
    ]
    (clause,) = parse("state = running").clauses
    assert (clause.attribute, clause.kind) == (False, "state")
    (clause,) = parse("attr.state = running").clauses
    assert (clause.attribute, clause.kind) == (True, "string")


def test_times_take_offsets_and_fractions() -> None:
    (clause,) = parse("finished_at < 2026-01-01T02:00:00.250+02:00").clauses
    assert clause.values == (1767225600250,)
    assert clause.finished
    assert parse("due = 2026-01-01T00:00:00Z").clauses[0].values == (1767225600000,)


def test_strings_unescape() -> None:
    (clause,) = parse(r'note = "say \"hi\"\n\u00e9"').clauses
    assert clause.values == ('say "hi"\n\u00e9',)


def test_empty_is_no_filter() -> None:
    assert not parse("")
    assert not parse("   ")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("customer", "column 9: expected an operator, found the end"),
        ("customer =", "column 11: expected a value"),
        ("state = bogus", "column 9: unknown state 'bogus'"),
        ("a = 1 OR b = 2", "there is no OR"),
        ('name < "x"', "compares only with =, != and IN"),
        ("vip > true", "compares only with =, != and IN"),
        ('created_at > "2026"', "created_at compares with a time, not a string"),
        ("x IN (1, 'a')", "one type"),
        ("x = @", "column 5: unexpected character '@'"),
        ("a.b = 1", "unknown field 'a.b'"),
        ("x = 2026-13-01", "not a valid time"),
        ('x = "\\q"', "unknown escape"),
        ("AND = 1", "expected a field name"),
        ("x = (", "expected a value"),
        ("x IN 1", "expected '('"),
        ("x = 1e999", "not a finite number"),
    ],
)
def test_errors_name_the_filter_and_the_column(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    (violation,) = caught.value.violations
    assert violation.field == "filter"
    assert words in violation.description


def test_bounds() -> None:
    with pytest.raises(InvalidArgument, match="at most 4096 characters"):
        parse("x = " + '"' + "a" * 5000 + '"')
    many = " AND ".join(f"a{i} = 1" for i in range(MAX_CLAUSES + 1))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_CLAUSES} clauses"):
        parse(many)
    values = ", ".join(str(i) for i in range(MAX_IN_VALUES + 1))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_IN_VALUES} values"):
        parse(f"x IN ({values})")
    with pytest.raises(InvalidArgument, match="at most 1024 bytes"):
        parse('x = "' + "é" * 600 + '"')
    with pytest.raises(InvalidArgument) as caught:
        parse("x = @", field="purge.filter")
    assert caught.value.violations[0].field == "purge.filter"


def test_matches_is_the_sql_semantics() -> None:
    columns: dict[str, str | int | float | bool] = {
        "state": "RUNNING",
        "workflow_name": "wf",
        "created_at_ms": 5,
        "updated_at_ms": 9,
    }
    attrs = {"n": SearchValue.of(3), "d": SearchValue.of(2.5), "s": SearchValue.of("x")}

    def m(text: str, terminal: bool = False) -> bool:
        return matches(parse(text), columns, attrs, terminal=terminal)

    assert m("n = 3 AND d < 3 AND s = x AND state = running")
    assert m("n IN (1, 3)") and not m("n NOT IN (1, 3)")
    assert not m("missing != 1")  # absent attributes never match
    assert not m('n = "3"')  # a string literal never matches a number
    assert not m("s = 1")
    assert (
        not m("finished_at > 1970-01-01") and m("updated_at < 1970-01-01", terminal=True) is False
    )


def test_attribute_checks_name_every_bad_key() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_attributes(
            {
                "ok": SearchValue.of(1),
                "bad-name": SearchValue.of(1),
                "execplan_schedule": SearchValue.of("x"),
                "big": SearchValue.of("x" * 2000),
                "nan": SearchValue.of(float("nan")),
            },
            "search_attributes",
        )
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        'search_attributes["bad-name"]',
        'search_attributes["execplan_schedule"]',
        'search_attributes["big"]',
        'search_attributes["nan"]',
    ]
    check_attributes({"execplan_schedule": SearchValue.of("x")}, "a", server=True)
    with pytest.raises(InvalidArgument, match="too many"):
        merge({f"a{i}": SearchValue.of(i) for i in range(32)}, {"one_more": SearchValue.of(1)}, "x")
    assert merge({"a": SearchValue.of(1)}, {"a": None}, "x") == {}
