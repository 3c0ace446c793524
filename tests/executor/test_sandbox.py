"""The expression sandbox: real child processes, each way an evaluation can end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from execplan.executor.expressions.cel_runtime import CelFailure, execute
from execplan.executor.expressions.sandbox import ExpressionBudget, Sandbox

ALL_CUBED = "xs.all(i, xs.all(j, xs.all(k, i + j + k >= 0)))"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(
        ExpressionBudget(
            timeout_ms=500,
            memory_bytes=128 * 1024 * 1024,
            max_result_bytes=1_000_000,
            max_context_bytes=3_000_000,
            processes=1,
        )
    )
    yield box
    box.close()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_values_and_cel_errors_match_inline_evaluation(sandbox: Sandbox) -> None:
    context = {"xs": [1, 2, 3], "m": {"a": "b"}}
    assert sandbox.evaluate("xs.map(x, x * 2)", context).value == [2, 4, 6]
    assert sandbox.evaluate("m.a + 'c'", context).value == "bc"
    for source in ("m.nope", "xs.map(x, x.nope)", "1 + 'a'", "xs["):
        with pytest.raises(CelFailure) as inline:
            execute(source, context)
        assert sandbox.evaluate(source, context).error == str(inline.value)


def test_over_its_time_budget_the_process_is_killed_and_the_next_one_works(
    sandbox: Sandbox,
) -> None:
    began = time.monotonic()
    outcome = sandbox.evaluate(ALL_CUBED, {"xs": list(range(1000))})
    assert outcome.exceeded == "evaluation took longer than its budget of 500 ms"
    assert time.monotonic() - began < 5
    assert sandbox.evaluate("size(xs)", {"xs": [1, 2]}).value == 2
    assert sandbox.started == 2


def test_out_of_memory_is_a_budget_failure(sandbox: Sandbox) -> None:
    # 100 copies of a 2 MB string in the result: 200 MB once converted for Python.
    outcome = sandbox.evaluate(
        "xs.map(x, s)", {"xs": list(range(100)), "s": "y" * 2_000_000}, timeout_ms=30_000
    )
    assert outcome.exceeded == "evaluation ran out of its memory budget of 128 MiB"
    assert sandbox.evaluate("1 + 1", {}).value == 2


def test_result_and_context_sizes_are_bounded(sandbox: Sandbox) -> None:
    s = "z" * 90_000
    assert sandbox.evaluate("[s, s, s]", {"s": s}).value == [s, s, s]
    big = sandbox.evaluate("xs.map(x, s)", {"xs": list(range(20)), "s": s})
    assert big.exceeded.startswith("its result is 1,800,")
    assert big.exceeded.endswith("bytes; the limit is 1,000,000")
    handed = sandbox.evaluate("size(s)", {"s": "z" * 4_000_000})
    assert handed.exceeded.startswith("the values it reads are 4,000,")
    assert handed.exceeded.endswith("bytes; the limit is 3,000,000")


def test_a_native_crash_stays_in_the_sandbox(sandbox: Sandbox) -> None:
    # A member chain this long overflows the CEL library's native stack (SIGSEGV).
    # The time allowance is generous: under load, parsing the chain can take longer than
    # the fixture's 500 ms, and this test is about the crash, not the clock.
    outcome = sandbox.evaluate("x" + ".b" * 50_000, {"x": {}}, timeout_ms=30_000)
    assert outcome.exceeded == "evaluation crashed (SIGSEGV): the expression nests too deeply"
    assert sandbox.evaluate("2 * 3", {}).value == 6


def test_closing_kills_the_processes_and_refuses_new_work(sandbox: Sandbox) -> None:
    # Other sandboxes of this test process (the shared one replay and earlier tests
    # use) are not this one's to close.
    others = set(sandbox_children(os.getpid()))
    assert sandbox.evaluate("1", {}).value == 1
    children = set(sandbox_children(os.getpid())) - others
    assert children
    sandbox.close()
    assert sandbox.closed
    assert not any(alive(pid) for pid in children)
    with pytest.raises(RuntimeError):
        sandbox.submit("1", {})


PARENT = """
import sys, threading
from execplan.executor.expressions.sandbox import ExpressionBudget, Sandbox
box = Sandbox(ExpressionBudget(timeout_ms=60_000))
future = box.submit("xs.all(i, xs.all(j, xs.all(k, i + j + k >= 0)))", {"xs": list(range(1000))})
print("evaluating", flush=True)
future.result()
"""


def test_a_sandbox_process_dies_with_its_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "evaluating"
        deadline = time.monotonic() + 15
        while not (children := sandbox_children(parent.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in children):
            assert time.monotonic() < deadline, "the sandbox outlived its parent"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def sandbox_children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if (
            b"execplan.executor.expressions.sandbox_child" in cmdline
            and int(stat.rsplit(")", 1)[1].split()[1]) == parent
        ):
            found.append(int(entry))
    return found
