"""The index of stored plans behind `ListPlans`: one small entry per plan.

Plans themselves are content-addressed blobs (`Store.put_plan`); listing them by
workflow needs their name, version and when they were stored without decoding
every blob. Each plan gets one entry in the store's key/value map (namespace
`plans`, key = plan_id), written when the plan is first stored. Plans stored by an
execplan older than this index appear once they are registered or started again.

    entry = PlanEntry.of(plan, now_ms)
    await store.put_kv(NAMESPACE, entry.plan_id, entry.encode())
    page, token = list_page(entries, workflow_name="", size=50, token="")

Newest first, `(registered_at_ms, plan_id)` descending; the page token is the
position of the last entry returned, so pages stay stable while plans are added.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from execplan.errors import FieldViolation, InvalidArgument
from execplan.v1 import plan_pb2

NAMESPACE = "plans"


@dataclass(frozen=True, slots=True)
class PlanEntry:
    plan_id: str
    workflow_name: str
    workflow_version: str
    description: str
    registered_at_ms: int
    node_count: int

    @classmethod
    def of(cls, plan: plan_pb2.ExecutionPlan, registered_at_ms: int) -> PlanEntry:
        return cls(
            plan_id=plan.plan_id,
            workflow_name=plan.workflow_name,
            workflow_version=plan.workflow_version,
            # An index entry, not a copy of the plan: a long description is cut.
            description=plan.description[:200],
            registered_at_ms=registered_at_ms,
            node_count=len(plan.nodes),
        )

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> PlanEntry:
        return cls(**json.loads(payload))

    @property
    def position(self) -> tuple[int, str]:
        return (self.registered_at_ms, self.plan_id)


def list_page(
    entries: Iterable[PlanEntry], workflow_name: str, size: int, token: str
) -> tuple[list[PlanEntry], str]:
    """One page of `size` (>= 1) of `entries` (any order), newest first, and the
    next page's token."""
    after = _decode_token(token) if token else None
    wanted = sorted(
        (e for e in entries if not workflow_name or e.workflow_name == workflow_name),
        key=lambda e: e.position,
        reverse=True,
    )
    if after is not None:
        wanted = [e for e in wanted if e.position < after]
    page = wanted[:size]
    more = len(wanted) > size
    return page, _encode_token(page[-1].position) if more else ""


def _encode_token(position: tuple[int, str]) -> str:
    raw = f"{position[0]}:{position[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, sep, plan_id = raw.partition(":")
        if not sep:
            raise ValueError("no separator")
        return int(at), plan_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(
            "bad page_token", [FieldViolation("page_token", "not a token we issued")]
        ) from exc
