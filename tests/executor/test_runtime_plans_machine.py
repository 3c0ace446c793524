"""The decide core of plans that grow at runtime: for_each and repeat, driven by hand
(tests/executor/machinekit.py), checked event by event and against a replay of the
log (the fold alone must rebuild the same state)."""

from __future__ import annotations

from execplan.executor.decide import effects as fx
from execplan.executor.decide.machine import Machine
from execplan.executor.state import Allowance, Limits
from execplan.executor.values import from_value
from execplan.v1 import execution_pb2 as ex

from .machinekit import Sim

FAN = """
name: fan
tasks:
  - id: plan
    type: t.plan
  - id: research
    type: t.research
    for_each: "${{ tasks.plan.output.items }}"
    max_parallel: 2
    inputs: {q: "${{ item }}", i: "${{ index }}"}
  - id: write
    type: t.write
    inputs: {notes: "${{ tasks.research.output }}"}
outputs:
  second: "${{ tasks.research.output[1].a }}"
"""


def test_for_each_runs_instances_in_item_order_within_max_parallel() -> None:
    sim = Sim(FAN)
    sim.run("plan", {"items": ["x", "y", "z"]})
    assert sim.queued() == ["research[0]", "research[1]"]  # max_parallel: 2
    assert sim.status("research") == "RUNNING"
    dispatched = []
    sim.dispatch("research[1]")
    dispatched.append([e for e in sim.effects if isinstance(e, fx.SendDispatch)][-1])
    assert dispatched[0].inputs == {"q": "y", "i": 1}
    sim.ack("research[1]")
    sim.succeed("research[1]", {"a": "Y"})
    assert sim.queued() == ["research[0]", "research[2]"]  # the next one, in order
    sim.run("research[2]", {"a": "Z"})
    assert sim.status("research") == "RUNNING"
    sim.run("research[0]", {"a": "X"})
    assert sim.status("research") == "SUCCEEDED"
    assert sim.task("research").output == [{"a": "X"}, {"a": "Y"}, {"a": "Z"}]
    assert sim.queued() == ["write"]
    sim.run("write", "done")
    assert sim.state.outputs == {"second": "Y"}
    assert "task_expanded:research" in sim.kinds()
    succeeded = next(
        e
        for e in sim.events
        if e.HasField("task_succeeded") and e.task_succeeded.task_id == "research"
    )
    assert not succeeded.task_succeeded.HasField("output")  # not written twice
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_an_empty_list_succeeds_at_once_with_an_empty_list() -> None:
    sim = Sim(FAN)
    sim.run("plan", {"items": []})
    assert sim.status("research") == "SUCCEEDED"
    assert sim.task("research").output == []
    assert sim.queued() == ["write"]
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_an_instance_failing_for_good_fails_the_task_and_cancels_the_others() -> None:
    source = FAN.replace(
        "    max_parallel: 2\n", "    max_parallel: 2\n    retry: {max_attempts: 1}\n"
    )
    sim = Sim(source)
    sim.run("plan", {"items": [1, 2, 3, 4]})
    sim.dispatch("research[0]")
    sim.dispatch("research[1]")
    sim.fail("research[1]", "Boom", retryable=False)
    assert sim.status("research") == "FAILED"
    assert sim.status("research[0]") == "CANCELLED"
    assert sim.status("research[2]") == "CANCELLED"
    error = sim.task("research").error
    assert error is not None and error.type == "Boom" and error.message.startswith("research[1]: ")
    assert sim.state.state == 5  # FAILED (fail fast)
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_compensate_undoes_completed_instances_in_reverse_completion_order() -> None:
    source = """
name: saga
on_failure: compensate
tasks:
  - id: book
    type: t.book
    for_each: "['a', 'b', 'c']"
    inputs: {what: "${{ item }}"}
    compensation: {type: t.unbook, inputs: {what: "${{ item }}", at: "${{ index }}"}}
  - id: pay
    type: t.pay
    depends_on: [book]
    retry: {max_attempts: 1}
"""
    sim = Sim(source)
    sim.run("book[2]", "C")
    sim.run("book[0]", "A")
    sim.run("book[1]", "B")
    sim.dispatch("pay")
    sim.fail("pay", "Declined", retryable=False)
    undone = []
    for expected in ["book[1]", "book[0]", "book[2]"]:
        assert sim.queued() == [expected]
        sim.dispatch(expected)
        undone.append([e for e in sim.effects if isinstance(e, fx.SendDispatch)][-1].inputs)
        sim.ack(expected)
        sim.succeed(expected, None)
    assert undone == [{"what": "b", "at": 1}, {"what": "a", "at": 0}, {"what": "c", "at": 2}]
    assert sim.state.state == 6  # COMPENSATED
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_when_reading_item_skips_instances_and_leaves_null() -> None:
    source = """
name: w
tasks:
  - id: each
    type: t
    for_each: "[1, 2, 3, 4]"
    when: "item % 2 == 0"
    inputs: {n: "${{ item }}"}
"""
    sim = Sim(source)
    assert sim.queued() == ["each[1]", "each[3]"]
    sim.run("each[1]", "two")
    sim.run("each[3]", "four")
    assert sim.task("each").output == [None, "two", None, "four"]
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_thousands_of_skipped_instances_do_not_recurse() -> None:
    source = """
name: w
tasks:
  - id: each
    type: t
    for_each: "tasks.a.output"
    when: "item < 0"
  - {id: a, type: t}
"""
    sim = Sim(source)
    sim.run("a", list(range(5000)))
    assert sim.status("each") == "SUCCEEDED"
    assert sim.task("each").output == [None] * 5000
    # One node view for every instance.
    assert {id(g.node) for g in sim.state.grown} == {
        id(sim.state.node(sim.state.task("each").index))
    }


def test_for_each_errors_and_limits() -> None:
    not_a_list = Sim("name: w\ntasks:\n  - {id: e, type: t, for_each: '{\"a\": 1}'}\n")
    error = not_a_list.task("e").error
    assert error is not None and (error.type, error.message) == (
        "ForEachError",
        "for_each gave an object, not a list",
    )
    # The runaway cap on items, recorded in execution_started: the task fails before
    # any instance starts, naming itself, the count, the cap and the flag.
    sim = Sim(FAN, allowance=Allowance(max_for_each_items=2))
    sim.run("plan", {"items": [1, 2, 3]})
    error = sim.task("research").error
    assert error is not None and (error.type, error.message, error.retryable) == (
        "TooManyItems",
        "for_each research gave 3 items; this server allows at most 2 per task "
        "(execplan serve --max-for-each-items)",
        False,
    )
    assert error.details == {"task_id": "research", "items": 3, "max_for_each_items": 2}
    assert not sim.state.grown
    assert sim.state.state == ex.EXECUTION_STATE_FAILED
    sim.assert_replay_matches()
    at_cap = Sim(FAN, allowance=Allowance(max_for_each_items=2))
    at_cap.run("plan", {"items": [1, 2]})
    assert at_cap.queued() == ["research[0]", "research[1]"]
    # The engine's other limits are recorded when the execution starts and hold for
    # it: later steps (a restarted engine, replay) with other limits decide the same.
    sim = Sim(FAN, limits=Limits(execution_tasks=5))
    assert sim.events[0].execution_started.limits.execution_tasks == 5
    sim.run("plan", {"items": [1, 2, 3]})  # Sim's later steps pass no limits
    error = sim.task("research").error
    assert error is not None and error.type == "LimitExceeded", error
    assert "6 tasks" in error.message
    sim.assert_replay_matches()
    sim.assert_deterministic()


LOOP = """
name: loop
tasks:
  - id: write
    type: t.write
    inputs: {draft: "${{ previous }}", round: "${{ iteration }}"}
    repeat: {until: "output.ok || iteration >= 5", max_iterations: 3}
    retry: {max_attempts: 2, initial_interval: 0s}
"""


def test_repeat_iterates_until_it_holds_with_previous_and_iteration() -> None:
    sim = Sim(LOOP)
    inputs = []
    for i, output in enumerate(
        [{"ok": False, "n": 0}, {"ok": False, "n": 1}, {"ok": True, "n": 2}]
    ):
        sim.dispatch("write")
        inputs.append([e for e in sim.effects if isinstance(e, fx.SendDispatch)][-1])
        if i == 1:  # an attempt of iteration 1 fails once: its own retries
            sim.fail("write")
            sim.dispatch("write")
            retried = [e for e in sim.effects if isinstance(e, fx.SendDispatch)][-1]
            assert retried.previous_error is not None and retried.previous_error.type == "Boom"
            assert retried.idempotency_key.endswith("/main/i1.2")
        sim.ack("write")
        sim.succeed("write", output)
    assert [d.inputs for d in inputs] == [
        {"draft": None, "round": 0},
        {"draft": {"ok": False, "n": 0}, "round": 1},
        {"draft": {"ok": False, "n": 1}, "round": 2},
    ]
    assert inputs[0].idempotency_key.endswith("/main/1")
    assert inputs[0].previous_error is None
    assert sim.status("write") == "SUCCEEDED"
    assert sim.task("write").output == {"ok": True, "n": 2}
    assert sim.kinds().count("iteration_completed:write") == 3
    assert [r.iteration for r in sim.task("write").attempts] == [0, 1, 1, 2]
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_repeat_exhausted_fails_the_task_not_retryable() -> None:
    sim = Sim(LOOP)
    for _ in range(3):
        sim.run("write", {"ok": False})
    assert sim.status("write") == "FAILED"
    error = sim.task("write").error
    assert error is not None and error.type == "RepeatExhausted" and not error.retryable
    assert "after 3 iterations" in error.message
    done = [
        from_value(e.iteration_completed.output)
        for e in sim.events
        if e.HasField("iteration_completed")
    ]
    assert done == [{"ok": False}] * 3
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_for_each_with_repeat_loops_each_instance() -> None:
    source = """
name: both
tasks:
  - id: each
    type: t
    for_each: "['a', 'b']"
    inputs: {x: "${{ item }}", n: "${{ iteration }}"}
    repeat: {until: "output == item + string(iteration)", max_iterations: 3}
"""
    sim = Sim(source)
    sim.run("each[0]", "wrong")
    sim.run("each[0]", "a1")
    sim.run("each[1]", "b0")
    assert sim.status("each") == "SUCCEEDED"
    assert sim.task("each").output == ["a1", "b0"]
    sim.assert_replay_matches()
    sim.assert_deterministic()


AGENT = """
name: agent
inputs: {goal: {type: string, default: g}}
tasks:
  - id: agent
    type: t.agent
    dynamic: true
    retry: {max_attempts: 3, initial_interval: 0s}
  - id: after
    type: t.after
    inputs: {got: "${{ tasks.agent.output.result }}"}
outputs:
  result: "${{ tasks.after.output }}"
"""
SUB = """
name: sub
inputs: {n: {type: integer, required: true}}
tasks:
  - id: a
    type: t.a
    inputs: {n: "${{ workflow.inputs.n }}"}
  - id: b
    type: t.b
    inputs: {a: "${{ tasks.a.output }}"}
outputs:
  result: "${{ tasks.b.output }}"
"""


def _sub_plan(source: str = SUB) -> object:
    from execplan.planner import compile_source  # noqa: PLC0415
    from execplan.wire.plan_codec import encode_plan  # noqa: PLC0415

    result = compile_source(source)
    assert result.plan is not None
    return encode_plan(result.plan)


def _answer(sim: Sim, task_id: str, plan: object, inputs: dict[str, object]) -> None:
    from execplan.executor.decide.fencing import Claim  # noqa: PLC0415

    run = sim.task(task_id)
    claim = Claim(run.phase, run.attempt, run.epoch)
    sim.step(lambda m: m.sub_plan(m.check_token(task_id, claim), plan, inputs))  # type: ignore[arg-type]


def test_a_sub_plan_runs_inline_and_its_outputs_are_the_task_output() -> None:
    sim = Sim(AGENT)
    sim.dispatch("agent")
    sim.ack("agent")
    _answer(sim, "agent", _sub_plan(), {"n": 4})
    assert "plan_revised:agent" in sim.kinds()
    assert sim.queued() == ["agent/a"]
    sim.dispatch("agent/a")
    dispatched = [e for e in sim.effects if isinstance(e, fx.SendDispatch)][-1]
    assert dispatched.inputs == {"n": 4}  # the sub-plan's own workflow.inputs
    sim.ack("agent/a")
    sim.succeed("agent/a", 5)
    sim.run("agent/b", {"b": 6})
    assert sim.status("agent") == "SUCCEEDED"
    assert sim.task("agent").output == {"result": {"b": 6}}
    sim.run("after", "done")
    assert sim.state.outputs == {"result": "done"}
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_an_invalid_sub_plan_fails_the_attempt_with_plan_invalid_and_is_retried() -> None:
    sim = Sim(AGENT)
    sim.dispatch("agent")
    sim.ack("agent")
    _answer(sim, "agent", _sub_plan(), {})  # n is required: the inputs do not fit
    run = sim.task("agent")
    assert run.error is not None and run.error.type == "PlanInvalid" and run.error.retryable
    assert "required" in run.error.message
    assert sim.queued() == ["agent"]
    sim.dispatch("agent")
    again = [e for e in sim.effects if isinstance(e, fx.SendDispatch)][-1]
    assert again.previous_error is not None and again.previous_error.type == "PlanInvalid"
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_a_failed_sub_plan_task_fails_the_dynamic_task() -> None:
    sim = Sim(AGENT.replace("retry: {max_attempts: 3", "retry: {max_attempts: 1"))
    sim.dispatch("agent")
    sim.ack("agent")
    _answer(
        sim,
        "agent",
        _sub_plan(SUB.replace("type: t.a", "type: t.a\n    retry: {max_attempts: 1}")),
        {"n": 1},
    )
    sim.dispatch("agent/a")
    sim.fail("agent/a", "Broken", retryable=False)
    assert sim.status("agent/b") == "CANCELLED"
    assert sim.status("agent") == "FAILED"
    error = sim.task("agent").error
    assert error is not None and error.type == "SubPlanFailed"
    assert error.message == "agent/a: Broken: failed"
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_sub_plan_limits_are_plan_invalid() -> None:
    sim = Sim(AGENT)
    sim.dispatch("agent")
    sim.ack("agent")
    from execplan.executor.decide.fencing import Claim  # noqa: PLC0415

    run = sim.task("agent")
    claim = Claim(run.phase, run.attempt, run.epoch)
    limits = Limits(sub_plan_tasks=1)
    machine = Machine(sim.state, sim.now, limits=limits)
    machine.sub_plan(machine.check_token("agent", claim), _sub_plan(), {"n": 1})  # type: ignore[arg-type]
    error = sim.task("agent").error
    assert error is not None and error.type == "PlanInvalid"
    assert "2 tasks; at most 1" in error.message


CHILD = """
name: parent
tasks:
  - id: review
    type: builtin.workflow
    workflow: review@2
    for_each: "['x', 'y']"
    inputs: {draft: "${{ item }}"}
"""


def _started(sim: Sim, start: fx.StartChild, child_id: str) -> list[object]:
    return list(
        sim.step(
            lambda m: m.child_started(
                start.task_id,
                start.attempt,
                start.epoch,
                child_execution_id=child_id,
                plan_id="p",
                workflow_name="review",
                workflow_version="2",
            )
        )
    )


def test_child_workflows_start_one_per_instance_and_end_with_the_child() -> None:
    sim = Sim(CHILD)
    starts = [e for e in sim.effects if isinstance(e, fx.StartChild)]
    assert [(s.task_id, s.workflow, s.version, s.inputs, s.depth) for s in starts] == [
        ("review[0]", "review", "2", {"draft": "x"}, 1),
        ("review[1]", "review", "2", {"draft": "y"}, 1),
    ]
    assert starts[0].request_id == "child:exec-1/review[0]/0.1"
    for i, start in enumerate(starts):
        started = _started(sim, start, f"child-{i}")
        assert [e.WhichOneof("kind") for e in started] == ["child_execution_started"]  # type: ignore[attr-defined]
    assert sim.status("review[0]") == "RUNNING"
    # A stale answer (an old child) changes nothing.
    assert sim.step(lambda m: m.child_ended("review[0]", "old", 4, {}, None)) == []
    sim.step(lambda m: m.child_ended("review[0]", "child-0", 4, {"ok": 1}, None))
    sim.step(lambda m: m.child_ended("review[1]", "child-1", 4, {"ok": 2}, None))
    assert sim.status("review") == "SUCCEEDED"
    assert sim.task("review").output == [{"ok": 1}, {"ok": 2}]
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_a_failed_child_fails_the_attempt_and_a_cancel_stops_running_children() -> None:
    sim = Sim(
        CHILD.replace(
            "    inputs:", "    retry: {max_attempts: 2, initial_interval: 0s}\n    inputs:"
        )
    )
    for i, start in enumerate([e for e in sim.effects if isinstance(e, fx.StartChild)]):
        _started(sim, start, f"c{i}")
    from execplan.executor.task_errors import TaskError  # noqa: PLC0415

    sim.step(lambda m: m.child_ended("review[0]", "c0", 5, None, TaskError("Boom", "bad")))
    error = sim.task("review[0]").error
    assert (
        error is not None
        and error.type == "ChildFailed"
        and "c0 ended FAILED: Boom: bad" in error.message
    )
    retry = [e for e in sim.effects if isinstance(e, fx.StartChild)][-1]
    assert retry.task_id == "review[0]" and retry.request_id.endswith("/0.2")  # a new child
    sim.step(lambda m: m.cancel("stop", "r-2", terminate=True))
    stops = [e for e in sim.effects if isinstance(e, fx.StopChild)]
    assert [(s.child_execution_id, s.terminate) for s in stops] == [("c1", True)]
    sim.assert_replay_matches()
    sim.assert_deterministic()


def test_a_checkpoint_carries_what_grew() -> None:
    from execplan.executor.decide.evolve import evolve  # noqa: PLC0415
    from execplan.executor.snapshot import decode_state, encode_state  # noqa: PLC0415
    from execplan.executor.view import encode_execution  # noqa: PLC0415

    source = """
name: all
tasks:
  - id: plan
    type: t
  - id: each
    type: t
    for_each: "tasks.plan.output"
    max_parallel: 1
    inputs: {x: "${{ item }}"}
    repeat: {until: "output == 'ok'", max_iterations: 3}
  - id: agent
    type: t.agent
    dynamic: true
    depends_on: [plan]
"""
    sim = Sim(source)
    sim.run("plan", ["a", "b"])
    sim.run("each[0]", "again")  # iteration 0 of each[0]
    sim.dispatch("agent")
    sim.ack("agent")
    _answer(sim, "agent", _sub_plan(), {"n": 2})
    checkpoint = encode_state(sim.state)
    at = len(sim.events)
    sim.run("each[0]", "ok")
    sim.run("each[1]", "ok")
    sim.run("agent/a", 1)
    sim.run("agent/b", 2)
    restored = decode_state(checkpoint, "exec-1", sim.plan)
    assert restored is not None
    for event in sim.events[at:]:
        evolve(restored, event)
    assert encode_execution(restored) == encode_execution(sim.state)
    assert sim.state.state == 4  # SUCCEEDED
    assert sim.task("each").output == ["ok", "ok"]
