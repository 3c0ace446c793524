"""decide: turns inputs (start, results, timers, control) into events.

A Machine wraps one ExecutionState. Each event it emits is applied at once with
`evolve`, so later decisions in the same batch see it; the engine commits the batch
and only then carries out the collected effects. If the commit fails the engine
discards this state and rebuilds it from the store, so nothing uncommitted leaks.

`Machine` is put together from one mixin per concern over a shared core:
machine_core (state, `emit`, timers, expression context), machine_readiness,
machine_results and machine_control; see machine_core for how they fit.
"""

from __future__ import annotations

from execplan.executor.machine_control import MachineControl
from execplan.executor.machine_readiness import MachineReadiness
from execplan.executor.machine_results import MachineResults
from execplan.executor.state import TERMINAL_TASK_STATES


class Machine(MachineReadiness, MachineResults, MachineControl):
    """Decides the events for one execution; construct with `Machine(state, now_ms)`."""


__all__ = ["TERMINAL_TASK_STATES", "Machine"]
