"""Registering workflows and reading their versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.engine.definitions import DefinitionError
from app.http import schemas
from app.http.deps import INT32_MAX, PlatformDep, Reader, Submitter, WorkflowName
from app.http.errors import AUTHENTICATED, WITH_BODY, ApiError, error_responses

router = APIRouter(prefix="/v1", tags=["workflows"])


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
        steps=[schemas.StepIn(**step) for step in workflow.spec.canonical()["steps"]],
    )
