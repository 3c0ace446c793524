"""The flow-control facts of a queued attempt (decide/keys.py): the limit key, bucket
keys and units, cache key and breaker key, evaluated over the task's resolved inputs,
the workflow's inputs and the execution; and what a key or units that cannot be used
does to the task (it fails for good, naming the field)."""

from __future__ import annotations

from typing import Any

import pytest
from execplan.executor.decide.keys import task_facts
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError
from execplan.flow.keys import default_cache_key
from execplan.v1 import execution_pb2 as ex

from .conftest import Env
from .machinekit import Sim

FLOW = """
name: keys
inputs:
  tenant: {type: string}
  prompt: {type: string}
  model: {type: string}
tasks:
  - id: chat
    type: llm.chat
    inputs: {model: "${{ workflow.inputs.model }}", prompt: "${{ workflow.inputs.prompt }}"}
    limit: {key: "workflow.inputs.tenant + '/' + inputs.model", max: 4}
    rate_limits:
      - {name: rpm, key: "inputs.model"}
      - {name: tpm, key: "execution.fairness_key", units: "size(inputs.prompt) / 4 + 256"}
    cache: {ttl: 1h}
    circuit_breaker: {key: "inputs.model", failure_threshold: 2}
"""


INPUTS: dict[str, object] = {"tenant": "acme", "prompt": "hi", "model": "gpt-4o"}


def test_keys_and_units_come_from_inputs_workflow_and_execution() -> None:
    sim = Sim(FLOW, {"tenant": "acme", "prompt": "x" * 400, "model": "gpt-4o"})
    sim.state.fairness_key = "team-a"
    facts = task_facts(Step(sim.state, sim.now), sim.plan.index_of["chat"])
    assert facts.limit == ("llm.chat", "acme/gpt-4o", 4)
    assert facts.uses == (("rpm", "gpt-4o", 1), ("tpm", "team-a", 356))
    assert facts.breaker_key == "gpt-4o"
    inputs = {"model": "gpt-4o", "prompt": "x" * 400}
    assert facts.cache_key == default_cache_key("llm.chat", inputs)
    # The default cache key is the task's type and resolved inputs, whatever their order.
    assert facts.cache_key == default_cache_key("llm.chat", dict(reversed(inputs.items())))
    assert facts.cache_key != default_cache_key("llm.other", inputs)


def test_another_model_or_tenant_is_another_key() -> None:
    one = Sim(FLOW, {"tenant": "acme", "prompt": "hi", "model": "gpt-4o"})
    two = Sim(FLOW, {"tenant": "zeta", "prompt": "hi", "model": "small"})
    a = task_facts(Step(one.state, one.now), 0)
    b = task_facts(Step(two.state, two.now), 0)
    assert (a.limit, b.limit) == (("llm.chat", "acme/gpt-4o", 4), ("llm.chat", "zeta/small", 4))
    assert a.breaker_key != b.breaker_key and a.cache_key != b.cache_key


@pytest.mark.parametrize(
    ("units", "problem"),
    [
        ("size(inputs.prompt) - 2", "0 is not a whole number of units"),
        ("2.5", "2.5 is not a whole number of units"),
        ("'many'", "'many' is not a whole number of units"),
        ("true", "True is not a whole number of units"),
        ("size(inputs.prompt) * 1000000000", "is not a whole number of units"),
    ],
)
def test_units_that_are_not_a_whole_number_in_range_name_the_field(
    units: str, problem: str
) -> None:
    source = FLOW.replace('"size(inputs.prompt) / 4 + 256"', f'"{units}"')
    sim = Sim(source, INPUTS)
    with pytest.raises(EvaluationError) as raised:
        task_facts(Step(sim.state, sim.now), 0)
    assert "rate_limits[1].units" in str(raised.value)
    assert problem in str(raised.value)


def test_a_key_that_does_not_evaluate_fails_the_task_for_good() -> None:
    source = FLOW.replace("workflow.inputs.tenant + '/' + inputs.model", "inputs.missing.deep")
    sim = Sim(source, INPUTS)
    with pytest.raises(EvaluationError) as raised:
        task_facts(Step(sim.state, sim.now), 0)
    problem = raised.value
    assert str(problem) == "limit.key: inputs.missing.deep: no such key 'missing'"
    sim.step(lambda m: m.binding_failed(0, problem))
    run = sim.task("chat")
    assert run.state == ex.TASK_STATE_FAILED and run.attempt <= 1
    assert run.error is not None
    assert (run.error.type, run.error.message) == ("BindingError", str(problem))
    assert sim.state.state == ex.EXECUTION_STATE_FAILED
    sim.assert_replay_matches()


TOKENS = """
name: tokens
inputs:
  prompt: {type: string}
tasks:
  - id: first
    type: k.chat
    inputs: {prompt: "${{ workflow.inputs.prompt }}"}
    rate_limits: [{name: tpm, units: "size(inputs.prompt) / 4"}]
  - id: second
    type: k.chat
    depends_on: [first]
    inputs: {prompt: "${{ workflow.inputs.prompt }}"}
    rate_limits: [{name: tpm, units: "size(inputs.prompt) / 4"}]
"""


async def test_units_from_the_inputs_are_what_a_task_takes(env: Env) -> None:
    calls: list[str] = []

    async def chat(inputs: dict[str, Any]) -> int:
        calls.append(inputs["prompt"])
        return len(calls)

    env.worker({"k.chat": chat})
    await env.client.set_rate_limit("tpm", 100, 3_600_000, burst=100)  # no refill to speak of
    execution_id = await env.start(TOKENS, {"prompt": "x" * 240})  # 60 units a call

    async def second_waits() -> bool:
        run = (await env.client.get(execution_id)).tasks[1]
        return run.waiting.kind == ex.WAIT_KIND_RATE_LIMIT

    await env.until(second_waits)
    (bucket,) = (await env.client.list_limits("tpm")).rate_limits
    (level,) = bucket.keys
    assert 39.9 < level.tokens < 41  # 100 - 60 (and the little an hour's rate refills)
    run = (await env.client.get(execution_id)).tasks[1]
    assert run.state == ex.TASK_STATE_QUEUED and "rate limit tpm is empty" in run.waiting.message
    assert len(calls) == 1


async def test_units_that_do_not_evaluate_fail_the_task_without_a_dispatch(env: Env) -> None:
    calls: list[str] = []

    async def chat(inputs: dict[str, Any]) -> int:
        calls.append(inputs["prompt"])
        return 1

    env.worker({"k.chat": chat})
    await env.client.set_rate_limit("tpm", 100, 60_000)
    execution_id = await env.start(TOKENS, {"prompt": "abc"})  # 3 / 4 = 0 units
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    first = done.tasks[0]
    assert first.state == ex.TASK_STATE_FAILED and not first.attempts
    assert first.error.type == "BindingError"
    assert first.error.message.startswith("rate_limits[0].units: 0 is not a whole number")
    assert calls == []
    kinds = [e.WhichOneof("kind") for e in await env.history(execution_id)]
    assert "task_dispatched" not in kinds
