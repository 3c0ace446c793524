"""Schedules through the client: `ExecutorClient.schedules`.

    created = await client.schedules.create(
        "nightly-report", cron="0 2 * * *", time_zone="Europe/Paris", source=yaml_text,
        inputs={"day": "yesterday"}, overlap="skip", jitter=timedelta(minutes=5))
    async for schedule in client.schedules.list(): print(schedule.name, schedule.paused)
    await client.schedules.pause("nightly-report", reason="migration")
    await client.schedules.backfill("nightly-report", start, end)   # aware datetimes
    await client.schedules.delete("nightly-report")

Durations are `timedelta`s or seconds; times are aware `datetime`s. Overlap policies:
"skip" (default), "buffer", "allow". What they mean, and how slots fire once across
restarts and replicas: docs/operations.md.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import plan_pb2, planner_service_pb2, schedule_pb2, workflow_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from .values import to_search_attributes, to_struct

OVERLAP = {
    "": schedule_pb2.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED,
    "skip": schedule_pb2.SCHEDULE_OVERLAP_POLICY_SKIP,
    "buffer": schedule_pb2.SCHEDULE_OVERLAP_POLICY_BUFFER,
    "allow": schedule_pb2.SCHEDULE_OVERLAP_POLICY_ALLOW,
}
Seconds = timedelta | float | int


def _duration(value: Seconds | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    out = duration_pb2.Duration()
    if isinstance(value, timedelta):
        out.FromTimedelta(value)
    else:
        out.FromNanoseconds(round(value * 1e9))
    return out


def _timestamp(value: datetime | None, name: str) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"{name} needs an aware datetime (tzinfo set)")
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def _overlap(policy: str) -> schedule_pb2.ScheduleOverlapPolicy.ValueType:
    try:
        return OVERLAP[policy.lower()]
    except KeyError:
        raise ValueError(f"overlap is one of skip, buffer, allow; not {policy!r}") from None


class Schedules:
    def __init__(self, unary: Any) -> None:
        # ExecutorClient._unary: picks the method of the current replica, fails over.
        self._unary = unary

    async def create(
        self,
        name: str,
        *,
        cron: str = "",
        every: Seconds | None = None,
        offset: Seconds | None = None,
        time_zone: str = "",
        jitter: Seconds | None = None,
        overlap: str = "skip",
        catchup_window: Seconds | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        source: str | None = None,
        plan: plan_pb2.ExecutionPlan | None = None,
        plan_id: str | None = None,
        workflow: workflow_pb2.Workflow | None = None,
        inputs: Mapping[str, Any] | None = None,
        fairness_key: str = "",
        search_attributes: Mapping[str, Any] | None = None,
        paused: bool = False,
        request_id: str | None = None,
    ) -> pb.CreateScheduleResponse:
        """A schedule on `cron` (five fields, in `time_zone`) or `every` (an interval).
        Creating the same schedule again returns it (`created` False); another
        definition under the name is AlreadyExistsError."""
        given = [x for x in (source, plan, plan_id, workflow) if x is not None]
        if len(given) != 1:
            raise ValueError("pass exactly one of source=, plan=, plan_id=, workflow=")
        spec = schedule_pb2.ScheduleSpec(
            cron=cron,
            time_zone=time_zone,
            overlap=_overlap(overlap),
            interval=_duration(every),
            offset=_duration(offset),
            jitter=_duration(jitter),
            catchup_window=_duration(catchup_window),
            start_at=_timestamp(start_at, "start_at"),
            end_at=_timestamp(end_at, "end_at"),
        )
        request = pb.CreateScheduleRequest(
            name=name,
            spec=spec,
            inputs=to_struct(inputs),
            fairness_key=fairness_key,
            search_attributes=to_search_attributes(search_attributes),
            paused=paused,
            request_id=request_id or str(uuid.uuid4()),
        )
        if source is not None:
            request.source = source
            request.format = planner_service_pb2.SOURCE_FORMAT_AUTO
        elif plan is not None:
            request.plan.CopyFrom(plan)
        elif plan_id is not None:
            request.plan_id = plan_id
        elif workflow is not None:
            request.workflow.CopyFrom(workflow)
        response: pb.CreateScheduleResponse = await self._unary(
            lambda r: r.executor.CreateSchedule, request
        )
        return response

    async def get(self, name: str) -> schedule_pb2.Schedule:
        response: pb.GetScheduleResponse = await self._unary(
            lambda r: r.executor.GetSchedule, pb.GetScheduleRequest(name=name)
        )
        return response.schedule

    async def list(self, page_size: int = 100) -> AsyncIterator[schedule_pb2.Schedule]:
        """Every schedule, by name, following page tokens lazily."""
        request = pb.ListSchedulesRequest(page_size=page_size)
        while True:
            response: pb.ListSchedulesResponse = await self._unary(
                lambda r: r.executor.ListSchedules, request
            )
            for schedule in response.schedules:
                yield schedule
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def delete(self, name: str) -> bool:
        """True when it existed. Runs it started go on."""
        request = pb.DeleteScheduleRequest(name=name, request_id=str(uuid.uuid4()))
        response: pb.DeleteScheduleResponse = await self._unary(
            lambda r: r.executor.DeleteSchedule, request
        )
        return response.deleted

    async def pause(self, name: str, reason: str = "") -> schedule_pb2.Schedule:
        request = pb.PauseScheduleRequest(name=name, reason=reason, request_id=str(uuid.uuid4()))
        response: pb.PauseScheduleResponse = await self._unary(
            lambda r: r.executor.PauseSchedule, request
        )
        return response.schedule

    async def resume(self, name: str) -> schedule_pb2.Schedule:
        """Slots that came due while paused are not run."""
        request = pb.ResumeScheduleRequest(name=name, request_id=str(uuid.uuid4()))
        response: pb.ResumeScheduleResponse = await self._unary(
            lambda r: r.executor.ResumeSchedule, request
        )
        return response.schedule

    async def backfill(
        self, name: str, start: datetime, end: datetime, overlap: str = ""
    ) -> pb.BackfillScheduleResponse:
        """Run every slot in [start, end] that has not run (at most 1,000 slots);
        `overlap` "" = the schedule's own policy."""
        request = pb.BackfillScheduleRequest(
            name=name,
            start=_timestamp(start, "start"),
            end=_timestamp(end, "end"),
            overlap=_overlap(overlap),
            request_id=str(uuid.uuid4()),
        )
        response: pb.BackfillScheduleResponse = await self._unary(
            lambda r: r.executor.BackfillSchedule, request
        )
        return response
