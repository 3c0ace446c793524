"""`Workflow` and `Task`: a workflow document built from Python, checked as it grows."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from execplan.v1 import workflow_pb2
from google.protobuf import json_format

from ._expr import Expr
from ._policies import (
    CircuitBreaker,
    Compensation,
    Defaults,
    Fallback,
    Input,
    Placement,
    Repeat,
    Resources,
    Retry,
    Timeouts,
    cel,
    duration,
    enum,
    value,
)

_TASK_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TRIGGERS = ("ALL_SUCCESS", "ALL_DONE", "ONE_SUCCESS", "ALL_FAILED")
_ON_FAILURE = ("FAIL_FAST", "CONTINUE", "COMPENSATE")


class Task:
    """One task of a `Workflow` (made by `Workflow.task`); refer to its result with
    `task.output[...]`, `task.status` and `task.error` in other tasks' expressions."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self._doc = doc

    @property
    def id(self) -> str:
        task_id: str = self._doc["id"]
        return task_id

    @property
    def output(self) -> Expr:
        return Expr(f"tasks.{self.id}.output")

    @property
    def status(self) -> Expr:
        return Expr(f"tasks.{self.id}.status")

    @property
    def error(self) -> Expr:
        return Expr(f"tasks.{self.id}.error")

    def doc(self) -> dict[str, Any]:
        return dict(self._doc)

    def __repr__(self) -> str:
        return f"Task({self.id!r}, {self._doc['type']!r})"


class _Inputs:
    """`workflow.inputs.NAME` expressions: `wf.inputs.question`."""

    def __init__(self, workflow: Workflow) -> None:
        self._workflow = workflow

    def __getattr__(self, name: str) -> Expr:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Expr:
        if name not in self._workflow.declared_inputs:
            raise KeyError(f"input {name!r} is not declared (Workflow(inputs=...))")
        return Expr(f"workflow.inputs.{name}")


class Workflow:
    """A workflow built in code; `build()` gives the `execplan.v1.Workflow` message and
    `to_dict()` the same document as YAML/JSON would hold (snake_case names).

        wf = Workflow("research", version="2", inputs={"question": Input("string")})
        plan = wf.task("plan", "agent.plan", inputs={"question": wf.inputs.question})
        research = wf.task("research", "agent.research",
                           for_each=plan.output.questions, max_parallel=4,
                           inputs={"question": item})
        wf.output("answers", research.output)
        await client.start(workflow=wf, inputs={"question": "..."})

    Names, enums and durations are checked as the workflow grows (ValueError naming
    the field); everything else the planner checks when it compiles the workflow.
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "",
        description: str = "",
        inputs: Mapping[str, Input] | None = None,
        defaults: Defaults | None = None,
        on_failure: str = "",
        max_parallel: int = 0,
        pause_after_failures: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"workflow name {name!r} must match [a-z0-9][a-z0-9._-]*")
        self._doc: dict[str, Any] = {"name": name}
        if version:
            self._doc["version"] = version
        if description:
            self._doc["description"] = description
        self.declared_inputs: dict[str, Input] = dict(inputs or {})
        if self.declared_inputs:
            self._doc["inputs"] = {k: v.doc() for k, v in self.declared_inputs.items()}
        if defaults is not None:
            self._doc["defaults"] = defaults.doc()
        if on_failure:
            self._doc["on_failure"] = enum("ON_FAILURE", on_failure, _ON_FAILURE, "on_failure")
        if max_parallel:
            self._doc["max_parallel"] = max_parallel
        if pause_after_failures:
            self._doc["pause_after_failures"] = pause_after_failures
        if labels:
            self._doc["labels"] = dict(labels)
        self._tasks: list[Task] = []
        self._ids: set[str] = set()
        self._outputs: dict[str, Any] = {}
        self.inputs = _Inputs(self)

    @property
    def name(self) -> str:
        name: str = self._doc["name"]
        return name

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self._tasks)

    def task(
        self,
        id: str,  # the WDL field names
        type: str,
        *,
        depends_on: Sequence[Task | str] = (),
        inputs: Mapping[str, Any] | None = None,
        when: str | Expr | None = None,
        trigger: str = "",
        retry: Retry | None = None,
        timeouts: Timeouts | None = None,
        fallback: Fallback | None = None,
        compensation: Compensation | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        placement: Placement | None = None,
        resources: Resources | None = None,
        secrets: Sequence[str] = (),
        priority: int | None = None,
        estimated_duration: str | None = None,
        description: str = "",
        for_each: str | Expr | None = None,
        max_parallel: int = 0,
        repeat: Repeat | None = None,
        workflow: str = "",
        dynamic: bool = False,
    ) -> Task:
        """Add a task; the names are the WDL's (docs/runtime-plans.md for for_each,
        max_parallel, repeat, workflow and dynamic). Returns it for references."""
        if not _TASK_ID.fullmatch(id):
            raise ValueError(f"task id {id!r} must match [A-Za-z_][A-Za-z0-9_]*")
        if id in self._ids:
            raise ValueError(f"task id {id!r} is used twice")
        doc: dict[str, Any] = {"id": id, "type": type}
        if depends_on:
            doc["depends_on"] = [d.id if isinstance(d, Task) else d for d in depends_on]
        if inputs:
            doc["inputs"] = value(dict(inputs), f"tasks.{id}.inputs")
        if when is not None:
            doc["when"] = cel(when, f"tasks.{id}.when")
        if trigger:
            doc["trigger"] = enum("TRIGGER_RULE", trigger, _TRIGGERS, f"tasks.{id}.trigger")
        for name, spec in (
            ("retry", retry),
            ("timeouts", timeouts),
            ("fallback", fallback),
            ("compensation", compensation),
            ("circuit_breaker", circuit_breaker),
            ("placement", placement),
            ("resources", resources),
            ("repeat", repeat),
        ):
            if spec is not None:
                doc[name] = spec.doc()
        if secrets:
            doc["secrets"] = list(secrets)
        if priority is not None:
            doc["priority"] = priority
        if estimated_duration is not None:
            doc["estimated_duration"] = duration(estimated_duration, f"tasks.{id}.estimated")
        if description:
            doc["description"] = description
        if for_each is not None:
            doc["for_each"] = cel(for_each, f"tasks.{id}.for_each")
        if max_parallel:
            doc["max_parallel"] = max_parallel
        if workflow:
            doc["workflow"] = workflow
        if dynamic:
            doc["dynamic"] = True
        task = Task(doc)
        self._tasks.append(task)
        self._ids.add(id)
        return task

    def output(self, name: str, v: Any) -> None:
        """A workflow output: a literal, an Expr, or a structure with Exprs inside."""
        self._outputs[name] = value(v, f"outputs.{name}")

    def to_dict(self) -> dict[str, Any]:
        """The workflow document (what a YAML or JSON file would hold)."""
        doc = dict(self._doc)
        doc["tasks"] = [t.doc() for t in self._tasks]
        if self._outputs:
            doc["outputs"] = dict(self._outputs)
        return doc

    def build(self) -> workflow_pb2.Workflow:
        """The `execplan.v1.Workflow` message."""
        return json_format.ParseDict(self.to_dict(), workflow_pb2.Workflow())
