"""Child process of the kill -9 test: appends forever, printing each acknowledged event.

    python kill_child.py DB_PATH WRITERS

Creates WRITERS executions, then runs one appender coroutine per execution; after
each `append()` returns it prints "execution_id sequence" and flushes, so every
line the parent reads is a sequence the store acknowledged as durable.
"""

from __future__ import annotations

import asyncio
import sys

from execplan.store import Append, ExecutionRecord, SqliteStore, StoredEvent


def _event(execution_id: str, sequence: int) -> StoredEvent:
    return StoredEvent(execution_id, sequence, "Tick", sequence, b"x" * 200)


async def main(path: str, writers: int) -> None:
    store = SqliteStore(path)
    await store.open()
    ids = [f"k{i}" for i in range(writers)]
    for execution_id in ids:
        record = ExecutionRecord(execution_id, "p", "w", "RUNNING", 0, 0, 0)
        await store.create_execution(record, [_event(execution_id, 1)])
        print(execution_id, 1, flush=True)

    async def appender(execution_id: str) -> None:
        sequence = 1
        while True:
            sequence += 1
            await store.append([Append(execution_id, (_event(execution_id, sequence),))])
            print(execution_id, sequence, flush=True)

    await asyncio.gather(*(appender(i) for i in ids))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
