"""One paging rule for every list RPC (AIP-158; written in executor_service.proto).

`page_size` 0 means DEFAULT_PAGE, and a size above MAX_PAGE is served as MAX_PAGE (not
an error); `next_page_token` is "" on the last page. A page also ends where its next
item would take the response past the server's message limit, less
PAGE_ENVELOPE_BYTES for the rest of the response (token, framing): a page of big
inputs or outputs could otherwise never be sent, and nothing after it be read.

    items = items[: fitting(items[:page_size(request.page_size)], max_bytes)]
"""

from __future__ import annotations

from collections.abc import Sequence

from execplan.executor.runtime.reads import ENTRY_OVERHEAD_BYTES
from google.protobuf.message import Message

DEFAULT_PAGE = 100
MAX_PAGE = 1000
PAGE_ENVELOPE_BYTES = 64 * 1024


def page_size(requested: int) -> int:
    return min(requested, MAX_PAGE) if requested else DEFAULT_PAGE


def fitting(items: Sequence[Message], max_bytes: int) -> int:
    """How many leading `items` fit in `max_bytes` encoded; the first always does (one
    item never exceeds a message: requests and results are bounded by it)."""
    used = 0
    for n, item in enumerate(items):
        used += item.ByteSize() + ENTRY_OVERHEAD_BYTES
        if n and used > max_bytes:
            return n
    return len(items)
