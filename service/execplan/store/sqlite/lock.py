"""One execplan process per database file: an exclusive `flock` on `<db>.lock`.

SQLite would let two servers share a file (it only serializes their writes), and
both would then resume and dispatch the same executions. The lock makes the second
one fail at `open()` with a clear `StoreError` instead. The kernel drops the lock
when the holder exits, even by `kill -9`, so a restart never finds a stale lock; a
restart that overlaps its predecessor's shutdown waits up to `max_wait` seconds.

A separate file, not the database: SQLite's own POSIX locks on the database are
released when *any* descriptor of it is closed, and must not be mixed with ours.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time

from execplan.errors import StoreError


class FileLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self, max_wait: float) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreError(
                        f"the database is in use by another execplan process "
                        f"(lock {self.path} held for more than {max_wait:g}s)"
                    ) from None
                await asyncio.sleep(0.05)
            else:
                self._fd = fd
                return

    def release(self) -> None:
        """Idempotent; closing the descriptor drops the lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
