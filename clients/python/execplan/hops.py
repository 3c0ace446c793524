"""Hop timestamps, for latency work: where a chain step's time goes, across processes.

    EXECPLAN_HOPS=/tmp/hops.txt execplan serve ...   # the server
    EXECPLAN_HOPS=/tmp/hops.txt python my_worker.py   # and the Python worker SDK
    .venv/bin/python bench/hops.py /tmp/hops.txt     # a W2 step, hop by hop

Off (the variable unset, as always outside such a run) a hop costs one global read
(`if hops.ON:`). On, `mark(label)` records the monotonic clock, which is one clock
for every process of the machine, so a server's and its workers' lines interleave
into one timeline; lines are appended to the file in batches and at exit. For a
benchmark's workers and server on one machine only: nothing here is for production.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

PATH = os.environ.get("EXECPLAN_HOPS", "")
ON = bool(PATH)
_BATCH = 512
_marks: list[tuple[int, str]] = []
_lock = threading.Lock()  # marks come from several threads (a worker's stream and its loop)


def mark(label: str) -> None:
    with _lock:
        _marks.append((time.monotonic_ns(), label))
        full = len(_marks) >= _BATCH
    if full:
        flush()


def flush() -> None:
    with _lock:
        marks = _marks[:]
        _marks.clear()
    if not marks:
        return
    pid = os.getpid()
    with open(PATH, "a", encoding="utf-8") as sink:
        sink.write("".join(f"{ns} {pid} {label}\n" for ns, label in marks))


if ON:
    atexit.register(flush)
