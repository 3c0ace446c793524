"""Small asyncio helpers shared by the server's long-running parts.

task, self._task = self._task, None
await cancel_and_wait(task)          # stop() stays idempotent: None is skipped
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task, then wait for each to finish.

    Cancelling all first lets them unwind together; the `CancelledError` each one ends
    with is the expected outcome of stopping it, so it is not re-raised.
    """
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
