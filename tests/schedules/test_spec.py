"""Slots of cron and interval specs: time zones, DST, bounds, jitter, checks."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from execplan.errors import InvalidArgument, LimitExceeded
from execplan.schedules.spec import MINUTE, Spec


def ms(text: str, zone: str = "UTC") -> int:
    when = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return int(when.timestamp() * 1000)


def local(slot: int, zone: str) -> str:
    return datetime.fromtimestamp(slot / 1000, tz=ZoneInfo(zone)).strftime("%m-%d %H:%M %Z")


def walk(spec: Spec, after: int, n: int) -> list[int]:
    slots = []
    for _ in range(n):
        slot = spec.next_slot(after)
        assert slot is not None
        slots.append(slot)
        after = slot
    return slots


def test_cron_slots_are_strictly_after() -> None:
    spec = Spec(cron="*/5 * * * *")
    start = ms("2026-03-01T10:00:00")
    assert walk(spec, start, 3) == [start + 5 * MINUTE, start + 10 * MINUTE, start + 15 * MINUTE]
    assert spec.next_slot(start - 1) == start
    assert spec.next_slot(start + 30_000) == start + 5 * MINUTE


def test_cron_in_a_time_zone_across_spring_forward() -> None:
    # 2026-03-08: New York skips 02:00-03:00. A 02:30 job runs at 03:00 that day.
    spec = Spec(cron="30 2 * * *", time_zone="America/New_York")
    slots = walk(spec, ms("2026-03-06T12:00:00", "America/New_York"), 3)
    assert [local(s, "America/New_York") for s in slots] == [
        "03-07 02:30 EST",
        "03-08 03:00 EDT",
        "03-09 02:30 EDT",
    ]


def test_cron_in_a_time_zone_across_fall_back_fires_once() -> None:
    # 2026-11-01: New York repeats 01:00-02:00. A 01:30 job runs once that day.
    spec = Spec(cron="30 1 * * *", time_zone="America/New_York")
    slots = walk(spec, ms("2026-10-31T12:00:00", "America/New_York"), 2)
    assert [local(s, "America/New_York") for s in slots] == ["11-01 01:30 EDT", "11-02 01:30 EST"]
    assert slots[1] - slots[0] == 25 * 60 * MINUTE


def test_interval_slots_have_an_offset_from_the_epoch() -> None:
    spec = Spec(interval_ms=3_600_000, offset_ms=15 * MINUTE)
    start = ms("2026-03-01T10:20:00")
    assert walk(spec, start, 2) == [ms("2026-03-01T11:15:00"), ms("2026-03-01T12:15:00")]


def test_start_and_end_bound_the_slots() -> None:
    spec = Spec(interval_ms=MINUTE, start_ms=10 * MINUTE, end_ms=12 * MINUTE)
    assert spec.next_slot(0) == 10 * MINUTE
    assert spec.next_slot(11 * MINUTE) == 12 * MINUTE
    assert spec.next_slot(12 * MINUTE) is None
    assert spec.slots_between(0, 99 * MINUTE, 10) == [10 * MINUTE, 11 * MINUTE, 12 * MINUTE]


def test_a_range_is_bounded() -> None:
    with pytest.raises(LimitExceeded) as caught:
        Spec(cron="* * * * *").slots_between(0, 10 * MINUTE, 5)
    assert caught.value.violations[0].field == "end"
    assert Spec(cron="* * * * *").count_between(0, 10 * MINUTE, 99) == 10
    assert Spec(interval_ms=MINUTE).count_between(0, 10 * MINUTE, 4) == 4


def test_jitter_is_stable_and_bounded() -> None:
    spec = Spec(interval_ms=MINUTE, jitter_ms=30_000)
    delays = [spec.jitter_for("nightly", slot) for slot in range(0, 100 * MINUTE, MINUTE)]
    assert delays == [spec.jitter_for("nightly", slot) for slot in range(0, 100 * MINUTE, MINUTE)]
    assert all(0 <= d <= 30_000 for d in delays)
    assert len(set(delays)) > 50
    assert Spec(interval_ms=MINUTE).jitter_for("x", 0) == 0


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (Spec(), "spec.cron", "exactly one"),
        (Spec(cron="* * * *"), "spec.cron", "five fields"),
        (Spec(cron="61 * * * *"), "spec.cron", "Bad minute"),
        (Spec(cron="0 0 30 2 *"), "spec.cron", "day-of-month"),
        (Spec(cron="* * * * *", time_zone="Mars/Olympus"), "spec.time_zone", "unknown"),
        (Spec(cron="* * * * *", jitter_ms=2 * 3_600_000), "spec.jitter", "1h"),
        (Spec(interval_ms=500), "spec.interval", "1s"),
        (Spec(interval_ms=MINUTE, jitter_ms=2 * MINUTE), "spec.jitter", "interval"),
        (Spec(interval_ms=MINUTE, offset_ms=MINUTE), "spec.offset", "less than"),
        (Spec(interval_ms=MINUTE, time_zone="UTC"), "spec.time_zone", "cron"),
        (Spec(interval_ms=MINUTE, overlap="queue"), "spec.overlap", "skip"),
        (Spec(interval_ms=MINUTE, start_ms=5, end_ms=4), "spec.end_at", "before"),
    ],
)
def test_bad_specs_name_the_field(spec: Spec, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        spec.check("spec")
    found = {v.field: v.description for v in caught.value.violations}
    assert field in found, found
    assert words in found[field]


def test_good_specs_pass() -> None:
    Spec(cron="0 9 * * MON-FRI", time_zone="Europe/Paris", jitter_ms=MINUTE).check("spec")
    Spec(interval_ms=30_000, offset_ms=5_000, overlap="buffer").check("spec")
    assert datetime.fromtimestamp(Spec(cron="0 0 * * *").next_slot(0) / 1000, tz=UTC).hour == 0  # type: ignore[operator]
