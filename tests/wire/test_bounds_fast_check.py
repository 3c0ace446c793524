"""The one-pass bounds check (`wire/bounds.py` `_fine`, the path of every message of a
worker stream) against the walk that names each field out of range (`_walk`): for
every integer and enum field below every request type, at extreme values, and for
every bounded string at and past its bound, both give the same verdict. `_fine`
reads only the fields that can hold a checked value, so a field it missed would let
an out-of-range value through to a handler."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from execplan.errors import FieldViolation
from execplan.v1 import (
    execution_pb2,
    executor_service_pb2,
    planner_service_pb2,
    worker_service_pb2,
)
from execplan.wire import bounds
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from tests.wire.test_integer_ranges import EXTREMES, integer_paths, name_of, with_value

MODULES = (executor_service_pb2, planner_service_pb2, worker_service_pb2)


def request_types() -> Iterator[Descriptor]:
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield method.input_type


def walked(message: Message) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    bounds._walk(message, "", found)
    return found


def test_the_fast_check_agrees_with_the_walk_on_every_integer_field() -> None:
    checked = 0
    for descriptor in request_types():
        base = GetMessageClass(descriptor)()
        assert bounds._fine(base)
        for path in integer_paths(descriptor):
            for value in EXTREMES:
                request = with_value(base, path, value)
                assert bounds._fine(request) == (not walked(request)), (
                    f"{descriptor.name} {name_of(path)}={value}"
                )
                checked += 1
    assert checked > 500, checked


def test_the_fast_check_agrees_with_the_walk_on_worker_messages() -> None:
    ref = worker_service_pb2.AttemptRef(
        execution_id="e", task_id="a", phase=execution_pb2.TASK_PHASE_MAIN
    )
    ref.token.attempt = 1
    request = worker_service_pb2.ConnectRequest()
    request.acks.add().attempt.CopyFrom(ref)
    result = request.results.add()
    result.attempt.CopyFrom(ref)
    result.output.number_value = 2**64  # a double: not checked
    result.search_attributes["k"].int_value = -1
    request.register.worker_id = "w"
    request.register.labels["x"] = "y"
    assert bounds.out_of_range(request) == []
    cases: list[tuple[Callable[[worker_service_pb2.ConnectRequest], object], str]] = [
        (lambda r: setattr(r.acks[0].attempt.token, "lease_epoch", 2**63), "acks[0]"),
        (lambda r: setattr(r.results[0].attempt, "phase", 99), "results[0]"),
        (lambda r: setattr(r.results[0].error, "message", "m"), ""),
        (lambda r: setattr(r.register, "worker_id", "w" * 257), "register.worker_id"),
        (lambda r: r.register.labels.__setitem__("x", "y" * 257), "register.labels"),
        (lambda r: r.register.task_types.extend(["t"] * 1001), "register.task_types"),
    ]
    for mutate, field in cases:
        changed = worker_service_pb2.ConnectRequest()
        changed.CopyFrom(request)
        mutate(changed)
        found = bounds.out_of_range(changed)
        assert bounds._fine(changed) == (not found) == (not walked(changed))
        assert all(v.field.startswith(field) for v in found), found
        assert bool(found) == bool(field), (field, found)
