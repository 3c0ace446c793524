"""Workflows as code: typed builders that produce the `execplan.v1.Workflow` message.

The names are the WDL's (tasks, depends_on, inputs, when, for_each, max_parallel,
repeat, workflow, dynamic, retry, timeouts, fallback, compensation, ...), so a
workflow built here reads like its YAML, and an agent or a service can write plans
without YAML::

    from execplan.builder import Input, Repeat, Retry, Workflow, item, output, previous

    wf = Workflow("research", version="2", inputs={"question": Input("string", required=True)})
    plan = wf.task("plan", "agent.plan", inputs={"question": wf.inputs.question})
    research = wf.task(
        "research", "agent.research",
        for_each=plan.output.questions, max_parallel=4,     # one instance per item
        inputs={"question": item}, retry=Retry(max_attempts=3, initial_interval="1s"),
    )
    draft = wf.task(
        "write", "agent.write",
        inputs={"notes": research.output, "draft": previous},
        repeat=Repeat(until=output.approved, max_iterations=3),
    )
    wf.output("report", draft.output.text)

    message = wf.build()       # execplan.v1.Workflow
    document = wf.to_dict()    # the same, as the YAML/JSON document

`ExecutorClient.start(workflow=wf)` and `register(workflow=wf)` take a builder as
well as a message, and a dynamic task may `return SubPlan(wf)`.
"""

from ._expr import Expr, expr, index, item, iteration, output, previous
from ._policies import (
    NO_DEFAULT,
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
)
from ._workflow import Task, Workflow

__all__ = [
    "NO_DEFAULT",
    "CircuitBreaker",
    "Compensation",
    "Defaults",
    "Expr",
    "Fallback",
    "Input",
    "Placement",
    "Repeat",
    "Resources",
    "Retry",
    "Task",
    "Timeouts",
    "Workflow",
    "expr",
    "index",
    "item",
    "iteration",
    "output",
    "previous",
]
