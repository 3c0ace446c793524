"""Short forms (lower-case enums, `250ms`) and canonical proto JSON give one plan."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from execplan.planner import compile_document, compile_source
from execplan.planner.durations import parse_duration
from execplan.v1 import workflow_pb2
from google.protobuf import json_format

GOLDEN = Path(__file__).parent / "golden"
DURATION_FIELDS = {
    "initial_interval", "max_interval", "schedule_to_start", "start_to_close", "heartbeat",
    "schedule_to_close", "open_for", "window", "estimated_duration",
}  # fmt: skip
ENUMS = {
    "on_failure": "ON_FAILURE_",
    "trigger": "TRIGGER_RULE_",
    "on_open": "BREAKER_OPEN_ACTION_",
}


def to_canonical(doc: Any, key: str = "") -> Any:
    """The short-form document rewritten in the canonical proto JSON spellings."""
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            if k in DURATION_FIELDS and isinstance(v, str):
                out[k] = f"{parse_duration(v) / 1000:.3f}s"
            elif k in ("cpu", "memory"):
                out[k] = str(v)  # short form allows bare numbers; proto wants strings
            elif k in ENUMS and isinstance(v, str):
                out[k] = ENUMS[k] + v.upper()
            elif k == "type" and key == "input" and isinstance(v, str):
                out[k] = "INPUT_TYPE_" + v.upper()
            elif k == "inputs" and key == "":
                out[k] = {name: to_canonical(spec, "input") for name, spec in v.items()}
            elif k in ("inputs", "outputs", "labels", "require", "prefer"):
                out[k] = copy.deepcopy(v)
            else:
                out[k] = to_canonical(v, "task" if k == "tasks" else key)
        return out
    if isinstance(doc, list):
        return [to_canonical(v, key) for v in doc]
    return doc


@pytest.mark.parametrize("name", ["order_saga", "etl_conditions", "fan_out"])
def test_proto_json_round_trip_has_same_plan_id(name: str) -> None:
    text = (GOLDEN / f"{name}.yaml").read_text()
    short = compile_source(text)
    assert short.plan is not None
    canonical = to_canonical(yaml.safe_load(text))
    # Through the real proto: what the gRPC layer hands to compile_document.
    msg = json_format.ParseDict(canonical, workflow_pb2.Workflow())
    as_dict = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    via_proto = compile_document(as_dict)
    assert via_proto.plan is not None, via_proto.diagnostics
    assert via_proto.plan.plan_id == short.plan.plan_id
    # And the canonical JSON text compiles the same too.
    assert compile_source(json.dumps(canonical)).plan == short.plan


def test_enum_spellings_and_numbers() -> None:
    base: dict[str, Any] = {
        "name": "wf",
        "tasks": [{"id": "a", "type": "x"}, {"id": "b", "type": "x", "depends_on": ["a"]}],
    }
    ids = set()
    for spelling in ("all_done", "ALL_DONE", "TRIGGER_RULE_ALL_DONE", 2):
        doc = copy.deepcopy(base)
        doc["tasks"][1]["trigger"] = spelling
        result = compile_document(doc)
        assert result.plan is not None
        ids.add(result.plan.plan_id)
    assert len(ids) == 1


def test_integers_as_strings_and_floats() -> None:
    a = compile_document(
        {
            "name": "wf",
            "max_parallel": 5,
            "tasks": [{"id": "a", "type": "x", "priority": 3, "inputs": {"n": 10}}],
        }
    )
    b = compile_document(
        {
            "name": "wf",
            "max_parallel": "5",
            "tasks": [{"id": "a", "type": "x", "priority": "3", "inputs": {"n": 10.0}}],
        }
    )
    assert a.plan is not None and b.plan is not None
    assert a.plan.plan_id == b.plan.plan_id


def test_yaml_and_json_sources_agree() -> None:
    text = (GOLDEN / "fan_out.yaml").read_text()
    a = compile_source(text, "yaml")
    b = compile_source(json.dumps(yaml.safe_load(text)), "auto")
    assert a.plan is not None and b.plan is not None
    assert a.plan.plan_id == b.plan.plan_id


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        compile_source("name: x", "toml")
