"""Coded diagnostics: what every planner phase reports instead of raising.

A `Diagnostic` names a stable `code` (e.g. "unknown-dependency"), the exact field
`path` in the document (`tasks[3].depends_on[0]`), a one-line human `message` and a
`severity` ("error" or "warning"). Phases append to a `Diagnostics` collector and keep
going, so one compile reports every problem at once; `sorted_diagnostics` gives the
order every caller sees: by path (numbers compared as numbers, so `tasks[2]` comes
before `tasks[10]`), then code, then message.

Everything a diagnostic repeats from the document is bounded, so a hostile document
cannot make the answer bigger than the question: `echo(value)` is how a message
quotes a value (its repr, cut by `clip` to MAX_ECHO_CHARS then `…(N chars)`), `child`
shortens long
keys in paths the same way, and any message or path is cut at MAX_MESSAGE_CHARS as a
backstop. A compile keeps at most MAX_COLLECTED diagnostics (the rest are counted)
and `report` returns at most MAX_REPORTED, errors first, plus one
`diagnostics-truncated` entry saying how many more there were.

Codes (errors unless noted):

    invalid-syntax            the text is not YAML/JSON, or uses a YAML tag, recursive
                              alias or second document a workflow cannot hold
    limit-document-size       text larger than limits.MAX_DOCUMENT_BYTES (64 MiB)
    limit-document-values     more than limits.MAX_DOCUMENT_VALUES (4,000,000) values,
                              YAML aliases counted as what they repeat
    limit-document-depth      lists/maps nested over limits.MAX_DOCUMENT_DEPTH (32)
    limit-tasks               more than limits.MAX_TASKS (100,000) tasks
    duplicate-key             a key written twice in one mapping (YAML: both lines)
    invalid-number            a number literal over 100 characters, or an integer
                              value outside +-(2^53 - 1)
    unknown-field             a field the proto does not have (with a did-you-mean hint)
    invalid-type              wrong JSON type, out-of-range number, non-string map key
    missing-required          workflow name, task id/type, fallback/compensation type
    unknown-enum              on_failure, input type, breaker on_open not recognised
    unknown-trigger           trigger not one of all_success/all_done/one_success/all_failed
    invalid-duration          not `250ms`/`1h30m`/`"1.500s"` (also builtin durations)
    invalid-quantity          cpu/memory not a Kubernetes quantity, gpu < 0, a custom
                              counter < 0 or badly named
    invalid-retry             max_attempts < 1, backoff_coefficient < 1, jitter outside
                              0..1, max_interval < initial_interval
    invalid-circuit-breaker   failure_threshold/half_open_max_calls < 1, rate outside 0..1
    invalid-id                task id, input name, secret name, workflow name
    duplicate-id              a task id used twice (points at the later one)
    unknown-dependency        depends_on names no task
    self-dependency           depends_on itself, or inputs/when read the task itself
    cycle                     one per cycle: message `a > b > c > a`, path at the
                              depends_on entry (or expression) that closes it
    invalid-template          unclosed or empty `${{ }}`
    invalid-expression        CEL does not parse (one-line message with position)
    expression-too-large      an expression over MAX_EXPRESSION_BYTES (16 KiB)
    expression-too-deep       brackets nested over 32, or over 500 chained operators,
                              accesses and calls (expressions.py, "Bounds")
    expression-too-costly     more than 2 nested comprehensions (all, exists, map, ...)
    unknown-reference         unknown task / undeclared input / tasks.x.<not a field> /
                              unknown variable
    dynamic-reference         tasks[k] or workflow.inputs[k] with a non-literal key
    invalid-input-default     default does not match the input's declared type
    required-input-undeclared a required input without a type
    required-input-default    (warning) a required input's default is never used
    builtin-invalid           builtin.sleep without duration, builtin.wait_for_event
                              without event, builtin.http inputs (url origin not
                              literal, secrets outside headers...), unknown builtin.*,
                              flow control on a waiting built-in
    invalid-limit             limit.max outside 1..1,000,000, bad limit name
    invalid-rate-limit        bad bucket name, rate or burst; a bucket declared or
                              listed twice; units outside 1..1e9 or above the burst
    invalid-cache             cache.ttl over 366d
    unreachable               a trigger rule that can never fire (validate_reachability)
    diagnostics-truncated     (last; error if an omitted one is) N more not reported
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

ERROR = "error"
WARNING = "warning"

MAX_ECHO_CHARS = 80
MAX_MESSAGE_CHARS = 1000
MAX_COLLECTED = 10_000
MAX_REPORTED = 100

_DIGITS = re.compile(r"(\d+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a workflow document."""

    code: str
    path: str
    message: str
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


def _natural(path: str) -> tuple[tuple[int, int | str], ...]:
    # Each chunk is tagged so ints and strs never get compared with each other.
    return tuple(
        (1, int(chunk)) if chunk.isdigit() else (0, chunk) for chunk in _DIGITS.split(path) if chunk
    )


def sort_key(d: Diagnostic) -> tuple[tuple[tuple[int, int | str], ...], str, str]:
    return (_natural(d.path), d.code, d.message)


def sorted_diagnostics(diags: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """Deduplicated and in the natural (path, code, message) order."""
    return tuple(sorted(set(diags), key=sort_key))


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, then `…(N chars)`: the one truncation rule."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text):,} chars)"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = MAX_ECHO_CHARS
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 6, 4


def echo(value: object) -> str:
    """A value from the document as a message quotes it: its repr, bounded."""
    if type(value) is str:
        if len(value) <= MAX_ECHO_CHARS:
            return repr(value)
        return f"{value[:MAX_ECHO_CHARS]!r}…({len(value):,} chars)"
    if type(value) is int and abs(value) >= 10**MAX_ECHO_CHARS:
        # repr() itself raises past 4,300 digits (Python's int-to-str limit).
        return f"an integer of about {value.bit_length() * 30103 // 100000:,} digits"
    return _REPR.repr(value)


@lru_cache(maxsize=4096)  # child() passes only keys up to MAX_ECHO_CHARS
@lru_cache(maxsize=4096)  # keys repeat on every task (`inputs.size`); short keys only
def _suffix(key: str) -> str:
    if _IDENT.fullmatch(key):
        return "." + key
    return f'["{_quoted(key)}"]'


def _quoted(key: str) -> str:
    return key.replace("\\", "\\\\").replace('"', '\\"')


def child(path: str, key: str) -> str:
    """Path of a map entry or field: `a.b`, or `a["odd key"]` when not an identifier."""
    suffix = _suffix(key) if len(key) <= MAX_ECHO_CHARS else f'["{_quoted(clip(key))}"]'
    if not path and suffix[0] == ".":
        return key
    return path + suffix


class Diagnostics:
    """Append-only collector shared by the phases of one compile (bounded: past
    MAX_COLLECTED entries, new ones are only counted)."""

    __slots__ = ("dropped_errors", "dropped_warnings", "items")

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self.dropped_errors = 0
        self.dropped_warnings = 0

    def error(self, code: str, path: str, message: str) -> None:
        if len(self.items) < MAX_COLLECTED:
            self.items.append(_bounded(code, path, message, ERROR))
        else:
            self.dropped_errors += 1

    def warning(self, code: str, path: str, message: str) -> None:
        if len(self.items) < MAX_COLLECTED:
            self.items.append(_bounded(code, path, message, WARNING))
        else:
            self.dropped_warnings += 1

    @property
    def full(self) -> bool:
        """True once new entries are only counted: skip optional work (hints)."""
        return len(self.items) >= MAX_COLLECTED

    @property
    def has_errors(self) -> bool:
        return self.dropped_errors > 0 or any(d.severity == ERROR for d in self.items)

    def report(self) -> tuple[Diagnostic, ...]:
        """What callers see: at most MAX_REPORTED, errors before warnings, in the
        natural order, then a `diagnostics-truncated` entry if any were left out."""
        unique = set(self.items)
        errors = sorted((d for d in unique if d.severity == ERROR), key=sort_key)
        warnings = sorted((d for d in unique if d.severity != ERROR), key=sort_key)
        kept = (errors + warnings)[:MAX_REPORTED]
        omitted_errors = len(errors) - min(len(errors), MAX_REPORTED) + self.dropped_errors
        omitted = len(unique) - len(kept) + self.dropped_errors + self.dropped_warnings
        shown = tuple(sorted(kept, key=sort_key))
        if not omitted:
            return shown
        summary = Diagnostic(
            "diagnostics-truncated",
            "",
            f"{omitted:,} more problems not shown (at most {MAX_REPORTED} are reported)",
            ERROR if omitted_errors else WARNING,
        )
        return (*shown, summary)


def _bounded(code: str, path: str, message: str, severity: str) -> Diagnostic:
    # The backstop: messages should quote input through echo() already.
    if len(message) > MAX_MESSAGE_CHARS:
        message = clip(message, MAX_MESSAGE_CHARS)
    if len(path) > MAX_MESSAGE_CHARS:
        path = clip(path, MAX_MESSAGE_CHARS)
    return Diagnostic(code, path, message, severity)
