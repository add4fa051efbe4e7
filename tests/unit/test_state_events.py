"""How a run's events are numbered: each takes the next number after its run's last, whatever recorded it."""

from __future__ import annotations

from app.domain import Outcome
from app.engine import state
from tests.unit.state_rows import NOW, TIMINGS, run, step


def test_an_event_takes_the_next_number_of_its_run():
    running = run(event_seq=4)
    transition = state.Transition.of({running.id: running}, NOW)

    transition.record(running.id, "step.ready", "b")
    transition.record(running.id, "step.ready", "c")

    assert [event["seq"] for event in transition.events] == [5, 6]
    assert transition.runs[running.id].event_seq == 6


def test_each_run_numbers_its_own_events():
    first, second = run(event_seq=1), run(event_seq=10)
    transition = state.Transition.of({first.id: first, second.id: second}, NOW)

    transition.record(second.id, "run.cancelled")
    transition.record(first.id, "run.cancelled")

    assert [(event["run_id"], event["seq"]) for event in transition.events] == [(second.id, 11), (first.id, 2)]


def test_a_transition_numbers_on_a_copy_and_leaves_the_rows_it_read_alone():
    running = run(event_seq=3)
    transition = state.Transition.of({running.id: running}, NOW)

    transition.record(running.id, "run.cancelled")

    assert running.event_seq == 3


def test_only_the_runs_a_transition_touched_are_saved():
    touched, untouched = run(), run()
    transition = state.Transition.of({touched.id: touched, untouched.id: untouched}, NOW)

    transition.record(touched.id, "run.cancelled")

    assert [saved.id for saved in transition.saved_runs()] == [touched.id]


def test_events_of_one_transition_follow_each_other_in_the_order_they_happened():
    running = run(steps_remaining=1, event_seq=7)
    last = step(running)

    plan = state.after_outcomes([last], [], {last.id: Outcome(last.id, True)}, {running.id: running}, TIMINGS, NOW)

    assert [(event["type"], event["seq"]) for event in plan.transition.events] == [
        ("step.succeeded", 8),
        ("run.succeeded", 9),
    ]
