"""Child executions of builtin.workflow tasks: started, watched, stopped (the runtime
side of decide/children.py; docs/runtime-plans.md).

    StartChild effect -> `start`: resolve NAME[@VERSION] (store/registry.py), start the
        child through the engine with a request_id derived from (execution, task,
        iteration, attempt) -> the parent's Machine hears `child_started` (or
        `child_start_failed`), then the child is watched
    the child's terminal event -> the parent's Machine hears `child_ended`
    StopChild effect -> `stop`: cancel (or terminate) the child, through its owner
    recovery, adoption, resume -> `resume`: StartChild again for tasks still
        waiting for their child (the request_id finds the one already started), a
        watch for tasks whose child runs

A watch follows the child's committed events (`Engine.watch`: the hub for a child
here, the store for one another replica owns), so a parent learns of its child's
end wherever either runs. A crash at any point repeats a start that is idempotent
and a watch that finds the terminal event in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

from execplan.errors import (
    ExecplanError,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    NotFound,
)
from execplan.executor.decide import effects as fx
from execplan.executor.decide.flow import Parent
from execplan.executor.decide.machine import Machine
from execplan.executor.plan_view import PlanView
from execplan.executor.runtime.deadlines import Deadlines
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Inbox
from execplan.executor.state import ExecutionState
from execplan.executor.task_errors import WORKFLOW_NOT_FOUND, TaskError
from execplan.executor.values import JsonValue, from_struct
from execplan.store import registry
from execplan.store.port import Store
from execplan.usage.codec import decode_usage
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

log = logging.getLogger("execplan.executor")

# An attempt whose child could not be started because of its definition (inputs that
# do not fit, a plan this executor cannot run): retrying cannot help.
CHILD_NOT_STARTED = "ChildNotStarted"


class Engine(Protocol):
    """What children need of the engine (runtime/engine.py)."""

    async def start_execution(
        self,
        plan: PlanView,
        inputs: dict[str, JsonValue],
        *,
        request_id: str = "",
        fairness_key: str = "",
        trace_context: dict[str, str] | None = None,
        parent: Parent | None = None,
    ) -> tuple[str, bool]: ...

    async def cancel(
        self, execution_id: str, reason: str, request_id: str, terminate: bool
    ) -> str: ...

    def watch(self, execution_id: str, after_sequence: int) -> AsyncIterator[ev.ExecutionEvent]: ...


class Children:
    def __init__(
        self,
        *,
        store: Store,
        executions: Executions,
        inbox: Inbox,
        plan_view: Callable[[str], Coroutine[Any, Any, PlanView]],
        runnable: Callable[[PlanView], str],
        deadlines: Deadlines,
    ) -> None:
        self._store = store
        self._deadlines = deadlines
        self._executions = executions
        self._inbox = inbox
        self._plan_view = plan_view
        self._runnable = runnable
        self.engine: Engine | None = None  # set by the engine once it is built
        self._tasks: set[asyncio.Task[None]] = set()
        # child execution id -> (its parent, the watch): one per child, wherever it runs
        self._watches: dict[str, tuple[str, asyncio.Task[None]]] = {}

    # -- effects -----------------------------------------------------------------------
    def act(self, state: ExecutionState, effect: fx.StartChild | fx.StopChild) -> None:
        if isinstance(effect, fx.StartChild):
            if effect.attempt == 1:
                self._deadlines.whole_task(state, effect.index)  # schedule_to_close
            self._spawn(self._start(state.execution_id, state, effect))
        else:
            self._spawn(self._stop(state.execution_id, effect))

    def resume(self, state: ExecutionState, machine: Machine) -> None:
        """After recovery or adoption: start what waits for its child, watch what runs."""
        for effect in machine.restart_children():
            self.act(state, effect)
        for task in state.tasks:
            extra = state.extras.get(task.index)
            if task.state == ex.TASK_STATE_RUNNING and extra and extra.child_execution_id:
                self._watch(state.execution_id, state.task_id(task.index), extra.child_execution_id)
                self._deadlines.child_running(state, task.index)  # (recovery arms
                # schedule_to_close for every active task)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def forget(self, execution_id: str) -> None:
        """The parent left this engine (finished, disowned): its watches end."""
        for child_id, (parent_id, watch) in list(self._watches.items()):
            if parent_id == execution_id:
                watch.cancel()
                self._watches.pop(child_id, None)

    # -- starting --------------------------------------------------------------------
    async def _start(self, parent_id: str, parent: ExecutionState, effect: fx.StartChild) -> None:
        assert self.engine is not None
        try:
            found = await registry.resolve(self._store, effect.workflow, effect.version)
            if found is None:
                name = f"{effect.workflow}@{effect.version}" if effect.version else effect.workflow
                raise _Refused(TaskError(WORKFLOW_NOT_FOUND, f"workflow {name} is not registered"))
            plan = await self._plan_view(found.plan_id)
            problem = self._runnable(plan)
            if problem:
                raise _Refused(TaskError(CHILD_NOT_STARTED, problem))
            child_id, _ = await self.engine.start_execution(
                plan,
                dict(effect.inputs),
                request_id=effect.request_id,
                fairness_key=parent.fairness_key,
                trace_context=dict(parent.trace_context),
                parent=Parent(parent_id, effect.task_id, effect.depth, effect.budget),
            )
        except _Refused as refused:
            self._submit(parent_id, _start_failed(effect, refused.error))
            return
        except (InvalidArgument, LimitExceeded, FailedPrecondition) as error:
            refused_error = TaskError(CHILD_NOT_STARTED, f"child not started: {error}")
            self._submit(parent_id, _start_failed(effect, refused_error))
            return
        except ExecplanError as error:  # overload, store trouble: worth another attempt
            retryable = TaskError(CHILD_NOT_STARTED, f"child not started: {error}", True)
            self._submit(parent_id, _start_failed(effect, retryable))
            return

        def started(machine: Machine) -> None:
            if machine.child_started(
                effect.task_id,
                effect.attempt,
                effect.epoch,
                child_execution_id=child_id,
                plan_id=plan.plan_id,
                workflow_name=plan.workflow_name,
                workflow_version=plan.workflow_version,
            ):
                self._watch(parent_id, effect.task_id, child_id)
                self._deadlines.child_running(machine.state, effect.index)

        self._submit(parent_id, started)

    async def _stop(self, parent_id: str, effect: fx.StopChild) -> None:
        assert self.engine is not None
        kind = "terminate" if effect.terminate else "cancel"
        try:
            await self.engine.cancel(
                effect.child_execution_id,
                f"parent execution {parent_id}: {effect.reason}",
                f"parent:{parent_id}:{kind}",
                effect.terminate,
            )
        except (FailedPrecondition, NotFound):
            pass  # it ended already
        except ExecplanError as error:
            log.warning("cannot %s child %s: %s", kind, effect.child_execution_id, error)

    # -- watching --------------------------------------------------------------------
    def _watch(self, parent_id: str, task_id: str, child_id: str) -> None:
        if child_id in self._watches:
            return
        task = asyncio.create_task(
            self._follow(parent_id, task_id, child_id), name="execplan-child-watch"
        )
        self._watches[child_id] = (parent_id, task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, parent_id: str, task_id: str, child_id: str) -> None:
        assert self.engine is not None
        try:
            record = await self._store.get_execution(child_id)
            after = max(record.last_sequence - 1, 0) if record is not None else 0
            async for event in self.engine.watch(child_id, after):
                if event.HasField("execution_completed"):
                    self._submit(parent_id, _ended(task_id, child_id, event.execution_completed))
                    return
        except asyncio.CancelledError:
            raise
        except ExecplanError as error:
            log.warning("lost the watch of child %s of %s: %s", child_id, parent_id, error)
        finally:
            self._watches.pop(child_id, None)

    # -- helpers ---------------------------------------------------------------------
    def _submit(self, execution_id: str, action: Callable[[Machine], Any]) -> None:
        # A parent no longer here (finished, moved to another replica) takes no input:
        # its new owner resumes its children itself. One being reloaded gets it after.
        if execution_id in self._executions:
            self._inbox.submit(execution_id, action)
        else:
            self._executions.hold(execution_id, lambda: self._submit(execution_id, action))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="execplan-child")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("child work failed: %s", task.exception())


class _Refused(Exception):
    def __init__(self, error: TaskError) -> None:
        super().__init__(error.message)
        self.error = error


def _start_failed(effect: fx.StartChild, error: TaskError) -> Callable[[Machine], None]:
    def action(machine: Machine) -> None:
        machine.child_start_failed(effect.task_id, effect.attempt, effect.epoch, error)

    return action


def _ended(task_id: str, child_id: str, done: ev.ExecutionCompleted) -> Callable[[Machine], None]:
    outputs = from_struct(done.outputs) if done.HasField("outputs") else None
    error = TaskError.from_proto(done.error) if done.HasField("error") else None
    used = decode_usage(done.usage)

    def action(machine: Machine) -> None:
        machine.child_ended(task_id, child_id, done.state, outputs, error, used=used)

    return action
