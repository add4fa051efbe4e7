"""Why the recovery sweep publishes a due step: again because the broker never confirmed it, again because nobody
claimed it, or for the first time at the end of a retry's backoff (not a republish). Each row is what the sweep
reads of a step whose columns the transitions wrote."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from app.domain import Outcome
from app.engine import state
from app.engine.state import RepublishReason
from tests.unit.state_rows import NOW, TIMINGS, run, step


def swept(columns: dict, published_at=None) -> SimpleNamespace:
    """The step as the sweep finds it, once due: written with `columns`, confirmed at `published_at`."""
    return SimpleNamespace(ready_at=columns["ready_at"], due_at=columns["dispatch_after"], published_at=published_at)


def retried() -> dict:
    """The columns of a step whose failed attempt is retried after its backoff."""
    failing = run()
    attempt = step(failing)
    plan = state.after_outcomes(
        [], [attempt], {attempt.id: Outcome(attempt.id, False)}, {failing.id: failing}, TIMINGS, NOW
    )
    (columns,) = plan.retries
    return columns


def test_a_ready_step_the_broker_never_confirmed_is_republished_as_unconfirmed():
    assert state.republish_reason(swept(state.ready_now(TIMINGS, NOW))) is RepublishReason.UNCONFIRMED


def test_a_confirmed_step_nobody_claimed_is_republished_as_unclaimed():
    columns = state.ready_now(TIMINGS, NOW)

    assert state.republish_reason(swept(columns, published_at=NOW)) is RepublishReason.UNCLAIMED


def test_a_retry_published_at_the_end_of_its_backoff_is_not_a_republish():
    assert state.republish_reason(swept(retried())) is None


def test_a_retry_the_broker_did_not_confirm_after_its_first_publish_is_republished_as_unconfirmed():
    columns = retried()
    next_check = {**columns, "dispatch_after": columns["ready_at"] + TIMINGS.republish_after}

    assert state.republish_reason(swept(next_check)) is RepublishReason.UNCONFIRMED


def test_a_step_whose_stale_attempt_gave_up_its_lease_is_republished_as_unconfirmed():
    columns = {"ready_at": NOW - timedelta(seconds=30), **state.stale_attempt_released(NOW)}

    assert state.republish_reason(swept(columns)) is RepublishReason.UNCONFIRMED
