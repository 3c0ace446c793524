"""encode_plan / encode_diagnostic: the plan dataclasses survive the trip to protobuf."""

from __future__ import annotations

from pathlib import Path

from execplan.planner import Diagnostic, compile_source
from execplan.v1 import plan_pb2, planner_service_pb2, workflow_pb2
from execplan.wire.plan_codec import encode_diagnostic, encode_plan, serialize_plan
from google.protobuf import json_format

GOLDEN = Path(__file__).parents[1] / "planner" / "golden"


def compiled(name: str) -> plan_pb2.ExecutionPlan:
    result = compile_source((GOLDEN / f"{name}.yaml").read_text())
    assert result.plan is not None
    return encode_plan(result.plan)


def test_fields_and_enums() -> None:
    msg = compiled("order_saga")
    assert msg.plan_id.startswith("sha256:") and msg.format_version == 1
    assert msg.on_failure == workflow_pb2.ON_FAILURE_COMPENSATE
    charge = next(n for n in msg.nodes if n.task_id == "charge")
    assert charge.retry.max_attempts == 5
    assert charge.retry.max_interval.ToMilliseconds() == 30_000
    assert charge.timeouts.heartbeat.ToMilliseconds() == 5000
    assert charge.circuit_breaker.on_open == workflow_pb2.BREAKER_OPEN_ACTION_PARK
    assert charge.resources.cpu_millis == 500 and charge.resources.memory_bytes == 256 * 2**20
    assert list(charge.resources.secrets) == ["stripe_key"]
    assert charge.condition.reads_tasks == ["reserve"]
    assert charge.fallback.type == "payments.charge_backup" and charge.fallback.inherits_inputs
    assert charge.HasField("fallback") and not charge.HasField("compensation")
    edge = msg.edges[0]
    assert edge.kind == plan_pb2.EDGE_KIND_ORDER_AND_DATA
    wait = next(n for n in msg.nodes if n.task_id == "wait_approval")
    assert wait.builtin == plan_pb2.BUILTIN_KIND_WAIT_FOR_EVENT
    amount = next(i for i in msg.inputs if i.name == "amount")
    assert amount.HasField("default") and amount.default.number_value == 10
    order = next(i for i in msg.inputs if i.name == "order_id")
    assert not order.HasField("default")


def test_binding_values() -> None:
    msg = compiled("etl_conditions")
    transform = next(n for n in msg.nodes if n.task_id == "transform")
    options = next(b for b in transform.bindings if b.name == "options").value
    assert options.WhichOneof("kind") == "struct"
    fields = {f.name: f.value for f in options.struct.fields}
    assert fields["dedupe"].literal.bool_value is True
    parts = fields["label"].template.parts
    assert [p.WhichOneof("kind") for p in parts] == ["text", "expression", "text", "expression"]
    assert parts[1].expression.reads_execution
    fan = compiled("fan_out")
    merge = next(n for n in fan.nodes if n.task_id == "merge")
    items = merge.bindings[0].value.list.items
    assert [i.expression.reads_tasks[0] for i in items] == [
        "shard_0",
        "shard_1",
        "shard_2",
        "shard_3",
    ]


def test_round_trips_through_bytes_and_json() -> None:
    msg = compiled("fan_out")
    again = plan_pb2.ExecutionPlan.FromString(msg.SerializeToString())
    assert again == msg
    text = json_format.MessageToJson(msg)
    assert json_format.Parse(text, plan_pb2.ExecutionPlan()) == msg


def test_serialize_plan_is_deterministic() -> None:
    result = compile_source((GOLDEN / "etl_conditions.yaml").read_text())
    assert result.plan is not None
    assert serialize_plan(result.plan) == serialize_plan(result.plan)


def test_encode_diagnostic() -> None:
    d = encode_diagnostic(Diagnostic("cycle", "tasks[0].depends_on[0]", "a > b > a"))
    assert d.severity == planner_service_pb2.SEVERITY_ERROR and d.code == "cycle"
    w = encode_diagnostic(Diagnostic("x", "", "m", "warning"))
    assert w.severity == planner_service_pb2.SEVERITY_WARNING


def test_edges_wire_matches_field_by_field() -> None:
    result = compile_source((GOLDEN / "fan_out.yaml").read_text())
    assert result.plan is not None
    msg = encode_plan(result.plan)
    expected = plan_pb2.ExecutionPlan()
    for e in result.plan.edges:
        expected.edges.add(source=e.source, target=e.target, kind=plan_pb2.EdgeKind.Value(e.kind))
    assert list(msg.edges) == list(expected.edges)
    assert msg.edges[0].source == 0  # zero-valued fields decode the same


def test_an_empty_list_or_object_default_is_kept() -> None:
    # set_value used to leave an empty [] or {} unset: the default vanished on the wire
    # and the executor then had no value for the input.
    from execplan.planner import compile_source  # noqa: PLC0415
    from execplan.wire.plan_codec import encode_plan  # noqa: PLC0415

    source = "name: x\ninputs: {a: {type: array, default: []}, b: {type: object, default: {}}}\n"
    result = compile_source(source + "tasks: [{id: t, type: t}]\n")
    assert result.plan is not None
    inputs = {i.name: i for i in encode_plan(result.plan).inputs}
    assert inputs["a"].HasField("default") and inputs["a"].default.HasField("list_value")
    assert inputs["b"].HasField("default") and inputs["b"].default.HasField("struct_value")
