"""Golden files: tests/planner/golden/NAME.yaml compiles to NAME.plan.json.

The .plan.json is the Protobuf JSON of `encode_plan(plan)` (preserving_proto_field_name,
indent 2, keys sorted so map entries have a stable order). Regenerate after an intended change with:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/planner/test_planner_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from execplan.planner import compile_source, render_dot, render_mermaid, render_text
from execplan.wire.plan_codec import encode_plan
from google.protobuf import json_format

GOLDEN = Path(__file__).parent / "golden"
SOURCES = sorted(GOLDEN.glob("*.yaml"))


def plan_json(source: str) -> str:
    result = compile_source(source)
    assert result.plan is not None, result.diagnostics
    msg = encode_plan(result.plan)
    # sort_keys: protobuf iterates map entries (labels) in hash order.
    text = json_format.MessageToJson(
        msg, preserving_proto_field_name=True, indent=2, sort_keys=True
    )
    return text + "\n"


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_golden(path: Path) -> None:
    actual = plan_json(path.read_text())
    expected_path = path.with_suffix(".plan.json")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_path.write_text(actual)
    assert expected_path.exists(), f"missing {expected_path.name}; run with UPDATE_GOLDEN=1"
    assert actual == expected_path.read_text()


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_renderers_mention_every_task(path: Path) -> None:
    plan = compile_source(path.read_text()).plan
    assert plan is not None
    for render in (render_text, render_dot, render_mermaid):
        text = render(plan)
        assert all(n.task_id in text for n in plan.nodes)


def test_golden_set_is_not_empty() -> None:
    assert len(SOURCES) >= 3
