"""Protobuf JSON with maps in key order: the same plan or execution prints the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from execplan.cli.render import event_fields
from execplan.planner import compile_source
from execplan.v1 import events_pb2, execution_pb2, executor_service_pb2
from execplan.wire.json_order import json_dict, message_dict
from execplan.wire.plan_codec import encode_plan
from google.protobuf import json_format

LABELLED = """\
name: labelled
labels: {zone: b, team: a, tier: c, owner: d, env: e, cost: f}
tasks:
  - id: a
    type: t.a
    placement: {require: {pool: p, gpu: "true", arch: x86}, prefer: {rack: r2, disk: ssd}}
    inputs:
      cfg: {zeta: 1, alpha: [{y: 1, b: 2}, 3], mid: {q: 1, c: {z: 0, a: 0}}}
"""


def _keys_in_order(value: object) -> list[list[str]]:
    """The key list of every object in `value`, depth first."""
    found: list[list[str]] = []
    if isinstance(value, dict):
        found.append(list(value))
        for item in value.values():
            found += _keys_in_order(item)
    elif isinstance(value, list):
        for item in value:
            found += _keys_in_order(item)
    return found


def test_maps_and_structs_in_key_order_messages_in_field_order() -> None:
    plan = compile_source(LABELLED).plan
    assert plan is not None
    message = encode_plan(plan)
    data = message_dict(message)
    reference = json_format.MessageToDict(message, preserving_proto_field_name=True)
    assert data == reference  # the same content
    assert list(data) == list(reference)  # plan fields keep field-number order
    assert list(data["labels"]) == ["cost", "env", "owner", "team", "tier", "zone"]
    node = data["nodes"][0]
    assert list(node) == list(reference["nodes"][0])
    placement = node["resources"]
    assert list(placement["require_labels"]) == ["arch", "gpu", "pool"]
    assert list(placement["prefer_labels"]) == ["disk", "rack"]
    literal = node["bindings"][0]["value"]["literal"]
    assert list(literal) == ["alpha", "mid", "zeta"]
    assert literal["alpha"] == [{"b": 2, "y": 1}, 3] and list(literal["alpha"][0]) == ["b", "y"]
    assert list(literal["mid"]) == ["c", "q"] and list(literal["mid"]["c"]) == ["a", "z"]


def test_an_execution_prints_its_maps_sorted() -> None:
    execution = execution_pb2.Execution(execution_id="e1", plan_id="p")
    for n, key in enumerate(("zulu", "alpha", "mike", "bravo")):
        execution.inputs[key] = {"y": n, "b": n}
        execution.task_counts[key] = n + 1
        execution.search_attributes[key].string_value = key
    data = message_dict(execution)
    assert data == json_format.MessageToDict(execution, preserving_proto_field_name=True)
    order = ["alpha", "bravo", "mike", "zulu"]
    assert list(data["inputs"]) == list(data["task_counts"]) == order
    assert list(data["search_attributes"]) == order
    assert all(list(value) == ["b", "y"] for value in data["inputs"].values())


def test_plan_json_is_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    # protobuf iterates maps in an order that differs between processes.
    path = tmp_path / "labelled.yaml"
    path.write_text(LABELLED)
    texts = {
        subprocess.run(
            [sys.executable, "-m", "execplan.cli", "plan", str(path), "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(4)
    }
    assert len(texts) == 1
    plan = json.loads(texts.pop())
    for keys in _keys_in_order({"labels": plan["labels"]})[1:]:
        assert keys == sorted(keys)


def test_json_names_kept_maps_sorted() -> None:
    worker = executor_service_pb2.WorkerInfo(worker_id="w", slots_in_use=2)
    for key in ("zone", "arch", "pool"):
        worker.labels[key] = "x"
        worker.resources.custom[key] = 1
    worker.connected_at.FromSeconds(1)
    data = json_dict(worker)
    reference = json_format.MessageToDict(worker)
    assert data == reference and list(data) == list(reference)
    assert "slotsInUse" in data and data["connectedAt"] == "1970-01-01T00:00:01Z"
    assert list(data["labels"]) == list(data["resources"]["custom"]) == ["arch", "pool", "zone"]


def test_history_lines_print_maps_sorted() -> None:
    event = events_pb2.ExecutionEvent(sequence=1)
    started = event.execution_started
    for key in ("zulu", "alpha", "mike"):
        started.inputs[key] = {"y": 1, "b": 2}
    inputs = next(word for word in event_fields(event) if word.startswith("inputs="))
    assert inputs.index('"alpha"') < inputs.index('"mike"') < inputs.index('"zulu"')
    assert inputs.index('"b"') < inputs.index('"y"')
