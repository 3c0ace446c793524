"""decode_plan: nodes with the same retry policy or timeouts share one view of it, and
every node still gets its own policy's values."""

from __future__ import annotations

from execplan.executor.plan_view import RetryView, TimeoutsView, decode_plan
from execplan.planner import compile_source
from execplan.wire.plan_codec import encode_plan

SOURCE = """
name: shared-policies
version: "1"
defaults:
  retry: {max_attempts: 3, initial_interval: 50ms, backoff_coefficient: 2.0, max_interval: 1s}
  timeouts: {start_to_close: 10s}
tasks:
  - {id: a, type: t.a}
  - {id: b, type: t.b, depends_on: [a]}
  - id: c
    type: t.c
    depends_on: [a]
    retry: {max_attempts: 5, initial_interval: 100ms, non_retryable_errors: [Bad]}
    timeouts: {start_to_close: 1s, heartbeat: 2s}
  - {id: d, type: t.d, depends_on: [b, c]}
"""


def test_nodes_share_equal_policies_and_keep_their_own() -> None:
    result = compile_source(SOURCE)
    assert result.plan is not None, result.diagnostics
    plan = encode_plan(result.plan)
    view = decode_plan(plan)
    a, b, c, d = (view.nodes[view.index_of[t]] for t in "abcd")

    assert a.retry is b.retry is d.retry
    assert a.timeouts is b.timeouts is d.timeouts
    assert a.retry == RetryView(3, 50, 2.0, 1000, a.retry.jitter, frozenset())
    assert a.timeouts == TimeoutsView(0, 10_000, 0, 0)
    assert c.retry.max_attempts == 5
    assert c.retry.initial_interval_ms == 100
    assert c.retry.non_retryable == frozenset({"Bad"})
    assert c.timeouts == TimeoutsView(0, 1000, 2000, 0)
    # Decoding again gives equal views (the sharing is within one plan's decode).
    assert decode_plan(plan) == view
