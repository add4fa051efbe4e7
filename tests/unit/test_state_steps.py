"""The transitions of a step, decided with no service: waiting -> ready -> running -> succeeded; running -> ready
(retry after a backoff, or a lost worker); running -> failed; any unfinished step -> cancelled."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace

from app.domain import Dispatch, Outcome, StepStatus
from app.engine import state
from tests.unit.state_rows import NOW, TIMINGS, diamond, run, step


def test_a_new_runs_steps_without_dependencies_are_ready_and_the_others_wait():
    rows, _ = state.new_steps(diamond(), uuid.uuid4(), TIMINGS, NOW)

    assert {row["name"]: (row["status"], row["waiting_on"]) for row in rows} == {
        "a": (StepStatus.READY, 0),
        "b": (StepStatus.WAITING, 1),
        "c": (StepStatus.WAITING, 1),
        "d": (StepStatus.WAITING, 2),
    }
    assert {row["name"]: row["dispatch_after"] for row in rows}["a"] == NOW + TIMINGS.republish_after


def test_a_claimed_step_runs_under_the_workers_lease():
    values = state.claim("worker-1", lease_s=30, timestamp=NOW)

    assert values == {
        "status": StepStatus.RUNNING,
        "lease_owner": "worker-1",
        "lease_expires_at": NOW + timedelta(seconds=30),
        "started_at": NOW,
    }


def test_a_succeeded_step_ends_its_lease():
    values = state.succeeded(NOW)

    assert values["status"] == StepStatus.SUCCEEDED
    assert (values["finished_at"], values["lease_owner"], values["lease_expires_at"]) == (NOW, None, None)


def test_a_succeeded_step_releases_its_dependents_traced_from_its_attempt():
    running = run()
    parent = step(running, "a", dependents=["b", "c"])
    outcome = Outcome(parent.id, True, trace_context={"traceparent": "00-1-2-01"})

    plan = state.after_outcomes([parent], [], {parent.id: outcome}, {running.id: running}, TIMINGS, NOW)

    assert [(release.names, release.trace_context) for release in plan.releases] == [
        (["b", "c"], {"traceparent": "00-1-2-01"})
    ]


def test_a_step_left_waiting_on_nothing_becomes_ready_and_is_published():
    running = run()
    transition = state.Transition.of({running.id: running}, NOW)
    release = state.Release(running.id, ["b", "c"], None)
    counted = [
        SimpleNamespace(id=2, name="b", queue="q", waiting_on=0, attempt=0),
        SimpleNamespace(id=3, name="c", queue="q", waiting_on=1, attempt=0),
    ]

    now_ready = state.waiting_on_nothing(counted)
    state.after_release(transition, release, now_ready)

    assert [row.name for row in now_ready] == ["b"]
    assert transition.dispatches == [Dispatch(2, "q", None, attempt=0)]
    assert [(event["type"], event["step"]) for event in transition.events] == [("step.ready", "b")]
    assert state.ready_now(TIMINGS, NOW) == {
        "status": StepStatus.READY,
        "ready_at": NOW,
        "dispatch_after": NOW + TIMINGS.republish_after,
        "published_at": None,
    }


def test_a_failed_run_releases_none_of_its_steps():
    running = run()
    parent = step(running, "a", step_id=1, dependents=["c"])
    failing = step(running, "b", step_id=2, attempt=3, max_attempts=3)
    outcomes = {1: Outcome(1, True), 2: Outcome(2, False)}

    plan = state.after_outcomes([parent], [failing], outcomes, {running.id: running}, TIMINGS, NOW)

    assert plan.releases == []


def test_a_failed_attempt_with_attempts_left_is_retried_after_a_backoff():
    running = run()
    failing = step(running, attempt=1, max_attempts=3)
    error = {"type": "Timeout", "message": "slow"}

    plan = state.after_outcomes(
        [], [failing], {failing.id: Outcome(failing.id, False, error=error)}, {running.id: running}, TIMINGS, NOW
    )

    (retry,) = plan.retries
    assert (retry["step_id"], retry["status"], retry["error"]) == (failing.id, StepStatus.READY, error)
    # Backoff 1 s for attempt 1, jittered 0.5x to 1.5x; the outbox publishes it once it is due.
    assert NOW + timedelta(seconds=0.5) <= retry["ready_at"] <= NOW + timedelta(seconds=1.5)
    assert retry["dispatch_after"] == retry["ready_at"]
    assert (retry["lease_owner"], retry["published_at"]) == (None, None)
    assert plan.failures == []
    assert plan.transition.events[0]["type"] == "step.retrying"


def test_the_backoff_doubles_with_each_attempt_up_to_its_maximum():
    policy = state.RetryPolicy(base_s=1, max_s=6)

    delays = [policy.delay(attempt) for attempt in (1, 2, 3, 4)]

    assert timedelta(seconds=0.5) <= delays[0] <= timedelta(seconds=1.5)
    assert timedelta(seconds=1) <= delays[1] <= timedelta(seconds=3)
    assert timedelta(seconds=2) <= delays[2] <= timedelta(seconds=6)
    assert timedelta(seconds=3) <= delays[3] <= timedelta(seconds=9)


def test_a_failed_attempt_that_cannot_be_retried_fails_the_step_however_many_attempts_are_left():
    assert (
        state.after_failure(Outcome(1, False, retryable=False), attempt=1, max_attempts=3) is state.FailureDecision.FAIL
    )


def test_a_failed_last_attempt_fails_the_step():
    assert state.after_failure(Outcome(1, False), attempt=3, max_attempts=3) is state.FailureDecision.FAIL


def test_a_step_that_fails_for_good_keeps_its_leases_expiry_but_not_its_owner():
    error = {"type": "Boom"}

    assert state.failed(error, NOW) == {
        "status": StepStatus.FAILED,
        "error": error,
        "finished_at": NOW,
        "lease_owner": None,
    }


def test_an_unfinished_step_of_an_ended_run_is_cancelled_keeping_its_lease():
    values = state.cancelled(NOW)

    assert values == {"status": StepStatus.CANCELLED, "finished_at": NOW}
    assert state.UNFINISHED_STEP == {StepStatus.WAITING, StepStatus.READY, StepStatus.RUNNING}


def test_a_step_whose_worker_was_lost_runs_again_while_attempts_remain():
    lost = SimpleNamespace(id=1, queue="q", attempt=1, max_attempts=3)

    assert state.after_lost_lease(lost) is state.FailureDecision.RETRY
    assert state.requeued(TIMINGS, NOW) == {
        "status": StepStatus.READY,
        "ready_at": NOW,
        "dispatch_after": NOW + TIMINGS.republish_after,
        "published_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }


def test_a_step_whose_worker_was_lost_on_its_last_attempt_fails_as_worker_lost():
    lost = SimpleNamespace(id=1, queue="q", attempt=3, max_attempts=3)

    assert state.after_lost_lease(lost) is state.FailureDecision.FAIL
    outcome = state.worker_lost(1)
    assert (outcome.retryable, outcome.error["type"]) == (False, "WorkerLost")


def test_a_dead_lettered_step_fails_for_good_naming_the_reason():
    outcome = state.dead_lettered(7, "delivery_limit")

    assert (outcome.step_id, outcome.succeeded, outcome.retryable) == (7, False, False)
    assert outcome.error == {"type": "DeadLettered", "message": "the step's message was dead-lettered: delivery_limit"}


def test_a_worker_may_end_only_running_steps_and_the_platform_also_ready_ones():
    assert state.ENDABLE_BY_WORKER == (StepStatus.RUNNING,)
    assert state.ENDABLE_BY_PLATFORM == (StepStatus.RUNNING, StepStatus.READY)


def test_an_attempt_that_is_no_longer_its_steps_gives_up_its_lease_and_lets_the_step_be_published():
    assert state.stale_attempt_released(NOW) == {
        "lease_owner": None,
        "lease_expires_at": None,
        "dispatch_after": NOW,
        "published_at": None,
    }


def test_a_retried_run_readies_the_steps_whose_parents_succeeded_and_waits_the_others():
    failed = run("failed")
    steps = [
        step(failed, "a", step_id=1, status="succeeded"),
        step(failed, "b", step_id=2, status="failed", attempt=3, depends_on=["a"], queue="q"),
        step(failed, "c", step_id=3, status="cancelled", attempt=0, depends_on=["a", "b"]),
    ]

    plan = state.retry_run(failed, steps, {"a": 3, "b": 3, "c": 3}, TIMINGS, NOW)

    by_id = {values["step_id"]: values for values in plan.steps}
    assert (by_id[2]["status"], by_id[2]["waiting_on"], by_id[2]["ready_at"]) == (StepStatus.READY, 0, NOW)
    assert (by_id[3]["status"], by_id[3]["waiting_on"], by_id[3]["ready_at"]) == (StepStatus.WAITING, 1, None)
    assert plan.transition.dispatches == [Dispatch(2, "q", attempt=3)]


def test_a_retried_step_gets_its_full_attempts_again_numbered_on_from_its_last():
    failed = run("failed")
    exhausted = step(failed, "b", step_id=2, status="failed", attempt=3)

    plan = state.retry_run(failed, [exhausted], {"b": 3}, TIMINGS, NOW)

    assert plan.steps[0]["max_attempts"] == 6
    assert (plan.steps[0]["error"], plan.steps[0]["output"], plan.steps[0]["finished_at"]) == (None, None, None)
    assert "lease_owner" not in plan.steps[0]
