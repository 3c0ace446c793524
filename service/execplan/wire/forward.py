"""Replicas: carry a control call to the replica that owns the execution.

`GrpcForwarder.forward(address, control)` makes the same ExecutorService call on the
owner (one cached channel per address) and returns what the local engine method would
(a state name, or the task id of SendEvent). The owner's error comes back as the
matching `ExecplanError`, so the caller sees the owner's answer unchanged.
"""

from __future__ import annotations

import grpc
from execplan.errors import (
    ExecplanError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from execplan.executor.ownership import Control
from execplan.executor.values import fill_value
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc as pb_grpc

_ERRORS: dict[grpc.StatusCode, type[ExecplanError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}

TIMEOUT_S = 30.0


class GrpcForwarder:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> pb_grpc.ExecutorServiceAsyncStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return pb_grpc.ExecutorServiceStub(channel)

    async def forward(self, address: str, control: Control) -> str:
        stub = self._stub(address)
        eid, rid = control.execution_id, control.request_id
        try:
            if control.kind == "pause":
                paused = await stub.PauseExecution(
                    pb.PauseExecutionRequest(
                        execution_id=eid, reason=control.reason, request_id=rid
                    ),
                    timeout=TIMEOUT_S,
                )
                return _name(paused.state)
            if control.kind == "resume":
                resumed = await stub.ResumeExecution(
                    pb.ResumeExecutionRequest(execution_id=eid, request_id=rid), timeout=TIMEOUT_S
                )
                return _name(resumed.state)
            if control.kind == "cancel":
                cancelled = await stub.CancelExecution(
                    pb.CancelExecutionRequest(
                        execution_id=eid, reason=control.reason, request_id=rid
                    ),
                    timeout=TIMEOUT_S,
                )
                return _name(cancelled.state)
            if control.kind == "terminate":
                terminated = await stub.TerminateExecution(
                    pb.TerminateExecutionRequest(
                        execution_id=eid, reason=control.reason, request_id=rid
                    ),
                    timeout=TIMEOUT_S,
                )
                return _name(terminated.state)
            request = pb.SendEventRequest(execution_id=eid, name=control.name, request_id=rid)
            if control.data is not None:
                fill_value(request.data, control.data)
            sent = await stub.SendEvent(request, timeout=TIMEOUT_S)
            return sent.task_id
        except grpc.aio.AioRpcError as exc:
            kind = _ERRORS.get(exc.code(), Unavailable)
            raise kind(f"owner replica {address}: {exc.details()}") from exc

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


def _name(state: ex.ExecutionState.ValueType) -> str:
    return ex.ExecutionState.Name(state).removeprefix("EXECUTION_STATE_")
