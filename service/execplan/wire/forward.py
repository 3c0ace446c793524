"""Replicas: carry a control call to the replica that owns the execution.

`GrpcForwarder.forward(address, control)` makes the same ExecutorService call on the
owner (one cached channel per address) and returns what the local engine method would
(a state name, or the task id of SendEvent). The owner's error comes back as the
matching `ExecplanError`, so the caller sees the owner's answer unchanged.

Security (docs/security.md "Replicas"): the channel uses the `credentials` given
(TLS to the owner, presenting this replica's certificate when the servers run mutual
TLS), and the forwarded call carries the original caller's `authorization` metadata,
so the owner authenticates and authorizes the real caller, not the forwarding peer.
The servicer records that metadata with `remember_caller(context)` before it calls
the engine; a context variable carries it to `forward` within the same RPC task.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

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
from execplan.executor.runtime.replicas import Control
from execplan.executor.values import fill_value
from execplan.usage import Budget
from execplan.usage.codec import encode_budget
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc as pb_grpc
from execplan.wire.channels import peer_channel

_ERRORS: dict[grpc.StatusCode, type[ExecplanError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}

TIMEOUT_S = 30.0
# Metadata of the call being served that a forwarded call carries on.
FORWARDED_KEYS = ("authorization", "traceparent", "tracestate")

_caller: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("execplan_caller", default=())


def remember_caller(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Keep the caller's credentials for a forward made while serving this call."""
    _caller.set(
        tuple(
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if key in FORWARDED_KEYS and isinstance(value, str)
        )
    )


class GrpcForwarder:
    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        """`credentials`: TLS to the owners (None: plaintext, servers without TLS)."""
        self._credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> pb_grpc.ExecutorServiceAsyncStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = peer_channel(address, self._credentials)
        return pb_grpc.ExecutorServiceStub(channel)

    async def forward(self, address: str, control: Control) -> str:
        stub = self._stub(address)
        eid, rid = control.execution_id, control.request_id
        call: dict[str, Any] = {"timeout": TIMEOUT_S, "metadata": _caller.get()}
        try:
            if control.kind == "pause":
                paused = await stub.PauseExecution(
                    pb.PauseExecutionRequest(
                        execution_id=eid, reason=control.reason, request_id=rid
                    ),
                    **call,
                )
                return _name(paused.state)
            if control.kind == "resume":
                resumed = await stub.ResumeExecution(
                    pb.ResumeExecutionRequest(execution_id=eid, request_id=rid), **call
                )
                return _name(resumed.state)
            if control.kind == "cancel":
                cancelled = await stub.CancelExecution(
                    pb.CancelExecutionRequest(
                        execution_id=eid, reason=control.reason, request_id=rid
                    ),
                    **call,
                )
                return _name(cancelled.state)
            if control.kind == "terminate":
                terminated = await stub.TerminateExecution(
                    pb.TerminateExecutionRequest(
                        execution_id=eid, reason=control.reason, request_id=rid
                    ),
                    **call,
                )
                return _name(terminated.state)
            if control.kind == "set_budget":
                budget = encode_budget(control.budget or Budget(on_exceeded=""))
                changed = await stub.SetBudget(
                    pb.SetBudgetRequest(
                        execution_id=eid,
                        budget=budget,
                        resume=control.resume,
                        reason=control.reason,
                        request_id=rid,
                        task_id=control.task_id,
                    ),
                    **call,
                )
                return _name(changed.state)
            request = pb.SendEventRequest(execution_id=eid, name=control.name, request_id=rid)
            if control.data is not None:
                fill_value(request.data, control.data)
            sent = await stub.SendEvent(request, **call)
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
