"""builtin.http's `usage` input (execplan.httpcall.usage_map): what a response says a
call used. Literal mappings are checked by the planner at the exact input's path;
a response that lacks a mapped number is an error naming the counter and the path,
never a silent zero."""

from __future__ import annotations

from typing import Any

import pytest
from execplan.httpcall import usage_map
from execplan.httpcall.rules import HttpRuleError
from execplan.planner import compile_document

RESPONSE = {
    "status": 200,
    "headers": {"x-request-cost": " 0.25 ", "content-type": "application/json"},
    "body": {
        "usage": {"prompt_tokens": 1200, "completion_tokens": 300},
        "choices": [{"message": {"tokens": 7}}],
    },
}


def test_paths_numbers_and_priced_terms_are_measured() -> None:
    mapping = usage_map.parse(
        {
            "tokens_in": "body.usage.prompt_tokens",
            "tokens_out": "body.usage.completion_tokens",
            "cost": [
                {"from": "body.usage.prompt_tokens", "times": 0.000002},
                {"from": "body.usage.completion_tokens", "times": 0.000008},
                0.001,
            ],
            "requests": 1,
            "gateway_cost": "headers.X-Request-Cost",  # read lower-case, as the output holds it
            "choice_tokens": "body.choices.0.message.tokens",
        }
    )
    measured = usage_map.measure(mapping, RESPONSE)
    assert measured == {
        "tokens_in": 1200.0,
        "tokens_out": 300.0,
        "cost": pytest.approx(1200 * 0.000002 + 300 * 0.000008 + 0.001),
        "requests": 1.0,
        "gateway_cost": 0.25,
        "choice_tokens": 7.0,
    }


def test_a_zero_amount_is_not_reported() -> None:
    body = {**RESPONSE, "body": {"usage": {"prompt_tokens": 0}}}
    mapping = usage_map.parse({"tokens_in": "body.usage.prompt_tokens"})
    assert usage_map.measure(mapping, body) == {}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"cost": "body.usage.cost"}, "usage.cost: the response has no body.usage.cost"),
        ({"tokens": "body.choices.3.tokens"}, "usage.tokens: the response has no body.choices.3"),
        ({"tokens": "body.usage"}, "usage.tokens: body.usage is {'prompt_tokens'"),
        ({"tokens": "headers.content-type"}, "usage.tokens: headers.content-type is 'applicat"),
        ({"cost": {"from": "body.usage.prompt_tokens", "times": 1e13}}, "usage.cost: 1.2e+16 is"),
    ],
)
def test_a_response_without_the_number_is_an_error(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(usage_map.UsageMappingError) as raised:
        usage_map.measure(usage_map.parse(mapping), RESPONSE)
    assert str(raised.value).startswith(message), raised.value


def test_negative_numbers_in_a_response_are_refused() -> None:
    mapping = usage_map.parse({"cost": "body.cost"})
    with pytest.raises(usage_map.UsageMappingError, match="negative"):
        usage_map.measure(mapping, {"body": {"cost": -3}})


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("body.usage", "usage must be a map"),
        ({"Cost": 1}, "usage: counter name 'Cost' is not"),
        ({"cost": "usage.cost"}, "usage.cost: 'usage.cost' is not a path into the response"),
        ({"cost": "body..cost"}, "usage.cost: 'body..cost' is not a path"),
        ({"cost": "headers."}, "usage.cost: 'headers.' is not a path"),
        ({"cost": True}, "usage.cost: expected a path"),
        ({"cost": -1}, "usage.cost: -1 is negative"),
        ({"cost": float("nan")}, "usage.cost: amounts must be finite"),
        ({"cost": []}, "usage.cost: 1 to 8 terms"),
        ({"cost": [1] * 9}, "usage.cost: 1 to 8 terms"),
        ({"cost": {"from": "body.x", "per": 2}}, "usage.cost: a term is {from: PATH"),
        ({"cost": {"from": 3}}, "usage.cost.from: expected a path"),
        ({"cost": {"from": "body.x", "times": "2"}}, "usage.cost.times: expected a number"),
        ({"cost": "body." + ".".join(["k"] * 40)}, "usage.cost: 'body.k.k"),
        ({"cost": "body." + "k" * 300}, "usage.cost: a path is at most 256"),
        ({f"c{i}": 1 for i in range(33)}, "usage names 33 counters; at most 32"),
    ],
)
def test_bad_mappings_name_the_counter(mapping: object, message: str) -> None:
    with pytest.raises(HttpRuleError) as raised:
        usage_map.parse(mapping)
    assert str(raised.value).startswith(message), raised.value


def _workflow(usage: object) -> dict[str, Any]:
    inputs = {"url": "https://llm.example.com/v1/chat", "method": "POST", "usage": usage}
    return {
        "name": "w",
        "inputs": {"price": {"type": "number", "default": 0.001}},
        "tasks": [{"id": "ask", "type": "builtin.http", "inputs": inputs}],
    }


def test_the_planner_checks_a_literal_mapping_at_its_path() -> None:
    good = compile_document(_workflow({"tokens_in": "body.usage.prompt_tokens", "requests": 1}))
    assert good.ok, good.diagnostics
    # A mapping with expressions is checked when the task runs (HttpRequestInvalid).
    dynamic = compile_document(_workflow({"cost": "${{ workflow.inputs.price }}"}))
    assert dynamic.ok, dynamic.diagnostics
    bad = compile_document(_workflow({"cost": "response.usage.cost"}))
    assert [(d.code, d.path) for d in bad.errors] == [("builtin-invalid", "tasks[0].inputs.usage")]
    assert "'response.usage.cost' is not a path into the response" in bad.errors[0].message
