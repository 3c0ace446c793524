"""`builtin.http`'s `usage` input: what a response says the call used (docs/usage.md).

    inputs:
      url: https://llm.example.com/v1/chat
      usage:
        tokens_in: body.usage.prompt_tokens          # a number in the response
        tokens_out: body.usage.completion_tokens
        cost:                                        # terms added up
          - {from: body.usage.prompt_tokens, times: 0.000002}
          - {from: body.usage.completion_tokens, times: 0.000008}
        requests: 1                                  # a number: counted per call
        ratelimit_cost: headers.x-request-cost       # a response header

A path reads the output the call returns (`{"status", "headers", "body"}`):
`body.` then keys separated by dots (an all-digit key indexes a list), or
`headers.` then a header's name (lower-case, as the output holds it), or `status`.
The planner checks a literal mapping; the executor checks the resolved one again
before it sends (a bad one is `HttpRequestInvalid`: nothing was spent). After a
response arrives, a path that it does not have, or that does not hold a number, makes
the attempt fail with `UsageMappingError` (not retried): spend that cannot be
measured is never silently counted as zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from execplan import usage
from execplan.httpcall.rules import HttpRuleError

KEY = "usage"
ROOTS = ("body", "headers", "status")
MAX_TERMS = 8
MAX_PATH_CHARS = 256
MAX_PATH_KEYS = 32


class UsageMappingError(ValueError):
    """A response that does not hold what the mapping reads; one line."""


@dataclass(frozen=True, slots=True)
class Term:
    """`times` x the number at `path` (or `times` alone when `path` is empty)."""

    path: tuple[str, ...]
    times: float
    source: str  # the path as written, for messages


UsageMapping = dict[str, tuple[Term, ...]]


def parse(value: object) -> UsageMapping:
    """The mapping a `usage` input describes; HttpRuleError naming the counter."""
    if not isinstance(value, dict):
        raise HttpRuleError("usage must be a map of counter names to paths or numbers")
    if len(value) > usage.MAX_COUNTERS:
        raise HttpRuleError(f"usage names {len(value)} counters; at most {usage.MAX_COUNTERS}")
    out: UsageMapping = {}
    for counter, spec in value.items():
        if not isinstance(counter, str) or not usage.valid_counter(counter):
            raise HttpRuleError(
                f"usage: counter name {str(counter)[:80]!r} is not {usage.COUNTER_PATTERN}"
            )
        items = spec if isinstance(spec, list) else [spec]
        if not items or len(items) > MAX_TERMS:
            raise HttpRuleError(f"usage.{counter}: 1 to {MAX_TERMS} terms")
        out[counter] = tuple(_term(f"usage.{counter}", item) for item in items)
    return out


def _term(where: str, item: object) -> Term:
    if isinstance(item, bool):
        raise HttpRuleError(f"{where}: expected a path such as body.usage.total_tokens or a number")
    if isinstance(item, int | float):
        return Term((), _number(where, item), "")
    if isinstance(item, str):
        return Term(_path(where, item), 1.0, item)
    if isinstance(item, dict):
        unknown = set(item) - {"from", "times"}
        if unknown or "from" not in item:
            raise HttpRuleError(f"{where}: a term is {{from: PATH, times: NUMBER}}")
        source = item["from"]
        if not isinstance(source, str):
            raise HttpRuleError(f"{where}.from: expected a path such as body.usage.total_tokens")
        times = item.get("times", 1.0)
        if isinstance(times, bool) or not isinstance(times, int | float):
            raise HttpRuleError(f"{where}.times: expected a number")
        return Term(_path(f"{where}.from", source), _number(f"{where}.times", times), source)
    raise HttpRuleError(f"{where}: expected a path such as body.usage.total_tokens or a number")


def _number(where: str, value: float) -> float:
    problem = usage.check_amount(float(value))
    if problem:
        raise HttpRuleError(f"{where}: {problem}")
    return float(value)


def _path(where: str, text: str) -> tuple[str, ...]:
    if len(text) > MAX_PATH_CHARS:
        raise HttpRuleError(f"{where}: a path is at most {MAX_PATH_CHARS} characters")
    if text == "status":
        return ("status",)
    if text.startswith("headers.") and len(text) > len("headers."):
        return ("headers", text[len("headers.") :].lower())
    keys = text.split(".")
    if keys[0] != "body" or any(not key for key in keys) or len(keys) > MAX_PATH_KEYS + 1:
        raise HttpRuleError(
            f"{where}: {text[:80]!r} is not a path into the response: body.KEY.KEY..., "
            "headers.NAME or status"
        )
    return tuple(keys)


def measure(mapping: UsageMapping, output: object) -> dict[str, float]:
    """The usage `output` (a builtin.http result) holds by `mapping`; UsageMappingError
    naming the counter and the path it could not read."""
    out: dict[str, float] = {}
    # By name: the mapping came through a Struct, whose key order is not the author's
    # nor stable, and the error must name the same counter every time.
    for counter, terms in sorted(mapping.items()):
        total = 0.0
        for term in terms:
            total += term.times * (_read(counter, term, output) if term.path else 1.0)
        problem = usage.check_amount(total)
        if problem:
            raise UsageMappingError(f"usage.{counter}: {problem}")
        if total:
            out[counter] = total
    return out


def _read(counter: str, term: Term, output: object) -> float:
    value: object = output
    for key in term.path:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise UsageMappingError(f"usage.{counter}: the response has no {term.source}")
    if isinstance(value, str) and term.path[0] == "headers":
        with contextlib.suppress(ValueError):  # not a number: refused below
            value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = repr(value)[:60]
        raise UsageMappingError(f"usage.{counter}: {term.source} is {shown}, not a number")
    return float(value)
