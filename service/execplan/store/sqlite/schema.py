"""SQLite schema as an ordered list of migrations, plus connection settings.

`schema_version` holds one row: the number of migrations applied. `migrate()` applies
the missing ones in order, each in its own IMMEDIATE transaction, so a crash leaves
the database at a whole version. A database from a newer execplan (version above
the last known migration) is refused rather than silently misread.

To change the schema, append a `Migration` (never edit an applied one) and extend
`tests/store/test_sqlite.py::test_migrates_old_database` if data must be carried over.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from execplan.errors import StoreError

from ..search_sql import FINISHED
from ..sql import ACTIVE

__all__ = ["ACTIVE", "LATEST_VERSION", "MIGRATIONS", "Migration", "migrate"]


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
            # Plans are large (50k-task plans) and written once: keep them in a rowid
            # table so the payload lives in overflow pages, not in the b-tree key.
            """CREATE TABLE plans (
                plan_id TEXT PRIMARY KEY,
                payload BLOB NOT NULL
            )""",
            # No foreign key to plans: the executor decides when plans are stored.
            """CREATE TABLE executions (
                execution_id  TEXT PRIMARY KEY,
                plan_id       TEXT NOT NULL,
                workflow_name TEXT NOT NULL,
                state         TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL,
                updated_at_ms INTEGER NOT NULL,
                last_sequence INTEGER NOT NULL,
                request_id    TEXT NOT NULL DEFAULT ''
            )""",
            """CREATE UNIQUE INDEX executions_by_request
                ON executions (request_id) WHERE request_id != ''""",
            # Keyset pagination newest first; SQLite walks these indexes backwards.
            "CREATE INDEX executions_by_created ON executions (created_at_ms, execution_id)",
            """CREATE INDEX executions_by_state
                ON executions (state, created_at_ms, execution_id)""",
            """CREATE INDEX executions_by_workflow
                ON executions (workflow_name, created_at_ms, execution_id)""",
            # The primary key is the optimistic-concurrency check. A rowid table (the
            # key is then a separate index) on purpose: rows land in append order, so a
            # group commit of N executions dirties ~N small index leaves plus a few
            # tail pages, not N leaves full of payloads. Measured: WITHOUT ROWID wrote
            # 2.2x more to disk per commit and was 2x slower per row (100 executions).
            """CREATE TABLE events (
                execution_id   TEXT NOT NULL REFERENCES executions (execution_id),
                sequence       INTEGER NOT NULL,
                kind           TEXT NOT NULL,
                recorded_at_ms INTEGER NOT NULL,
                payload        BLOB NOT NULL,
                PRIMARY KEY (execution_id, sequence)
            )""",
            """CREATE TABLE snapshots (
                execution_id TEXT PRIMARY KEY REFERENCES executions (execution_id),
                sequence     INTEGER NOT NULL,
                payload      BLOB NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "fairness key, durable timers, key/value map",
        (
            "ALTER TABLE executions ADD COLUMN fairness_key TEXT NOT NULL DEFAULT ''",
            """CREATE TABLE timers (
                timer_id     TEXT PRIMARY KEY,
                execution_id TEXT NOT NULL,
                fire_at_ms   INTEGER NOT NULL,
                payload      BLOB NOT NULL
            )""",
            "CREATE INDEX timers_by_fire_at ON timers (fire_at_ms, timer_id)",
            """CREATE TABLE kv (
                namespace TEXT NOT NULL,
                key       TEXT NOT NULL,
                payload   BLOB NOT NULL,
                PRIMARY KEY (namespace, key)
            )""",
        ),
    ),
    Migration(
        3,
        "partial index of non-terminal executions (recovery reads only those)",
        # `sql.LIST_ACTIVE` repeats the predicate verbatim: SQLite uses a partial index
        # only for a query whose WHERE implies the index's. Terminal states are final,
        # so this never changes (a new one would need a new index).
        (
            "CREATE INDEX executions_active ON executions (created_at_ms, execution_id)"
            f" WHERE {ACTIVE}",
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
        ("ALTER TABLE executions ADD COLUMN request_digest TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        6,
        "the parent of a child execution (builtin.workflow), listed by parent",
        (
            "ALTER TABLE executions ADD COLUMN parent_execution_id TEXT NOT NULL DEFAULT ''",
            """CREATE INDEX executions_by_parent
                ON executions (parent_execution_id, created_at_ms, execution_id)
                WHERE parent_execution_id != ''""",
        ),
    ),
    Migration(
        7,
        "flow control: concurrency-limit holders, token buckets, task result cache",
        (
            """CREATE TABLE limit_holders (
                name        TEXT NOT NULL,
                key         TEXT NOT NULL,
                holder      TEXT NOT NULL,
                max         INTEGER NOT NULL,
                acquired_ms INTEGER NOT NULL,
                PRIMARY KEY (name, key, holder)
            )""",
            "CREATE INDEX limit_holders_by_holder ON limit_holders (holder)",
            """CREATE TABLE buckets (
                name       TEXT PRIMARY KEY,
                units      INTEGER NOT NULL,
                period_ms  INTEGER NOT NULL,
                burst      INTEGER NOT NULL,
                source     TEXT NOT NULL,
                updated_ms INTEGER NOT NULL
            )""",
            """CREATE TABLE bucket_levels (
                name            TEXT NOT NULL,
                key             TEXT NOT NULL,
                tokens          REAL NOT NULL,
                updated_ms      INTEGER NOT NULL,
                paused_until_ms INTEGER NOT NULL,
                PRIMARY KEY (name, key)
            )""",
            """CREATE TABLE cache_entries (
                task_type    TEXT NOT NULL,
                key          TEXT NOT NULL,
                payload      BLOB NOT NULL,
                stored_ms    INTEGER NOT NULL,
                expires_ms   INTEGER NOT NULL,
                execution_id TEXT NOT NULL,
                task_id      TEXT NOT NULL,
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
                execution_id   TEXT NOT NULL,
                sequence       INTEGER NOT NULL,
                counter        TEXT NOT NULL,
                amount         REAL NOT NULL,
                recorded_at_ms INTEGER NOT NULL,
                task_id        TEXT NOT NULL,
                workflow_name  TEXT NOT NULL,
                PRIMARY KEY (execution_id, sequence, counter)
            )""",
            "CREATE INDEX usage_by_time ON usage (recorded_at_ms)",
        ),
    ),
    Migration(
        9,
        "the task of the parent that started a child execution (listed with it)",
        ("ALTER TABLE executions ADD COLUMN parent_task_id TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        10,
        "search attributes, finished executions by end (retention), schedules",
        (
            # One row per (execution, attribute); the value sits in the column of its
            # kind (store/search_sql.py), each indexed by (name, value).
            """CREATE TABLE search_attributes (
                execution_id TEXT NOT NULL REFERENCES executions (execution_id),
                name         TEXT NOT NULL,
                kind         TEXT NOT NULL,
                str_value    TEXT,
                num_value    REAL,
                int_value    INTEGER,
                PRIMARY KEY (execution_id, name)
            )""",
            "CREATE INDEX search_by_string ON search_attributes (name, str_value)",
            "CREATE INDEX search_by_number ON search_attributes (name, num_value)",
            "CREATE INDEX search_by_int ON search_attributes (name, kind, int_value)",
            # Retention reads finished executions oldest end first; `search_sql.FINISHED`
            # is repeated verbatim by that query.
            f"CREATE INDEX executions_finished ON executions (updated_at_ms, execution_id)"
            f" WHERE {FINISHED}",
            """CREATE TABLE schedules (
                name          TEXT PRIMARY KEY,
                version       INTEGER NOT NULL,
                spec          BLOB NOT NULL,
                state         BLOB NOT NULL,
                last_slot_ms  INTEGER NOT NULL,
                created_at_ms INTEGER NOT NULL,
                updated_at_ms INTEGER NOT NULL
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def configure_writer(conn: sqlite3.Connection) -> None:
    """Settings of the single writer connection (run on its thread)."""
    # WAL: readers never block the writer and see the last commit.
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"cannot enable WAL (journal_mode={mode}); is the path a regular file?")
    # Durability is the product: FULL fsyncs the WAL at every commit. Group commit
    # amortizes the fsync over every append pending at that moment.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")


def configure_reader(conn: sqlite3.Connection) -> None:
    """Settings of a reader connection: it can never write by accident."""
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA query_only = ON")


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> int:
    """Bring the schema to `target` (default: latest); returns the version reached.

    `conn` must be in autocommit mode (`isolation_level=None`).
    """
    version = current_version(conn)
    if version > LATEST_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this execplan "
            f"(knows up to {LATEST_VERSION}); upgrade execplan"
        )
    for migration in MIGRATIONS:
        if version < migration.version <= target:
            _apply(conn, migration)
            version = migration.version
    return version


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-check inside the write lock: another process may have migrated meanwhile.
        if current_version(conn) >= migration.version:
            conn.execute("ROLLBACK")
            return
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
