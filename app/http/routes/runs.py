"""Starting runs (one, or a batch all or none), reading and listing them, cancelling and retrying them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.adapters.payloads import PayloadTooLargeError
from app.domain import ApiKey
from app.engine.engine import RunRequest, UnknownWorkflowError
from app.engine.idempotency import ConflictingKeysInBatchError, IdempotencyKeyReusedError
from app.engine.state import RunStatus
from app.http import schemas
from app.http.deps import (
    IdempotencyKey,
    PageLimit,
    PlatformDep,
    Reader,
    Submitter,
    WorkflowName,
    decode_cursor,
    encode_cursor,
)
from app.http.errors import AUTHENTICATED, WITH_BODY, ApiError, error_responses
from app.runtime import Platform

router = APIRouter(prefix="/v1", tags=["runs"])


@router.post(
    "/workflows/{name}/runs",
    status_code=201,
    response_model=schemas.RunCreated,
    responses={
        200: {"model": schemas.RunCreated, "description": "The Idempotency-Key returned an existing run."},
        **error_responses(*AUTHENTICATED, 404, *WITH_BODY),
    },
    summary="Start a run of the workflow's latest version",
)
async def start_run(
    name: WorkflowName,
    body: schemas.RunIn,
    response: Response,
    platform: PlatformDep,
    key: Submitter,
    idempotency_key: IdempotencyKey = None,
):
    (run,) = await _start(platform, [RunRequest(name, body.input, idempotency_key)], key)
    response.status_code = 201 if run.created else 200
    return schemas.RunCreated(id=run.id, workflow=run.workflow, status=run.status, created=run.created)


@router.post(
    "/runs:batch",
    status_code=201,
    response_model=schemas.BatchRunsOut,
    responses=error_responses(*AUTHENTICATED, 404, *WITH_BODY),
    summary="Start many runs in one request (all or none)",
)
async def start_runs(body: schemas.BatchRunsIn, platform: PlatformDep, key: Submitter):
    most = platform.settings.max_batch_runs
    if len(body.runs) > most:
        raise ApiError(422, "batch_too_large", f"{len(body.runs)} runs; a batch holds at most {most}")
    requests = [RunRequest(item.workflow, item.input, item.idempotency_key) for item in body.runs]
    created = await _start(platform, requests, key, batch=True)
    return schemas.BatchRunsOut(
        runs=[schemas.RunCreated(id=r.id, workflow=r.workflow, status=r.status, created=r.created) for r in created]
    )


@router.get(
    "/runs/{run_id}",
    response_model=schemas.RunOut,
    responses=error_responses(*AUTHENTICATED, 404),
    summary="A run with its steps, outputs, errors and timings",
)
async def get_run(run_id: uuid.UUID, platform: PlatformDep, _key: Reader):
    found = await platform.queries.run_with_steps(run_id)
    if found is None:
        raise ApiError(404, "not_found", f"no run {run_id}")
    run, steps = found
    return schemas.RunOut(
        **_summary(run).model_dump(),
        input=await platform.queries.run_input(run),
        error=run.error,
        steps=[
            schemas.StepOut(
                name=s.name,
                task=s.task,
                status=s.status,
                depends_on=s.depends_on,
                attempt=s.attempt,
                max_attempts=s.max_attempts,
                input=s.input,
                output=s.output,
                error=s.error,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for s in steps
        ],
    )


@router.get(
    "/runs",
    response_model=schemas.RunPage,
    responses=error_responses(*AUTHENTICATED, 400),
    summary="Runs, newest first, filtered and paged by cursor",
)
async def list_runs(
    platform: PlatformDep,
    _key: Reader,
    workflow: Annotated[str | None, Query(pattern=schemas.NAME_PATTERN)] = None,
    status: Annotated[RunStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: PageLimit = 50,
):
    after = _decode_cursor(cursor) if cursor else None
    rows = await platform.queries.runs(workflow, status, after, limit + 1)
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return schemas.RunPage(runs=[_summary(row) for row in page], next_cursor=next_cursor)


@router.post(
    "/runs/{run_id}/cancel",
    response_model=schemas.RunStatusOut,
    responses=error_responses(*AUTHENTICATED, 404, 409),
    summary="Cancel a run and its unfinished steps",
)
async def cancel_run(run_id: uuid.UUID, platform: PlatformDep, _key: Submitter):
    status, _changed = await platform.engine.cancel_run(run_id)
    if status is None:
        raise ApiError(404, "not_found", f"no run {run_id}")
    if status != "cancelled":
        raise ApiError(409, "run_finished", f"run {run_id} already {status}")
    return schemas.RunStatusOut(id=run_id, status=status)


@router.post(
    "/runs/{run_id}/retry",
    response_model=schemas.RunStatusOut,
    responses=error_responses(*AUTHENTICATED, 404, 409),
    summary="Run a failed run's failed steps again",
)
async def retry_run(run_id: uuid.UUID, platform: PlatformDep, _key: Submitter):
    status, changed = await platform.engine.retry_run(run_id)
    if status is None:
        raise ApiError(404, "not_found", f"no run {run_id}")
    if not changed:
        raise ApiError(409, "run_not_failed", f"run {run_id} is {status}; only failed or cancelled runs retry")
    return schemas.RunStatusOut(id=run_id, status=status)


async def _start(platform: Platform, requests: list[RunRequest], key: ApiKey, *, batch: bool = False):
    """Starts the runs, turning each reason the engine refuses them for into the API's error."""
    try:
        return await platform.engine.start_runs(requests, key.id)
    except UnknownWorkflowError as error:
        raise ApiError(404, "not_found", f"no workflow {error.args[0]!r}") from None
    except IdempotencyKeyReusedError as error:
        field = f"body.runs.{error.index}.idempotency_key" if batch else "header.idempotency-key"
        raise ApiError(422, "idempotency_key_reused", f"{field}: {error}") from None
    except ConflictingKeysInBatchError as error:
        raise ApiError(422, "idempotency_key_reused", str(error)) from None
    except PayloadTooLargeError as error:
        raise ApiError(413, "input_too_large", str(error)) from None


def _summary(run) -> schemas.RunSummary:
    return schemas.RunSummary(
        id=run.id,
        workflow=run.workflow_name,
        version=run.workflow_version,
        status=run.status,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _encode_cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    return encode_cursor(f"{created_at.isoformat()}|{run_id}")


def _run_position(position: str) -> tuple[datetime, uuid.UUID]:
    created_at, run_id = position.split("|")
    return datetime.fromisoformat(created_at), uuid.UUID(run_id)


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    after = decode_cursor(cursor, _run_position)
    try:
        # The database compares in UTC: a time that leaves the calendar's range there (0001-01-01T00:00+05:00)
        # is well-formed but can match nothing.
        after[0].astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "invalid_request", "query.cursor: its time is out of range in UTC") from None
    return after
