"""Usage an attempt reports (docs/usage.md).

    @worker.task("llm.ask")
    async def ask(inputs, ctx):
        reply = await llm(inputs["prompt"])
        ctx.usage(tokens_in=reply.prompt_tokens, tokens_out=reply.completion_tokens,
                  cost=reply.cost, searches=1)          # sent at once, counted at once
        return reply.text

    return Output(reply.text, usage={"cost": 0.02})      # or beside the output

`ctx.usage` adds to what the attempt used (call it after each paid call). The report
leaves with the next stream message and the executor records it before it acks it,
so what was reported is counted even when the handler then raises, times out or the
worker dies. Until it is acknowledged the SDK keeps it and sends it again after a
reconnect; the executor counts each report once (it is numbered per attempt).
`Output(value, usage=...)` sends the usage inside the result instead.

Counter names are `[a-z][a-z0-9_]*` (at most 64 characters, 32 per report); amounts
are finite numbers >= 0. The executor checks the same and refuses a bad report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from execplan.v1 import execution_pb2

_COUNTER = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_COUNTERS = 32
MAX_AMOUNT = 1e15


@dataclass(frozen=True, slots=True)
class Output:
    """A handler's output with the usage of the attempt beside it (`TaskResult.usage`).
    `value` may be any JSON-like value or a `SubPlan`."""

    value: Any
    usage: Mapping[str, float] | None = None


def usage_message(counters: Mapping[str, Any]) -> execution_pb2.Usage | None:
    """`counters` as a Usage message (None entries dropped; None when nothing is left);
    ValueError/TypeError naming the counter when one is not valid."""
    kept = {name: amount for name, amount in counters.items() if amount is not None}
    if not kept:
        return None
    if len(kept) > MAX_COUNTERS:
        raise ValueError(f"{len(kept)} usage counters; at most {MAX_COUNTERS} per report")
    message = execution_pb2.Usage()
    for name, amount in kept.items():
        if not isinstance(name, str) or not _COUNTER.fullmatch(name):
            raise ValueError(f"usage counter name {name!r} is not [a-z][a-z0-9_]* (64 at most)")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"usage {name}: expected a number, got {type(amount).__name__}")
        value = float(amount)
        if not math.isfinite(value) or value < 0 or value > MAX_AMOUNT:
            raise ValueError(f"usage {name}: {amount!r} is not a finite number in 0..1e15")
        message.counters[name] = value
    return message
