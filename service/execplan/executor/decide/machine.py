"""The Machine: the inputs an execution takes, each turned into events and effects.

    machine = Machine(state, now_ms)
    machine.succeeded(machine.check_token("charge", Claim(MAIN, attempt, epoch)), {"id": 7})
    machine.events      # decided (and already folded into `state`), to commit
    machine.effects     # to carry out once they are committed

A Machine lives for one step of one execution (the shell makes one per execution
per round and may apply several inputs to it). Each public method is one kind of
input; the rules behind them are in `flow`, `attempts`, `control` and `builtins`.
"""

from __future__ import annotations

from collections.abc import Mapping

from execplan.executor.decide import (
    attempts,
    budgets,
    builtins,
    children,
    control,
    events,
    fencing,
    flow,
    reports,
    subplans,
)
from execplan.executor.decide import effects as fx
from execplan.executor.decide.step import DEFAULT_LIMITS, Step
from execplan.executor.expressions.bindings import EvaluationError
from execplan.executor.expressions.evaluation import DEFAULT_EVALUATOR, Evaluator, failure
from execplan.executor.state import Allowance, ExecutionState, Limits, TaskRun
from execplan.executor.task_errors import BINDING_ERROR, TaskError
from execplan.executor.values import JsonValue
from execplan.search import SearchValue
from execplan.usage import Budget
from execplan.v1 import events_pb2 as ev
from execplan.v1 import plan_pb2


class Machine:
    # `state`, `now_ms`, `events`, `kinds` and `effects` are the step's (the same objects), kept
    # as plain attributes: the shell reads them for every input of every round.
    __slots__ = ("effects", "events", "kinds", "now_ms", "state", "step")

    def __init__(
        self,
        state: ExecutionState,
        now_ms: int,
        evaluator: Evaluator = DEFAULT_EVALUATOR,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """`evaluator`: how expressions too expensive to run inline are evaluated; the
        default waits for the sandbox, the runtime's raises EvaluationPending instead.
        `limits`: what may grow at run time (the engine's configuration)."""
        step = self.step = Step(state, now_ms, evaluator, limits)
        self.state = state
        self.now_ms = now_ms
        self.events: list[ev.ExecutionEvent] = step.events
        self.kinds: list[str] = step.kinds  # kinds[i]: the kind of events[i]
        self.effects: list[fx.Effect] = step.effects

    # -- the execution ---------------------------------------------------------------
    def start(
        self,
        inputs: Mapping[str, JsonValue],
        request_id: str,
        fairness_key: str,
        trace_context: Mapping[str, str],
        allowance: Allowance | None = None,
        *,
        parent: flow.Parent | None = None,
        search_attributes: Mapping[str, SearchValue] | None = None,
    ) -> None:
        """`allowance`: the budget and runaway caps it starts with (None: none);
        `parent`: for a child execution, the execution and task that started it;
        `search_attributes`: typed key/values to find it by."""
        flow.start(
            self.step,
            inputs,
            request_id,
            fairness_key,
            trace_context,
            allowance,
            parent=parent,
            search_attributes=search_attributes or {},
        )

    def pause(self, reason: str, request_id: str) -> None:
        control.pause(self.step, reason, request_id)

    def resume(self, request_id: str) -> None:
        control.resume(self.step, request_id)

    def cancel(self, reason: str, request_id: str, terminate: bool) -> None:
        control.cancel(self.step, reason, request_id, terminate)

    def external_event(self, name: str, data: JsonValue, request_id: str) -> str:
        return control.external_event(self.step, name, data, request_id)

    def timer_fired(self, timer_id: str) -> None:
        state = self.step.state
        timer = state.timers.get(timer_id)
        if timer is None or state.terminal:
            return
        task = state.tasks[timer.task_index]
        self.step.emit(events.timer_fired(timer_id, self.step.task_id(task), timer.purpose))
        if timer.purpose == ev.TIMER_PURPOSE_RETRY_BACKOFF:
            attempts.retry_due(self.step, task)
            return
        outcome = builtins.on_timer(task, timer)
        if outcome is not None:
            flow.settle(self.step, task, outcome)

    # -- attempts --------------------------------------------------------------------
    def dispatch(self, index: int, worker_id: str, principal: str = "") -> bool:
        """Leases a QUEUED task to a worker (of `principal`, "" with authentication
        off); False if it failed to resolve inputs."""
        return attempts.dispatch(self.step, index, worker_id, principal)

    def check_token(self, task_id: str, claim: fencing.Claim) -> TaskRun:
        """The task whose current lease `claim` names; StaleToken (why not) otherwise."""
        return fencing.check(self.step.state, task_id, claim)

    def acknowledged(self, task: TaskRun) -> None:
        attempts.acknowledged(self.step, task)

    def requeue(self, task: TaskRun, reason: str) -> None:
        attempts.requeue(self.step, task, reason)

    def succeeded(self, task: TaskRun, output: JsonValue) -> None:
        attempts.succeeded(self.step, task, output)

    def failed(self, task: TaskRun, error: TaskError) -> None:
        attempts.failed(self.step, task, error)

    # -- flow control ----------------------------------------------------------------
    def cached(self, index: int, output: JsonValue, hit: ev.CacheHit) -> None:
        """A queued main attempt is answered from the result cache: no dispatch."""
        task = self.step.state.tasks[index]
        flow.succeed(self.step, task, task.phase, output, hit)

    def binding_failed(self, index: int, error: EvaluationError) -> None:
        """A queued attempt's flow-control keys did not evaluate: it fails for good."""
        task = self.step.state.tasks[index]
        flow.fail_final(self.step, task, task.phase, failure(BINDING_ERROR, error))

    def deadline_passed(self, task: TaskRun, kind: int) -> None:
        """A timeout of an attempt (or, schedule_to_close, of the whole task) fired."""
        attempts.deadline_passed(self.step, task, kind)

    def park(self, task: TaskRun, breaker_type: str, parked: bool) -> None:
        attempts.park(self.step, task, breaker_type, parked)

    # -- plans that grow at runtime (docs/runtime-plans.md) ------------------------
    def sub_plan(
        self, task: TaskRun, plan: plan_pb2.ExecutionPlan, inputs: Mapping[str, JsonValue]
    ) -> None:
        """A dynamic task's worker answered with a sub-workflow, compiled by the
        runtime (`task` passed the lease check): record and start it."""
        subplans.accept(self.step, task, plan, inputs)

    def child_started(
        self,
        task_id: str,
        attempt: int,
        epoch: int,
        *,
        child_execution_id: str,
        plan_id: str,
        workflow_name: str,
        workflow_version: str,
    ) -> bool:
        """The runtime started a builtin.workflow task's child (False: stale)."""
        return children.started(
            self.step,
            task_id,
            attempt,
            epoch,
            child_execution_id=child_execution_id,
            plan_id=plan_id,
            workflow_name=workflow_name,
            workflow_version=workflow_version,
        )

    def waits_for_child(self, task: TaskRun) -> bool:
        """A queued builtin.workflow task: it waits for its child, not for a worker."""
        return children.waits_for_child(self.step, task)

    def restart_children(self) -> list[fx.StartChild]:
        """StartChild effects for tasks still waiting for their child (recovery)."""
        return children.restart(self.step)

    def child_start_failed(self, task_id: str, attempt: int, epoch: int, error: TaskError) -> None:
        children.start_failed(self.step, task_id, attempt, epoch, error)

    def child_ended(
        self,
        task_id: str,
        child_execution_id: str,
        outcome: int,
        outputs: Mapping[str, JsonValue] | None,
        error: TaskError | None,
        *,
        used: Mapping[str, float] | None = None,
    ) -> None:
        """A child execution ended (ignored unless it is the task's current child);
        `used`: what it used, its own children included."""
        children.ended(
            self.step,
            task_id,
            child_execution_id,
            outcome=outcome,
            outputs=outputs,
            error=error,
            used=used,
        )

    def circuit_open(self, task: TaskRun, breaker_type: str) -> None:
        attempts.circuit_open(self.step, task, breaker_type)

    # -- usage and budgets (docs/usage.md) --------------------------------------------
    def usage(
        self,
        task_id: str,
        claim: fencing.Claim,
        worker_id: str,
        amounts: Mapping[str, float],
        report: int = 0,
    ) -> str:
        """Usage a worker reported for an attempt it held (`claim`: phase, attempt,
        epoch), also after it ended; "" when recorded (or a repeat of report `report`),
        else why it was refused."""
        lease = (claim.phase, claim.attempt, claim.epoch)
        return budgets.report(self.step, task_id, lease, worker_id, amounts, number=report)

    def set_budget(
        self,
        requested: Budget,
        request_id: str,
        reason: str = "",
        resume: bool = False,
        task_id: str = "",
    ) -> Budget:
        """Changes the limits `requested` names (its action unless ""), of the execution's
        budget or, with `task_id`, of that task's own; with `resume`, also resumes a
        paused execution. The budget in force."""
        control.require_live(self.step, "change the budget of")
        budget = budgets.change(self.step, requested, request_id, reason, task_id)
        if resume and self.step.state.paused:
            control.resume(self.step, "")
        return budget

    # -- what a running attempt reports -------------------------------------------
    def progress(self, task: TaskRun, value: JsonValue) -> bool:
        """`task_progress` for the leased `task`, unless `value` is what it has."""
        return reports.progress(self.step, task, value)

    def set_search_attributes(
        self, task_id: str, updates: Mapping[str, SearchValue | None]
    ) -> bool:
        return reports.search_attributes(self.step, task_id, updates)
