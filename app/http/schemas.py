"""Request and response bodies of the API, as the OpenAPI document shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.adapters.payloads import contains_nul
from app.engine.definitions import StepSpec, WorkflowSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
Role = Literal["admin", "submit", "read"]


def _storable(value: Any) -> Any:
    if contains_nul(value):
        raise ValueError("text must not contain the NUL character (\\u0000)")
    return value


# What the database stores as given: no text in it may hold NUL, which PostgreSQL rejects.
StorableObject = Annotated[
    dict[str, Any],
    AfterValidator(_storable),
    Field(description="Any JSON object; no text in it, keys included, may contain the NUL character (U+0000)."),
]
StorableText = Annotated[str, Field(pattern=r"^[^\x00]*$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepIn(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique within the workflow.")
    task: StorableText = Field(min_length=1, max_length=200, description="A registered task, e.g. `builtin.echo`.")
    depends_on: list[StorableText] = Field(default_factory=list, max_length=200)
    input: StorableObject = Field(default_factory=dict)
    retries: int = Field(0, ge=0, le=50, description="Attempts after the first one.")
    timeout_s: float | None = Field(
        None, description="Seconds; > 0 and at most the platform's longest task timeout (default 60, or that limit)."
    )
    queue: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,255}$", description="Defaults to the worker queue.")


class WorkflowIn(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    steps: list[StepIn] = Field(min_length=1, max_length=10_000)

    def to_spec(self, default_queue: str, max_timeout_s: float) -> WorkflowSpec:
        """The engine's definition, with the platform's defaults for what the request left out."""
        return WorkflowSpec(
            name=self.name,
            steps=tuple(
                StepSpec(
                    name=step.name,
                    task=step.task,
                    depends_on=tuple(step.depends_on),
                    input=step.input,
                    retries=step.retries,
                    timeout_s=step.timeout_s if step.timeout_s is not None else min(60, max_timeout_s),
                    queue=step.queue or default_queue,
                )
                for step in self.steps
            ),
        )


class WorkflowOut(BaseModel):
    name: str
    version: int
    created: bool = Field(description="False when this exact definition was already registered.")
    created_at: datetime
    steps: list[StepIn]


class RunIn(Strict):
    input: StorableObject = Field(default_factory=dict)


class BatchRunItem(Strict):
    workflow: str = Field(pattern=NAME_PATTERN)
    input: StorableObject = Field(default_factory=dict)
    idempotency_key: StorableText | None = Field(None, min_length=1, max_length=200)


class BatchRunsIn(Strict):
    runs: list[BatchRunItem] = Field(min_length=1)


class RunCreated(BaseModel):
    id: uuid.UUID
    workflow: str
    status: str
    created: bool = Field(description="False when an Idempotency-Key returned an existing run.")


class BatchRunsOut(BaseModel):
    runs: list[RunCreated]


class StepOut(BaseModel):
    name: str
    task: str
    status: str
    depends_on: list[str]
    attempt: int
    max_attempts: int
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunSummary(BaseModel):
    id: uuid.UUID
    workflow: str
    version: int
    status: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunOut(RunSummary):
    input: Any
    error: dict[str, Any] | None = None
    steps: list[StepOut]


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last.")


class RunStatusOut(BaseModel):
    id: uuid.UUID
    status: str


class EventOut(BaseModel):
    seq: int
    type: str
    step: str | None
    data: dict[str, Any]
    created_at: datetime


class DeadLetterOut(BaseModel):
    id: int
    queue: str
    reason: str
    step_ids: list[int]
    body: str
    created_at: datetime


class ApiKeyIn(Strict):
    name: StorableText = Field(min_length=1, max_length=200)
    role: Role


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="Shown once; only its hash is stored.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class ErrorOut(BaseModel):
    error: ErrorBody
