"""Registering workflows, listing them, and reading their versions."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.engine.definitions import DefinitionError
from app.http import schemas
from app.http.deps import (
    INT32_MAX,
    PageLimit,
    PlatformDep,
    Reader,
    Submitter,
    WorkflowName,
    decode_cursor,
    encode_cursor,
)
from app.http.errors import AUTHENTICATED, WITH_BODY, ApiError, error_responses

router = APIRouter(prefix="/v1", tags=["workflows"])
Cursor = Annotated[str | None, Query(max_length=400)]


@router.post(
    "/workflows",
    status_code=201,
    response_model=schemas.WorkflowOut,
    responses={
        200: {"model": schemas.WorkflowOut, "description": "This definition is already the latest."},
        **error_responses(*AUTHENTICATED, *WITH_BODY),
    },
    summary="Register a workflow; a changed definition becomes its next version",
)
async def register_workflow(body: schemas.WorkflowIn, response: Response, platform: PlatformDep, _key: Submitter):
    spec = body.to_spec(platform.settings.worker_queue, platform.settings.max_task_timeout_s)
    try:
        workflow, created = await platform.engine.register_workflow(spec)
    except DefinitionError as error:
        raise ApiError(422, "invalid_workflow", str(error)) from None
    response.status_code = 201 if created else 200
    return _workflow_out(workflow, created)


@router.get(
    "/workflows",
    response_model=schemas.WorkflowPage,
    responses=error_responses(*AUTHENTICATED, 400),
    summary="Registered workflows by name, with their latest version, paged by cursor",
)
async def list_workflows(platform: PlatformDep, _key: Reader, cursor: Cursor = None, limit: PageLimit = 50):
    after = decode_cursor(cursor, _name_after) if cursor else None
    rows = await platform.queries.workflows(after, limit + 1)
    page = rows[:limit]
    return schemas.WorkflowPage(
        workflows=[
            schemas.WorkflowSummary(name=name, latest_version=latest, versions=count) for name, latest, count in page
        ],
        next_cursor=encode_cursor(page[-1][0]) if len(rows) > limit else None,
    )


@router.get(
    "/workflows/{name}/versions",
    response_model=schemas.WorkflowVersionPage,
    responses=error_responses(*AUTHENTICATED, 400, 404),
    summary="A workflow's versions with their definitions, newest first, paged by cursor",
)
async def list_workflow_versions(
    name: WorkflowName, platform: PlatformDep, _key: Reader, cursor: Cursor = None, limit: PageLimit = 50
):
    before = decode_cursor(cursor, _version_before) if cursor else None
    rows = await platform.queries.workflow_versions(name, before, limit + 1)
    if not rows and before is None:
        raise ApiError(404, "not_found", f"no workflow {name!r}")
    page = rows[:limit]
    return schemas.WorkflowVersionPage(
        versions=[
            schemas.WorkflowVersionOut(name=w.name, version=w.version, created_at=w.created_at, steps=_steps(w))
            for w in page
        ],
        next_cursor=encode_cursor(str(page[-1].version)) if len(rows) > limit else None,
    )


@router.get(
    "/workflows/{name}",
    response_model=schemas.WorkflowOut,
    responses=error_responses(*AUTHENTICATED, 404),
    summary="The latest version of a workflow",
)
async def get_workflow(
    name: WorkflowName,
    platform: PlatformDep,
    _key: Reader,
    version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
):
    workflow = await platform.queries.workflow(name, version)
    if workflow is None:
        raise ApiError(404, "not_found", f"no workflow {name!r}" + (f" version {version}" if version else ""))
    return _workflow_out(workflow, False)


def _workflow_out(workflow, created: bool) -> schemas.WorkflowOut:
    return schemas.WorkflowOut(
        name=workflow.name,
        version=workflow.version,
        created=created,
        created_at=workflow.created_at,
        steps=_steps(workflow),
    )


def _steps(workflow) -> list[schemas.StepIn]:
    return [schemas.StepIn(**step) for step in workflow.spec.canonical()["steps"]]


def _name_after(position: str) -> str:
    if not re.fullmatch(schemas.NAME_PATTERN, position):
        raise ValueError(position)
    return position


def _version_before(position: str) -> int:
    version = int(position)
    if not 1 <= version <= INT32_MAX:
        raise ValueError(position)
    return version
