"""The pure core of the executor: (state, input, now) -> events + effects.

    machine.py    the inputs an execution takes (start, results, timers, control...)
    step.py       one step's output: events (folded at once) and effects
    events.py     typed constructors of every event kind
    effects.py    what the runtime must do once the events are committed
    flow.py       readiness, task outcomes, completion, the Saga
    attempts.py   leases, results, retries, fallbacks, timeouts, breaker parking
    control.py    pause, resume, cancel, terminate, external events
    builtins.py   task kinds that run inside the executor (sleep, wait_for_event)
    fencing.py    the one check that a report names the current lease
    retry.py      backoff with deterministic jitter
    breaker.py    the circuit-breaker state machine
    evolve.py     the fold: the only writer of execution state
    inputs.py     start inputs against the plan's declaration
    replay.py     re-running the machine over a recorded history

Nothing here waits, sleeps, reads a clock or does I/O (the import check in
tests/test_layers.py keeps asyncio out); the runtime passes the time in.
"""
