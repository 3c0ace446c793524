"""When a schedule fires: its spec, checked once, and the slots it yields.

    spec = Spec(cron="*/5 * * * *", time_zone="Europe/Paris")
    spec.check("spec")                          # InvalidArgument naming spec.cron, ...
    spec.next_slot(after_ms)                    # first slot strictly after, or None
    spec.slots_between(start_ms, end_ms, 1000)  # inclusive, at most 1000 (else LimitExceeded)
    spec.jitter_for("nightly", slot_ms)         # a stable delay in [0, jitter]

A slot is a nominal start time in ms since the epoch; it names the run (the run's
request_id is `schedule:<name>:<slot>`), so the same slot computed on two replicas or
after a restart is the same run.

Cron expressions are evaluated by `cronsim` (Healthchecks.io's parser, maintained,
dependency-free, aware of time zones through zoneinfo). Local times that do not
exist (the hour skipped when clocks go forward) fire at the first minute after the
jump; local times that happen twice (clocks go back) fire once, at the first of the
two. Intervals ignore time zones: slots are `epoch + offset + k * interval`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from execplan.errors import FieldViolation, InvalidArgument, LimitExceeded

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

MAX_CRON_CHARS = 256
MIN_INTERVAL_MS = SECOND
MAX_INTERVAL_MS = 366 * DAY
MAX_CRON_JITTER_MS = HOUR
DEFAULT_CATCHUP_MS = 5 * MINUTE
MAX_CATCHUP_MS = 366 * DAY
# Safety bound on walking cron slots one by one (a year of minutes is 525,600).
MAX_CRON_STEPS = 600_000
# Times a schedule takes: 1970 to the end of 9999 (what datetime and the stores hold).
MAX_TIME_MS = 253_402_300_799_000


class Overlap:
    """What happens to a slot that comes due while a run of the schedule still runs."""

    SKIP = "skip"
    BUFFER = "buffer"
    ALLOW = "allow"
    ALL = (SKIP, BUFFER, ALLOW)


@dataclass(frozen=True, slots=True)
class Spec:
    cron: str = ""
    interval_ms: int = 0
    offset_ms: int = 0
    time_zone: str = ""
    jitter_ms: int = 0
    overlap: str = Overlap.SKIP
    catchup_ms: int = DEFAULT_CATCHUP_MS
    start_ms: int = 0  # 0 = no bound
    end_ms: int = 0  # 0 = no bound

    # -- checking ------------------------------------------------------------------

    def check(self, field: str) -> None:
        """InvalidArgument naming every bad field (`spec.cron`, `spec.time_zone`...)."""
        problems = self._problems(field)
        if problems:
            raise InvalidArgument(f"invalid schedule {field}", problems)

    def _problems(self, field: str) -> list[FieldViolation]:
        bad: list[FieldViolation] = []

        def add(name: str, text: str) -> None:
            bad.append(FieldViolation(f"{field}.{name}", text))

        if bool(self.cron) == bool(self.interval_ms):
            add("cron", "set exactly one of cron and interval")
        if self.cron:
            if len(self.cron) > MAX_CRON_CHARS:
                add("cron", f"at most {MAX_CRON_CHARS} characters")
            else:
                try:
                    CronSim(self.cron, datetime(2000, 1, 1, tzinfo=UTC))
                except CronSimError as exc:
                    add("cron", f"not a cron expression: {exc}")
                if len(self.cron.split()) != 5:
                    add("cron", "five fields: minute hour day-of-month month day-of-week")
            if self.jitter_ms > MAX_CRON_JITTER_MS:
                add("jitter", "at most 1h for a cron schedule")
            if self.offset_ms:
                add("offset", "an offset applies to intervals only")
        if self.interval_ms:
            if not MIN_INTERVAL_MS <= self.interval_ms <= MAX_INTERVAL_MS:
                add("interval", "between 1s and 366d")
            elif not 0 <= self.offset_ms < self.interval_ms:
                add("offset", "at least 0 and less than the interval")
            if self.jitter_ms > self.interval_ms:
                add("jitter", "at most the interval")
            if self.time_zone:
                add("time_zone", "a time zone applies to cron schedules only")
        if self.time_zone:
            try:
                _zone(self.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                add("time_zone", f"unknown IANA time zone {self.time_zone!r}")
        if self.jitter_ms < 0:
            add("jitter", "must not be negative")
        if not 0 <= self.catchup_ms <= MAX_CATCHUP_MS:
            add("catchup_window", "between 0 and 366d")
        if self.overlap not in Overlap.ALL:
            add("overlap", f"one of {', '.join(Overlap.ALL)}")
        for name, value in (("start_at", self.start_ms), ("end_at", self.end_ms)):
            if not 0 <= value <= MAX_TIME_MS:
                add(name, "between 1970 and 9999")
        if self.end_ms and self.start_ms and self.end_ms < self.start_ms:
            add("end_at", "before start_at")
        return bad

    # -- slots ---------------------------------------------------------------------

    def next_slot(self, after_ms: int) -> int | None:
        """The first slot strictly after `after_ms` (and not before `start_at`), or None
        when there is none before `end_at`."""
        after = max(after_ms, self.start_ms - 1)
        if self.interval_ms:
            k = (after - self.offset_ms) // self.interval_ms + 1
            slot = self.offset_ms + k * self.interval_ms
        else:
            slot = self._next_cron(after)
        if self.end_ms and slot > self.end_ms:
            return None
        return slot

    def _next_cron(self, after_ms: int) -> int:
        zone = _zone(self.time_zone) if self.time_zone else UTC
        start = datetime.fromtimestamp(after_ms / 1000, tz=zone)
        # cronsim works at minute resolution and yields times strictly after `start`.
        when = next(CronSim(self.cron, start))
        return int(when.timestamp()) * 1000

    def slots_between(
        self, start_ms: int, end_ms: int, limit: int, field: str = "end"
    ) -> list[int]:
        """Every slot s with start_ms <= s <= end_ms; LimitExceeded (naming `field`)
        when there are more than `limit`."""
        slots: list[int] = []
        slot = self.next_slot(start_ms - 1)
        while slot is not None and slot <= end_ms:
            if len(slots) == limit:
                raise LimitExceeded(
                    f"more than {limit} slots in the range",
                    [FieldViolation(field, f"a range holds at most {limit} slots")],
                )
            slots.append(slot)
            slot = self.next_slot(slot)
        return slots

    def count_between(self, after_ms: int, until_ms: int, cap: int) -> int:
        """How many slots s with after_ms < s <= until_ms (at most `cap` counted)."""
        if until_ms <= after_ms:
            return 0
        if self.interval_ms:
            first = self.next_slot(after_ms)
            if first is None or first > until_ms:
                return 0
            last = min(until_ms, self.end_ms) if self.end_ms else until_ms
            return min(cap, (last - first) // self.interval_ms + 1)
        count = 0
        slot = self.next_slot(after_ms)
        while slot is not None and slot <= until_ms and count < min(cap, MAX_CRON_STEPS):
            count += 1
            slot = self.next_slot(slot)
        return count

    def jitter_for(self, name: str, slot_ms: int) -> int:
        """A delay in [0, jitter] from (schedule, slot): the same on every replica."""
        if not self.jitter_ms:
            return 0
        digest = hashlib.sha256(f"{name}:{slot_ms}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % (self.jitter_ms + 1)


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    if name in ("UTC", "Etc/UTC"):
        return UTC
    return ZoneInfo(name)
