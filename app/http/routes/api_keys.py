"""Creating, listing and revoking API keys (admin only), and which key a request is made with (any role)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import Response

from app.domain import ApiKey
from app.http import schemas
from app.http.deps import Admin, GateDep, PlatformDep, Reader
from app.http.errors import AUTHENTICATED, WITH_BODY, ApiError, error_responses
from app.runtime import generate_api_key

router = APIRouter(prefix="/v1", tags=["api keys"])


@router.post(
    "/api-keys",
    status_code=201,
    response_model=schemas.ApiKeyCreated,
    responses=error_responses(*AUTHENTICATED, *WITH_BODY),
    summary="Create an API key (shown once)",
)
async def create_api_key(body: schemas.ApiKeyIn, platform: PlatformDep, _key: Admin):
    secret = generate_api_key()
    key = await platform.engine.create_api_key(body.name, body.role, secret)
    return schemas.ApiKeyCreated(**_key_out(key).model_dump(), key=secret)


@router.get(
    "/api-keys",
    response_model=list[schemas.ApiKeyOut],
    responses=error_responses(*AUTHENTICATED),
    summary="API keys (never their secrets)",
)
async def list_api_keys(platform: PlatformDep, _key: Admin):
    return [_key_out(key) for key in await platform.queries.api_keys()]


@router.get(
    "/me",
    response_model=schemas.ApiKeyOut,
    responses=error_responses(*AUTHENTICATED),
    summary="The API key this request is made with: its name and role (never its secret)",
)
async def current_api_key(key: Reader):
    return _key_out(key)


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    responses=error_responses(*AUTHENTICATED, 404),
    summary="Revoke an API key",
)
async def revoke_api_key(key_id: uuid.UUID, platform: PlatformDep, gate: GateDep, _key: Admin) -> Response:
    if not await platform.engine.revoke_api_key(key_id):
        raise ApiError(404, "not_found", f"no active API key {key_id}")
    # Revoked at once: no cached lookup may admit the key any longer.
    gate.api_keys.forget()
    return Response(status_code=204)


def _key_out(key: ApiKey) -> schemas.ApiKeyOut:
    return schemas.ApiKeyOut(
        id=key.id, name=key.name, role=key.role, created_at=key.created_at, revoked_at=key.revoked_at
    )
