"""gRPC face of the planner: `execplan.v1.PlannerService`.

Protobuf stops here. A request becomes either source text or a JSON-like document
(`MessageToDict` of the `Workflow`), the pure planner compiles it, and the result is
encoded back (`plan_codec`). Errors leave through `execplan.wire.status`.

Big documents compile on a worker thread. Compiling is pure Python, so the GIL
means a thread buys no parallelism; what it buys is responsiveness: the interpreter
switches threads every few milliseconds, so a 50,000-task compile no longer stalls
every other RPC on the event loop for the whole compile. Measured here on a
20k-task chain (~1.1 s compile): the event loop's longest stall is ~90 ms offloaded
(json.loads and protobuf serialization hold the GIL in C) against ~1.07 s inline.
Small documents (the common case, well under a millisecond) compile inline, because
a hop to another thread costs ~50 us on this hardware (docs/benchmarks.md). The pool is small
on purpose: more threads would only contend for the same GIL. A
`ProcessPoolExecutor` can be passed in for true parallelism (everything crossing it
is picklable protobuf).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from execplan.errors import FieldViolation, InvalidArgument, LimitExceeded, WorkflowInvalid
from execplan.planner import (
    CompileResult,
    Diagnostic,
    compile_document,
    compile_source,
    limits,
    validate_source,
)
from execplan.v1 import planner_service_pb2 as pb
from execplan.v1 import planner_service_pb2_grpc as pb_grpc
from execplan.wire.plan_codec import encode_diagnostic, encode_plan
from execplan.wire.status import unary_errors
from google.protobuf import json_format

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PlannerService"].full_name

_FORMATS = {
    pb.SOURCE_FORMAT_UNSPECIFIED: "auto",
    pb.SOURCE_FORMAT_AUTO: "auto",
    pb.SOURCE_FORMAT_YAML: "yaml",
    pb.SOURCE_FORMAT_JSON: "json",
}

Definition = pb.ValidateWorkflowRequest | pb.CompilePlanRequest
R = TypeVar("R", pb.ValidateWorkflowRequest, pb.CompilePlanRequest)
T = TypeVar("T")


def _definition(request: Definition) -> str:
    kind = request.WhichOneof("definition")
    if kind is None:
        raise InvalidArgument(
            "a workflow definition is required",
            [FieldViolation("definition", "set either `source` or `workflow`", "required")],
        )
    return kind


def _source_format(request: Definition) -> str:
    fmt = _FORMATS.get(request.format)
    if fmt is None:
        raise InvalidArgument(
            "unknown source format",
            [FieldViolation("format", f"unknown SourceFormat {request.format}", "invalid")],
        )
    return fmt


def _document(request: Definition) -> object:
    # Count before converting: MessageToDict of a million tasks is seconds of work
    # and GiBs for an answer that is already known.
    if len(request.workflow.tasks) > limits.MAX_TASKS:
        raise LimitExceeded(
            f"workflow exceeds a limit: {len(request.workflow.tasks):,} tasks",
            [
                FieldViolation(
                    "workflow.tasks",
                    f"{len(request.workflow.tasks):,} tasks; at most {limits.MAX_TASKS:,} "
                    "are allowed",
                    "limit-tasks",
                )
            ],
        )
    try:
        return json_format.MessageToDict(request.workflow, preserving_proto_field_name=True)
    except json_format.SerializeToJsonError as exc:  # NaN or infinity in a Value
        raise InvalidArgument(
            "workflow invalid: a value has no JSON form",
            [FieldViolation("workflow", str(exc), "invalid-type")],
        ) from exc


def compile_definition(request: Definition) -> CompileResult:
    """Compile whichever `definition` the request carries (pure, thread-safe)."""
    if _definition(request) == "workflow":
        return compile_document(_document(request))
    return compile_source(request.source, _source_format(request))


def diagnose_definition(request: Definition) -> tuple[Diagnostic, ...]:
    """Every diagnostic, skipping the plan build where the planner allows it."""
    if _definition(request) == "workflow":
        return compile_document(_document(request)).diagnostics
    return validate_source(request.source, _source_format(request))


def _violation(d: Diagnostic) -> FieldViolation:
    return FieldViolation(d.path, d.message, d.code)


def _summary(errors: list[Diagnostic]) -> str:
    # The message alone must be useful to someone reading `buf curl` output.
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.path or 'workflow'}: {first.message}{more}"


def validate_response(request: pb.ValidateWorkflowRequest) -> pb.ValidateWorkflowResponse:
    diagnostics = diagnose_definition(request)
    return pb.ValidateWorkflowResponse(
        valid=not any(d.severity == "error" for d in diagnostics),
        diagnostics=[encode_diagnostic(d) for d in diagnostics],
    )


def compile_response(request: pb.CompilePlanRequest) -> pb.CompilePlanResponse:
    result = compile_definition(request)
    errors = [d for d in result.diagnostics if d.severity == "error"]
    if result.limit_exceeded:
        raise LimitExceeded(
            f"workflow exceeds a limit: {_summary(errors)}", [_violation(d) for d in errors]
        )
    if not result.ok or result.plan is None:
        raise WorkflowInvalid(
            f"workflow invalid: {_summary(errors)}", [_violation(d) for d in errors]
        )
    warnings = [encode_diagnostic(d) for d in result.diagnostics if d.severity != "error"]
    return pb.CompilePlanResponse(plan=encode_plan(result.plan), diagnostics=warnings)


# Requests from this size on compile on a thread (see the module docstring).
OFFLOAD_BYTES = 64 * 1024


class PlannerServicer(pb_grpc.PlannerServiceServicer):
    def __init__(
        self, offload_bytes: int = OFFLOAD_BYTES, executor: Executor | None = None
    ) -> None:
        self._offload_bytes = offload_bytes
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(2, thread_name_prefix="compile")

    def close(self) -> None:
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[R], T], request: R) -> T:
        # ByteSize() is cheap (cached sizes in upb) and measures source and workflow alike.
        if request.ByteSize() < self._offload_bytes:
            return fn(request)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, request)

    @unary_errors
    async def ValidateWorkflow(  # noqa: N802 (gRPC method name)
        self, request: pb.ValidateWorkflowRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidateWorkflowResponse:
        return await self._run(validate_response, request)

    @unary_errors
    async def CompilePlan(  # noqa: N802 (gRPC method name)
        self, request: pb.CompilePlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CompilePlanResponse:
        return await self._run(compile_response, request)
