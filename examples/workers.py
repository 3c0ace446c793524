"""One sample worker for every task type used by the workflows in this directory.

    execplan worker examples/workers.py          # or: execplan worker examples.workers
    execplan worker examples/workers.py --slots 16

Bodies are small and deterministic (a few milliseconds of sleep, results derived
from the inputs) so the examples run end to end in well under a second. Numbers
arrive as floats (protobuf numbers are doubles): convert before using as counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from execplan.worker import NonRetryableError, Output, RateLimited, SubPlan, TaskContext, Worker

# Labels satisfy the placement rules of the examples (ml_pipeline, research_agents);
# the capacity is what their `resources` ask for (ml_pipeline's 4-CPU, 8Gi, one-GPU
# trainers; llm_quota's embedding on a GPU with a model slot), whatever the machine.
worker = Worker(
    labels={"accelerator": "gpu", "tier": "research", "agent": "researcher-1"},
    capacity={"cpu": 16, "memory": "64Gi", "gpu": 2, "model-slots": 2},
)

Inputs = dict[str, Any]


def _digest(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8]


async def _work(seconds: float = 0.01) -> None:
    await asyncio.sleep(seconds)


# -- hello.yaml ---------------------------------------------------------------------
@worker.task("hello.greet")
async def greet(inputs: Inputs) -> Inputs:
    await _work()
    return {"text": f"Hello, {inputs.get('name', 'world')}!"}


@worker.task("hello.upper")
async def upper(inputs: Inputs) -> Inputs:
    await _work(0.03)
    return {"text": str(inputs["text"]).upper()}


@worker.task("hello.reverse")
async def reverse(inputs: Inputs) -> Inputs:
    await _work(0.02)
    return {"text": str(inputs["text"])[::-1]}


@worker.task("hello.repeat")
def repeat(inputs: Inputs) -> Inputs:  # a sync handler runs in a thread
    time.sleep(0.01)
    return {"text": " ".join([str(inputs["text"])] * int(inputs.get("times", 1)))}


@worker.task("hello.combine")
async def combine(inputs: Inputs) -> Inputs:
    await _work()
    return {"text": " | ".join(str(inputs[k]) for k in ("shout", "mirror", "echo"))}


@worker.task("hello.count")
async def count(inputs: Inputs) -> Inputs:
    await _work()
    text = str(inputs["text"])
    return {"characters": len(text), "words": len(text.split())}


# -- order_saga.yaml ------------------------------------------------------------------
class CardDeclined(NonRetryableError):  # the error type the YAML names
    """The card was refused: retrying the same card cannot help."""


@worker.task("inventory.reserve")
async def reserve(inputs: Inputs) -> Inputs:
    await _work()
    return {"available": True, "reservation_id": f"res-{_digest(inputs['order'])}"}


@worker.task("inventory.release")
async def release(inputs: Inputs) -> Inputs:
    await _work()
    return {"released": inputs.get("reservation")}


@worker.task("payments.charge")
async def charge(inputs: Inputs, ctx: TaskContext) -> Inputs:
    await _work(0.02)
    if inputs.get("card") == "declined":
        raise CardDeclined(f"card declined for order {inputs['order']}")
    if inputs.get("card") == "flaky" and ctx.attempt < 2:
        raise ConnectionError("payment gateway timed out")
    key = ctx.idempotency_key  # stable across re-deliveries: charge once
    return {"receipt_id": f"rcpt-{_digest(key)}", "amount": inputs["amount"], "gateway": "main"}


@worker.task("payments.charge_backup")
async def charge_backup(inputs: Inputs, ctx: TaskContext) -> Inputs:
    await _work(0.02)
    return {"receipt_id": f"rcpt-b-{_digest(ctx.idempotency_key)}", "gateway": "backup"}


@worker.task("payments.refund")
async def refund(inputs: Inputs) -> Inputs:
    await _work()
    return {"refunded": inputs.get("receipt")}


@worker.task("shipping.ship")
async def ship(inputs: Inputs) -> Inputs:
    await _work(0.02)
    if inputs.get("fail") is True:
        raise RuntimeError(f"no carrier available for order {inputs['order']}")
    return {"tracking": f"TRK{_digest(inputs['order']).upper()}"}


@worker.task("shipping.cancel")
async def cancel_shipment(inputs: Inputs) -> Inputs:
    await _work()
    return {"cancelled": inputs.get("order")}


@worker.task("email.send")
async def send_email(inputs: Inputs) -> Inputs:
    await _work()
    return {"sent_to": inputs.get("to"), "subject": inputs.get("subject")}


# -- ml_pipeline.yaml -------------------------------------------------------------------
@worker.task("data.prepare")
async def prepare(inputs: Inputs) -> Inputs:
    await _work(0.02)
    uri = f"{inputs['dataset']}.features-{_digest(inputs['dataset'])}.parquet"
    return {"features_uri": uri, "rows": 10_000}


_ACCURACY = {"logistic_regression": 0.81, "random_forest": 0.87, "gradient_boosting": 0.9}


@worker.task("ml.train")
async def train(inputs: Inputs, ctx: TaskContext) -> Inputs:
    for epoch in range(3):
        await _work(0.01)
        ctx.heartbeat({"epoch": epoch + 1, "of": 3})
    model = str(inputs["model"])
    return {
        "model": model,
        "accuracy": _ACCURACY.get(model, 0.5),
        "uri": f"models/{model}-{_digest(inputs['features'], model)}",
    }


@worker.task("ml.evaluate")
async def evaluate(inputs: Inputs) -> Inputs:
    await _work()
    candidates: dict[str, Inputs] = inputs["candidates"]
    best = max(candidates.values(), key=lambda c: float(c["accuracy"]))
    return {
        "best_model": best["model"],
        "best_uri": best["uri"],
        "best_accuracy": best["accuracy"],
        "accepted": float(best["accuracy"]) >= float(inputs["min_accuracy"]),
    }


@worker.task("ml.register")
async def register_model(inputs: Inputs) -> Inputs:
    await _work()
    return {"version": f"v{_digest(inputs['model_uri'])}", "uri": inputs["model_uri"]}


# -- incident_runbook.yaml ------------------------------------------------------------------
@worker.task("ops.diagnose")
async def diagnose(inputs: Inputs) -> Inputs:
    await _work(0.02)
    return {"cause": "connection pool exhausted", "suggested_action": "restart"}


@worker.task("ops.remediate")
async def remediate(inputs: Inputs) -> Inputs:
    await _work(0.02)
    if inputs.get("action") not in ("restart", "scale_up"):
        raise NonRetryableError(f"refusing unknown action {inputs.get('action')!r}")
    return {"action": inputs["action"], "by": inputs.get("approved_by")}


@worker.task("ops.verify")
async def verify(inputs: Inputs) -> Inputs:
    await _work()
    return {"healthy": True, "service": inputs["service"]}


@worker.task("chat.notify")
async def notify(inputs: Inputs) -> Inputs:
    await _work()
    return {"posted": inputs.get("channel")}


# -- research_agents.yaml, research_review.yaml -----------------------------------------------
@worker.task("agent.plan")
async def plan(inputs: Inputs) -> Inputs:
    await _work(0.02)
    question = str(inputs["question"])
    angles = (
        "background of",
        "mechanism behind",
        "evidence for",
        "history of",
        "open questions on",
    )
    parts = max(0, int(inputs.get("parts", 3)))
    return {"subquestions": [f"{angles[i % len(angles)]} ({i}): {question}" for i in range(parts)]}


@worker.task("agent.research")
async def research(inputs: Inputs, ctx: TaskContext) -> Inputs:
    await _work(0.03)
    sources = [f"https://example.org/{_digest(inputs['topic'], i)}" for i in range(3)]
    limit = int(inputs.get("max_sources", 3))
    return {
        "topic": inputs["topic"],
        "summary": f"notes on {inputs['topic']}",
        "sources": sources[:limit],
        "agent": ctx.task_id,  # research[0], research[1], ...
    }


@worker.task("agent.write")
async def write(inputs: Inputs, ctx: TaskContext) -> Inputs:
    findings = [f for f in inputs.get("findings") or [] if isinstance(f, dict)]
    body = "; ".join(str(f.get("summary")) for f in findings)
    given = inputs.get("feedback")
    feedback: Inputs = given if isinstance(given, dict) else {}
    revision = int(feedback.get("revision", 0)) + 1  # the previous round's, plus one
    notes = f" (revised for: {feedback['notes']})" if feedback.get("notes") else ""
    draft = f"{inputs['question']} -- {body}{notes}"
    # The draft streams out word by word, as an LLM's tokens would
    # (`execplan watch ID --stream`); the return value stays the task's output.
    for word in draft.split(" "):
        ctx.stream(word + " ")
        await asyncio.sleep(0.002)
    ctx.stream("\n")
    return {"draft": draft, "revision": revision}


@worker.task("agent.review")
async def review(inputs: Inputs) -> Inputs:
    await _work()
    revision, wanted = int(inputs.get("revision", 1)), int(inputs.get("strictness", 1))
    if inputs.get("draft") and revision >= wanted:
        return {"approved": True, "verdict": "approved", "notes": ""}
    return {"approved": False, "verdict": "revise", "notes": f"round {revision}: more detail"}


@worker.task("agent.review_simple")
async def review_simple(inputs: Inputs) -> Inputs:
    return {"verdict": "approved (unreviewed)"}


# -- agent_budget.yaml ---------------------------------------------------------------------
# Prices of a made-up model, per 1,000 tokens in and out.
_PRICE_IN, _PRICE_OUT = 0.02, 0.04


def _price(tokens_in: int, tokens_out: int) -> float:
    return round((tokens_in * _PRICE_IN + tokens_out * _PRICE_OUT) / 1000, 6)


@worker.task("paid.plan")
async def paid_plan(inputs: Inputs) -> Output:
    await _work()
    question = str(inputs["question"])
    angles = ("background of", "mechanism behind", "evidence for", "history of", "limits of")
    parts = max(0, int(inputs.get("parts", 3)))
    # Usage beside the output: counted with the result.
    return Output(
        {"subquestions": [f"{angles[i % len(angles)]} ({i}): {question}" for i in range(parts)]},
        usage={"tokens_in": 500, "tokens_out": 250, "cost": _price(500, 250)},
    )


@worker.task("paid.research")
async def paid_research(inputs: Inputs, ctx: TaskContext) -> Inputs:
    depth = max(1, int(inputs.get("depth", 1)))
    tokens_in, tokens_out = 3000 * depth, 1000 * depth  # cost 0.10 per level
    if inputs.get("flaky") and ctx.attempt == 1:
        # Half the work was paid for before the provider refused: reported first, so
        # it counts although the attempt fails.
        ctx.usage(
            tokens_in=tokens_in // 2,
            tokens_out=tokens_out // 2,
            cost=_price(tokens_in // 2, tokens_out // 2),
        )
        # A simulated 429 (retryable), asking for no more than the workflow's backoff.
        raise RateLimited("429 Too Many Requests (simulated)", retry_after=0.1)
    await _work(0.02)
    ctx.usage(tokens_in=tokens_in, tokens_out=tokens_out, cost=_price(tokens_in, tokens_out))
    ctx.usage(searches=depth)  # reports add up; any counter name of your own
    return {"topic": inputs["topic"], "summary": f"notes on {inputs['topic']} (depth {depth})"}


@worker.task("paid.write")
async def paid_write(inputs: Inputs, ctx: TaskContext) -> Inputs:
    await _work()
    findings = [f for f in inputs.get("findings") or [] if isinstance(f, dict)]
    ctx.usage(tokens_in=1500, tokens_out=500, cost=_price(1500, 500))
    body = "; ".join(str(f.get("summary")) for f in findings)
    return {"draft": f"{inputs['question']} -- {body}"}


# -- agent_subplan.yaml ----------------------------------------------------------------------
@worker.task("agent.improvise")
async def improvise(inputs: Inputs, ctx: TaskContext) -> SubPlan:
    """A dynamic task: answers with a sub-workflow of `steps` chained steps. With
    broken_first, the first attempt's plan depends on a step that does not exist;
    the next attempt sees why (ctx.previous_error) and leaves it out."""
    await _work(0.02)
    steps = max(1, int(inputs.get("steps", 3)))
    broken = bool(inputs.get("broken_first")) and ctx.previous_error is None
    tasks: list[Inputs] = []
    for i in range(steps):
        task: Inputs = {"id": f"step_{i}", "type": "agent.step", "inputs": {"n": i}}
        if i:
            task["depends_on"] = [f"step_{i - 1}"]
            task["inputs"]["before"] = f"${{{{ tasks.step_{i - 1}.output.did }}}}"
        tasks.append(task)
    if broken:
        tasks[0]["depends_on"] = ["step_zero"]  # no such step: the planner refuses it
    repaired = ctx.previous_error.type if ctx.previous_error is not None else ""
    doc = {
        "name": "improvised",
        "inputs": {"goal": {"type": "string"}},
        "tasks": tasks,
        "outputs": {
            "done": f"${{{{ tasks.step_{steps - 1}.output.did }}}}",
            "steps": steps,
            "repaired": repaired,
        },
    }
    return SubPlan(doc, inputs={"goal": inputs["goal"]})


@worker.task("agent.step")
async def step(inputs: Inputs, ctx: TaskContext) -> Inputs:
    await _work()
    return {"did": f"{ctx.task_id} after {inputs.get('before', 'nothing')}"}


@worker.task("agent.summarize")
async def summarize(inputs: Inputs) -> Inputs:
    result = inputs.get("result") or {}
    return {
        "text": f"{inputs['goal']}: {int(result.get('steps', 0))} steps, last {result.get('done')}"
    }


# -- etl.yaml ------------------------------------------------------------------------------
@worker.task("etl.extract")
async def extract(inputs: Inputs) -> Inputs:
    await _work(0.02)
    counts = {"orders": int(inputs.get("orders", 0)), "refunds": int(inputs.get("refunds", 0))}
    return {"day": inputs["day"], "counts": counts}


@worker.task("etl.transform")
async def transform(inputs: Inputs) -> Inputs:
    await _work(0.02)
    return {"kind": inputs["kind"], "rows": int(inputs["rows"])}


@worker.task("etl.load")
async def load(inputs: Inputs) -> Inputs:
    await _work(0.02)
    return {"table": inputs["table"], "loaded": int(inputs["rows"])}


@worker.task("etl.report")
async def report(inputs: Inputs) -> Inputs:
    await _work()
    return {"summary": f"{inputs['day']}: orders {inputs['orders']}, refunds {inputs['refunds']}"}


# -- failure_policies.yaml ---------------------------------------------------------------
# Faults come from the inputs (attempt numbers, flags), never from randomness.
class UpstreamDown(NonRetryableError):
    pass


@worker.task("fp.reserve")
async def fp_reserve(inputs: Inputs, ctx: TaskContext) -> Inputs:
    await _work()
    return {"reservation": f"rsv-{_digest(ctx.execution_id)}"}


@worker.task("fp.release")
async def fp_release(inputs: Inputs) -> Inputs:
    await _work()
    return {"released": inputs["reservation"]}


@worker.task("fp.fetch")
async def fp_fetch(inputs: Inputs, ctx: TaskContext) -> Inputs:
    if ctx.attempt <= int(inputs.get("fail_times", 0)):
        raise ConnectionError(f"fetch attempt {ctx.attempt} failed (injected)")
    await asyncio.sleep(int(inputs.get("slow_ms", 0)) / 1000 if ctx.attempt == 1 else 0.01)
    return {"items": [1, 2, 3], "attempt": ctx.attempt}


@worker.task("fp.enrich")
async def fp_enrich(inputs: Inputs) -> Inputs:
    await _work()
    if inputs.get("down"):
        raise UpstreamDown("enrichment service is down (injected)")
    return {"items": [int(i) * 10 for i in inputs["items"]], "source": "live"}


@worker.task("fp.enrich_cached")
async def fp_enrich_cached(inputs: Inputs) -> Inputs:
    await _work()
    return {"items": [int(i) for i in inputs["items"]], "source": "cache"}


@worker.task("fp.ship")
async def fp_ship(inputs: Inputs) -> Inputs:
    await _work()
    if inputs.get("fail"):
        raise NonRetryableError("no courier available (injected)")
    return {"shipped": True}


@worker.task("fp.notify")
async def fp_notify(inputs: Inputs) -> Inputs:
    return {"sent": inputs.get("text", "")}


# -- llm_quota.yaml ----------------------------------------------------------------------
# A stand-in for a model provider: answers are derived from the prompt. With
# `throttle` the first attempt of each task answers like a provider's 429 does.
@worker.task("llm.chat")
async def llm_chat(inputs: Inputs, ctx: TaskContext) -> Inputs:
    await _work(0.02)
    if inputs.get("throttle") and ctx.attempt == 1:
        raise RateLimited("provider answered 429 (simulated)", retry_after=0.5)
    prompt = str(inputs["prompt"])
    words = prompt.split()
    return {
        "model": inputs["model"],
        "text": f"[{inputs['model']}] " + " ".join(reversed(words[-12:])),
        "tokens": len(prompt) // 4 + 16,
    }


@worker.task("llm.embed")
async def llm_embed(inputs: Inputs) -> Inputs:
    await _work(0.02)
    digest = _digest(inputs["text"])
    return {"dimensions": 8, "vector": [int(c, 16) / 15 for c in digest]}
