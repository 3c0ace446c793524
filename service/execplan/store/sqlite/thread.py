"""Run a whole function on an aiosqlite connection's own thread, in one hop.

aiosqlite gives every connection a dedicated thread and turns each `await
conn.execute(...)` into one round trip to it (~50-250 us here: docs/benchmarks.md,
"Costs the design rests on"). A transaction written as a chain of awaits therefore
costs several hops plus a hop per row. Instead, the store hands the thread one plain
function that takes the `sqlite3.Connection` and does all the work (BEGIN, many
statements, COMMIT, row conversion), so a group commit or a read is a single hop.

aiosqlite has no public API for that; `Connection._execute(fn, *args)` is the one
entry point its own methods use. That, and joining the thread of a failed connect,
are confined to this module; the pin `aiosqlite>=0.22,<0.23` in pyproject.toml plus
the store tests guard them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TypeVar, cast

import aiosqlite

T = TypeVar("T")


async def run_on(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Call `fn(raw_connection)` on `conn`'s thread and return its result."""
    raw = conn._conn
    return cast(T, await conn._execute(fn, raw))  # type: ignore[no-untyped-call]


async def connect(path: str) -> aiosqlite.Connection:
    """Open an autocommit connection (transactions are explicit: BEGIN IMMEDIATE)."""
    conn = aiosqlite.connect(path, isolation_level=None)
    try:
        return await conn
    except BaseException:
        # A failed connect stops aiosqlite's thread without waiting for it; wait here,
        # or the thread outlives the event loop and fails posting its last result.
        await asyncio.to_thread(conn._thread.join, 5)
        raise
