"""Rows as the store hands them to `app.engine.state`, built with only what a test needs to say."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from app.domain import NewRun, RunState, StepSpec, Workflow, WorkflowSpec
from app.engine.state import RetryPolicy, Timings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TIMINGS = Timings(
    retry=RetryPolicy(base_s=1, max_s=60),
    republish_after=timedelta(seconds=5),
    unclaimed_after=timedelta(seconds=60),
)


def run(status: str = "running", *, steps_remaining: int = 3, event_seq: int = 1, **columns) -> RunState:
    values = {
        "id": uuid.uuid4(),
        "status": status,
        "input": {},
        "steps_remaining": steps_remaining,
        "event_seq": event_seq,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "trace_context": None,
    }
    return RunState(**{**values, **columns})


def step(of: RunState, name: str = "a", *, step_id: int = 1, attempt: int = 1, **columns) -> SimpleNamespace:
    values = {
        "id": step_id,
        "run_id": of.id,
        "name": name,
        "attempt": attempt,
        "max_attempts": 3,
        "dependents": [],
        "depends_on": [],
        "queue": "default",
        "status": "running",
        "waiting_on": 0,
    }
    return SimpleNamespace(**{**values, **columns})


def diamond() -> NewRun:
    """a -> (b, c) -> d"""

    def spec(name: str, *depends_on: str) -> StepSpec:
        return StepSpec(name, "noop", depends_on, {}, retries=2, timeout_s=10, queue="default")

    workflow = WorkflowSpec("diamond", (spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "b", "c")))
    return NewRun(Workflow(1, "diamond", 1, workflow, NOW), {"order": 42})


def event_types(events: list[dict]) -> list[str]:
    return [event["type"] for event in events]
