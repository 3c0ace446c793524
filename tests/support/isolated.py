"""Task handlers the isolation tests run in child processes: they must be top-level
functions of an importable module (the child imports them by name)."""

from __future__ import annotations

import time
from typing import Any


def allocate(inputs: dict[str, Any]) -> dict[str, Any]:
    """Hold `mib` MiB at once (a bytearray touches every page)."""
    block = bytearray(int(inputs["mib"]) << 20)
    return {"held_mib": len(block) >> 20}


def spin(inputs: dict[str, Any]) -> int:
    """Burn CPU for `seconds` of CPU time (or forever when absent)."""
    end = time.process_time() + float(inputs.get("seconds", 1e9))
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def report(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.heartbeat({"step": 1})
    return {"task": ctx.task_id, "attempt": ctx.attempt, "echo": inputs}


async def async_report(inputs: dict[str, Any]) -> str:
    return f"async {inputs['x']}"


def fail(inputs: dict[str, Any]) -> None:
    raise ValueError(f"bad input {inputs['x']}")


class Odd(Exception):
    retry_after = "soon"  # not a number of seconds


def fail_oddly(inputs: dict[str, Any]) -> None:
    raise Odd("odd")


def sleep(inputs: dict[str, Any]) -> str:
    time.sleep(float(inputs["seconds"]))
    return "slept"
