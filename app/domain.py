"""The platform's plain data: what the engine and the adapters hand each other. Nothing here decides anything or
does any I/O, so both layers may import it while neither imports the other (the engine decides, in
`app/engine/state.py`; the adapters store and carry, in `app/adapters/`)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
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


@dataclass(frozen=True)
class StepSpec:
    name: str
    task: str
    depends_on: tuple[str, ...]
    input: dict[str, Any]
    retries: int
    timeout_s: float
    queue: str

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    steps: tuple[StepSpec, ...]

    def dependents(self) -> dict[str, list[str]]:
        children: dict[str, list[str]] = {step.name: [] for step in self.steps}
        for step in self.steps:
            for parent in step.depends_on:
                children[parent].append(step.name)
        return children

    def canonical(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": [
                {
                    "name": s.name,
                    "task": s.task,
                    "depends_on": list(s.depends_on),
                    "input": s.input,
                    "retries": s.retries,
                    "timeout_s": s.timeout_s,
                    "queue": s.queue,
                }
                for s in self.steps
            ],
        }

    def digest(self) -> str:
        """Identifies the definition's content: registering the same content again creates no new version."""
        encoded = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> WorkflowSpec:
        return cls(
            name=data["name"],
            steps=tuple(
                StepSpec(
                    name=s["name"],
                    task=s["task"],
                    depends_on=tuple(s["depends_on"]),
                    input=s["input"],
                    retries=s["retries"],
                    timeout_s=s["timeout_s"],
                    queue=s["queue"],
                )
                for s in data["steps"]
            ),
        )


@dataclass(frozen=True)
class Workflow:
    id: int
    name: str
    version: int
    spec: WorkflowSpec
    created_at: datetime


@dataclass(frozen=True)
class NewRun:
    workflow: Workflow
    input: Any
    api_key_id: uuid.UUID | None = None
    idempotency_key: str | None = None
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True)
class CreatedRun:
    id: uuid.UUID
    workflow: str
    status: str
    created: bool


@dataclass(frozen=True)
class KeyReuse:
    """A request (by its position in a creation batch) that repeats a key, and what the key's first use started."""

    index: int
    workflow: str
    input: Any


@dataclass
class RunState:
    """The columns of a run that its transitions read and change; a transition works on a copy it then saves."""

    id: uuid.UUID
    status: str
    input: Any
    steps_remaining: int
    event_seq: int
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, Any] | None
    trace_context: dict[str, str] | None


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
class Dispatch:
    """A ready step to publish to its queue, with the trace context that made it ready when there is one."""

    step_id: int
    queue: str
    trace_context: dict[str, str] | None = None
    # The step's attempt count when it was made ready: marking it published must not mark a later readiness.
    attempt: int = 0


@dataclass(frozen=True)
class ClaimedStep:
    id: int
    run_id: uuid.UUID
    name: str
    task: str
    attempt: int
    timeout_s: float
    input: Any
    run_input: Any
    upstream: dict[str, Any]
    run_trace_context: dict[str, str] | None = None


@dataclass
class Changes:
    """What a transaction changed that others must hear about once it commits."""

    dispatches: list[Dispatch] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: Changes) -> None:
        self.dispatches.extend(other.dispatches)
        self.events.extend(other.events)


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class PayloadError(Exception):
    """A value that cannot be stored as a step's input or output: the step fails for good."""


def storable_text(text: str) -> str:
    """`text` as PostgreSQL can store it: NUL (which its text and JSONB reject) and lone surrogates (which UTF-8
    cannot encode) become U+FFFD. The one test of storable text: outputs are refused when it changes them, error
    messages are stored through it."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        # A well-formed surrogate pair becomes its character; a lone surrogate becomes U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
