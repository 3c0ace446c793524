"""Flow control in the planner: limit, rate_limits, cache, breaker keys, custom
resources, the workflow's buckets and builtin.http; every bad value is a diagnostic
at its exact path, and plans without flow control keep their ids."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from execplan.flow import rates
from execplan.planner import compile_document
from execplan.planner.digest import canonical_json
from execplan.planner.plan import Literal
from execplan.v1 import plan_pb2, workflow_pb2
from execplan.wire.plan_codec import encode_plan, serialize_plan
from google.protobuf import json_format


def _doc(**task: Any) -> dict[str, Any]:
    base = {"id": "ask", "type": "llm.chat", "inputs": {"model": "${{ workflow.inputs.model }}"}}
    return {
        "name": "flow",
        "inputs": {"model": {"type": "string", "default": "gpt-4o"}},
        "rate_limits": [{"name": "openai-rpm", "rate": "60/m", "burst": 10}],
        "tasks": [{**base, **task}],
    }


def _errors(doc: dict[str, Any]) -> dict[str, str]:
    """path -> code of every diagnostic (builtin-invalid wins where a path has two)."""
    result = compile_document(doc)
    assert result.plan is None
    out: dict[str, str] = {}
    for d in result.diagnostics:
        if out.get(d.path) != "builtin-invalid":
            out[d.path] = d.code
    return out


def test_compiles_every_flow_field_into_the_plan() -> None:
    doc = _doc(
        limit={"key": "inputs.model", "max": 4},
        rate_limits=[{"name": "openai-rpm", "key": "inputs.model", "units": 1},
                     {"name": "tpm", "units": "size(inputs.model) / 4 + 1"}],
        cache={"ttl": "1h"},
        circuit_breaker={"key": "inputs.model", "failure_threshold": 3},
        resources={"gpu": 1, "custom": {"model-slots": 2}, "isolate": True, "memory": "64Mi"},
    )  # fmt: skip
    result = compile_document(doc)
    assert result.plan is not None, result.diagnostics
    plan = result.plan
    node = plan.nodes[0]
    assert node.limit is not None and node.limit.name == "llm.chat" and node.limit.max == 4
    assert node.limit.key is not None and node.limit.key.source == "inputs.model"
    assert [(u.name, u.units) for u in node.rate_limits] == [("openai-rpm", 1), ("tpm", 1)]
    assert node.rate_limits[1].units_expression is not None
    assert node.cache is not None and node.cache.key is None and node.cache.ttl == 3_600_000
    assert node.circuit_breaker is not None and node.circuit_breaker.key is not None
    assert node.resources.custom == {"model-slots": 2} and node.resources.isolate
    assert [(r.name, r.units, r.period, r.burst) for r in plan.rate_limits] == [
        ("openai-rpm", 60, 60_000, 10)
    ]
    # The streamed digest is the hash of the canonical JSON, new keys included.
    assert plan.plan_id == "sha256:" + hashlib.sha256(canonical_json(plan).encode()).hexdigest()
    assert '"limit"' in canonical_json(plan)
    # And the proto carries every field.
    msg = encode_plan(plan)
    pn = msg.nodes[0]
    assert pn.limit.key.source == "inputs.model" and pn.limit.max == 4
    assert pn.rate_limits[1].units_expression.source == "size(inputs.model) / 4 + 1"
    assert pn.cache.ttl.seconds == 3600
    assert pn.circuit_breaker.key.source == "inputs.model"
    assert dict(pn.resources.custom) == {"model-slots": 2} and pn.resources.isolate
    assert msg.rate_limits[0].period.seconds == 60
    assert serialize_plan(plan) == serialize_plan(compile_document(doc).plan)  # type: ignore[arg-type]


def test_the_canonical_proto_json_form_compiles_alike() -> None:
    doc = _doc(limit={"key": "inputs.model", "max": 4}, cache={"key": "inputs.model", "ttl": "30s"},
               rate_limits=[{"name": "openai-rpm", "units": 2}])  # fmt: skip
    proto_doc = json.loads(json.dumps(doc))
    proto_doc["inputs"]["model"]["type"] = "INPUT_TYPE_STRING"
    proto_doc["tasks"][0]["rate_limits"][0]["units"] = "2"  # a string in the proto
    wf = json_format.ParseDict(proto_doc, workflow_pb2.Workflow())
    canonical = json_format.MessageToDict(wf, preserving_proto_field_name=True)
    assert canonical["tasks"][0]["rate_limits"][0]["units"] == "2"
    a, b = compile_document(doc).plan, compile_document(canonical).plan
    assert a is not None and b is not None and a.plan_id == b.plan_id


def test_plans_without_flow_control_have_no_flow_keys() -> None:
    plan = compile_document({"name": "w", "tasks": [{"id": "a", "type": "t"}]}).plan
    assert plan is not None
    text = canonical_json(plan)
    for key in ('"limit"', '"rate_limits"', '"cache"', '"custom"', '"isolate"', '"key"'):
        assert key not in text


def test_defaults_breaker_key_applies_to_every_breaker() -> None:
    doc = _doc(circuit_breaker={"failure_threshold": 2})
    doc["defaults"] = {"circuit_breaker": {"key": "inputs.model"}}
    doc["tasks"].append({"id": "b", "type": "x"})
    plan = compile_document(doc).plan
    assert plan is not None
    assert all(n.circuit_breaker and n.circuit_breaker.key for n in plan.nodes)
    assert plan.node("ask").circuit_breaker.failure_threshold == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("task", "path", "code"),
    [
        ({"limit": {"max": 0}}, "tasks[0].limit.max", "invalid-limit"),
        ({"limit": {"key": "inputs.model"}}, "tasks[0].limit.max", "invalid-limit"),
        ({"limit": {"max": 1, "name": "Bad Name"}}, "tasks[0].limit.name", "invalid-limit"),
        ({"limit": {"max": 1, "key": "tasks.x.output"}}, "tasks[0].limit.key", "unknown-reference"),
        ({"limit": {"max": 1, "key": "nope"}}, "tasks[0].limit.key", "unknown-reference"),
        ({"limit": {"max": 1, "key": "inputs.("}}, "tasks[0].limit.key", "invalid-expression"),
        ({"limit": {"max": 1, "key": "workflow.inputs.gone"}}, "tasks[0].limit.key",
         "unknown-reference"),
        ({"limit": {"max": 1, "key": "(" * 40 + "1" + ")" * 40}}, "tasks[0].limit.key",
         "expression-too-deep"),
        ({"rate_limits": [{"name": "openai-rpm", "units": 11}]}, "tasks[0].rate_limits[0].units",
         "invalid-rate-limit"),
        ({"rate_limits": [{"name": "openai-rpm", "units": 0}]}, "tasks[0].rate_limits[0].units",
         "invalid-rate-limit"),
        ({"rate_limits": [{"name": "x"}, {"name": "x"}]}, "tasks[0].rate_limits[1].name",
         "invalid-rate-limit"),
        ({"rate_limits": [{"key": "inputs.model"}]}, "tasks[0].rate_limits[0].name",
         "missing-required"),
        ({"rate_limits": [{"name": f"b{i}"} for i in range(9)]}, "tasks[0].rate_limits",
         "invalid-rate-limit"),
        ({"cache": {"ttl": "400d"}}, "tasks[0].cache.ttl", "invalid-cache"),
        ({"cache": {"key": "tasks.a.output"}}, "tasks[0].cache.key", "unknown-reference"),
        ({"circuit_breaker": {"key": "x.y"}}, "tasks[0].circuit_breaker.key", "unknown-reference"),
        ({"resources": {"custom": {"gpu": 1}}}, "tasks[0].resources.custom.gpu",
         "invalid-quantity"),
        ({"resources": {"custom": {"slots": -1}}}, "tasks[0].resources.custom.slots",
         "invalid-quantity"),
        ({"resources": {"isolate": "yes"}}, "tasks[0].resources.isolate", "invalid-type"),
    ],
)  # fmt: skip
def test_bad_flow_control_names_the_field(task: dict[str, Any], path: str, code: str) -> None:
    assert _errors(_doc(**task)).get(path) == code


@pytest.mark.parametrize(
    ("bucket", "path"),
    [
        ({"name": "x", "rate": "60/fortnight"}, "rate_limits[0].rate"),
        ({"name": "x", "rate": "0/s"}, "rate_limits[0].rate"),
        ({"name": "x", "rate": "sixty"}, "rate_limits[0].rate"),
        ({"name": "x", "rate": "1/2d"}, "rate_limits[0].rate"),
        ({"name": "X", "rate": "1/s"}, "rate_limits[0].name"),
    ],
)
def test_bad_buckets_name_the_field(bucket: dict[str, Any], path: str) -> None:
    doc = _doc()
    doc["rate_limits"] = [bucket]
    assert _errors(doc).get(path) == "invalid-rate-limit"


def test_a_bucket_declared_twice() -> None:
    doc = _doc()
    doc["rate_limits"] = [{"name": "x", "rate": "1/s"}, {"name": "x", "rate": "2/s"}]
    assert _errors(doc) == {"rate_limits[1].name": "invalid-rate-limit"}


def test_waiting_builtins_take_no_flow_control() -> None:
    doc = {"name": "w", "tasks": [{"id": "s", "type": "builtin.sleep",
           "inputs": {"duration": "1s"}, "limit": {"max": 1}, "cache": {}}]}  # fmt: skip
    assert _errors(doc) == {
        "tasks[0].limit": "builtin-invalid",
        "tasks[0].cache": "builtin-invalid",
    }


def test_rates() -> None:
    assert rates.parse_rate("60/m") == (60, 60_000)
    assert rates.parse_rate(" 10 / s ") == (10, 1000)
    assert rates.parse_rate("5/30s") == (5, 30_000)
    assert rates.parse_rate("100/1m30s") == (100, 90_000)
    assert rates.format_rate(60, 60_000) == "60/m"
    assert rates.format_rate(5, 30_000) == "5/30s"
    assert rates.format_rate(7, 1500) == "7/1500ms"
    for bad in ("", "60", "60/", "/m", "60/x", "1/0s", "x" * 100):
        with pytest.raises(ValueError):
            rates.parse_rate(bad)


# --- builtin.http --------------------------------------------------------------------


def _http(secrets: list[str] | None = None, **inputs: Any) -> dict[str, Any]:
    task: dict[str, Any] = {"id": "call", "type": "builtin.http", "inputs": inputs}
    if secrets:
        task["secrets"] = secrets
    return {"name": "w", "inputs": {"id": {"type": "string"}}, "tasks": [task]}


def test_http_task_compiles_with_secret_headers_left_literal() -> None:
    doc = _http(
        ["api_key"],
        method="POST",
        url="https://api.example.com/v1/items/${{ workflow.inputs.id }}?x=1",
        headers={"Authorization": "Bearer ${{ secrets.api_key }}",
                 "X-Id": "${{ workflow.inputs.id }}"},
        body={"id": "${{ workflow.inputs.id }}"},
        expected_status=[200, "2xx"],
        max_response_bytes=1024,
        timeout="5s",
    )  # fmt: skip
    result = compile_document(doc)
    assert result.plan is not None, result.diagnostics
    node = result.plan.nodes[0]
    assert node.builtin == "BUILTIN_KIND_HTTP"
    assert encode_plan(result.plan).nodes[0].builtin == plan_pb2.BUILTIN_KIND_HTTP
    headers = {b.name: b.value for b in node.bindings}["headers"]
    fields = {f.name: f.value for f in headers.fields}  # type: ignore[union-attr]
    assert fields["Authorization"] == Literal("Bearer ${{ secrets.api_key }}")
    assert not isinstance(fields["X-Id"], Literal)


@pytest.mark.parametrize(
    ("inputs", "path"),
    [
        ({}, "tasks[0].inputs"),
        ({"url": "ftp://files.example.com/x"}, "tasks[0].inputs.url"),
        ({"url": "https://${{ workflow.inputs.id }}/x"}, "tasks[0].inputs.url"),
        ({"url": "https://api.example.com${{ workflow.inputs.id }}"}, "tasks[0].inputs.url"),
        ({"url": "${{ workflow.inputs.id }}"}, "tasks[0].inputs.url"),
        ({"url": "https://user:pw@api.example.com/"}, "tasks[0].inputs.url"),
        ({"url": "https:///x"}, "tasks[0].inputs.url"),
        ({"url": "https://a.example.com/", "method": "BREW"}, "tasks[0].inputs.method"),
        ({"url": "https://a.example.com/", "expected_status": [99]},
         "tasks[0].inputs.expected_status"),
        ({"url": "https://a.example.com/", "expected_status": "2xx"},
         "tasks[0].inputs.expected_status"),
        ({"url": "https://a.example.com/", "max_response_bytes": 1 << 30},
         "tasks[0].inputs.max_response_bytes"),
        ({"url": "https://a.example.com/", "timeout": "1h"}, "tasks[0].inputs.timeout"),
        ({"url": "https://a.example.com/", "headers": {"A": "x\r\ny"}},
         "tasks[0].inputs.headers.A"),
        ({"url": "https://a.example.com/", "headers": {"A": "${{ secrets.nope }}"}},
         "tasks[0].inputs.headers.A"),
        ({"url": "https://a.example.com/", "headers": {"A": 3}}, "tasks[0].inputs.headers.A"),
        ({"url": "https://a.example.com/?k=${{ secrets.api_key }}"}, "tasks[0].inputs.url"),
        ({"url": "https://a.example.com/", "retries": 3}, "tasks[0].inputs.retries"),
    ],
)  # fmt: skip
def test_bad_http_inputs_name_the_field(inputs: dict[str, Any], path: str) -> None:
    assert _errors(_http(["api_key"], **inputs)).get(path) == "builtin-invalid"


def test_http_takes_no_resources_or_placement() -> None:
    doc = _http(url="https://a.example.com/")
    doc["tasks"][0]["resources"] = {"cpu": 1}
    assert _errors(doc) == {"tasks[0].resources": "builtin-invalid"}
