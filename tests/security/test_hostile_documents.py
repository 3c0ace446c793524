"""Hostile workflow documents against the real processes: `execplan validate` and a
stand-alone `execplan planner` server. Each input once crashed (SIGSEGV in the CEL
library, a Rust panic), exhausted memory or time, or answered INTERNAL; now the CLI
prints `path: message` and exits 1, the server answers INVALID_ARGUMENT (or
RESOURCE_EXHAUSTED for a size limit) with a field violation naming the path, and the
server is still up for the next request."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import grpc
import pytest
from execplan.v1 import planner_service_pb2, planner_service_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

if TYPE_CHECKING:
    from tests.support.processes import CLI, LISTENING, stop
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.processes import CLI, LISTENING, stop

SIGSEGV_EXIT = 139  # what a shell reports; subprocess gives -11


class Case(NamedTuple):
    source: str
    path: str  # the field path the diagnostic names
    words: str  # expected in its message
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT


def _task(**fields: str) -> str:
    lines = "".join(f"    {key}: {value}\n" for key, value in fields.items())
    return f"name: w\ninputs: {{x: {{}}}}\ntasks:\n  - id: a\n    type: t\n{lines}"


def _when(expression: str) -> str:
    return _task(when=f'"{expression}"')


def _input(expression: str) -> str:
    return _task(inputs=f'{{v: "${{{{ {expression} }}}}"}}')


CASES: dict[str, Case] = {
    # The two inputs from the report, then their siblings under the byte bound.
    "plus-100k": Case(_when("1" + " + 1" * 100_000), "tasks[0].when", "16384 bytes"),
    "member-50k": Case(_when("workflow.inputs.x" + ".b" * 50_000), "tasks[0].when", "16384 bytes"),
    "plus-8k-compact": Case(_when("1" + "+1" * 8_000), "tasks[0].when", "operators"),
    "member-8k": Case(_input("workflow.inputs.x" + ".b" * 8_000), "tasks[0].inputs.v", "operators"),
    "index-5k": Case(_input("workflow.inputs.x" + "[0]" * 5_000), "tasks[0].inputs.v", "operators"),
    "and-2k": Case(_when("&&".join(["true"] * 2_000)), "tasks[0].when", "operators"),
    "parens": Case(_when("(" * 5_000 + "1" + ")" * 5_000), "tasks[0].when", "nests"),
    "lists": Case(_input("[" * 5_000 + "]" * 5_000), "tasks[0].inputs.v", "nests"),
    "maps": Case(_input("{1:" * 4_000 + "1" + "}" * 4_000), "tasks[0].inputs.v", "nests"),
    "macros": Case(
        _when("".join(f"[1].all(x{i}, " for i in range(3)) + "true" + ")" * 3),
        "tasks[0].when",
        "comprehensions",
    ),
    # A parse error past column 65,535 made the library panic (not an Exception).
    "column-70k": Case(_when("a" * 70_000 + " +"), "tasks[0].when", "16384 bytes"),
    "output-chain": Case(
        "name: w\ninputs: {x: {}}\ntasks: [{id: a, type: t}]\n"
        'outputs: {o: "${{ workflow.inputs.x' + ".b" * 50_000 + ' }}"}\n',
        "outputs.o",
        "16384 bytes",
    ),
    # Echoed input is bounded: these once gave 100 KB and 52 MB messages, and over gRPC
    # the oversized status details came back as RESOURCE_EXHAUSTED.
    "unknown-dependency-100k": Case(
        "name: w\ntasks: [{id: a, type: t, depends_on: [" + "b" * 100_000 + "]}]\n",
        "tasks[0].depends_on[0]",
        "…(100,000 chars)",
    ),
    "when-50MB": Case(_when("a" * 50_000_000 + " +"), "tasks[0].when", "16384 bytes"),
    "5000-errors": Case(
        "name: w\ntasks:\n"
        + "".join(
            f"  - {{id: a{i}, type: t, depends_on: [{'z' * 60}{i}]}}\n" for i in range(5_000)
        ),
        "tasks[0].depends_on[0]",
        "no task has id",
    ),
}


def _check_cli(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(case.source)
    run = subprocess.run(
        [*CLI, "validate", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode not in (-11, SIGSEGV_EXIT), run.stderr[-2000:]
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "panicked" not in run.stderr
    lines = run.stderr.splitlines()
    assert any(line.startswith(f"{case.path}: ") and case.words in line for line in lines), lines
    assert len(run.stderr) < 20_000  # nothing echoed without a bound


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_exits_1_with_the_path(tmp_path: Path, name: str) -> None:
    _check_cli(tmp_path, CASES[name])


@pytest.fixture(scope="module")
def planner() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [*CLI, "planner", "--listen", "127.0.0.1:0", "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(LISTENING), line
    try:
        yield proc, line.split()[-1]
    finally:
        stop(proc)


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None
    found: list[tuple[str, str]] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
        quota = error_details_pb2.QuotaFailure()
        if detail.Unpack(quota):
            found += [(v.subject, v.description) for v in quota.violations]
    return found


def _compile(address: str, source: str) -> planner_service_pb2.CompilePlanResponse:
    with grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 128 * 1024 * 1024)]
    ) as channel:
        stub = planner_service_pb2_grpc.PlannerServiceStub(channel)
        reply: planner_service_pb2.CompilePlanResponse = stub.CompilePlan(
            planner_service_pb2.CompilePlanRequest(source=source), timeout=120
        )
        return reply


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_planner_server_answers_and_survives(
    planner: tuple[subprocess.Popen[str], str], name: str
) -> None:
    proc, address = planner
    case = CASES[name]
    with pytest.raises(grpc.RpcError) as info:
        _compile(address, case.source)
    err = info.value
    assert err.code() == case.code, err.details()
    violations = _violations(err)
    assert any(field == case.path and case.words in text for field, text in violations), violations
    assert proc.poll() is None, "the planner server died"
    assert _compile(address, "name: ok\ntasks: [{id: a, type: t}]\n").plan.nodes
