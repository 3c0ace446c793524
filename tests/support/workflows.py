"""Small workflows the wire tests start: sources as the authoring format writes them."""

from __future__ import annotations


def waiting(name: str) -> str:
    """A workflow `name` with an integer input `n` (default 1) whose one task waits for
    the event `go`: an execution of it stays RUNNING until the test sends `go`."""
    return f"""
name: {name}
inputs:
  n: {{type: integer, default: 1}}
tasks:
  - id: w
    type: builtin.wait_for_event
    inputs: {{event: go}}
"""
