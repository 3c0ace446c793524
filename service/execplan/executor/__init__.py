"""The durable runtime: process instances of plans, dispatched to remote workers.

    inputs (start, results, acks, timers, control)
        -> runtime/: the pump runs decide/ (Machine: events + effects)
        -> store.append (group commit) -> runtime/: effects (dispatch, cancel, publish)

Every event is durable before any effect of it is visible outside the process. The
modules here are the data both layers share (plans, states, values, task errors,
expressions, checkpoints, the view callers read); `decide/` is the pure core,
`runtime/` the asyncio shell, `observability/` the observers. docs/architecture.md
draws the whole picture.
"""
