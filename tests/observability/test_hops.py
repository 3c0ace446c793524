"""Hop timestamps (execplan/hops.py, used by the server and the worker SDK): off unless
EXECPLAN_HOPS names a file; on, every mark of a process reaches the file at exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import importlib, sys
hops = importlib.import_module(sys.argv[1])
assert hops.ON
for n in range(700):  # more than one batch
    hops.mark(f"hop.{n}")
"""


@pytest.mark.parametrize("module", ["execplan.hops"])
def test_marks_of_a_process_are_appended_in_order(module: str, tmp_path: Path) -> None:
    sink = tmp_path / "hops.txt"
    env = {**os.environ, "EXECPLAN_HOPS": str(sink)}
    for _ in range(2):  # a second process appends
        subprocess.run([sys.executable, "-c", SCRIPT, module], env=env, check=True)
    lines = [line.split() for line in sink.read_text().splitlines()]
    assert len(lines) == 1400
    first = lines[:700]
    assert [label for _, _, label in first] == [f"hop.{n}" for n in range(700)]
    assert [int(ns) for ns, _, _ in first] == sorted(int(ns) for ns, _, _ in first)
    assert len({pid for _, pid, _ in first}) == 1


def test_off_without_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "EXECPLAN_HOPS"}
    code = (
        "from execplan import hops; from execplan.worker import _stream;"
        " print(hops.ON, _stream.hops.ON)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert out.stdout.split() == [b"False", b"False"]
