"""Machine + evolve against compiled plans: decisions, exact event sequences, replay."""

from __future__ import annotations

import pytest
from execplan.errors import FailedPrecondition, StaleToken
from execplan.executor.decide.fencing import Claim, Holder
from execplan.executor.decide.machine import Machine
from execplan.executor.decide.retry import backoff_ms
from execplan.v1 import execution_pb2 as ex

from .machinekit import Sim

DIAMOND = """
name: diamond
inputs: {x: {type: integer, required: true}}
tasks:
  - {id: a, type: t.a, inputs: {x: "${{ workflow.inputs.x }}"}}
  - {id: b, type: t.b, depends_on: [a]}
  - {id: c, type: t.c, depends_on: [a]}
  - {id: d, type: t.d, depends_on: [b, c]}
outputs:
  total: "${{ tasks.d.output.v }}"
"""


def test_happy_path_event_sequence_outputs_and_replay() -> None:
    sim = Sim(DIAMOND, {"x": 2})
    assert sim.kinds() == ["execution_started", "task_queued:a"]
    sim.run("a", {"v": 1})
    assert sorted(sim.queued()) == ["b", "c"]
    sim.run("b", {"v": 2})
    assert sim.queued() == ["c"]
    sim.run("c", {"v": 3})
    sim.run("d", {"v": 42})
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED
    assert sim.state.outputs == {"total": 42}
    assert sim.kinds()[-6:] == [
        "task_succeeded:c",
        "task_queued:d",
        "task_dispatched:d",
        "task_started:d",
        "task_succeeded:d",
        "execution_completed",
    ]
    sim.assert_replay_matches()


def test_dispatch_resolves_inputs_from_workflow_inputs() -> None:
    sim = Sim(DIAMOND, {"x": 7})
    sim.dispatch("a")
    sends = [e for e in sim.effects if type(e).__name__ == "SendDispatch"]
    assert len(sends) == 1
    assert sends[0].inputs == {"x": 7}  # type: ignore[union-attr]
    assert sends[0].idempotency_key == "exec-1/a/main/1"  # type: ignore[union-attr]


RULES = """
name: rules
on_failure: continue
tasks:
  - {id: a, type: t, retry: {max_attempts: 1}}
  - {id: ok, type: t}
  - {id: success_only, type: t, depends_on: [a]}
  - {id: after_skip, type: t, depends_on: [success_only]}
  - {id: done, type: t, depends_on: [a], trigger: all_done}
  - {id: one, type: t, depends_on: [a, ok], trigger: one_success}
  - {id: cleanup, type: t, depends_on: [a], trigger: all_failed}
  - {id: not_cleanup, type: t, depends_on: [ok], trigger: all_failed}
"""


def test_trigger_rules_and_skip_propagation() -> None:
    sim = Sim(RULES)
    assert sorted(sim.queued()) == ["a", "ok"]
    sim.run("ok", 1)
    assert sim.status("not_cleanup") == "SKIPPED"
    assert sim.status("one") == "QUEUED"  # one upstream succeeded: ready at once
    sim.dispatch("a")
    sim.fail("a", retryable=False)
    assert sim.status("a") == "FAILED"
    assert sim.status("success_only") == "SKIPPED"
    assert sim.status("after_skip") == "SKIPPED"  # skip propagates downstream
    assert sim.status("done") == "QUEUED"
    assert sim.status("cleanup") == "QUEUED"
    for task_id in ("done", "cleanup", "one"):
        sim.run(task_id, task_id)
    assert sim.state.state == ex.EXECUTION_STATE_FAILED  # continue: runs on, then FAILED
    assert sim.state.failed_task_id == "a"
    sim.assert_replay_matches()


def test_one_success_skips_when_every_upstream_failed() -> None:
    sim = Sim(
        """
name: one
on_failure: continue
tasks:
  - {id: a, type: t, retry: {max_attempts: 1}}
  - {id: b, type: t, retry: {max_attempts: 1}}
  - {id: c, type: t, depends_on: [a, b], trigger: one_success}
"""
    )
    sim.dispatch("a")
    sim.fail("a")
    assert sim.status("c") == "PENDING"
    sim.dispatch("b")
    sim.fail("b")
    assert sim.status("c") == "SKIPPED"
    assert sim.state.state == ex.EXECUTION_STATE_FAILED


def test_when_false_skips_with_reason() -> None:
    sim = Sim(
        """
name: cond
tasks:
  - {id: a, type: t}
  - {id: b, type: t, depends_on: [a], when: "tasks.a.output.go == true"}
  - {id: c, type: t, depends_on: [a], when: "tasks.a.output.go == false"}
"""
    )
    sim.run("a", {"go": False})
    assert sim.status("b") == "SKIPPED"
    assert "condition is false" in sim.task("b").status_message
    assert sim.status("c") == "QUEUED"
    sim.run("c", None)
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED
    sim.assert_replay_matches()


def test_an_output_over_a_skipped_task_is_null() -> None:
    sim = Sim(
        """
name: skip-out
tasks:
  - {id: a, type: t}
  - {id: b, type: t, depends_on: [a], when: "tasks.a.output.go == true"}
outputs:
  from_a: "${{ tasks.a.output.go }}"
  from_b: "${{ tasks.b.output.version }}"
  status: "${{ tasks.b.status }}"
  chosen: "${{ tasks.b.status == 'SUCCEEDED' ? tasks.b.output.version : 'none' }}"
"""
    )
    sim.run("a", {"go": False})
    assert sim.status("b") == "SKIPPED"
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED, sim.state.error
    assert sim.state.outputs == {
        "from_a": False,
        "from_b": None,
        "status": "SKIPPED",
        "chosen": "none",
    }
    sim.assert_replay_matches()


def test_an_input_over_a_skipped_task_fails_that_task() -> None:
    """As the README says: only outputs read a skipped task's fields as null."""
    sim = Sim(
        """
name: skip-in
on_failure: continue
tasks:
  - {id: a, type: t}
  - {id: b, type: t, depends_on: [a], when: "false"}
  - id: c
    type: t
    depends_on: [b]
    trigger: all_done
    inputs: {v: "${{ tasks.b.output.version }}"}
"""
    )
    sim.run("a", {})
    assert sim.status("b") == "SKIPPED"
    sim.dispatch("c")
    assert sim.status("c") == "FAILED"
    error = sim.task("c").error
    assert error is not None and error.type == "BindingError"


def test_an_output_that_fails_otherwise_still_fails_the_execution() -> None:
    sim = Sim(
        """
name: bad-out
tasks:
  - {id: a, type: t}
outputs:
  missing: "${{ tasks.a.output.nope }}"
"""
    )
    sim.run("a", {"v": 1})
    assert sim.state.state == ex.EXECUTION_STATE_FAILED
    assert sim.state.error is not None and sim.state.error.type == "OutputError"


RETRY = """
name: retry
tasks:
  - id: a
    type: t
    retry:
      max_attempts: 3
      initial_interval: 100ms
      backoff_coefficient: 2.0
      jitter: 0
      non_retryable_errors: [Fatal]
"""


def test_retries_with_backoff_then_success_exact_sequence() -> None:
    sim = Sim(RETRY)
    start = sim.now
    sim.dispatch("a")
    sim.ack("a")
    sim.fail("a")
    assert sim.status("a") == "BACKING_OFF"
    sim.fire_timers()
    assert sim.now == start + 100
    assert sim.status("a") == "QUEUED" and sim.task("a").attempt == 2
    sim.dispatch("a")
    sim.ack("a")
    sim.fail("a")
    sim.fire_timers()
    assert sim.now == start + 300  # 100 ms, then 200 ms
    sim.dispatch("a")
    sim.ack("a")
    sim.succeed("a", "ok")
    assert sim.kinds() == [
        "execution_started",
        "task_queued:a",
        "task_dispatched:a",
        "task_started:a",
        "task_failed:a",
        "task_retry_scheduled:a",
        "timer_scheduled:a",
        "timer_fired:a",
        "task_queued:a",
        "task_dispatched:a",
        "task_started:a",
        "task_failed:a",
        "task_retry_scheduled:a",
        "timer_scheduled:a",
        "timer_fired:a",
        "task_queued:a",
        "task_dispatched:a",
        "task_started:a",
        "task_succeeded:a",
        "execution_completed",
    ]
    failed = [e.task_failed for e in sim.events if e.HasField("task_failed")]
    assert [f.final for f in failed] == [False, False]
    assert [f.token.attempt for f in failed] == [1, 2]
    assert [a.attempt for a in sim.task("a").attempts] == [1, 2, 3]
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED
    sim.assert_replay_matches()


def test_retries_exhausted_fail_the_execution() -> None:
    sim = Sim(RETRY)
    for _ in range(3):
        sim.dispatch("a")
        sim.fail("a")
        sim.fire_timers()
    assert sim.status("a") == "FAILED"
    assert sim.state.state == ex.EXECUTION_STATE_FAILED
    assert len(sim.task("a").attempts) == 3


def test_backoff_jitter_is_deterministic_and_capped() -> None:
    sim = Sim(
        """
name: jitter
tasks:
  - id: a
    type: t
    retry:
      max_attempts: 9
      initial_interval: 1s
      backoff_coefficient: 10
      max_interval: 5s
      jitter: 0.5
"""
    )
    policy = sim.plan.nodes[0].retry
    first = [backoff_ms(policy, "e1", "a", 1, n) for n in range(1, 6)]
    assert first == [backoff_ms(policy, "e1", "a", 1, n) for n in range(1, 6)]
    assert all(0 < d <= 5000 for d in first)
    assert 500 <= first[0] <= 1000


@pytest.mark.parametrize(
    ("kind", "retryable"), [("Fatal", True), ("Other", False)], ids=["listed", "flagged"]
)
def test_non_retryable_error_fails_at_once(kind: str, retryable: bool) -> None:
    sim = Sim(RETRY)
    sim.dispatch("a")
    sim.fail("a", kind=kind, retryable=retryable)
    assert sim.status("a") == "FAILED"
    assert len(sim.task("a").attempts) == 1
    assert sim.state.state == ex.EXECUTION_STATE_FAILED
    assert sim.kinds()[-2:] == ["task_failed:a", "execution_completed"]
    assert sim.events[-2].task_failed.final


def test_fallback_output_stands_in() -> None:
    sim = Sim(
        """
name: fb
tasks:
  - id: a
    type: t.main
    retry: {max_attempts: 1}
    fallback: {type: t.backup}
  - {id: b, type: t, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}"}}
outputs: {v: "${{ tasks.b.output }}"}
"""
    )
    sim.dispatch("a")
    sim.fail("a")
    assert sim.status("a") == "QUEUED"
    assert sim.task("a").phase == ex.TASK_PHASE_FALLBACK
    sim.dispatch("a")
    send = [e for e in sim.effects if type(e).__name__ == "SendDispatch"][-1]
    assert send.task_type == "t.backup"  # type: ignore[union-attr]
    sim.ack("a")
    sim.succeed("a", {"v": "from-backup"})
    assert sim.status("a") == "SUCCEEDED"
    sim.dispatch("b")
    send = [e for e in sim.effects if type(e).__name__ == "SendDispatch"][-1]
    assert send.inputs == {"v": "from-backup"}  # type: ignore[union-attr]
    sim.succeed("b", 5)
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED
    assert sim.state.outputs == {"v": 5}
    sim.assert_replay_matches()


PAR = """
name: par
on_failure: {policy}
tasks:
  - {{id: a, type: t, retry: {{max_attempts: 1}}}}
  - {{id: b, type: t}}
  - {{id: c, type: t, depends_on: [b]}}
"""


def test_fail_fast_cancels_the_rest() -> None:
    sim = Sim(PAR.format(policy="fail_fast"))
    sim.dispatch("a")
    sim.dispatch("b")
    sim.fail("a")
    assert sim.state.state == ex.EXECUTION_STATE_FAILED
    assert sim.status("b") == "CANCELLED"
    assert sim.status("c") == "CANCELLED"  # never ran; closed with the execution
    assert any(type(e).__name__ == "CancelLease" for e in sim.effects)
    with pytest.raises(StaleToken):
        sim.succeed("b", 1)  # the cancelled lease no longer counts
    sim.assert_replay_matches()


def test_continue_runs_independent_branches() -> None:
    sim = Sim(PAR.format(policy="continue"))
    sim.dispatch("a")
    sim.fail("a")
    assert sim.state.state == ex.EXECUTION_STATE_RUNNING
    sim.run("b", 1)
    sim.run("c", 2)
    assert sim.state.state == ex.EXECUTION_STATE_FAILED
    assert sim.status("c") == "SUCCEEDED"
    sim.assert_replay_matches()


def test_compensation_in_reverse_completion_order() -> None:
    sim = Sim(
        """
name: saga
on_failure: compensate
tasks:
  - {id: a, type: t, compensation: {type: undo.a}}
  - {id: b, type: t, compensation: {type: undo.b}}
  - {id: c, type: t, compensation: {type: undo.c}}
  - {id: d, type: t, depends_on: [a, b, c], retry: {max_attempts: 1}}
"""
    )
    sim.run("b", 1)
    sim.run("c", 2)
    sim.run("a", 3)
    sim.dispatch("d")
    sim.fail("d")
    assert sim.state.state == ex.EXECUTION_STATE_COMPENSATING
    started = [e for e in sim.events if e.HasField("compensation_started")]
    assert list(started[0].compensation_started.task_ids) == ["a", "c", "b"]
    order = []
    while sim.queued():
        (task_id,) = sim.queued()
        assert sim.task(task_id).phase == ex.TASK_PHASE_COMPENSATION
        order.append(task_id)
        sim.dispatch(task_id)
        sim.succeed(task_id, None)
        assert sim.status(task_id) == "COMPENSATED"
    assert order == ["a", "c", "b"]
    assert sim.state.state == ex.EXECUTION_STATE_COMPENSATED
    assert sim.state.failed_task_id == "d"
    sim.assert_replay_matches()


def test_builtin_sleep() -> None:
    sim = Sim(
        """
name: nap
tasks:
  - {id: nap, type: builtin.sleep, inputs: {duration: 250ms}}
  - {id: b, type: t, depends_on: [nap]}
"""
    )
    assert sim.status("nap") == "WAITING"
    assert sim.queued() == []
    start = sim.now
    sim.fire_timers()
    assert sim.now == start + 250
    assert sim.status("nap") == "SUCCEEDED"
    assert sim.task("nap").output == {"slept_ms": 250}
    assert sim.queued() == ["b"]
    sim.assert_replay_matches()


WAIT = """
name: wait
tasks:
  - {id: first, type: t}
  - id: w
    type: builtin.wait_for_event
    depends_on: [first]
    inputs: {event: approved, timeout: 10s}
outputs: {by: "${{ tasks.w.output.data.by }}"}
"""


def test_wait_for_event_completes_on_event() -> None:
    sim = Sim(WAIT)
    sim.run("first", None)
    assert sim.status("w") == "WAITING"
    assert sim.step(lambda m: m.external_event("other", None, "r0"))  # unrelated: no change
    assert sim.status("w") == "WAITING"
    waiting: list[str] = []
    sim.step(lambda m: waiting.append(m.external_event("approved", {"by": "ann"}, "r1")))
    assert waiting == ["w"]
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED
    assert sim.state.outputs == {"by": "ann"}
    sim.fire_timers()  # the timeout timer is gone or ignored
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED
    sim.assert_replay_matches()


def test_event_arriving_before_the_wait_is_kept() -> None:
    sim = Sim(WAIT)
    sim.step(lambda m: m.external_event("approved", {"by": "bob"}, "r1"))
    assert sim.status("w") == "PENDING"
    sim.run("first", None)
    assert sim.state.state == ex.EXECUTION_STATE_SUCCEEDED
    assert sim.state.outputs == {"by": "bob"}
    sim.assert_replay_matches()


def test_wait_for_event_times_out() -> None:
    sim = Sim(WAIT)
    sim.run("first", None)
    sim.fire_timers()
    assert sim.status("w") == "FAILED"
    error = sim.task("w").error
    assert error is not None and error.type == "Timeout"
    assert sim.state.state == ex.EXECUTION_STATE_FAILED


def test_stale_tokens_are_rejected() -> None:
    sim = Sim(RETRY)
    attempt, epoch = sim.dispatch("a")
    # A re-lease bumps the epoch: the first holder's token is now stale.
    sim.step(lambda m: m.requeue(sim.task("a"), "worker lost"))
    attempt2, epoch2 = sim.dispatch("a", "w2")
    assert (attempt2, epoch2) == (attempt, epoch + 1)
    with pytest.raises(StaleToken):
        sim.step(lambda m: m.check_token("a", Claim(ex.TASK_PHASE_MAIN, attempt, epoch)))
    with pytest.raises(StaleToken):
        sim.step(lambda m: m.check_token("a", Claim(ex.TASK_PHASE_MAIN, attempt + 1, epoch2)))
    with pytest.raises(StaleToken):
        sim.step(lambda m: m.check_token("nope", Claim(ex.TASK_PHASE_MAIN, attempt2, epoch2)))
    sim.succeed("a", 1)
    with pytest.raises(StaleToken):  # finished: a late duplicate result is stale too
        sim.step(lambda m: m.check_token("a", Claim(ex.TASK_PHASE_MAIN, attempt2, epoch2)))
    requeued = [e for e in sim.events if e.HasField("task_requeued")]
    assert requeued[0].task_requeued.reason == "worker lost"
    sim.assert_replay_matches()


FALLBACK = """
name: fb
tasks:
  - id: a
    type: t.main
    retry: {max_attempts: 1}
    fallback: {type: t.backup}
"""


def test_the_fencing_check_names_the_phase_and_checks_the_holder() -> None:
    sim = Sim(FALLBACK)
    sim.dispatch("a")
    sim.fail("a")
    # The fallback: attempt 1 again, epoch 2, only the phase differs.
    sim.step(lambda m: m.dispatch(0, "w1", "billing"))
    run = sim.task("a")
    main = Claim(ex.TASK_PHASE_MAIN, run.attempt, run.epoch)
    with pytest.raises(StaleToken) as stale:
        sim.step(lambda m: m.check_token("a", main))
    # Attempt and epoch match: only the phase tells the two apart.
    assert str(stale.value) == (
        "stale token for a main attempt 1 epoch 2 (current: fallback attempt 1 epoch 2, DISPATCHED)"
    )
    fallback = (ex.TASK_PHASE_FALLBACK, run.attempt, run.epoch)
    holders = {
        "w2": Holder("w2", None, frozenset({"t.backup"})),
        "w1 of another type": Holder("w1", None, frozenset({"t.main"})),
        "w1 of another principal": Holder("w1", "intruder", frozenset({"t.backup"})),
    }
    reasons = {}
    for name, holder in holders.items():
        with pytest.raises(StaleToken) as refused:
            Machine(sim.state, sim.now).check_token("a", Claim(*fallback, holder))
        reasons[name] = str(refused.value)
    assert reasons == {
        "w2": "attempt is leased to worker w1, not w2",
        "w1 of another type": "worker w1 did not register task type t.backup",
        "w1 of another principal": "attempt is leased to another principal than 'intruder'",
    }
    holder = Holder("w1", "billing", frozenset({"t.backup"}))
    assert Machine(sim.state, sim.now).check_token("a", Claim(*fallback, holder)) is run


def test_pause_resume_cancel_terminate() -> None:
    sim = Sim(DIAMOND, {"x": 1})
    sim.step(lambda m: m.pause("hold", "p1"))
    assert sim.state.state == ex.EXECUTION_STATE_PAUSED
    sim.step(lambda m: m.resume("r1"))
    assert sim.state.state == ex.EXECUTION_STATE_RUNNING
    sim.dispatch("a")
    sim.step(lambda m: m.cancel("stop", "c1", False))
    assert sim.state.state == ex.EXECUTION_STATE_CANCELLED
    assert sim.status("a") == "CANCELLED"
    with pytest.raises(FailedPrecondition):
        sim.step(lambda m: m.resume("r2"))
    sim.assert_replay_matches()
    term = Sim(DIAMOND, {"x": 1})
    term.step(lambda m: m.cancel("now", "t1", True))
    assert term.state.state == ex.EXECUTION_STATE_TERMINATED
    term.assert_replay_matches()
