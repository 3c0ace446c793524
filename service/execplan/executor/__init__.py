"""The durable runtime: process instances of plans, dispatched to remote workers.

    inputs (start, results, acks, timers, control)
        -> Engine pump: decide() -> events -> store.append (group commit)
        -> evolve() state -> effects (dispatch, cancel, publish, reply)

Every event is durable before any effect of it is visible outside the process.
"""
