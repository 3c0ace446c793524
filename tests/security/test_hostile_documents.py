"""Hostile workflow documents against the real processes: `execplan validate` and a
stand-alone `execplan planner` server. Each input once crashed (SIGSEGV in the CEL
library, a Rust panic), exhausted memory or time, or answered INTERNAL; now the CLI
prints `path: message` and exits 1, the server answers INVALID_ARGUMENT (or
RESOURCE_EXHAUSTED for a size limit) with a field violation naming the path, and the
server is still up for the next request."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cel
import grpc
import pytest
from execplan.cli import main
from execplan.errors import is_native_panic
from execplan.executor.expressions.bindings import EvaluationError, Expr
from execplan.executor.expressions.cel_runtime import CelFailure, execute
from execplan.executor.expressions.evaluation import DEFAULT_EVALUATOR, Where, evaluate_binding
from execplan.v1 import planner_service_pb2, planner_service_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

if TYPE_CHECKING:
    from tests.support.processes import CLI, LISTENING, stop
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.processes import CLI, LISTENING, stop

SIGSEGV_EXIT = 139  # what a shell reports; subprocess gives -11


class Case(NamedTuple):
    source: str | Callable[[], str]  # big ones are built when their test runs
    path: str  # the field path the diagnostic names ("" for the whole document)
    words: str  # expected in its message
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    suffix: str = ".yaml"  # how `execplan validate` is told the format


EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _alias_bomb() -> str:
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join([*lines, "tasks: [{id: t, type: x, inputs: {v: *a8}}]", ""])


def _json_task(**fields: str) -> str:
    extra = "".join(f', "{key}": {value}' for key, value in fields.items())
    return '{"name": "w", "tasks": [{"id": "a", "type": "t"' + extra + "}]}"


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
    "when-50MB": Case(lambda: _when("a" * 50_000_000 + " +"), "tasks[0].when", "16384 bytes"),
    "5000-errors": Case(
        "name: w\ntasks:\n"
        + "".join(
            f"  - {{id: a{i}, type: t, depends_on: [{'z' * 60}{i}]}}\n" for i in range(5_000)
        ),
        "tasks[0].depends_on[0]",
        "no task has id",
    ),
    # Documents: an alias bomb grew the server by GiBs; a 5,000-digit integer was
    # INTERNAL (exit 70); a second `tasks:` was silently taken; nesting was unbounded.
    "alias-bomb": Case(_alias_bomb(), "a6[3]", "4,000,000 values", EXHAUSTED),
    "int-5000-digits": Case(_task(priority="9" * 5_000), "tasks[0].priority", "5,000 characters"),
    "int-5000-digits-json": Case(
        _json_task(priority="9" * 5_000), "tasks[0].priority", "5,000 digits", suffix=".json"
    ),
    "duplicate-tasks": Case(
        "name: w\ntasks:\n  - {id: a, type: t}\ntasks:\n  - {id: b, type: t}\n",
        "tasks",
        "line 2 and line 4",
    ),
    "duplicate-tasks-json": Case(
        '{"name": "w", "tasks": [], "tasks": [{"id": "a", "type": "t"}]}',
        "tasks",
        "written twice",
        suffix=".json",
    ),
    "deep-json": Case(
        '{"name": "w", "tasks": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "",
        "nest more than 32",
        EXHAUSTED,
        ".json",
    ),
    "deep-input-json": Case(
        _json_task(inputs='{"v": ' + "[" * 40 + "]" * 40 + "}"),
        "tasks[0].inputs.v" + "[0]" * 28,
        "nest more than 32",
        EXHAUSTED,
        ".json",
    ),
    "deep-yaml": Case(
        "name: w\ntasks: []\nx:\n" + "".join(" " * i + "- \n" for i in range(2, 200, 2)),
        "x" + "[0]" * 31,
        "nest more than 32",
        EXHAUSTED,
    ),
}


def _million_tasks(fmt: str) -> str:
    if fmt == "json":
        tasks = ", ".join(f'{{"id": "t{i}", "type": "x"}}' for i in range(1_000_000))
        return '{"name": "big", "tasks": [' + tasks + "]}"
    return "name: big\ntasks:\n" + "".join(f"  - {{id: t{i}, type: x}}\n" for i in range(1_000_000))


# Time and memory: 1,000,000 tasks took 38 s and 2.6 GiB (YAML) before the limit.
CASES["tasks-1m-yaml"] = Case(lambda: _million_tasks("yaml"), "tasks", "100,000 tasks", EXHAUSTED)
CASES["tasks-1m-json"] = Case(
    lambda: _million_tasks("json"), "tasks", "100,000 are allowed", EXHAUSTED, ".json"
)


def _text(case: Case) -> str:
    return case.source if isinstance(case.source, str) else case.source()


MAX_SECONDS = 60  # generous: a shared, loaded CI machine; each is ~1-2 s alone
MAX_RSS = 1024**3


def _check_cli(tmp_path: Path, case: Case) -> None:
    path = tmp_path / f"wf{case.suffix}"
    path.write_text(_text(case))
    errors = tmp_path / "stderr"
    with errors.open("w") as sink:
        started = time.monotonic()
        proc = subprocess.Popen([*CLI, "validate", str(path)], stdout=sink, stderr=sink)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        seconds = time.monotonic() - started
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    stderr = errors.read_text()
    assert code not in (-11, SIGSEGV_EXIT), stderr[-2000:]
    assert code == 1, stderr[-2000:]
    assert "Traceback" not in stderr and "panicked" not in stderr
    lines = stderr.splitlines()
    prefix = f"{case.path or '<document>'}: "
    assert any(line.startswith(prefix) and case.words in line for line in lines), lines
    assert len(stderr) < 20_000  # nothing echoed without a bound
    assert seconds < MAX_SECONDS
    assert usage.ru_maxrss * 1024 < MAX_RSS, f"peak RSS {usage.ru_maxrss // 1024} MiB"


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
        _compile(address, _text(case))
    err = info.value
    assert err.code() == case.code, err.details()
    violations = _violations(err)
    assert any(field == case.path and case.words in text for field, text in violations), violations
    assert proc.poll() is None, "the planner server died"
    assert _compile(address, "name: ok\ntasks: [{id: a, type: t}]\n").plan.nodes


# --- a Rust panic (pyo3 PanicException, a BaseException) on every path that calls `cel` --


def _panic() -> BaseException:
    try:
        cel.compile("(" * 100_000)  # a parse error past column 65,535
    except BaseException as exc:  # a PanicException is not an Exception
        assert is_native_panic(exc)
        return exc
    raise AssertionError("the library did not panic")


def test_a_panic_while_evaluating_is_an_evaluation_error() -> None:
    """The one place the executor runs `cel` (inline and in the sandbox process) turns
    a panic into a CelFailure, instead of letting it unwind the loop; the Machine's
    evaluation never even compiles such a source (over the bounds): its task fails."""
    with pytest.raises(CelFailure, match="expression library failed"):
        execute("(" * 100_000, {})
    where = Where("e-1", "tasks[0].when")
    with pytest.raises(EvaluationError, match=r"^tasks\[0\]\.when: expression-too-large: "):
        evaluate_binding(Expr("(" * 100_000, ()), {}, DEFAULT_EVALUATOR, where)


def test_a_panic_in_the_cli_is_exit_70_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    panic = _panic()

    def explode(source: str, fmt: str = "auto") -> None:
        raise panic

    monkeypatch.setattr("execplan.planner.validate_source", explode)
    path = tmp_path / "wf.yaml"
    path.write_text("name: w\ntasks: [{id: a, type: t}]\n")
    assert main(["validate", str(path)]) == 70
    err = capsys.readouterr().err
    assert "internal error: PanicException" in err and "Traceback" not in err
