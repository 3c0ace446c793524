"""Fuzzing the planner: random documents, mutations of every example workflow, raw
text, deep nesting, huge strings, unicode and wrong types. Whatever comes in, the
planner returns diagnostics (or a plan); it never raises.

Case counts are recorded in docs/security.md (`pytest --hypothesis-show-statistics`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from execplan.planner import CompileResult, compile_document, compile_source, validate_source
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
DOCS = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
FIELDS = [
    "name", "tasks", "id", "type", "inputs", "outputs", "depends_on", "when", "trigger",
    "retry", "timeouts", "secrets", "resources", "placement", "on_failure", "for_each",
    "max_parallel", "circuit_breaker", "compensate", "version", "description",
]  # fmt: skip

unicode_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["", " ", "\x00", "\u202e", "🙂" * 50, "${{", "${{ tasks.", "}}", "a" * 5000])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | unicode_text
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.sampled_from(FIELDS) | unicode_text, children, max_size=6)
    ),
    max_leaves=40,
)


def well_formed(result: CompileResult) -> None:
    assert (result.plan is None) == any(d.severity == "error" for d in result.diagnostics)
    for d in result.diagnostics:
        assert d.code and isinstance(d.message, str)


@FUZZ
@given(documents)
def test_random_documents(doc: object) -> None:
    well_formed(compile_document(doc))
    well_formed(compile_document({"name": "wf", "tasks": [doc]}))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(doc: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "wrap":
        parent[last] = [parent[last]]
    elif how == "stringify":
        parent[last] = json.dumps(parent[last])
    elif how == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    else:
        parent[last] = value
    return doc


@FUZZ
@given(st.data())
def test_mutated_examples(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(DOCS))
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(_paths(doc)))
        how = data.draw(st.sampled_from(["replace", "delete", "wrap", "stringify", "duplicate"]))
        doc = _mutate(doc, path, how, data.draw(documents))
    well_formed(compile_document(doc))
    well_formed(compile_source(json.dumps(doc, default=str), "json"))


@FUZZ
@given(st.sampled_from([p.read_text() for p in EXAMPLES]), st.data())
def test_mutated_source_text(text: str, data: st.DataObject) -> None:
    """Byte-level damage: truncation, splices of random text, unicode."""
    cut = data.draw(st.integers(0, len(text)))
    splice = data.draw(unicode_text)
    for source in (text[:cut], text[:cut] + splice + text[cut:], splice):
        well_formed(compile_source(source))
        validate_source(source, "yaml")
        validate_source(source, "json")


def test_deep_nesting_and_huge_strings() -> None:
    depth = 100_000
    for source in (
        "[" * depth + "]" * depth,
        "{" + '"a": {' * depth + "}" * (depth + 1),
        "a:\n" + "".join(" " * i + "- \n" for i in range(1, 2_000)),
        "- " * 50_000 + "x",
        "name: " + "x" * 5_000_000,
        "tasks:\n  - {id: " + "é" * 1_000_000 + ", type: t}\n",
        "&a [*a]",
        "a: &a [*a, *a]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b, *b]\n",
    ):
        well_formed(compile_source(source))
    nested: Any = "leaf"
    for _ in range(50_000):
        nested = {"tasks": [nested]}
    well_formed(compile_document(nested))
