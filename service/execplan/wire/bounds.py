"""Integer and enum fields of a request, checked against what the server can hold.

Protobuf lets a caller put any value of a field's wire type into a field: 2^64-1
into a uint64 sequence number, any int32 into an enum (proto3 enums are open). The
server keeps integers as signed 64-bit values (SQLite INTEGER, PostgreSQL bigint,
`Timestamp` arithmetic), so a uint64 above 2^63-1 used to overflow deep inside a
store (`after_sequence` of 2^63 was INTERNAL). Every request is checked here, once,
at the wire boundary (the SecurityInterceptor's decode step, `wire/auth.py`), before
any handler runs; a value out of range is INVALID_ARGUMENT naming the field path
(`register.running[0].token.lease_epoch`).

The rules, per field type:
  uint64, fixed64          at most 2^63-1 (the largest signed 64-bit integer)
  enum                     one of the enum's declared numbers
  int32/uint32/int64/...   any value of the type (each handler gives meaning and
                           narrower bounds, e.g. a page_size above its maximum is
                           clamped to it)
Well-known types (`google.protobuf.*`: Struct, Value, Timestamp, Duration) are not
walked: Struct numbers are doubles, and the handler of a request with a Timestamp
checks it (GetUsage: `wire/usage.py`).

Strings that name or label something and are kept (in events, in the registry of
workers, in every dispatch a worker gets) have a length bound too, per message type
in `_STRINGS`: a request_id, a fairness key, a worker id, a task type, an event name,
a reason (and the number of a worker's task types and labels). They used to be taken
at any size: a 1 MB worker id was written into every `task_dispatched` of its work.
The same check names the field (`register.worker_id`).

Only fields that can hold a checked value (a uint64 or enum, here or below) are
visited, decided once per message type: a large `inputs` Struct costs nothing, a
10,000-task plan ~35 ms (its decoding by the executor costs ~0.5 s).

    violations = out_of_range(request)      # [] when every field is in range
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import cast

from execplan.errors import FieldViolation
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_INT64 = 2**63 - 1

_UNSIGNED_64 = frozenset({FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64})
_CHECKED = _UNSIGNED_64 | {FieldDescriptor.TYPE_ENUM}
# Enough for any real request; a deeper one is refused by the message-size and
# nesting limits long before (protobuf parses at most 100 levels).
_MAX_VIOLATIONS = 20


# Names and ids: what a planner name may be (planner/limits.py MAX_NAME_CHARS is 128)
# with room for generated ids (UUIDs, `EXECUTION/TASK/...` keys); free text: a reason.
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 4096
MAX_TASK_TYPES = 1000
MAX_LABELS = 100
_CONTROL = {"request_id": MAX_ID_CHARS, "reason": MAX_TEXT_CHARS}
# message type -> field -> most characters of each string (of each key and value of a
# map<string, string>).
_STRINGS: dict[str, dict[str, int]] = {
    "execplan.v1.StartExecutionRequest": {"request_id": MAX_ID_CHARS, "fairness_key": MAX_ID_CHARS},
    "execplan.v1.PauseExecutionRequest": _CONTROL,
    "execplan.v1.ResumeExecutionRequest": {"request_id": MAX_ID_CHARS},
    "execplan.v1.CancelExecutionRequest": _CONTROL,
    "execplan.v1.TerminateExecutionRequest": _CONTROL,
    "execplan.v1.SendEventRequest": {"request_id": MAX_ID_CHARS, "name": MAX_ID_CHARS},
    "execplan.v1.WorkerRegistration": {
        "worker_id": MAX_ID_CHARS,
        "task_types": 128,
        "labels": MAX_ID_CHARS,
        "environment": MAX_ID_CHARS,
        "sdk": MAX_ID_CHARS,
    },
}
# Repeated fields whose items the handler checks one by one (`out_of_range(item)`),
# so that a bad item fails alone: StartExecutions answers each start on its own.
CHECKED_BY_HANDLER = frozenset({"execplan.v1.StartExecutionsRequest.requests"})
# field full name -> most entries
_COUNTS = {
    "execplan.v1.WorkerRegistration.task_types": MAX_TASK_TYPES,
    "execplan.v1.WorkerRegistration.labels": MAX_LABELS,
}


def out_of_range(message: Message) -> list[FieldViolation]:
    """Every field of `message` (and below) whose value the server cannot hold."""
    if _fine(message):
        return []
    found: list[FieldViolation] = []
    _walk(message, "", found)
    return found


def _fine(message: Message) -> bool:
    """Whether every field of `message` (and below) is in bounds: the common answer,
    from one pass that builds no field paths; `_walk` then names what is not."""
    descriptor = message.DESCRIPTOR
    made = _FINE.get(descriptor.full_name)
    # (protobuf's stubs type DESCRIPTOR as the pure-Python or the upb class)
    return (made or _fine_of(cast(Descriptor, descriptor)))(message)


_Fine = Callable[[Message], bool]
# `_fine` of each message type by full name, made on first use (`_fine_of`).
_FINE: dict[str, _Fine] = {}


def _fine_of(descriptor: Descriptor) -> _Fine:
    """`_fine` for one message type, made once per type from its `_plan`: it reads
    only the fields that can hold a checked value, by name (a field at its default,
    unset or no message, holds nothing out of bounds), never the other fields (an
    `execution_id`, an `output` Value) that a walk of all set fields would convert
    to Python objects. A worker stream's every message comes here, so the checks of
    the types below are bound in, and one or two checks are called without a loop."""
    name = descriptor.full_name
    if (made := _FINE.get(name)) is not None:
        return made
    checks: list[_Fine] = []

    def fine(message: Message) -> bool:
        for check in checks:  # noqa: SIM110 (a loop: cheaper than all() of a generator)
            if not check(message):
                return False
        return True

    # A recursive type's own checks, being made below, reach it through `fine`.
    _FINE[name] = fine
    strings, steps = _plan(descriptor)
    if strings is not None:
        checks.append(functools.partial(_strings_fine, strings=strings))
    for field in descriptor.fields:
        step = steps.get(field.number)
        if step is not None:
            checks.append(_field_check(field, *step))
    if not checks:
        made = _always_fine
    elif len(checks) == 1:
        made = checks[0]
    elif len(checks) == 2:
        first, second = checks
        made = lambda message: first(message) and second(message)  # noqa: E731
    else:
        made = fine
    _FINE[name] = made
    return made


def _field_check(field: FieldDescriptor, kind: str, bound: frozenset[int] | None) -> _Fine:
    name = field.name
    if kind == _SCALAR:
        if bound is None:
            return lambda message: getattr(message, name) <= MAX_INT64
        return lambda message: getattr(message, name) in bound
    # Repeated fields and maps: iterating even an empty one costs more than its length.
    if kind == _SCALARS:

        def scalars(message: Message) -> bool:
            items = getattr(message, name)
            return not items or all(_fits(bound, item) for item in items)

        return scalars
    if kind == _MAP_OF_SCALARS:

        def map_of_scalars(message: Message) -> bool:
            items = getattr(message, name)
            return not items or all(_fits(bound, item) for item in items.values())

        return map_of_scalars
    descriptor = _type_of(field)
    if kind == _MESSAGE:
        below = _fine_of(descriptor)
        if _flat(descriptor):  # unset, it reads as an empty message: as cheap as HasField
            return lambda message: below(getattr(message, name))
        return lambda message: not message.HasField(name) or below(getattr(message, name))
    if kind == _MESSAGES:
        each = _fine_of(descriptor)

        def messages(message: Message) -> bool:
            items = getattr(message, name)
            return not items or all(map(each, items))

        return messages
    each = _fine_of(_type_of(descriptor.fields_by_name["value"]))

    def map_of_messages(message: Message) -> bool:
        items = getattr(message, name)
        return not items or all(map(each, items.values()))

    return map_of_messages


def _flat(descriptor: Descriptor) -> bool:
    """Whether a message type's checks are all of singular scalars (an AttemptToken)."""
    strings, steps = _plan(descriptor)
    return strings is None and all(kind == _SCALAR for kind, _ in steps.values())


def _strings_fine(message: Message, strings: dict[str, int]) -> bool:
    refused: list[FieldViolation] = []
    _check_strings(message, strings, "", refused)
    return not refused


def _always_fine(message: Message) -> bool:
    return True


def _fits(bound: frozenset[int] | None, value: int) -> bool:
    """`bound`: an enum's numbers, or None for a uint64/fixed64 (at most MAX_INT64)."""
    return value <= MAX_INT64 if bound is None else value in bound


def _walk(message: Message, prefix: str, found: list[FieldViolation]) -> None:
    strings, steps = _plan(message.DESCRIPTOR)
    if strings is not None:
        _check_strings(message, strings, prefix, found)
    for field, value in message.ListFields():
        step = steps.get(field.number)
        if step is None:
            continue
        if len(found) >= _MAX_VIOLATIONS:
            return
        kind, _ = step
        path = f"{prefix}{field.name}"
        if kind == _SCALAR:
            _check(field, value, path, found)
        elif kind == _SCALARS:
            for index, item in enumerate(value):
                _check(field, item, f"{path}[{index}]", found)
        elif kind == _MESSAGE:
            _walk(value, f"{path}.", found)
        elif kind == _MESSAGES:
            for index, item in enumerate(value):
                _walk(item, f"{path}[{index}].", found)
        else:
            value_field = _type_of(field).fields_by_name["value"]
            for key, item in value.items():
                if kind == _MAP_OF_MESSAGES:
                    _walk(item, f"{path}[{key!r}].", found)
                else:
                    _check(value_field, item, f"{path}[{key!r}]", found)


def _check(field: FieldDescriptor, value: int, path: str, found: list[FieldViolation]) -> None:
    if field.type in _UNSIGNED_64 and value > MAX_INT64:
        found.append(FieldViolation(path, f"at most {MAX_INT64}", "out-of-range"))
    elif field.type == FieldDescriptor.TYPE_ENUM and value not in _numbers(field.enum_type):
        name = field.enum_type.full_name if field.enum_type is not None else "enum"
        found.append(FieldViolation(path, f"unknown {name} value {value}", "unknown-enum-value"))


def _check_strings(
    message: Message, strings: dict[str, int], prefix: str, found: list[FieldViolation]
) -> None:
    for name, most in strings.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        path = f"{prefix}{name}"
        value = getattr(message, name)
        if field.is_repeated:
            if len(value) > (count := _COUNTS.get(field.full_name, len(value))):
                found.append(FieldViolation(path, f"at most {count:,} entries", "too-many"))
                continue
            pairs = value.items() if hasattr(value, "items") else None  # a map<string, string>
            items = [x for kv in pairs for x in kv] if pairs is not None else list(value)
        else:
            items = [value]
        if any(len(item) > most for item in items):
            found.append(FieldViolation(path, f"at most {most:,} characters", "too-long"))


def _is_map(field: FieldDescriptor) -> bool:
    return field.is_repeated and bool(_type_of(field).GetOptions().map_entry)


def _type_of(field: FieldDescriptor) -> Descriptor:
    descriptor = field.message_type
    assert descriptor is not None, field.full_name  # set for every message field
    return descriptor


@functools.cache
def _numbers(enum_type: object) -> frozenset[int]:
    return frozenset(value.number for value in enum_type.values)  # type: ignore[attr-defined]


# How a field is visited (see `_plan`), with the bound of a scalar (`_fits`).
_SCALAR, _SCALARS, _MESSAGE, _MESSAGES, _MAP_OF_SCALARS, _MAP_OF_MESSAGES = (
    "scalar",
    "scalars",
    "message",
    "messages",
    "map of scalars",
    "map of messages",
)
_Step = tuple[str, frozenset[int] | None]


@functools.cache
def _plan(descriptor: Descriptor) -> tuple[dict[str, int] | None, dict[int, _Step]]:
    """A message type's string bounds (`_STRINGS`) and, by field number, how to visit
    each field that can hold a value this module checks: a uint64/fixed64 or enum, or
    a message with one somewhere below it. Decided once per message type."""
    steps: dict[int, _Step] = {}
    for field in descriptor.fields:
        if field.full_name in CHECKED_BY_HANDLER or not _holds_checked(field, frozenset()):
            continue
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            steps[field.number] = (_SCALARS if field.is_repeated else _SCALAR, _bound(field))
        elif _is_map(field):
            value_field = _type_of(field).fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                steps[field.number] = (_MAP_OF_MESSAGES, None)
            else:
                steps[field.number] = (_MAP_OF_SCALARS, _bound(value_field))
        else:
            steps[field.number] = (_MESSAGES if field.is_repeated else _MESSAGE, None)
    return _STRINGS.get(descriptor.full_name), steps


def _bound(field: FieldDescriptor) -> frozenset[int] | None:
    return _numbers(field.enum_type) if field.type == FieldDescriptor.TYPE_ENUM else None


def _holds_checked(field: FieldDescriptor, visiting: frozenset[str]) -> bool:
    if field.type in _CHECKED:
        return True
    return field.type == FieldDescriptor.TYPE_MESSAGE and _reaches(_type_of(field), visiting)


def _reaches(descriptor: Descriptor, visiting: frozenset[str]) -> bool:
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.full_name in visiting:
        return False  # well-known types are not walked; a recursive type: other branches decide
    below = visiting | {descriptor.full_name}
    return any(_holds_checked(field, below) for field in descriptor.fields)
