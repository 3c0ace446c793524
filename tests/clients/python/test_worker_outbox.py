"""The outbox keeps written results for `keep_for` seconds (resent after a lost stream),
expiring exactly those older than that, however they were written."""

from __future__ import annotations

from execplan.v1 import events_pb2
from execplan.v1 import worker_service_pb2 as pb
from execplan.worker._context import AttemptKey
from execplan.worker._outbox import Outbox


def result(task_id: str) -> tuple[AttemptKey, pb.TaskResult]:
    ref = pb.AttemptRef(execution_id="e", task_id=task_id, token=events_pb2.AttemptToken(attempt=1))
    return AttemptKey.of(ref), pb.TaskResult(attempt=ref)


def write(outbox: Outbox, now: float, *task_ids: str) -> None:
    for task_id in task_ids:
        key, res = result(task_id)
        outbox.results[key] = res
    assert outbox.take(now, keep_for=10.0) is not None


def kept(outbox: Outbox) -> list[str]:
    return [key.task_id for key in outbox.in_flight]


def test_results_older_than_keep_for_are_forgotten_oldest_first() -> None:
    outbox = Outbox()
    write(outbox, 0.0, "a", "b")
    write(outbox, 5.0, "c")
    write(outbox, 9.0, "d")
    write(outbox, 10.0, "e")
    assert kept(outbox) == ["a", "b", "c", "d", "e"]  # 10 s old: still kept
    write(outbox, 10.5, "f")
    assert kept(outbox) == ["c", "d", "e", "f"]
    outbox.take(19.5, keep_for=10.0)  # nothing queued: still expires
    assert kept(outbox) == ["e", "f"]
    outbox.take(100.0, keep_for=10.0)
    assert kept(outbox) == []


def test_a_result_written_again_counts_from_its_last_write() -> None:
    outbox = Outbox()
    write(outbox, 0.0, "a", "b")
    write(outbox, 8.0, "a")  # e.g. queued again after a reconnect
    write(outbox, 12.0, "c")
    assert kept(outbox) == ["a", "c"]
    outbox.take(18.5, keep_for=10.0)
    assert kept(outbox) == ["c"]
