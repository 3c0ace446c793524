"""SubPlan: what a dynamic task returns instead of an output (docs/runtime-plans.md).

A task with `dynamic: true` may answer with a sub-workflow. The executor compiles it
with the planner (every problem at once), records it in the execution's history and
runs it as tasks `<task id>/<sub task id>`; the task's output is the sub-workflow's
`outputs`. An invalid sub-workflow fails the attempt with error type `PlanInvalid`
(retryable): the next attempt reads it as `ctx.previous_error`, so an agent can
repair its own plan::

    @worker.task("agent.plan")
    async def plan(inputs, ctx):
        hint = ctx.previous_error.message if ctx.previous_error else ""
        return SubPlan(await write_plan(inputs["goal"], hint), inputs={"goal": inputs["goal"]})

`doc` is a workflow as a dict or YAML/JSON text (short forms such as `30s` and
`compensate` allowed, as in any workflow file), an `execplan.v1.Workflow` message,
or an `execplan.builder.Workflow`. `inputs` fill the sub-workflow's declared inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from execplan.client.values import to_struct
from execplan.v1 import planner_service_pb2, worker_service_pb2, workflow_pb2


class SubPlan:
    """A sub-workflow for a dynamic task to run in its place (module docstring)."""

    __slots__ = ("doc", "inputs")

    def __init__(self, doc: Any, inputs: Mapping[str, Any] | None = None) -> None:
        if not isinstance(doc, dict | str | workflow_pb2.Workflow) and not callable(
            getattr(doc, "build", None)
        ):
            raise TypeError(
                "SubPlan(doc): a dict, YAML/JSON text, an execplan.v1.Workflow or an "
                f"execplan.builder.Workflow, not {type(doc).__name__}"
            )
        self.doc = doc
        self.inputs = dict(inputs or {})

    def encode(self) -> worker_service_pb2.SubPlan:
        """The wire form (`TaskResult.sub_plan`); TypeError for inputs that are not JSON."""
        message = worker_service_pb2.SubPlan(inputs=to_struct(self.inputs))
        doc = self.doc
        if isinstance(doc, str):
            message.source = doc
            message.format = planner_service_pb2.SOURCE_FORMAT_AUTO
        elif isinstance(doc, dict):
            # As JSON text, not a parsed message: the planner reads the short forms
            # (`30s`, `compensate`) that a Workflow message cannot hold.
            message.source = json.dumps(doc)
            message.format = planner_service_pb2.SOURCE_FORMAT_JSON
        elif isinstance(doc, workflow_pb2.Workflow):
            message.workflow.CopyFrom(doc)
        else:
            message.workflow.CopyFrom(doc.build())
        return message

    def __repr__(self) -> str:
        return f"SubPlan({type(self.doc).__name__}, inputs={sorted(self.inputs)})"
