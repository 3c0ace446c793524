"""Workflows registered by name (RegisterPlan): every version kept, `NAME` = the latest.

A `builtin.workflow` task names the workflow it runs as `NAME` or `NAME@VERSION`;
`GetPlan(workflow=...)` resolves the same way. Two namespaces of the store's
key/value map hold it (plans themselves stay content-addressed blobs):

    workflow-versions   "NAME@VERSION" -> {"plan_id", "registered_at_ms"}
    workflow-latest     "NAME"         -> {"version", "plan_id", "registered_at_ms"}

Rules (docs/runtime-plans.md):

- a non-empty version is immutable: registering another plan under it is
  `AlreadyExists` with reason VERSION_EXISTS (the first writer wins, also between
  replicas: `Store.insert_kv`); the same plan again is a no-op (`created` False);
- an unversioned workflow (version "") is found only as `NAME`, and registering
  another plan moves it (there is no version to keep apart);
- `NAME` resolves to the most recently registered new version (re-registering an
  old one unchanged does not move it).

    registration, created = await register(store, "review", "2", plan_id, now_ms)
    found = await resolve(store, "review", "")      # Registration | None
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from execplan.errors import AlreadyExists, FieldViolation, InvalidArgument

from .port import Store

VERSIONS = "workflow-versions"
LATEST = "workflow-latest"
MAX_VERSION_CHARS = 128


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    version: str
    plan_id: str
    registered_at_ms: int

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name

    def encode(self) -> bytes:
        return json.dumps(
            {"plan_id": self.plan_id, "registered_at_ms": self.registered_at_ms},
            separators=(",", ":"),
        ).encode()


def split_ref(ref: str) -> tuple[str, str]:
    """`NAME` -> (NAME, ""); `NAME@VERSION` -> (NAME, VERSION)."""
    name, _, version = ref.partition("@")
    return name, version


def _check_version(version: str) -> None:
    if len(version) > MAX_VERSION_CHARS or any(c.isspace() for c in version):
        raise InvalidArgument(
            "a workflow version registered by name must be at most "
            f"{MAX_VERSION_CHARS} characters without spaces (NAME@VERSION names it)",
            [FieldViolation("plan.workflow_version", "no spaces, at most 128 characters")],
        )


async def register(
    store: Store, name: str, version: str, plan_id: str, now_ms: int
) -> tuple[Registration, bool]:
    """Register `plan_id` as `name@version`; (the registration, whether it is new)."""
    if not name:
        raise InvalidArgument(
            "a plan registered by name needs a workflow name",
            [FieldViolation("plan.workflow_name", "required")],
        )
    _check_version(version)
    mine = Registration(name, version, plan_id, now_ms)
    key = f"{name}@{version}"
    if version:
        payload = await store.insert_kv(VERSIONS, key, mine.encode())
        stored = _decode(name, version, payload)
        if stored.plan_id != plan_id:
            raise AlreadyExists(
                f"workflow {key} is registered with another plan ({stored.plan_id}); "
                "a changed workflow needs a new version",
                reason="VERSION_EXISTS",
                metadata={"workflow": key, "planId": stored.plan_id},
            )
        if payload != mine.encode():
            return stored, False  # registered before: nothing moves
    else:
        before = await store.get_kv(VERSIONS, key)
        if before is not None and _decode(name, "", before).plan_id == plan_id:
            return _decode(name, "", before), False
        await store.put_kv(VERSIONS, key, mine.encode())
    latest = {"version": version, "plan_id": plan_id, "registered_at_ms": now_ms}
    await store.put_kv(LATEST, name, json.dumps(latest, separators=(",", ":")).encode())
    return mine, True


async def resolve(store: Store, name: str, version: str = "") -> Registration | None:
    """The registration `name@version` names (`version` "" = the latest), or None."""
    if version:
        payload = await store.get_kv(VERSIONS, f"{name}@{version}")
        return None if payload is None else _decode(name, version, payload)
    payload = await store.get_kv(LATEST, name)
    if payload is None:
        return None
    entry = json.loads(payload)
    return Registration(name, entry["version"], entry["plan_id"], entry["registered_at_ms"])


def _decode(name: str, version: str, payload: bytes) -> Registration:
    entry = json.loads(payload)
    return Registration(name, version, entry["plan_id"], entry["registered_at_ms"])
