"""`builtin.http`: one HTTP request made by the executor (docs/flow-control.md).

`rules.py` holds what the planner checks and the executor re-checks (inputs, the
fixed origin, statuses, secret references); `client.py` sends a request with
bounded time and response size and never lets a secret into what it returns.
"""
