"""States of runs and steps, and the rules that move them. Every transition is decided here, once, by a pure
function: it takes the rows it needs and returns the column values to write and the events to record. The store
applies them with guarded statements (`UPDATE ... WHERE status IN (...)`), so a concurrent transition that got there
first simply matches no row; `transitions.py` calls the store and these rules in order.

A run:   queued -> running -> succeeded | failed | cancelled        (retry: failed/cancelled -> queued)
A step:  waiting -> ready -> running -> succeeded
                      ^         |-> ready (retry after backoff, or its worker was lost)
                      |         |-> failed (attempts exhausted, permanent error, dead-lettered)
         any unfinished step -> cancelled (the run was cancelled or failed)
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from app.domain import Changes, Dispatch, NewRun, Outcome, RunState, RunStatus, StepStatus

# RunStatus and StepStatus live in app.domain, the adapters' side too; the API reads them here with the rules.
__all__ = ["FINISHED_RUN", "REOPENABLE_RUN", "UNFINISHED_STEP", "RunStatus", "StepStatus"]

FINISHED_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
# Finished runs that a retry re-opens; a succeeded run never changes again.
REOPENABLE_RUN = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
UNFINISHED_STEP = frozenset({StepStatus.WAITING, StepStatus.READY, StepStatus.RUNNING})
# Where a worker's outcome may find its step; the platform's own verdicts (lost worker, dead letter) may also end a
# step that is merely ready.
ENDABLE_BY_WORKER = (StepStatus.RUNNING,)
ENDABLE_BY_PLATFORM = (StepStatus.RUNNING, StepStatus.READY)

WORKER_LOST = {"type": "WorkerLost", "message": "the worker running this step stopped before it finished"}
LEASE_ENDED = {"lease_owner": None, "lease_expires_at": None}
# A run's first event, `run.created`, is recorded with the run itself; `Transition.record` numbers every later one.
FIRST_EVENT_SEQ = 1


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float

    def delay(self, attempt: int) -> timedelta:
        """Exponential backoff with full jitter (0.5x-1.5x), so retries of a burst do not arrive together."""
        seconds = min(self.max_s, self.base_s * 2 ** max(attempt - 1, 0))
        return timedelta(seconds=seconds * random.uniform(0.5, 1.5))


@dataclass(frozen=True)
class Timings:
    """How long the outbox waits before publishing a ready step again: after it became ready (`republish_after`,
    in case the publish after commit was lost) and after the broker confirmed it (`unclaimed_after`)."""

    retry: RetryPolicy
    republish_after: timedelta
    unclaimed_after: timedelta


class FailureDecision(StrEnum):
    RETRY = "retry"
    FAIL = "fail"


# The rows transitions read, as the store returns them (any object with these attributes).


class StepRow(Protocol):
    id: int
    run_id: uuid.UUID
    name: str
    attempt: int


class FailedStepRow(StepRow, Protocol):
    max_attempts: int


class SucceededStepRow(StepRow, Protocol):
    dependents: list[str]


class LeasedStepRow(Protocol):
    id: int
    queue: str
    attempt: int
    max_attempts: int


class ReleasedStepRow(Protocol):
    id: int
    name: str
    queue: str
    attempt: int


class CountedDownStepRow(ReleasedStepRow, Protocol):
    waiting_on: int


class DueStepRow(Protocol):
    id: int
    queue: str
    attempt: int
    ready_at: datetime
    # The `dispatch_after` the step was due at, before the sweep moved it on.
    due_at: datetime
    published_at: datetime | None


class RunStepRow(Protocol):
    id: int
    name: str
    queue: str
    status: str
    attempt: int
    depends_on: list[str]


@dataclass
class Transition:
    """What one transaction changes in runs: the working copies of the runs it read (only the touched ones are
    saved), the events it records and the steps to publish once it commits."""

    timestamp: datetime
    runs: dict[uuid.UUID, RunState]
    touched: set[uuid.UUID] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)

    @classmethod
    def of(cls, runs: Mapping[uuid.UUID, RunState], timestamp: datetime) -> Transition:
        return cls(timestamp, {run_id: replace(run) for run_id, run in runs.items()})

    def record(self, run_id: uuid.UUID, kind: str, step: str | None = None, data: dict[str, Any] | None = None):
        """Numbers the event after its run's last one: the one place a run's event sequence moves."""
        run = self.runs[run_id]
        run.event_seq += 1
        self.events.append(event(run_id, run.event_seq, kind, step, data or {}, self.timestamp))
        self.touched.add(run_id)

    def saved_runs(self) -> list[RunState]:
        return [self.runs[run_id] for run_id in self.touched]

    def changes(self) -> Changes:
        return Changes(dispatches=self.dispatches, events=self.events)


def event(run_id: uuid.UUID, seq: int, kind: str, step: str | None, data: dict, timestamp: datetime) -> dict:
    return {"run_id": run_id, "seq": seq, "type": kind, "step": step, "data": data, "created_at": timestamp}


def ready(ready_at: datetime, dispatch_after: datetime) -> dict[str, Any]:
    """The column values of a step that becomes ready: runnable from `ready_at`, and published again by the
    outbox after `dispatch_after` unless a claim takes it first."""
    return {"status": StepStatus.READY, "ready_at": ready_at, "dispatch_after": dispatch_after, "published_at": None}


def ready_now(timings: Timings, timestamp: datetime) -> dict[str, Any]:
    return ready(timestamp, timestamp + timings.republish_after)


def waiting() -> dict[str, Any]:
    """The column values of a step that waits for its dependencies: not runnable, so not published."""
    return {"status": StepStatus.WAITING, "ready_at": None, "dispatch_after": None, "published_at": None}


# Creating runs


def new_run(request: NewRun, run_id: uuid.UUID, timestamp: datetime) -> dict[str, Any]:
    """A run's row as it starts: queued, with its `run.created` event already numbered."""
    return {
        "id": run_id,
        "workflow_id": request.workflow.id,
        "workflow_name": request.workflow.name,
        "workflow_version": request.workflow.version,
        "status": RunStatus.QUEUED,
        "input": request.input,
        "steps_remaining": len(request.workflow.spec.steps),
        "event_seq": FIRST_EVENT_SEQ,
        "api_key_id": request.api_key_id,
        "idempotency_key": request.idempotency_key,
        "created_at": timestamp,
        "trace_context": request.trace_context,
    }


def new_steps(request: NewRun, run_id: uuid.UUID, timings: Timings, timestamp: datetime) -> tuple[list, dict]:
    """The step rows of a new run (those with no dependency ready at once, the others waiting) and its
    `run.created` event."""
    spec = request.workflow.spec
    dependents = spec.dependents()
    initial, rows = {}, []
    for step in spec.steps:
        readiness = waiting() if step.depends_on else ready_now(timings, timestamp)
        initial[step.name] = readiness["status"]
        rows.append(
            {
                "run_id": run_id,
                "name": step.name,
                "task": step.task,
                "queue": step.queue,
                **readiness,
                "attempt": 0,
                "max_attempts": step.max_attempts,
                "timeout_s": step.timeout_s,
                "depends_on": list(step.depends_on),
                "dependents": dependents[step.name],
                "waiting_on": len(step.depends_on),
                "input": step.input,
            }
        )
    created = event(run_id, FIRST_EVENT_SEQ, "run.created", None, {"workflow": spec.name, "steps": initial}, timestamp)
    return rows, created


# Claiming


def claim(owner: str, lease_s: float, timestamp: datetime) -> dict[str, Any]:
    """The column values of a step a worker claims (the store also counts the attempt): running under the
    worker's lease."""
    return {
        "status": StepStatus.RUNNING,
        "lease_owner": owner,
        "lease_expires_at": timestamp + timedelta(seconds=lease_s),
        "started_at": timestamp,
    }


def after_claim(claimed: Sequence[StepRow], runs: Mapping[uuid.UUID, RunState], timestamp: datetime) -> Transition:
    """A queued run starts running with its first claimed step; every claimed step records `step.started`."""
    transition = Transition.of(runs, timestamp)
    for run_id in {row.run_id for row in claimed}:
        run = transition.runs[run_id]
        if run.status == RunStatus.QUEUED:
            run.status, run.started_at = RunStatus.RUNNING, run.started_at or timestamp
        transition.touched.add(run_id)
    for row in claimed:
        run_status = transition.runs[row.run_id].status
        transition.record(row.run_id, "step.started", row.name, {"attempt": row.attempt, "run_status": run_status})
    return transition


# Outcomes


def succeeded(timestamp: datetime) -> dict[str, Any]:
    """The column values of a step whose attempt succeeded (its output, when it has one, is written after)."""
    return {"status": StepStatus.SUCCEEDED, "output": None, "error": None, "finished_at": timestamp, **LEASE_ENDED}


def after_failure(outcome: Outcome, attempt: int, max_attempts: int) -> FailureDecision:
    if outcome.retryable and attempt < max_attempts:
        return FailureDecision.RETRY
    return FailureDecision.FAIL


def run_status_after_step_success(steps_remaining: int, status: RunStatus) -> RunStatus:
    return RunStatus.SUCCEEDED if steps_remaining == 0 and status not in FINISHED_RUN else status


@dataclass(frozen=True)
class RunFailure:
    """The step whose failure fails its run, and how it failed."""

    run_id: uuid.UUID
    step: str
    attempt: int
    step_id: int
    error: dict[str, Any] | None


@dataclass(frozen=True)
class Release:
    """Steps of one run that each have one dependency fewer to wait for (a name twice: two fewer)."""

    run_id: uuid.UUID
    names: list[str]
    trace_context: dict[str, str] | None


@dataclass
class OutcomePlan:
    transition: Transition
    # Column values of each step to retry after its backoff, keyed by `step_id`.
    retries: list[dict[str, Any]]
    failures: list[RunFailure]
    releases: list[Release]


def after_outcomes(
    succeeded_rows: Sequence[SucceededStepRow],
    failed_rows: Sequence[FailedStepRow],
    outcomes: Mapping[int, Outcome],
    runs: Mapping[uuid.UUID, RunState],
    timings: Timings,
    timestamp: datetime,
) -> OutcomePlan:
    """Successes count down their run (the last one succeeds it) and release their dependents; a failure with
    attempts left is retried after a backoff, any other fails its run (the first such step of a run names it), and
    a run that fails or is already finished releases nothing."""
    transition = Transition.of(runs, timestamp)
    released: dict[uuid.UUID, list[str]] = defaultdict(list)
    releasing_trace: dict[uuid.UUID, dict[str, str] | None] = {}
    for row in succeeded_rows:
        outcome = outcomes[row.id]
        if row.dependents:
            releasing_trace[row.run_id] = outcome.trace_context
        data = {"attempt": row.attempt, "duration_s": outcome.duration_s}
        transition.record(row.run_id, "step.succeeded", row.name, data)
        released[row.run_id].extend(row.dependents)
        run = transition.runs[row.run_id]
        run.steps_remaining -= 1
        new_status = run_status_after_step_success(run.steps_remaining, RunStatus(run.status))
        if new_status != run.status:
            run.status, run.finished_at = new_status, timestamp
            transition.record(row.run_id, f"run.{new_status}")
    retries, failures = [], {}
    for row in failed_rows:
        outcome = outcomes[row.id]
        if after_failure(outcome, row.attempt, row.max_attempts) is FailureDecision.RETRY:
            ready_at = timestamp + timings.retry.delay(row.attempt)
            retries.append({"step_id": row.id, "error": outcome.error, **ready(ready_at, ready_at), **LEASE_ENDED})
            data = {"attempt": row.attempt, "error": outcome.error, "next_attempt_at": ready_at.isoformat()}
            transition.record(row.run_id, "step.retrying", row.name, data)
        else:
            failures.setdefault(row.run_id, RunFailure(row.run_id, row.name, row.attempt, row.id, outcome.error))
    releases = [
        Release(run_id, names, releasing_trace.get(run_id))
        for run_id, names in released.items()
        if names and run_id not in failures and transition.runs[run_id].status not in FINISHED_RUN
    ]
    return OutcomePlan(transition, retries, list(failures.values()), releases)


def failed(error: dict[str, Any] | None, timestamp: datetime) -> dict[str, Any]:
    """The column values of a step that failed for good. Its lease's expiry stays: the owner alone is cleared."""
    return {"status": StepStatus.FAILED, "error": error, "finished_at": timestamp, "lease_owner": None}


def cancelled(timestamp: datetime) -> dict[str, Any]:
    """The column values of an unfinished step whose run ended. A running step keeps its lease: its attempt goes
    on until the worker reports it, and until then a retry of the run must not start the step again."""
    return {"status": StepStatus.CANCELLED, "finished_at": timestamp}


def after_run_failed(transition: Transition, failure: RunFailure, cancelled_steps: Iterable[str]) -> None:
    """The failed step fails its run; the run's unfinished steps were cancelled with it."""
    run_id = failure.run_id
    transition.record(run_id, "step.failed", failure.step, {"attempt": failure.attempt, "error": failure.error})
    for name in cancelled_steps:
        transition.record(run_id, "step.cancelled", name)
    run = transition.runs[run_id]
    run.status, run.finished_at = RunStatus.FAILED, transition.timestamp
    run.error = {"step": failure.step, **(failure.error or {})}
    transition.record(run_id, "run.failed", None, {"step": failure.step, "error": failure.error})


def waiting_on_nothing(rows: Iterable[CountedDownStepRow]) -> list[CountedDownStepRow]:
    """The released steps that have no dependency left to wait for: they become ready."""
    return [row for row in rows if row.waiting_on == 0]


def after_release(transition: Transition, release: Release, now_ready: Iterable[ReleasedStepRow]) -> None:
    """Steps left with nothing to wait for are ready: published after commit, traced as children of the attempt
    that released them."""
    for row in now_ready:
        transition.dispatches.append(Dispatch(row.id, row.queue, release.trace_context, attempt=row.attempt))
        transition.record(release.run_id, "step.ready", row.name)


def stale_attempt_released(timestamp: datetime) -> dict[str, Any]:
    """The column values of a step whose ended attempt is no longer its own (the run was cancelled, retried, or
    the lease taken over): the attempt gives up its lease, so the step may be claimed, and published, at once. Its
    earlier message was skipped while the lease was live, so it counts as unpublished for the recovery sweep."""
    return {**LEASE_ENDED, "dispatch_after": timestamp, "published_at": None}


# The recovery sweep


class RepublishReason(StrEnum):
    # Published (or due to be, after its transaction committed) and never confirmed by the broker.
    UNCONFIRMED = "unconfirmed"
    # Confirmed by the broker, and nobody claimed it in time.
    UNCLAIMED = "unclaimed"


def republish_reason(row: DueStepRow) -> RepublishReason | None:
    """Why the recovery sweep publishes a due step, when it is again. None: its first publish, at the end of a
    retry's backoff (a retry is due at its `ready_at`, while every other readiness was published, or due to be, at
    once and is next due later)."""
    if row.published_at is not None:
        return RepublishReason.UNCLAIMED
    if row.due_at > row.ready_at:
        return RepublishReason.UNCONFIRMED
    return None


# Lost workers and dead letters


def after_lost_lease(row: LeasedStepRow) -> FailureDecision:
    """A step whose worker stopped renewing its lease runs again while it has attempts left."""
    return after_failure(Outcome(row.id, False), row.attempt, row.max_attempts)


def requeued(timings: Timings, timestamp: datetime) -> dict[str, Any]:
    """The column values of a step whose worker was lost and that runs again: ready at once, lease ended."""
    return {**ready_now(timings, timestamp), **LEASE_ENDED}


def worker_lost(step_id: int) -> Outcome:
    return Outcome(step_id, False, error=WORKER_LOST, retryable=False)


def dead_lettered(step_id: int, reason: str) -> Outcome:
    """A step whose message was dead-lettered fails for good: its message will not come back."""
    error = {"type": "DeadLettered", "message": f"the step's message was dead-lettered: {reason}"}
    return Outcome(step_id, False, error=error, retryable=False)


# Cancelling and retrying runs


def can_cancel(status: str) -> bool:
    return status not in FINISHED_RUN


def can_retry(status: str) -> bool:
    return status in REOPENABLE_RUN


def after_cancel(run: RunState, cancelled_steps: Iterable[str], timestamp: datetime) -> Transition:
    """The run ends cancelled, after its unfinished steps."""
    transition = Transition.of({run.id: run}, timestamp)
    for name in cancelled_steps:
        transition.record(run.id, "step.cancelled", name)
    transition.record(run.id, "run.cancelled")
    cancelled_run = transition.runs[run.id]
    cancelled_run.status, cancelled_run.finished_at = RunStatus.CANCELLED, timestamp
    return transition


@dataclass
class RetryPlan:
    transition: Transition
    # Column values of each step to run again, keyed by `step_id`.
    steps: list[dict[str, Any]]


def retry_run(
    run: RunState,
    steps: Sequence[RunStepRow],
    attempts_per_step: Mapping[str, int],
    timings: Timings,
    timestamp: datetime,
) -> RetryPlan:
    """Every step that did not succeed runs again: ready when all its parents succeeded, else waiting for those
    that did not. Each gets its full attempts again, numbered on from the ones it had; a step's lease stays, so a
    last attempt that may still be running keeps a claim from starting it twice."""
    done = {row.name for row in steps if row.status == StepStatus.SUCCEEDED}
    transition = Transition.of({run.id: run}, timestamp)
    redo = []
    for row in steps:
        if row.name in done:
            continue
        waiting_on = sum(1 for parent in row.depends_on if parent not in done)
        values = ready_now(timings, timestamp) if waiting_on == 0 else waiting()
        values.update(
            step_id=row.id,
            waiting_on=waiting_on,
            max_attempts=row.attempt + attempts_per_step[row.name],
            error=None,
            output=None,
            started_at=None,
            finished_at=None,
        )
        redo.append(values)
        if waiting_on == 0:
            transition.dispatches.append(Dispatch(row.id, row.queue, attempt=row.attempt))
    reopened = transition.runs[run.id]
    reopened.status, reopened.steps_remaining = RunStatus.QUEUED, len(redo)
    reopened.finished_at, reopened.error = None, None
    transition.record(run.id, "run.retried", None, {"steps": [values["step_id"] for values in redo]})
    return RetryPlan(transition, redo)
