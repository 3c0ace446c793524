"""Control calls are idempotent on their request_id; a reused one must repeat the call.

PauseExecution, ResumeExecution, CancelExecution, TerminateExecution and SendEvent
carry a `request_id` that is recorded in the event the call produced
(execution_paused, execution_resumed, execution_cancel_requested,
external_event_received). The fold remembers, per execution, which call each
request_id made (`ExecutionState.requests`: kind, a digest of its parameters, its
answer), so that

  - the same request again (a retry after a lost reply) changes nothing and gets
    the same answer, also once the execution has finished;
  - a different request with that request_id (another kind, reason, event name or
    data) is refused with AlreadyExists (REQUEST_ID_REUSED).

A request_id is scoped to its execution, and remembered only when the call
produced an event (pausing a paused execution records nothing).
"""

from __future__ import annotations

import hashlib
import json

from execplan.errors import AlreadyExists
from execplan.executor.state import ExecutionState
from execplan.executor.values import JsonValue


def digest(*parts: JsonValue) -> str:
    """The parameters of a control call, compared when its request_id comes again."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def remember(state: ExecutionState, request_id: str, kind: str, params: str, answer: str) -> None:
    if request_id:
        state.requests[request_id] = [kind, params, answer]


def repeated(state: ExecutionState, request_id: str, kind: str, params: str) -> str | None:
    """The answer of the earlier call with `request_id` (None: not seen); AlreadyExists
    when that call was a different one."""
    seen = state.requests.get(request_id) if request_id else None
    if seen is None:
        return None
    if seen[:2] != [kind, params]:
        raise AlreadyExists(
            f"request_id {request_id!r} was used by another call on execution "
            f"{state.execution_id} ({seen[0]}, not this {kind}); use a new request_id",
            reason="REQUEST_ID_REUSED",
            metadata={
                "requestId": request_id,
                "executionId": state.execution_id,
                "previousCall": seen[0],
            },
        )
    return seen[2]
