"""`plainly_parses` tells some CEL sources parse without asking the library
(`compile_cel` then skips `cel.compile`). It must never say so of a source the
library refuses: checked against the library on generated sources built from
tokens near the edges of its grammar (reserved words, long and leading-zero numbers,
unary operators, calls, brackets, odd whitespace)."""

from __future__ import annotations

from execplan.planner._cel import cel
from execplan.planner.expressions import compile_cel, plainly_parses
from hypothesis import given, settings
from hypothesis import strategies as st

TOKENS = [
    "a", "b_1", "_x", "__", "tasks", "t0", "output", "value", "inputs", "workflow",
    "in", "as", "true", "false", "null", "let", "int", "size", "has", "exists",
    "0", "7", "00", "0123", "123456789012345678", "1234567890123456789",
    "99999999999999999999", "1e5", "1.5", "0x1F", "5u", "é", "\u00a0",
    ".", "..", "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||",
    "!", "?", ":", "(", ")", "[", "]", "{", "}", ",", '"s"', "'", " ", "  ", "\t", "\n",
    "\r", "\f",
]  # fmt: skip


def _parses(source: str) -> bool:
    try:
        cel.compile(source)
    except ValueError:
        return False
    return True


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12))
def test_what_plainly_parses_parses(tokens: list[str]) -> None:
    source = "".join(tokens)
    if plainly_parses(source):
        assert _parses(source), source


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "tasks.t1.output.value", "x.y", "42", "0", "in", "as"]),
            st.sampled_from([" + ", "-", " * ", "/", "%", " == ", "!=", "<", ">=", "&&", "||"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_chains_of_names_and_numbers(pairs: list[tuple[str, str]]) -> None:
    source = "".join(o + op for o, op in pairs) + "1"
    assert plainly_parses(source) == _parses(source), source


def test_the_usual_expressions_need_no_parser_and_the_rest_go_to_it() -> None:
    for source in ("tasks.t0.output.value + 1234", " workflow.inputs.size ", "a.b >= 3 && c"):
        assert plainly_parses(source) and compile_cel(source) is None
    for source in ("a.in", "1 +", "f(x)", "a[0]", "-1", "true", "0123", "a in b", ""):
        assert not plainly_parses(source)
    assert compile_cel("a.in") is not None  # the library's answer, as before
    assert compile_cel("1 +") is not None
