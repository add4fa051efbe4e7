"""States of runs and steps, and the rules that move them. Every transition is decided here, once.

A run:   queued -> running -> succeeded | failed | cancelled        (retry: failed/cancelled -> queued)
A step:  waiting -> ready -> running -> succeeded
                      ^         |-> ready (retry after backoff, or its worker was lost)
                      |         |-> failed (attempts exhausted, permanent error, dead-lettered)
         any unfinished step -> cancelled (the run was cancelled or failed)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
# Finished runs that a retry re-opens; a succeeded run never changes again.
REOPENABLE_RUN = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
UNFINISHED_STEP = frozenset({StepStatus.WAITING, StepStatus.READY, StepStatus.RUNNING})


@dataclass(frozen=True)
class Outcome:
    """How one attempt of a step ended, as the worker (or the platform, for a lost worker) reports it."""

    step_id: int
    succeeded: bool
    output: Any = None
    # The attempt that ended: a worker's outcome is recorded only while it is still the step's attempt.
    attempt: int = 0
    error: dict[str, Any] | None = None
    # False when retrying cannot help (permanent task error, dead-lettered message).
    retryable: bool = True
    duration_s: float = 0.0
    # Trace context of the attempt's span: the steps it releases are traced as its children.
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float

    def delay(self, attempt: int) -> timedelta:
        """Exponential backoff with full jitter (0.5x-1.5x), so retries of a burst do not arrive together."""
        seconds = min(self.max_s, self.base_s * 2 ** max(attempt - 1, 0))
        return timedelta(seconds=seconds * random.uniform(0.5, 1.5))


class FailureDecision(StrEnum):
    RETRY = "retry"
    FAIL = "fail"


def after_failure(outcome: Outcome, attempt: int, max_attempts: int) -> FailureDecision:
    if outcome.retryable and attempt < max_attempts:
        return FailureDecision.RETRY
    return FailureDecision.FAIL


def run_status_after_step_success(steps_remaining: int, status: RunStatus) -> RunStatus:
    return RunStatus.SUCCEEDED if steps_remaining == 0 and status not in FINISHED_RUN else status


def retry_schedule(now: datetime, policy: RetryPolicy, attempt: int) -> datetime:
    return now + policy.delay(attempt)
