"""The messages the broker dead-lettered, for operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.http import schemas
from app.http.deps import INT64_MAX, PageLimit, PlatformDep, Reader
from app.http.errors import AUTHENTICATED, error_responses

router = APIRouter(prefix="/v1", tags=["operations"])


@router.get(
    "/dead-letters",
    response_model=list[schemas.DeadLetterOut],
    responses=error_responses(*AUTHENTICATED),
    summary="Messages the broker dead-lettered, newest first",
)
async def list_dead_letters(
    platform: PlatformDep,
    _key: Reader,
    before: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    limit: PageLimit = 50,
):
    rows = await platform.queries.dead_letters(before, limit)
    return [schemas.DeadLetterOut.model_validate(row, from_attributes=True) for row in rows]
