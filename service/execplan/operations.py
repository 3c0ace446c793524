"""The day-two parts of an executor, put together with its engine: the scheduler
(execplan.schedules) and retention (execplan.retention).

    ops = Operations(engine, retention=RetentionPolicy(30 * DAY_MS))
    await ops.start()       # after engine.start(): the scheduler's and retention's loops
    ...
    await ops.stop()        # before engine.stop()

Composition only, like server.py: `EngineStarter` lets the scheduler start runs
through the engine (the run and its schedule row in one store transaction), an
observer tells the scheduler when one of its runs ends, and retention tells the
engine which finished executions it deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

from execplan.executor.decide.inputs import resolve_inputs
from execplan.executor.observability.observer import Commit, EngineObserver
from execplan.executor.runtime.engine import Engine
from execplan.retention import Pruner, RetentionPolicy
from execplan.schedules.scheduler import ScheduledRun, Scheduler
from execplan.v1 import plan_pb2

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS


class EngineStarter:
    """The scheduler's `Starter`: a run is an execution started by the engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def start_run(self, run: ScheduledRun) -> tuple[str, bool]:
        view = await self._engine.register_plan(await self._engine.get_plan(run.plan_id))
        return await self._engine.start_execution(
            view,
            dict(run.inputs),
            request_id=run.request_id,
            fairness_key=run.fairness_key,
            search_attributes=run.search_attributes,
            schedule=run.update,
        )


class _RunsEnding(EngineObserver):
    """Tells the scheduler when an execution ended (a run it may wait for)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def committed(self, commits: Sequence[Commit]) -> None:
        for state, _, _, _ in commits:
            if state.terminal:
                self._scheduler.execution_finished(state.execution_id)


def retention_interval_ms(policy: RetentionPolicy) -> int:
    """How often retention looks: a quarter of the shortest retention, 1 s to 1 min."""
    shortest = min(
        (ms for ms in (policy.default_ms, *policy.by_workflow.values()) if ms), default=0
    )
    return max(SECOND_MS, min(MINUTE_MS, shortest // 4)) if shortest else MINUTE_MS


class Operations:
    def __init__(
        self,
        engine: Engine,
        *,
        retention: RetentionPolicy | None = None,
        schedule_refresh_ms: int = 30_000,
    ) -> None:
        """`schedule_refresh_ms`: how often the scheduler re-reads every schedule
        (changes made on other replicas); changes made here wake it at once."""
        self.engine = engine
        self.scheduler = Scheduler(
            engine.store, EngineStarter(engine), refresh_ms=schedule_refresh_ms
        )
        policy = retention or RetentionPolicy()
        self.pruner = Pruner(
            engine.store,
            policy,
            forget=engine.forget_deleted,
            interval_ms=retention_interval_ms(policy),
        )
        engine.observers.add(_RunsEnding(self.scheduler))

    async def check_inputs(self, plan: plan_pb2.ExecutionPlan, inputs: dict[str, object]) -> None:
        """A schedule's inputs against its plan (InvalidArgument naming `inputs.x`), now
        rather than at every slot."""
        view = await self.engine.register_plan(plan)
        resolve_inputs(view, inputs)

    async def start(self) -> None:
        await self.scheduler.start()
        await self.pruner.start()

    async def stop(self) -> None:
        await self.pruner.stop()
        await self.scheduler.stop()
