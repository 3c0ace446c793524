"""PostgreSQL schema as an ordered list of migrations (mirrors `sqlite/schema.py`).

`schema_version` holds one row per applied migration (`version` is its primary key,
so a step can never be recorded twice). `migrate()` takes a session-level advisory
lock first, so replicas starting at the same moment queue up and the later ones find
the work done; then each missing step runs in its own transaction, so a crash leaves
the database at a whole version. A database from a newer execplan is refused.

To change the schema, append a `Migration` (never edit an applied one) and keep it
in step with the SQLite list where the port needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from execplan.errors import StoreError

from ..search_sql import FINISHED
from ..sql import ACTIVE

# pg_advisory_lock key: any constant bigint unique to "execplan schema migration".
MIGRATION_LOCK_KEY = 0x65786563_706C616E  # b"execplan"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "plans, executions index, event log, snapshots",
        (
            "CREATE TABLE plans (plan_id text PRIMARY KEY, payload bytea NOT NULL)",
            """CREATE TABLE executions (
                execution_id  text PRIMARY KEY,
                plan_id       text NOT NULL,
                workflow_name text NOT NULL,
                state         text NOT NULL,
                created_at_ms bigint NOT NULL,
                updated_at_ms bigint NOT NULL,
                last_sequence bigint NOT NULL,
                request_id    text NOT NULL DEFAULT ''
            )""",
            # Idempotent StartExecution: INSERT ... ON CONFLICT DO NOTHING hits this.
            """CREATE UNIQUE INDEX executions_by_request
                ON executions (request_id) WHERE request_id <> ''""",
            # Keyset pagination newest first (btree scans backwards).
            "CREATE INDEX executions_by_created ON executions (created_at_ms, execution_id)",
            """CREATE INDEX executions_by_state
                ON executions (state, created_at_ms, execution_id)""",
            """CREATE INDEX executions_by_workflow
                ON executions (workflow_name, created_at_ms, execution_id)""",
            # The primary key is the optimistic-concurrency check.
            """CREATE TABLE events (
                execution_id   text NOT NULL REFERENCES executions (execution_id),
                sequence       bigint NOT NULL,
                kind           text NOT NULL,
                recorded_at_ms bigint NOT NULL,
                payload        bytea NOT NULL,
                PRIMARY KEY (execution_id, sequence)
            )""",
            """CREATE TABLE snapshots (
                execution_id text PRIMARY KEY REFERENCES executions (execution_id),
                sequence     bigint NOT NULL,
                payload      bytea NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "fairness key, durable timers, key/value map",
        (
            "ALTER TABLE executions ADD COLUMN fairness_key text NOT NULL DEFAULT ''",
            """CREATE TABLE timers (
                timer_id     text PRIMARY KEY,
                execution_id text NOT NULL,
                fire_at_ms   bigint NOT NULL,
                payload      bytea NOT NULL
            )""",
            "CREATE INDEX timers_by_fire_at ON timers (fire_at_ms, timer_id)",
            """CREATE TABLE kv (
                namespace text NOT NULL,
                key       text NOT NULL,
                payload   bytea NOT NULL,
                PRIMARY KEY (namespace, key)
            )""",
        ),
    ),
    Migration(
        3,
        "executor replicas: leases and execution ownership (docs/replicas.md)",
        (
            # One row per replica; `epoch` grows on every (re)start, so the executions a
            # previous incarnation owned are free to claim at once.
            """CREATE TABLE replicas (
                replica_id  text PRIMARY KEY,
                epoch       bigint NOT NULL,
                address     text NOT NULL,
                lease_until timestamptz NOT NULL
            )""",
            "ALTER TABLE executions ADD COLUMN owner_id text NOT NULL DEFAULT ''",
            "ALTER TABLE executions ADD COLUMN owner_epoch bigint NOT NULL DEFAULT 0",
            # Takeover scans active executions by owner; the predicate is repeated
            # verbatim in ownership.py so the planner can use this partial index.
            f"""CREATE INDEX executions_active_by_owner
                ON executions (owner_id, owner_epoch) WHERE {ACTIVE}""",
        ),
    ),
    Migration(
        4,
        "drop the durable-timers table: timers live in the event log (timer_scheduled)",
        ("DROP TABLE timers",),
    ),
    Migration(
        5,
        "digest of the StartExecution request, to refuse a reused request_id",
        ("ALTER TABLE executions ADD COLUMN request_digest text NOT NULL DEFAULT ''",),
    ),
    Migration(
        6,
        "the parent of a child execution (builtin.workflow), listed by parent",
        (
            "ALTER TABLE executions ADD COLUMN parent_execution_id text NOT NULL DEFAULT ''",
            """CREATE INDEX executions_by_parent
                ON executions (parent_execution_id, created_at_ms, execution_id)
                WHERE parent_execution_id != ''""",
        ),
    ),
    Migration(
        7,
        "flow control: concurrency-limit holders, token buckets, task result cache",
        (
            # One row per (limit, key) ever used: the row every acquisition locks
            # (SELECT ... FOR UPDATE), so replicas grant a key's slots one at a time.
            """CREATE TABLE limit_keys (
                name text NOT NULL,
                key  text NOT NULL,
                PRIMARY KEY (name, key)
            )""",
            """CREATE TABLE limit_holders (
                name        text NOT NULL,
                key         text NOT NULL,
                holder      text NOT NULL,
                max         bigint NOT NULL,
                acquired_ms bigint NOT NULL,
                PRIMARY KEY (name, key, holder)
            )""",
            "CREATE INDEX limit_holders_by_holder ON limit_holders (holder)",
            """CREATE TABLE buckets (
                name       text PRIMARY KEY,
                units      bigint NOT NULL,
                period_ms  bigint NOT NULL,
                burst      bigint NOT NULL,
                source     text NOT NULL,
                updated_ms bigint NOT NULL
            )""",
            """CREATE TABLE bucket_levels (
                name            text NOT NULL,
                key             text NOT NULL,
                tokens          double precision NOT NULL,
                updated_ms      bigint NOT NULL,
                paused_until_ms bigint NOT NULL,
                PRIMARY KEY (name, key)
            )""",
            """CREATE TABLE cache_entries (
                task_type    text NOT NULL,
                key          text NOT NULL,
                payload      bytea NOT NULL,
                stored_ms    bigint NOT NULL,
                expires_ms   bigint NOT NULL,
                execution_id text NOT NULL,
                task_id      text NOT NULL,
                PRIMARY KEY (task_type, key)
            )""",
            """CREATE INDEX cache_entries_by_expiry
                ON cache_entries (expires_ms) WHERE expires_ms > 0""",
        ),
    ),
    Migration(
        8,
        "usage rows, written with their events, for roll-ups per workflow and time",
        (
            # No foreign key: usage stays on the books when an execution is purged.
            """CREATE TABLE usage (
                execution_id   text NOT NULL,
                sequence       bigint NOT NULL,
                counter        text NOT NULL,
                amount         double precision NOT NULL,
                recorded_at_ms bigint NOT NULL,
                task_id        text NOT NULL,
                workflow_name  text NOT NULL,
                PRIMARY KEY (execution_id, sequence, counter)
            )""",
            "CREATE INDEX usage_by_time ON usage (recorded_at_ms)",
        ),
    ),
    Migration(
        9,
        "the task of the parent that started a child execution (listed with it)",
        ("ALTER TABLE executions ADD COLUMN parent_task_id text NOT NULL DEFAULT ''",),
    ),
    Migration(
        10,
        "search attributes, finished executions by end (retention), schedules",
        (
            """CREATE TABLE search_attributes (
                execution_id text NOT NULL REFERENCES executions (execution_id),
                name         text NOT NULL,
                kind         text NOT NULL,
                str_value    text,
                num_value    double precision,
                int_value    bigint,
                PRIMARY KEY (execution_id, name)
            )""",
            "CREATE INDEX search_by_string ON search_attributes (name, str_value)",
            "CREATE INDEX search_by_number ON search_attributes (name, num_value)",
            "CREATE INDEX search_by_int ON search_attributes (name, kind, int_value)",
            f"CREATE INDEX executions_finished ON executions (updated_at_ms, execution_id)"
            f" WHERE {FINISHED}",
            """CREATE TABLE schedules (
                name          text PRIMARY KEY,
                version       bigint NOT NULL,
                spec          bytea NOT NULL,
                state         bytea NOT NULL,
                last_slot_ms  bigint NOT NULL,
                created_at_ms bigint NOT NULL,
                updated_at_ms bigint NOT NULL
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


async def current_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    version = await conn.fetchval("SELECT max(version) FROM schema_version")
    return int(version) if version is not None else 0


async def migrate(conn: asyncpg.Connection, target: int = LATEST_VERSION) -> list[int]:
    """Bring the schema to `target` (default: latest); returns the versions applied
    by this call ([] when another process had already done it)."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                version     integer PRIMARY KEY,
                description text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )"""
        )
        version = await current_version(conn)
        if version > LATEST_VERSION:
            raise StoreError(
                f"database schema version {version} is newer than this execplan "
                f"(knows up to {LATEST_VERSION}); upgrade execplan"
            )
        for migration in MIGRATIONS:
            if version < migration.version <= target:
                async with conn.transaction():
                    for statement in migration.statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_version (version, description) VALUES ($1, $2)",
                        migration.version,
                        migration.description,
                    )
                version = migration.version
                applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied
