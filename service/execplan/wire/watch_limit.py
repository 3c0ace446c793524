"""The bound on concurrent watch streams (WatchExecution + WatchExecutions) of one process.

Each watch holds a hub subscription, a task and its send buffers for as long as
the execution runs. Past `max_streams` a new watch is answered at once with
`Overloaded` (RESOURCE_EXHAUSTED + RetryInfo, from the status table), which the
SDKs honour: they wait at least the retry delay (plus jitter) and resume after the
last event they saw. That is explicit load shedding, instead of whatever an
overloaded process would do on its own (a burst of 2,000 watches used to get ~150
bare CANCELLED from gRPC core's backlog, see `execplan.server.server_options`).

    limit = WatchLimit(10_000)
    with limit.slot():          # raises Overloaded when every slot is taken
        async for event in ...:
            yield event
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from execplan.errors import Overloaded

log = logging.getLogger("execplan.watch")

DEFAULT_MAX_WATCH_STREAMS = 10_000
# A watch slot frees when some execution ends, which is not predictable; a second
# is long enough not to spin and short enough for a burst to drain quickly.
RETRY_AFTER_S = 1.0
_LOG_EVERY_S = 10.0


class WatchLimit:
    def __init__(self, max_streams: int = DEFAULT_MAX_WATCH_STREAMS) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        self.max_streams = max_streams
        self.active = 0
        self.shed = 0
        self._logged_at = -_LOG_EVERY_S

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.active >= self.max_streams:
            self.shed += 1
            now = time.monotonic()
            if now - self._logged_at >= _LOG_EVERY_S:  # an operator should know; once in a while
                self._logged_at = now
                log.warning(
                    "shedding watch streams: %d open (limit %d, --max-watch-streams); %d shed",
                    self.active,
                    self.max_streams,
                    self.shed,
                )
            raise Overloaded(
                f"{self.active} watch streams are open (limit {self.max_streams}); "
                "retry after the delay",
                RETRY_AFTER_S,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
