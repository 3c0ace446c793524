"""Loading source text: YAML built from libyaml's events the way PyYAML's SafeLoader
builds it, within the document limits, with duplicate keys and over-long numbers
reported at their paths; JSON the same way around the stdlib decoder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from execplan.planner import compile_source, limits
from execplan.planner.diagnostics import Diagnostics
from execplan.planner.load_json import load_json
from execplan.planner.load_yaml import load_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).parents[2]
YAML_FILES = sorted(ROOT.glob("examples/*.yaml")) + sorted(ROOT.glob("tests/planner/golden/*.yaml"))


def load(text: str, fmt: str = "yaml") -> tuple[bool, object, list[tuple[str, str, str]]]:
    diags = Diagnostics()
    ok, doc = (load_yaml if fmt == "yaml" else load_json)(text, diags)
    return ok, doc, [(d.code, d.path, d.message) for d in diags.items]


def codes(text: str, fmt: str = "auto") -> list[tuple[str, str]]:
    return [(d.code, d.path) for d in compile_source(text, fmt).errors]


# --- YAML: the same documents as PyYAML's SafeLoader ------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_every_example_loads_as_safe_load_does(path: Path) -> None:
    text = path.read_text()
    assert load(text) == (True, yaml.safe_load(text), [])


SAME_AS_SAFE_LOAD = [
    "",
    "---\n...\n",
    "a: yes\nb: 1:30\nc: 017\nd: 0x1f\ne: 1_000\nf: .inf\ng: ~\nh: 'yes'\ni: 2001-12-14\n",
    "a: !!str 12\nb: !!int '7'\nc: !!float '1e3'\nd: !!null ''\ne: !!binary aGVsbG8=\n",
    "x: &m {a: 1, b: 2}\ny: {<<: *m, b: 3}\n",
    "x: &m {a: 1}\nn: &n {a: 2, b: 2}\ny: {<<: [*m, *n], c: 3}\n",
    "a: &x [1, {b: c}]\nd: *x\n=: eq\n",
    "- a\n- b: 1\n  c: [1, {d: e}]\n-\n- 'quoted: yes'\n",
    "tasks:\n  - id: a\n    inputs: |\n      multi\n      line\n",
]


@pytest.mark.parametrize("text", SAME_AS_SAFE_LOAD)
def test_scalars_merges_and_aliases_as_safe_load(text: str) -> None:
    assert load(text) == (True, yaml.safe_load(text), [])


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_like, st.booleans())
def test_round_trip_of_any_json_like_document(doc: Any, flow: bool) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)
    assert load(text) == (True, yaml.safe_load(text), [])


# --- YAML: what PyYAML accepted silently or answered with an internal error --------------


def test_duplicate_keys_with_both_lines() -> None:
    *_, found = load("name: w\ntasks:\n  - {id: a, type: x}\ntasks:\n  - {id: b, type: x}\n")
    assert found == [
        (
            "duplicate-key",
            "tasks",
            "key 'tasks' is written twice in this mapping (line 2 and line 4); "
            "the first would be lost",
        )
    ]
    nested = "tasks:\n  - id: a\n    type: x\n    inputs: {v: 1, v: 2}\n"
    assert [(c, p) for c, p, _ in load(nested)[2]] == [("duplicate-key", "tasks[0].inputs.v")]
    # A key that a `<<` merge brought in may be overridden: that is what merges are for.
    assert load("b: &b {x: 1}\nc: {<<: *b, x: 2}\n")[2] == []


def test_a_duplicate_key_is_an_error_of_the_compile() -> None:
    assert codes("name: w\nname: v\ntasks: [{id: a, type: x}]\n") == [("duplicate-key", "name")]


def test_numbers_too_long_to_convert() -> None:
    # PyYAML's int() raised ValueError (exit 70 / INTERNAL) on 5,000 digits.
    *_, found = load("priority: " + "9" * 5_000 + "\nx: [0x" + "f" * 200 + "]\n")
    assert [(c, p) for c, p, _ in found] == [
        ("invalid-number", "priority"),
        ("invalid-number", "x[0]"),
    ]
    assert "5,000 characters" in found[0][2]
    assert load("quoted: '" + "9" * 5_000 + "'\n")[2] == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("&a [*a]", "inside its own anchor"),
        ("a: *nowhere", "not defined"),
        ("a: !!set {x, y}", "unsupported YAML tag"),
        ("a: !!python/object:os.system x", "unsupported YAML tag"),
        ("a: !custom x", "unsupported YAML tag"),
        ("a: 1\n---\nb: 2\n", "expected one document"),
        ("? [1]\n: 2\n", "cannot be a key"),
        ("a: [1,", "invalid YAML"),
    ],
)
def test_rejected_yaml(text: str, words: str) -> None:
    ok, doc, found = load(text)
    assert not ok and doc is None
    assert [c for c, _, _ in found] == ["invalid-syntax"]
    assert words in found[0][2]


# --- YAML and JSON: the limits ------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "name: bomb\n" + "\n".join(lines) + "\ntasks: [{id: t, type: x, inputs: {v: *a8}}]\n"


def test_the_alias_bomb_stops_at_the_value_limit() -> None:
    text = alias_bomb()
    assert len(text) < 700
    ok, _, found = load(text)
    assert not ok
    assert [c for c, _, _ in found] == ["limit-document-values"]
    assert codes(text) == [("limit-document-values", found[0][1])]


def test_aliases_count_as_what_they_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    # root 1, key a0 1, list 1 + 10, key a1 1, list 1, ten aliases of 11 each: 125
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\na1: [" + ", ".join(["*a0"] * 10) + "]\n"
    monkeypatch.setattr(limits, "MAX_DOCUMENT_VALUES", 125)
    assert load(text)[0]
    monkeypatch.setattr(limits, "MAX_DOCUMENT_VALUES", 124)
    assert not load(text)[0]


def test_depth_limit_counts_levels_reached_through_aliases() -> None:
    inner = "[" * 20 + "]" * 20
    assert load(f"a: &a {inner}\nb: {inner}\n")[0]  # 21 levels with the root
    ok, _, found = load(f"a: &a {inner}\nb: " + "[" * 12 + "*a" + "]" * 12 + "\n")
    assert not ok and found[0][0] == "limit-document-depth" and "alias *a" in found[0][2]
    block = "".join(" " * i + "- \n" for i in range(0, 200, 2))
    assert [c for c, _, _ in load(block)[2]] == ["limit-document-depth"]
    deep = "[" * 100_000 + "]" * 100_000
    # libyaml's scanner looks ahead and stops at its own nesting limit (1,000) first.
    assert [(c, "nesting" in m) for c, _, m in load(deep)[2]] == [("invalid-syntax", True)]
    assert [c for c, _, _ in load(deep, "json")[2]] == ["limit-document-depth"]


def test_merges_add_no_level_and_paths_name_them_as_written() -> None:
    # Each `<<` brings the keys into its own map: a chain of 40 merges is 2 levels
    # deep, not 41 (it was refused as deeper than 32).
    chain = "a0: &a0 {k0: {x: 1}}\n" + "".join(
        f"a{i}: &a{i} {{<<: [*a{i - 1}], k{i}: 1}}\n" for i in range(1, 40)
    )
    assert load(chain) == (True, yaml.safe_load(chain), [])
    # Over a bound inside a merge: the path shows `<<`, not a Python object.
    inner = "[" * 31 + "]" * 31
    ok, _, found = load(f"a: &a {inner}\nb: {{<<: [*a]}}\n")
    assert not ok and [(c, p) for c, p, _ in found] == [("limit-document-depth", 'b["<<"][0]')]


def test_values_deeper_than_the_limit_in_any_format() -> None:
    value: Any = 1
    for _ in range(40):
        value = [value]
    doc = {"name": "w", "tasks": [{"id": "a", "type": "t", "inputs": {"v": value}}]}
    for text, fmt in ((json.dumps(doc), "json"), (yaml.safe_dump(doc), "yaml")):
        found = codes(text, fmt)
        assert found and found[0][0] == "limit-document-depth", (fmt, found)


def test_the_task_limit_stops_the_yaml_parse_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_TASKS", 5)
    tasks = "".join(f"  - {{id: t{i}, type: x}}\n" for i in range(6))
    # The syntax error after the sixth task is never reached.
    *_, found = load("name: w\ntasks:\n" + tasks + "  - [unclosed\n")
    assert [(c, p) for c, p, _ in found] == [("limit-tasks", "tasks")]


def test_json_value_limit_does_not_count_commas_in_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_DOCUMENT_VALUES", 50)
    text = json.dumps({"name": "w", "description": ",[{" * 1_000, "tasks": []})
    assert load(text, "json")[0]
    assert [c for c, _, _ in load(json.dumps({"a": list(range(60))}), "json")[2]] == [
        "limit-document-values"
    ]


def test_json_value_count_is_linear_on_unterminated_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The strings are cut out only when the fast count is over the limit; an
    unterminated string full of escaped quotes made the textbook regex quadratic."""
    monkeypatch.setattr(limits, "MAX_DOCUMENT_VALUES", 10)
    text = '{"a": "' + '\\",' * 20_000  # never closed: 20,000 commas inside
    started = time.monotonic()
    ok, _, found = load(text, "json")
    assert time.monotonic() - started < 2
    assert not ok and [c for c, _, _ in found] == ["invalid-syntax"]


def test_json_duplicate_keys_and_long_numbers() -> None:
    text = (
        '{"name": "w", "tasks": [], '
        '"tasks": [{"id": "a", "type": "x", "inputs": {"v": 1, "v": 2}}]}'
    )
    ok, _, found = load(text, "json")
    assert ok
    assert sorted((c, p) for c, p, _ in found) == [
        ("duplicate-key", "tasks"),
        ("duplicate-key", "tasks[0].inputs.v"),
    ]
    big = '{"name": "w", "tasks": [{"id": "a", "type": "x", "priority": ' + "9" * 5_000 + "}]}"
    assert codes(big) == [("invalid-number", "tasks[0].priority")]
    safe = '{"name": "w", "tasks": [{"id": "a", "type": "x", "inputs": {"v": 9007199254740993}}]}'
    assert codes(safe) == [("invalid-number", "tasks[0].inputs.v")]
    for literal in ("NaN", "Infinity", "1e999"):
        text = '{"name": "w", "tasks": [{"id": "a", "type": "x", "inputs": {"v": LIT}}]}'
        text = text.replace("LIT", literal)
        assert codes(text) == [("invalid-type", "tasks[0].inputs.v")]


def test_a_key_written_twice_inside_a_lost_value_is_not_reported_elsewhere() -> None:
    # The value lost to `"v"` written twice is an object with a key written twice; it
    # is freed during the parse, and an object made later at its address was reported
    # as `tasks[3].k` and the like (more often with a long number, whose second parse
    # allocates more), so the diagnostics depended on the heap's state.
    tasks = ",".join(
        f'{{"id": "t{i}", "type": "x", "inputs": {{"v": {{"k": 1, "k": 2}}, "v": 0, '
        '"w": {"a": [{"b": 1}]}}}'
        for i in range(50)
    )
    for tail in ("", ', "n": ' + "1" * 5_000):
        ok, _, found = load('{"name": "w", "tasks": [' + tasks + "]" + tail + "}", "json")
        assert ok
        assert sorted(p for c, p, _ in found if c == "duplicate-key") == sorted(
            f"tasks[{i}].inputs.v" for i in range(50)
        )


def test_document_size_is_checked_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_DOCUMENT_BYTES", 100)
    assert codes("name: w\n# " + "é" * 60 + "\n") == [("limit-document-size", "")]
    assert codes("name: w\n" + "[" * 200) == [("limit-document-size", "")]


def test_version_and_labels_may_be_integers() -> None:
    text = "name: w\nversion: 3\nlabels: {tier: 1}\ntasks: [{id: a, type: x}]\n"
    result = compile_source(text)
    assert result.plan is not None and result.plan.workflow_version == "3"
    assert result.plan.labels == {"tier": "1"}
    found = compile_source("name: w\nversion: 1.10\ntasks: [{id: a, type: x}]\n").errors
    assert [(d.code, d.path) for d in found] == [("invalid-type", "version")]
    assert "quote it" in found[0].message


def test_decimal_strings_for_integer_fields_are_ascii_and_short() -> None:
    # int('²') and int() of 5,000 digits raise; both were INTERNAL.
    for value in ('"²"', '"' + "9" * 5_000 + '"'):
        text = '{"name": "w", "tasks": [{"id": "a", "type": "x", "priority": P}]}'
        text = text.replace("P", value)
        assert codes(text) == [("invalid-type", "tasks[0].priority")]
    assert not codes('{"name": "w", "tasks": [{"id": "a", "type": "x", "priority": " 7 "}]}')


# --- JSON: a key written twice, told without a hook per object --------------------------

_KEYS = st.text(alphabet='ab:"\\é', max_size=3)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**25), 10**25)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=':ab"\\{}[],é\n', max_size=6)
)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_KEYS, inner), max_size=4),
    max_leaves=12,
)


def _text(tree: object, ascii_only: bool, colon: str) -> str:
    """JSON of `tree`, where a list of (key, value) pairs is an object (keys may repeat)."""
    if isinstance(tree, list) and tree and all(isinstance(x, tuple) for x in tree):
        members = (
            json.dumps(k, ensure_ascii=ascii_only) + colon + _text(v, ascii_only, colon)
            for k, v in tree
        )
        return "{" + ",".join(members) + "}"
    if isinstance(tree, list):
        return "[" + ", ".join(_text(x, ascii_only, colon) for x in tree) + "]"
    return json.dumps(tree, ensure_ascii=ascii_only)


@settings(max_examples=800, deadline=None)
@given(_TREES, st.booleans(), st.sampled_from([":", " : ", ":\n "]))
def test_keys_written_twice_are_found_as_with_a_hook_per_object(
    tree: object, ascii_only: bool, colon: str
) -> None:
    text = '{"doc": ' + _text(tree, ascii_only, colon) + "}"
    twice: list[bool] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        twice.append(len(dict(items)) != len(items))
        return dict(items)

    expected = json.loads(text, object_pairs_hook=pairs)
    ok, doc, found = load(text, "json")
    assert ok and doc == expected
    assert any(c == "duplicate-key" for c, _, _ in found) == any(twice), text


def test_a_key_written_twice_beside_an_escaped_colon() -> None:
    # Counting colons alone would miss it: the kept value spells a ":" as \u003a.
    *_, found = load('{"a": 1, "a": "\\u003a"}', "json")
    assert [(c, p) for c, p, _ in found] == [("duplicate-key", "a")]


def test_a_lone_surrogate_escape_is_refused() -> None:
    # The decoder kept "\ud800" as a lone surrogate: the plan compiled, and encoding
    # it (the server's reply, a stored plan) raised UnicodeEncodeError.
    head = '{"name": "w", "tasks": [{"id": "a", "type": "x", "inputs": '
    for inputs, lone in (
        ('{"v": "\\ud800"}', "\\ud800"),
        ('{"v": ["ok", "x\\uDFFFy"]}', "\\udfff"),
        ('{"\\udbff": 1}', "\\udbff"),
        ('{"v": "\\ude00\\ud83d"}', "\\ude00"),  # a pair in the wrong order is two halves
    ):
        ok, _, found = load(head + inputs + "}]}", "json")
        assert not ok
        assert found == [
            (
                "invalid-syntax",
                "",
                f"invalid JSON: the escape {lone} is half of a UTF-16 surrogate pair "
                "without its other half: not a character",
            )
        ]
    # A pair is one character; an escaped backslash before "ud800" is text.
    for inputs in ('{"v": "\\ud83d\\ude00"}', '{"v": "\\\\ud800"}'):
        result = compile_source(head + inputs + "}]}", "json")
        assert result.ok, result.diagnostics
