"""The schedule and purge RPCs of ExecutorService: decode, check, call, encode.

    rpcs = OpsRpcs(scheduler, pruner, plans)       # plans: how a definition becomes a plan
    response = await rpcs.create_schedule(request)

`ExecutorServicer` delegates to these (one servicer per service is what gRPC
registers); the work itself is `execplan.schedules.Scheduler` and
`execplan.retention.Pruner`. Every bad field is INVALID_ARGUMENT naming it
(`name`, `spec.cron`, `search_attributes["x"]`, `filter`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from typing import Any

from execplan.errors import FieldViolation, InvalidArgument
from execplan.retention import MAX_PURGE, Pruner
from execplan.schedules.model import OVERLAP_FROM_PROTO, Action, Definition, decode_spec, to_message
from execplan.schedules.scheduler import Scheduler
from execplan.schedules.spec import DEFAULT_CATCHUP_MS
from execplan.search import SearchValue, check_attributes, parse
from execplan.search.codec import decode_map
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import plan_pb2, schedule_pb2
from execplan.wire.paging import PAGE_ENVELOPE_BYTES, fitting, page_size
from google.protobuf import json_format

NAME = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
MAX_NAME_CHARS = 128

# The plan a CreateScheduleRequest names (compiled, checked and registered), and a
# check of the inputs against it (defaults, types) so a bad schedule fails now
# rather than at each slot.
PlanFor = Callable[[pb.CreateScheduleRequest], Awaitable[plan_pb2.ExecutionPlan]]
CheckInputs = Callable[[plan_pb2.ExecutionPlan, dict[str, Any]], Awaitable[None]]


def decode_attributes(attributes: Any, field: str) -> dict[str, SearchValue]:
    """Search attributes given to a start or a schedule, checked (InvalidArgument
    naming each bad key, `search_attributes["x"]`); each needs a value."""
    decoded = decode_map(attributes)
    empty = [name for name, value in decoded.items() if value is None]
    if empty:
        problems = [
            FieldViolation(f'{field}["{n[:64]}"]', "set one of the value fields") for n in empty
        ]
        raise InvalidArgument("a search attribute needs a value", problems)
    check_attributes(decoded, field)
    return {name: value for name, value in decoded.items() if value is not None}


def _name(name: str, field: str = "name") -> str:
    if not name:
        raise InvalidArgument(f"{field} is required", [FieldViolation(field, "required")])
    if len(name) > MAX_NAME_CHARS or not NAME.match(name):
        raise InvalidArgument(
            f"bad schedule {field} {name[:MAX_NAME_CHARS]!r}",
            [FieldViolation(field, f"[a-z0-9][a-z0-9._-]*, at most {MAX_NAME_CHARS} characters")],
        )
    return name


def _page_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            "bad page_token", [FieldViolation("page_token", "not a token this server issued")]
        ) from None


class OpsRpcs:
    def __init__(
        self,
        scheduler: Scheduler,
        pruner: Pruner,
        plan_for: PlanFor,
        check_inputs: CheckInputs,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        """`max_message_bytes`: the server's message limit, which pages stay under."""
        self._page_bytes = max(1, max_message_bytes - PAGE_ENVELOPE_BYTES)
        self._scheduler = scheduler
        self._pruner = pruner
        self._plan_for = plan_for
        self._check_inputs = check_inputs

    # -- schedules ---------------------------------------------------------------------

    async def create_schedule(self, request: pb.CreateScheduleRequest) -> pb.CreateScheduleResponse:
        name = _name(request.name)
        spec = decode_spec(request.spec, DEFAULT_CATCHUP_MS)
        spec.check("spec")
        attributes = decode_attributes(request.search_attributes, "search_attributes")
        plan = await self._plan_for(request)
        inputs = json_format.MessageToDict(request.inputs)
        await self._check_inputs(plan, inputs)
        definition = Definition(
            name=name,
            spec=spec,
            action=Action(
                plan_id=plan.plan_id,
                workflow_name=plan.workflow_name,
                inputs=inputs,
                fairness_key=request.fairness_key,
                search_attributes=attributes,
            ),
            paused=request.paused,
        )
        record, created = await self._scheduler.create(definition)
        return pb.CreateScheduleResponse(schedule=to_message(record), created=created)

    async def get_schedule(self, request: pb.GetScheduleRequest) -> pb.GetScheduleResponse:
        record = await self._scheduler.get(_name(request.name))
        return pb.GetScheduleResponse(schedule=to_message(record))

    async def list_schedules(self, request: pb.ListSchedulesRequest) -> pb.ListSchedulesResponse:
        size = page_size(request.page_size)
        after = _page_token(request.page_token)
        records = await self._scheduler.list(size + 1, after)
        schedules = [to_message(r) for r in records[:size]]
        del schedules[fitting(schedules, self._page_bytes) :]
        token = ""
        if len(records) > len(schedules) and schedules:
            last = records[len(schedules) - 1].name
            token = base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")
        return pb.ListSchedulesResponse(schedules=schedules, next_page_token=token)

    async def delete_schedule(self, request: pb.DeleteScheduleRequest) -> pb.DeleteScheduleResponse:
        return pb.DeleteScheduleResponse(deleted=await self._scheduler.delete(_name(request.name)))

    async def pause_schedule(self, request: pb.PauseScheduleRequest) -> pb.PauseScheduleResponse:
        if len(request.reason) > 1024:
            raise InvalidArgument(
                "reason too long", [FieldViolation("reason", "at most 1024 characters")]
            )
        record = await self._scheduler.pause(_name(request.name), request.reason)
        return pb.PauseScheduleResponse(schedule=to_message(record))

    async def resume_schedule(self, request: pb.ResumeScheduleRequest) -> pb.ResumeScheduleResponse:
        record = await self._scheduler.resume(_name(request.name))
        return pb.ResumeScheduleResponse(schedule=to_message(record))

    async def backfill_schedule(
        self, request: pb.BackfillScheduleRequest
    ) -> pb.BackfillScheduleResponse:
        name = _name(request.name)
        for field in ("start", "end"):
            if not request.HasField(field):
                raise InvalidArgument(f"{field} is required", [FieldViolation(field, "required")])
        overlap = ""
        if request.overlap != schedule_pb2.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED:
            overlap = OVERLAP_FROM_PROTO.get(request.overlap, "")
            if not overlap:
                raise InvalidArgument(
                    "unknown overlap policy", [FieldViolation("overlap", "skip, buffer or allow")]
                )
        result = await self._scheduler.backfill(
            name, request.start.ToMilliseconds(), request.end.ToMilliseconds(), overlap
        )
        return pb.BackfillScheduleResponse(
            slots=result.slots,
            started=result.started,
            already_run=result.already_run,
            skipped=result.skipped,
            buffered=result.buffered,
            execution_ids=list(result.execution_ids),
        )

    # -- purge -------------------------------------------------------------------------

    async def purge_executions(
        self, request: pb.PurgeExecutionsRequest
    ) -> pb.PurgeExecutionsResponse:
        search = parse(request.filter)
        limit = min(request.limit, MAX_PURGE) if request.limit else 1000
        result = await self._pruner.purge(search, limit, dry_run=request.dry_run)
        return pb.PurgeExecutionsResponse(
            purged=len(result.execution_ids),
            more=result.more,
            execution_ids=list(result.execution_ids),
        )
