"""Progress from heartbeats, coalesced: at most one `task_progress` per task per
interval, carrying the last value reported in it.

    progress = ProgressCoalescer(interval_ms=1000, now_ms=clock)
    progress.offer((execution_id, index), value_bytes, send)   # per heartbeat with progress
    progress.flush((execution_id, index))      # before the attempt's result: the last value
    progress.forget(execution_id)              # a Keeper of `Executions`

`send()` submits the (fenced) input that records the value; it is called at once
when the task's last recording is at least `interval_ms` old, otherwise once when
the interval has passed, with the newest value offered meanwhile (values in between
are dropped). A value equal to the last one sent is not sent again (a heartbeat may
repeat it), and the machine drops a value equal to the one recorded. A chatty task
that reports a thousand times a second thus writes one event a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from execplan.executor.runtime.leases import LeaseKey

Send = Callable[[], None]


@dataclass(slots=True)
class _Slot:
    sent_ms: int = -(2**62)
    last: bytes | None = None
    pending: tuple[bytes, Send] | None = None
    timer: asyncio.TimerHandle | None = None


class ProgressCoalescer:
    def __init__(self, *, interval_ms: int, now_ms: Callable[[], int]) -> None:
        self._interval_ms = max(0, interval_ms)
        self._now_ms = now_ms
        self._slots: dict[LeaseKey, _Slot] = {}

    def offer(self, key: LeaseKey, value: bytes, send: Send) -> None:
        """A heartbeat of the task's current lease carried progress `value` (its
        deterministic serialization); `send` records it."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        if value == slot.last:
            slot.pending = None  # back to what is recorded: nothing to send
            return
        due = slot.sent_ms + self._interval_ms
        now = self._now_ms()
        if now >= due and slot.timer is None:
            self._send(slot, value, send, now)
            return
        slot.pending = (value, send)
        if slot.timer is None:
            delay = max(0.0, (due - now) / 1000)
            slot.timer = asyncio.get_running_loop().call_later(delay, self._due, key)

    def tracking(self) -> bool:
        """Whether any lease has progress tracked (else `flush` has nothing to do)."""
        return bool(self._slots)

    def flush(self, key: LeaseKey) -> None:
        """The attempt's result arrived: record its last progress first, now."""
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        if slot.timer is not None:
            slot.timer.cancel()
        if slot.pending is not None:
            _, send = slot.pending
            send()

    def _due(self, key: LeaseKey) -> None:
        slot = self._slots.get(key)
        if slot is None:
            return
        slot.timer = None
        if slot.pending is not None:
            value, send = slot.pending
            self._send(slot, value, send, self._now_ms())

    @staticmethod
    def _send(slot: _Slot, value: bytes, send: Send, now: int) -> None:
        slot.pending = None
        slot.last = value
        slot.sent_ms = now
        send()

    def forget(self, execution_id: str) -> None:
        for key in [k for k in self._slots if k[0] == execution_id]:
            slot = self._slots.pop(key)
            if slot.timer is not None:
                slot.timer.cancel()

    def stop(self) -> None:
        for slot in self._slots.values():
            if slot.timer is not None:
                slot.timer.cancel()
        self._slots.clear()
