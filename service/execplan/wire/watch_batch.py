"""WatchExecutions with `batched`: the changes waiting for a subscriber, in one message.

A round of the executor commits many executions together, and their summaries
reach a WatchExecutions subscriber in the same turn of the event loop. Sent one a
message, each costs the server a stream write of its own (a gRPC send operation,
a socket write and a wake-up of gRPC's poller: ~70 us of the event loop's CPU each,
more than encoding the summary). A subscriber that asked for `batched` gets
what is waiting when it is written to, in order, in one response's `executions`:

    async for response in summary_batches(subscription.queue, max_bytes):
        yield response

Nothing waits for more: a lone change goes out as soon as it did unbatched. A
response stays within `max_bytes` (the server's message limit less an envelope);
what does not fit goes first into the next one, and a summary too large for a
message by itself goes without its inputs and outputs, as unbatched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from execplan.executor.runtime.reads import ENTRY_OVERHEAD_BYTES
from execplan.executor.view import without_payloads
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb


async def summary_batches(
    queue: asyncio.Queue[ex.Execution | None], max_bytes: int
) -> AsyncIterator[pb.WatchExecutionsResponse]:
    """Responses of the summaries `queue` holds, until its None (the end)."""
    held: ex.Execution | None = None
    while True:
        first = held if held is not None else await queue.get()
        held = None
        if first is None:
            return
        response = pb.WatchExecutionsResponse()
        used = _add(response, first, max_bytes)
        ended = False
        while not queue.empty():
            execution = queue.get_nowait()
            if execution is None:
                ended = True
                break
            size = execution.ByteSize() + ENTRY_OVERHEAD_BYTES
            if used + size > max_bytes:
                held = execution  # the first of the next response
                break
            response.executions.append(execution)
            used += size
        yield response
        if ended:
            return


def _add(response: pb.WatchExecutionsResponse, execution: ex.Execution, max_bytes: int) -> int:
    """Puts the first summary of a response; returns the bytes it takes."""
    if execution.ByteSize() > max_bytes:
        execution = without_payloads(execution)
    response.executions.append(execution)
    return execution.ByteSize() + ENTRY_OVERHEAD_BYTES
