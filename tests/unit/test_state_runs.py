"""The transitions of a run, decided with no service: queued -> running -> succeeded | failed | cancelled, and
failed/cancelled -> queued again by a retry."""

from __future__ import annotations

import uuid

from app.domain import Outcome, RunStatus
from app.engine import state
from tests.unit.state_rows import NOW, TIMINGS, diamond, event_types, run, step


def test_a_new_run_is_queued_with_its_created_event_numbered_one():
    run_id = uuid.uuid4()

    row = state.new_run(diamond(), run_id, NOW)
    _, created = state.new_steps(diamond(), run_id, TIMINGS, NOW)

    assert (row["status"], row["steps_remaining"], row["event_seq"]) == (RunStatus.QUEUED, 4, 1)
    assert (created["type"], created["seq"]) == ("run.created", 1)
    assert created["data"]["steps"] == {"a": "ready", "b": "waiting", "c": "waiting", "d": "waiting"}


def test_the_first_claimed_step_starts_a_queued_run():
    queued = run(RunStatus.QUEUED)

    transition = state.after_claim([step(queued, attempt=1)], {queued.id: queued}, NOW)

    started = transition.runs[queued.id]
    assert (started.status, started.started_at) == (RunStatus.RUNNING, NOW)
    assert transition.events[0]["data"] == {"attempt": 1, "run_status": RunStatus.RUNNING}


def test_a_claim_in_a_running_run_keeps_when_it_started():
    earlier = NOW.replace(hour=11)
    running = run(RunStatus.RUNNING, started_at=earlier)

    transition = state.after_claim([step(running)], {running.id: running}, NOW)

    assert (transition.runs[running.id].status, transition.runs[running.id].started_at) == ("running", earlier)


def test_the_last_step_succeeding_succeeds_the_run():
    running = run(steps_remaining=1)
    last = step(running)

    plan = state.after_outcomes([last], [], {last.id: Outcome(last.id, True)}, {running.id: running}, TIMINGS, NOW)

    finished = plan.transition.runs[running.id]
    assert (finished.status, finished.finished_at, finished.steps_remaining) == (RunStatus.SUCCEEDED, NOW, 0)
    assert event_types(plan.transition.events) == ["step.succeeded", "run.succeeded"]


def test_a_step_succeeding_with_others_left_keeps_the_run_running():
    running = run(steps_remaining=2)
    first = step(running)

    plan = state.after_outcomes([first], [], {first.id: Outcome(first.id, True)}, {running.id: running}, TIMINGS, NOW)

    assert (plan.transition.runs[running.id].status, plan.transition.runs[running.id].steps_remaining) == ("running", 1)
    assert event_types(plan.transition.events) == ["step.succeeded"]


def test_a_step_that_fails_for_good_fails_its_run_naming_the_step():
    running = run()
    failing = step(running, "charge", attempt=3, max_attempts=3)
    error = {"type": "Boom", "message": "no"}
    outcome = Outcome(failing.id, False, error=error)

    plan = state.after_outcomes([], [failing], {failing.id: outcome}, {running.id: running}, TIMINGS, NOW)
    state.after_run_failed(plan.transition, plan.failures[0], ["ship"])

    failed = plan.transition.runs[running.id]
    assert (failed.status, failed.finished_at) == (RunStatus.FAILED, NOW)
    assert failed.error == {"step": "charge", "type": "Boom", "message": "no"}
    assert event_types(plan.transition.events) == ["step.failed", "step.cancelled", "run.failed"]


def test_only_the_first_failing_step_of_a_run_names_its_failure():
    running = run()
    first, second = step(running, "a", step_id=1, attempt=3), step(running, "b", step_id=2, attempt=3)
    outcomes = {1: Outcome(1, False, retryable=False), 2: Outcome(2, False, retryable=False)}

    plan = state.after_outcomes([], [first, second], outcomes, {running.id: running}, TIMINGS, NOW)

    assert [failure.step for failure in plan.failures] == ["a"]


def test_cancelling_an_unfinished_run_cancels_it_after_its_unfinished_steps():
    running = run()

    transition = state.after_cancel(running, ["b", "c"], NOW)

    cancelled = transition.runs[running.id]
    assert (cancelled.status, cancelled.finished_at) == (RunStatus.CANCELLED, NOW)
    assert event_types(transition.events) == ["step.cancelled", "step.cancelled", "run.cancelled"]


def test_only_unfinished_runs_may_be_cancelled():
    assert [status for status in RunStatus if state.can_cancel(status)] == [RunStatus.QUEUED, RunStatus.RUNNING]


def test_only_failed_and_cancelled_runs_may_be_retried():
    assert [status for status in RunStatus if state.can_retry(status)] == [RunStatus.FAILED, RunStatus.CANCELLED]


def test_retrying_a_run_queues_it_again_with_the_steps_left_to_do():
    failed = run(RunStatus.FAILED, finished_at=NOW, error={"step": "b"})
    steps = [
        step(failed, "a", step_id=1, status="succeeded"),
        step(failed, "b", step_id=2, status="failed", depends_on=["a"]),
        step(failed, "c", step_id=3, status="cancelled", depends_on=["b"]),
    ]

    plan = state.retry_run(failed, steps, {"a": 3, "b": 3, "c": 3}, TIMINGS, NOW)

    reopened = plan.transition.runs[failed.id]
    assert (reopened.status, reopened.steps_remaining, reopened.finished_at, reopened.error) == (
        "queued",
        2,
        None,
        None,
    )
    assert plan.transition.events[0]["type"] == "run.retried"
    assert plan.transition.events[0]["data"] == {"steps": [2, 3]}
