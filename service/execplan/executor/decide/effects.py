"""Effects: what the engine does after the events that caused them are committed."""

from __future__ import annotations

from dataclasses import dataclass

from execplan.executor.values import JsonValue


@dataclass(frozen=True, slots=True)
class TaskReady:
    """A worker task entered QUEUED and can be matched to a worker."""

    index: int


@dataclass(frozen=True, slots=True)
class SendDispatch:
    index: int
    worker_id: str
    attempt: int
    epoch: int
    phase: int
    task_type: str
    inputs: dict[str, JsonValue]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class CancelLease:
    index: int
    worker_id: str
    attempt: int
    epoch: int
    phase: int
    reason: str


@dataclass(frozen=True, slots=True)
class ArmTimer:
    timer_id: str
    fire_at_ms: int


@dataclass(frozen=True, slots=True)
class ReleaseLease:
    """A leased attempt ended (result, timeout, cancel): free the worker slot."""

    index: int
    worker_id: str


Effect = TaskReady | SendDispatch | CancelLease | ArmTimer | ReleaseLease
