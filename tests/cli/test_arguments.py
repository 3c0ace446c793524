"""Arguments the CLI refuses itself, before it calls a server: each is one line
`execplan: <reason>` and exit 2, never an internal error (exit 70)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from execplan.cli.common import CliError
from execplan.cli.executions import parse_inputs

if TYPE_CHECKING:
    from tests.support.processes import CLI
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.processes import CLI

NOWHERE = "127.0.0.1:1"  # nothing listens: an argument error must come first
DIGITS = "9" * 5000
JSON = "--inputs-json"
WORKFLOW = "name: w\ninputs:\n  n: {type: number}\ntasks:\n  - {id: a, type: t.a}\n"


def execplan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "--address", NOWHERE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("get", "X", "--at", "-1"), "argument --at: a sequence number is 0..9223372036854775807"),
        (("get", "X", "--at", str(2**64)), "argument --at: a sequence number is 0.."),
        (("get", "X", "--at", DIGITS), "argument --at: expected a sequence number, got '9999"),
        (("watch", "X", "--after", "-5"), "argument --after: a sequence number is 0.."),
        (("run", "{wf}", "--input", f"n={DIGITS}"), "--input n: a number of 5,000 digits"),
        (("run", "{wf}", "--input", "n=9007199254740993"), "--input n: the integer 900"),
        (("run", "{wf}", JSON, '{"n": NaN}'), f"{JSON} is not valid JSON: NaN is not"),
        (("run", "{wf}", JSON, '{"n": -Infinity}'), f"{JSON} is not valid JSON: -Infinity"),
        (("run", "{wf}", JSON, f'{{"n": {DIGITS}}}'), f"{JSON}: a number of 5,000 digits"),
        (("run", "{wf}", JSON, '{"n": 1e999}'), f"{JSON}: the number 1e999 is too large"),
        (("run", "{wf}", JSON, "[" * 5000 + "]" * 5000), f"{JSON}: it nests too deep"),
        (("send-event", "X", "e", "--data", "[1e400]"), "--data: the number 1e400 is too large"),
        (("plans", "--limit", "0"), "--limit must be >= 1"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], reason: str
) -> None:
    workflow = tmp_path / "w.yaml"
    workflow.write_text(WORKFLOW)
    run = execplan(*(a.replace("{wf}", str(workflow)) for a in args))
    assert (run.returncode, run.stderr.count("\n")) == (2, 1), run.stderr
    assert run.stderr.startswith(f"execplan: {reason}"), run.stderr
    assert len(run.stderr) < 300, run.stderr  # the 5,000 digits are not echoed


def test_input_values_are_json_when_json_else_text() -> None:
    given = ["a=NaN", "b=Infinity", "c=1", "d=Ada", "e=[1, 2.5]", "f=9007199254740991"]
    assert parse_inputs(given, None) == {
        "a": "NaN",  # not JSON: text, as any other word
        "b": "Infinity",
        "c": 1,
        "d": "Ada",
        "e": [1, 2.5],
        "f": 2**53 - 1,
    }
    with pytest.raises(CliError, match="beyond"):
        parse_inputs(["n=-9007199254740992"], None)
