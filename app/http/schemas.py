"""Request and response bodies of the API, as the OpenAPI document shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.domain import StepSpec, WorkflowSpec, storable_text

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
Role = Literal["admin", "submit", "read"]
# Limits of a JSON value the platform stores and passes to tasks: objects and arrays nested at most this deep
# (the JSON encoder stops at 255; 64 is far beyond any real input), integers within signed 64 bits.
MAX_JSON_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _storable(value: Any) -> Any:
    problem = _unstorable(value, "", 1)
    if problem:
        raise ValueError(problem)
    return value


def _unstorable(value: Any, path: str, depth: int) -> str | None:
    """What in a JSON value cannot be stored, and where (a path such as `order.lines[2]`); None if nothing."""
    where = f"'{path if len(path) <= 200 else '...' + path[-200:]}'" if path else "the top level"
    if isinstance(value, str):
        return None if storable_text(value) == value else f"text at {where} holds the NUL character or a lone surrogate"
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return f"the integer at {where} is outside the signed 64-bit range"
    if isinstance(value, dict | list) and depth > MAX_JSON_DEPTH:
        return f"objects and arrays are nested deeper than {MAX_JSON_DEPTH} levels at {where}"
    if isinstance(value, dict):
        for key, item in value.items():
            if storable_text(key) != key:
                return f"a key at {where} holds the NUL character or a lone surrogate"
            if problem := _unstorable(item, f"{path}.{key}" if path else str(key), depth + 1):
                return problem
    if isinstance(value, list):
        for index, item in enumerate(value):
            if problem := _unstorable(item, f"{path}[{index}]", depth + 1):
                return problem
    return None


# What the database stores as given: text PostgreSQL accepts, integers and nesting the JSON encoding holds.
StorableObject = Annotated[
    dict[str, Any],
    AfterValidator(_storable),
    Field(
        description="Any JSON object; no text in it, keys included, may contain the NUL character (U+0000) or a "
        f"lone surrogate; integers within signed 64 bits; objects and arrays nested at most {MAX_JSON_DEPTH} deep."
    ),
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


class WorkflowSummary(BaseModel):
    name: str
    latest_version: int
    versions: int = Field(description="How many versions the workflow has.")


class WorkflowPage(BaseModel):
    workflows: list[WorkflowSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last.")


class WorkflowVersionOut(BaseModel):
    name: str
    version: int
    created_at: datetime
    steps: list[StepIn]


class WorkflowVersionPage(BaseModel):
    versions: list[WorkflowVersionOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last.")


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
    input: Any = Field(None, description="The step's own input, from its definition.")
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
