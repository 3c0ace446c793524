"""Expression bounds: what `check_expression_bounds` lets through to the `cel` library,
exactly at each limit and one past it, and the diagnostic every expression site gives.

The crashes these bounds prevent (SIGSEGV, a Rust panic) are exercised in
subprocesses by tests/security/test_hostile_documents.py."""

from __future__ import annotations

from typing import Any

import pytest
from execplan.planner import compile_document, expressions
from execplan.planner.cache import small_key_cache
from execplan.planner.expressions import (
    MAX_COMPREHENSION_NESTING,
    MAX_EXPRESSION_BYTES,
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_NESTING,
    check_expression_bounds,
    compile_cel,
)


def code(source: str) -> str | None:
    problem = check_expression_bounds(source)
    return None if problem is None else problem[0]


def comprehensions(n: int) -> str:
    return "".join(f"[1, 2].all(x{i}, " for i in range(n)) + "true" + ")" * n


@pytest.mark.parametrize(
    ("at_limit", "over_limit", "expected"),
    [
        ("1" * MAX_EXPRESSION_BYTES, "1" * (MAX_EXPRESSION_BYTES + 1), "expression-too-large"),
        # Bytes, not characters: 'é' is two bytes of UTF-8.
        (
            '"' + "é" * ((MAX_EXPRESSION_BYTES - 2) // 2) + '"',
            '"' + "é" * ((MAX_EXPRESSION_BYTES - 2) // 2 + 1) + '"',
            "expression-too-large",
        ),
        (
            "(" * MAX_EXPRESSION_NESTING + "1" + ")" * MAX_EXPRESSION_NESTING,
            "(" * (MAX_EXPRESSION_NESTING + 1) + "1" + ")" * (MAX_EXPRESSION_NESTING + 1),
            "expression-too-deep",
        ),
        ("[" * MAX_EXPRESSION_NESTING + "]" * 32, "[" * 33 + "]" * 33, "expression-too-deep"),
        ("{1:" * 32 + "1" + "}" * 32, "{1:" * 33 + "1" + "}" * 33, "expression-too-deep"),
        (
            "1" + "+1" * MAX_EXPRESSION_DEPTH,
            "1" + "+1" * (MAX_EXPRESSION_DEPTH + 1),
            "expression-too-deep",
        ),
        (
            "a" + ".b" * MAX_EXPRESSION_DEPTH,
            "a" + ".b" * (MAX_EXPRESSION_DEPTH + 1),
            "expression-too-deep",
        ),
        # A member chain on a number literal (`1.b.b...`) parses as deeply as one on a
        # name; the scan once read it as a single number token and let 8,000 through.
        (
            "1" + ".b" * MAX_EXPRESSION_DEPTH,
            "1" + ".b" * (MAX_EXPRESSION_DEPTH + 1),
            "expression-too-deep",
        ),
        (
            "1.5e3" + ".b" * MAX_EXPRESSION_DEPTH,
            "1.5e3" + ".b" * (MAX_EXPRESSION_DEPTH + 1),
            "expression-too-deep",
        ),
        (
            "a" + "[0]" * MAX_EXPRESSION_DEPTH,
            "a" + "[0]" * (MAX_EXPRESSION_DEPTH + 1),
            "expression-too-deep",
        ),
        (
            " && ".join(["true"] * (MAX_EXPRESSION_DEPTH + 1)),
            " && ".join(["true"] * (MAX_EXPRESSION_DEPTH + 2)),
            "expression-too-deep",
        ),
        (
            comprehensions(MAX_COMPREHENSION_NESTING),
            comprehensions(MAX_COMPREHENSION_NESTING + 1),
            "expression-too-costly",
        ),
    ],
)
def test_each_bound_at_and_past_the_limit(at_limit: str, over_limit: str, expected: str) -> None:
    assert code(at_limit) is None
    assert code(over_limit) == expected


def test_depth_counts_enclosing_operands_and_brackets_together() -> None:
    half = ".b" * (MAX_EXPRESSION_DEPTH // 2)
    assert code(f"size(a{half}) + x") is None
    # The path runs through the outer chain, the call and the inner chain.
    assert code(f"a{half}.f(c{half}.d.e.g)") == "expression-too-deep"
    # Siblings are separate paths: a long list of short operands is fine.
    assert code("[" + ", ".join(["a.b.c.d == 1"] * 400) + "]") is None


def test_macros_count_only_when_nested() -> None:
    side_by_side = " && ".join(["[1].all(x, [2].exists(y, y > x))"] * 20)
    assert code(side_by_side) is None
    spaced = "l . all (a, l.exists(b, l . filter (c, true)))"
    assert code(spaced) == "expression-too-costly"
    # `bind` does not iterate; a macro name in a string literal is text.
    assert code("cel.bind(a, 1, cel.bind(b, 2, cel.bind(c, 3, a + b + c)))") is None
    assert code('"x.all(x.all(x.all(" == s') is None


def test_strings_and_comments_are_skipped() -> None:
    assert code('"' + "(" * 100 + '" + ' + "'" + "+" * 600 + "'") is None
    assert code("1 // " + "(((" * 50 + "\n + 2") is None
    assert code("r'''" + "[" * 100 + "'''") is None


def test_compile_cel_refuses_sources_over_the_bounds() -> None:
    message = compile_cel("1" + " + 1" * 100_000)
    assert message is not None and "longer than 16384 bytes" in message


def test_a_native_panic_in_cel_becomes_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parse error past column 65,535 panics inside the Rust library (a
    BaseException). The byte bound keeps such sources away from it; with the bound
    lifted, the panic still becomes a one-line error, not a crash or a traceback."""
    monkeypatch.setattr(expressions, "MAX_EXPRESSION_BYTES", 10**9)
    source = "a" * 70_000 + " +"
    assert check_expression_bounds(source) is None
    message = compile_cel(source)
    assert message is not None and "expression library failed" in message


def wf(**task: Any) -> dict[str, Any]:
    return {"name": "w", "inputs": {"x": {}}, "tasks": [{"id": "a", "type": "t", **task}]}


DEEP = "1" + " + 1" * 100_000  # SIGSEGV in the library before the bounds
COSTLY = "${{ " + comprehensions(3) + " }}"


@pytest.mark.parametrize(
    ("doc", "path", "expected"),
    [
        (wf(when=DEEP), "tasks[0].when", "expression-too-large"),
        (wf(when="${{ " + DEEP + " }}"), "tasks[0].when", "expression-too-large"),
        (wf(inputs={"v": "${{ " + DEEP + " }}"}), "tasks[0].inputs.v", "expression-too-large"),
        (wf(inputs={"v": "n=${{ " + DEEP + " }}!"}), "tasks[0].inputs.v", "expression-too-large"),
        (wf(inputs={"v": {"w": [COSTLY]}}), "tasks[0].inputs.v.w[0]", "expression-too-costly"),
        (
            wf(fallback={"type": "f", "inputs": {"v": COSTLY}}),
            "tasks[0].fallback.inputs.v",
            "expression-too-costly",
        ),
        (
            wf(
                compensation={
                    "type": "c",
                    "inputs": {"v": "${{ " + "(" * 40 + "1" + ")" * 40 + " }}"},
                }
            ),
            "tasks[0].compensation.inputs.v",
            "expression-too-deep",
        ),
        (
            {**wf(), "outputs": {"o": "${{ workflow.inputs.x" + ".b" * 600 + " }}"}},
            "outputs.o",
            "expression-too-deep",
        ),
    ],
)
def test_every_expression_site_reports_the_bound(
    doc: dict[str, Any], path: str, expected: str
) -> None:
    result = compile_document(doc)
    assert [(d.code, d.path) for d in result.errors] == [(expected, path)]
    assert len(result.errors[0].message) < 200


def test_an_unclosed_template_in_a_huge_string_is_scanned_only_up_to_the_bound() -> None:
    result = compile_document(wf(inputs={"v": "${{ 1 + " + "x" * 20_000_000}))
    assert [(d.code, d.path) for d in result.errors] == [
        ("expression-too-large", "tasks[0].inputs.v")
    ]


def test_the_caches_do_not_keep_huge_strings() -> None:
    computed: list[str] = []

    @small_key_cache(maxsize=8, max_chars=10)
    def length(text: str) -> int:
        computed.append(text)
        return len(text)

    short, long = "x" * 10, "y" * 11
    assert [length(short), length(short), length(long), length(long)] == [10, 10, 11, 11]
    assert computed == [short, long, long]  # the long one is recomputed, never held
