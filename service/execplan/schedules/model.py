"""A schedule as the scheduler works on it: its definition and what it has done.

    definition = Definition(name, spec, action, paused=False, note="", created_ms=now)
    progress = Progress()                        # counts, buffered slots, recent runs
    record = to_record(definition, progress, last_slot_ms, version, now)   # for the store
    definition, progress = from_record(record)

The store keeps both as opaque bytes (`ScheduleRecord.spec` / `.state`): they are
serialized `execplan.v1.Schedule` (without `info`) and `execplan.v1.ScheduleInfo`
messages, so a schedule written by one version reads the same in the next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from execplan.search import SearchValue
from execplan.search.codec import decode_value, encode_value
from execplan.store.schedules import ScheduleRecord
from execplan.v1 import schedule_pb2
from google.protobuf import json_format, struct_pb2

from .spec import Overlap, Spec

MAX_RECENT = 10
MAX_BUFFERED = 1000
MAX_RUNNING = 100
REQUEST_PREFIX = "schedule:"


def request_id(name: str, slot_ms: int) -> str:
    """The request_id of a schedule's run for one slot: the same on every replica."""
    return f"{REQUEST_PREFIX}{name}:{slot_ms}"


@dataclass(frozen=True, slots=True)
class Action:
    plan_id: str
    workflow_name: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    fairness_key: str = ""
    search_attributes: Mapping[str, SearchValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    spec: Spec
    action: Action
    paused: bool = False
    note: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class Run:
    slot_ms: int
    execution_id: str
    started_ms: int
    backfill: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    runs: int = 0
    skipped: int = 0
    recent: tuple[Run, ...] = ()  # newest first
    buffered: tuple[int, ...] = ()  # slots, oldest first
    running: tuple[str, ...] = ()  # execution ids
    last_error: str = ""

    def started(self, run: Run, *, track: bool) -> Progress:
        """`run` started; `track`: keep it in `running` (skip and buffer wait for it)."""
        running = (*self.running, run.execution_id)[-MAX_RUNNING:] if track else self.running
        return dataclasses.replace(
            self,
            runs=self.runs + 1,
            recent=(run, *self.recent)[:MAX_RECENT],
            running=running,
            buffered=tuple(s for s in self.buffered if s != run.slot_ms),
            last_error="",
        )

    def skip(self, count: int = 1) -> Progress:
        return dataclasses.replace(self, skipped=self.skipped + count)

    def buffer(self, slot_ms: int) -> Progress:
        """`slot_ms` queued; a full buffer skips it instead."""
        if slot_ms in self.buffered:
            return self
        if len(self.buffered) >= MAX_BUFFERED:
            return self.skip()
        return dataclasses.replace(self, buffered=tuple(sorted((*self.buffered, slot_ms))))


# -- codec: the store's bytes, and the wire's messages -------------------------------

_OVERLAP_TO_PROTO = {
    Overlap.SKIP: schedule_pb2.SCHEDULE_OVERLAP_POLICY_SKIP,
    Overlap.BUFFER: schedule_pb2.SCHEDULE_OVERLAP_POLICY_BUFFER,
    Overlap.ALLOW: schedule_pb2.SCHEDULE_OVERLAP_POLICY_ALLOW,
}
OVERLAP_FROM_PROTO = {v: k for k, v in _OVERLAP_TO_PROTO.items()} | {
    schedule_pb2.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED: Overlap.SKIP
}


def encode_spec(spec: Spec) -> schedule_pb2.ScheduleSpec:
    out = schedule_pb2.ScheduleSpec(
        cron=spec.cron, time_zone=spec.time_zone, overlap=_OVERLAP_TO_PROTO[spec.overlap]
    )
    if spec.interval_ms:
        out.interval.FromMilliseconds(spec.interval_ms)
    if spec.offset_ms:
        out.offset.FromMilliseconds(spec.offset_ms)
    if spec.jitter_ms:
        out.jitter.FromMilliseconds(spec.jitter_ms)
    out.catchup_window.FromMilliseconds(spec.catchup_ms)
    if spec.start_ms:
        out.start_at.FromMilliseconds(spec.start_ms)
    if spec.end_ms:
        out.end_at.FromMilliseconds(spec.end_ms)
    return out


def decode_spec(spec: schedule_pb2.ScheduleSpec, default_catchup_ms: int) -> Spec:
    """The domain spec of a message (not checked: call `Spec.check`)."""
    catchup = spec.catchup_window.ToMilliseconds() if spec.HasField("catchup_window") else 0
    return Spec(
        cron=spec.cron.strip(),
        interval_ms=spec.interval.ToMilliseconds(),
        offset_ms=spec.offset.ToMilliseconds(),
        time_zone=spec.time_zone,
        jitter_ms=spec.jitter.ToMilliseconds(),
        overlap=OVERLAP_FROM_PROTO.get(spec.overlap, "?"),
        catchup_ms=catchup or default_catchup_ms,
        start_ms=spec.start_at.ToMilliseconds() if spec.HasField("start_at") else 0,
        end_ms=spec.end_at.ToMilliseconds() if spec.HasField("end_at") else 0,
    )


def encode_definition(definition: Definition) -> schedule_pb2.Schedule:
    action = definition.action
    inputs = struct_pb2.Struct()
    json_format.ParseDict(dict(action.inputs), inputs)
    out = schedule_pb2.Schedule(
        name=definition.name,
        spec=encode_spec(definition.spec),
        action=schedule_pb2.ScheduleAction(
            plan_id=action.plan_id,
            workflow_name=action.workflow_name,
            inputs=inputs,
            fairness_key=action.fairness_key,
            search_attributes={k: encode_value(v) for k, v in action.search_attributes.items()},
        ),
        paused=definition.paused,
        note=definition.note,
    )
    out.created_at.FromMilliseconds(definition.created_ms)
    return out


def decode_definition(message: schedule_pb2.Schedule) -> Definition:
    action = message.action
    attributes = {k: decode_value(v) for k, v in action.search_attributes.items()}
    return Definition(
        name=message.name,
        spec=decode_spec(message.spec, 0),
        action=Action(
            plan_id=action.plan_id,
            workflow_name=action.workflow_name,
            inputs=json_format.MessageToDict(action.inputs),
            fairness_key=action.fairness_key,
            search_attributes={k: v for k, v in attributes.items() if v is not None},
        ),
        paused=message.paused,
        note=message.note,
        created_ms=message.created_at.ToMilliseconds(),
    )


def encode_progress(progress: Progress, last_slot_ms: int) -> schedule_pb2.ScheduleInfo:
    info = schedule_pb2.ScheduleInfo(
        runs=progress.runs,
        skipped=progress.skipped,
        running=list(progress.running),
        last_error=progress.last_error,
    )
    if last_slot_ms:
        info.last_slot.FromMilliseconds(last_slot_ms)
    for run in progress.recent:
        item = info.recent_runs.add(execution_id=run.execution_id, backfill=run.backfill)
        item.slot.FromMilliseconds(run.slot_ms)
        item.started_at.FromMilliseconds(run.started_ms)
    for slot in progress.buffered:
        info.buffered.add().FromMilliseconds(slot)
    return info


def decode_progress(info: schedule_pb2.ScheduleInfo) -> Progress:
    return Progress(
        runs=info.runs,
        skipped=info.skipped,
        recent=tuple(
            Run(r.slot.ToMilliseconds(), r.execution_id, r.started_at.ToMilliseconds(), r.backfill)
            for r in info.recent_runs
        ),
        buffered=tuple(b.ToMilliseconds() for b in info.buffered),
        running=tuple(info.running),
        last_error=info.last_error,
    )


def to_record(
    definition: Definition, progress: Progress, last_slot_ms: int, version: int, now_ms: int
) -> ScheduleRecord:
    return ScheduleRecord(
        name=definition.name,
        version=version,
        spec=encode_definition(definition).SerializeToString(deterministic=True),
        state=encode_progress(progress, 0).SerializeToString(deterministic=True),
        last_slot_ms=last_slot_ms,
        created_at_ms=definition.created_ms,
        updated_at_ms=now_ms,
    )


def from_record(record: ScheduleRecord) -> tuple[Definition, Progress]:
    definition = decode_definition(schedule_pb2.Schedule.FromString(record.spec))
    progress = decode_progress(schedule_pb2.ScheduleInfo.FromString(record.state))
    return definition, progress


def next_version(
    record: ScheduleRecord,
    definition: Definition,
    progress: Progress,
    last_slot_ms: int,
    now_ms: int,
) -> ScheduleRecord:
    """The row after a change of `record` (its version plus one)."""
    return to_record(definition, progress, last_slot_ms, record.version + 1, now_ms)


def to_message(record: ScheduleRecord) -> schedule_pb2.Schedule:
    """The schedule as the wire shows it: definition, what it did, when it runs next."""
    definition, progress = from_record(record)
    message = encode_definition(definition)
    message.info.CopyFrom(encode_progress(progress, record.last_slot_ms))
    message.updated_at.FromMilliseconds(record.updated_at_ms)
    if not definition.paused:
        slot = definition.spec.next_slot(record.last_slot_ms)
        if slot is not None:
            due = slot + definition.spec.jitter_for(definition.name, slot)
            message.info.next_run_at.FromMilliseconds(due)
    return message
