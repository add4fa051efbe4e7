"""What the routes share: the platform they serve, authentication with role checks and rate limits, and the types
of the parameters several routes take (names, bounds, paging, the Idempotency-Key header)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Header, Query
from fastapi import Path as FastApiPath
from starlette.requests import HTTPConnection

from app.adapters.cache import RateLimiter
from app.domain import ApiKey
from app.http import schemas
from app.http.errors import ApiError
from app.runtime import Platform

ROLE_RANK = {"read": 0, "submit": 1, "admin": 2}
# Bounds of the database's integer columns: a larger number in a request is a 422, never a database error.
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1

WorkflowName = Annotated[str, FastApiPath(pattern=schemas.NAME_PATTERN)]
PageLimit = Annotated[int, Query(ge=1, le=500)]
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200)]


class ApiKeys:
    """Looks up API keys by their hash, caching hits briefly so authentication costs no query per request."""

    def __init__(self, platform: Platform):
        self._platform = platform
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def resolve(self, secret: str) -> ApiKey | None:
        ttl = self._platform.settings.api_key_cache_s
        cached = self._cache.get(secret)
        if cached and time.monotonic() - cached[0] < ttl:
            return cached[1]
        key = await self._platform.queries.api_key_by_secret(secret)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[secret] = (time.monotonic(), key)
        return key

    def forget(self) -> None:
        self._cache.clear()


class Gate:
    """Admits a request whose API key is known, holds at least the role asked for and is within its rate limit;
    refuses anything else with the ApiError that says why."""

    def __init__(self, platform: Platform):
        self.api_keys = ApiKeys(platform)
        self._per_second = platform.settings.rate_limit_per_second
        self._limiter = RateLimiter(platform.redis, self._per_second)

    async def admit(self, authorization: str | None, role: str) -> ApiKey:
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(401, "unauthenticated", "send an API key as 'Authorization: Bearer <key>'")
        key = await self.api_keys.resolve(secret.strip())
        if key is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked API key")
        if ROLE_RANK[key.role] < ROLE_RANK[role]:
            raise ApiError(403, "forbidden", f"this needs the {role!r} role; the key has {key.role!r}")
        allowance = await self._limiter.take(str(key.id))
        if not allowance.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"more than {self._per_second} requests per second for this key",
                headers={"Retry-After": str(allowance.retry_after_s)},
            )
        return key


def install(app: FastAPI, platform: Platform) -> None:
    """Makes `platform` the one this application's routes serve, behind a gate of its own."""
    app.state.platform = platform
    app.state.gate = Gate(platform)


# Async, like every dependency here: a plain function would be sent to the thread pool on each request.
async def get_platform(connection: HTTPConnection) -> Platform:
    return connection.app.state.platform


async def get_gate(connection: HTTPConnection) -> Gate:
    return connection.app.state.gate


PlatformDep = Annotated[Platform, Depends(get_platform)]
GateDep = Annotated[Gate, Depends(get_gate)]


def require(role: str):
    """A dependency admitting API keys that hold `role` or a higher one; it answers the key."""

    async def authorised(gate: GateDep, authorization: Annotated[str | None, Header()] = None) -> ApiKey:
        return await gate.admit(authorization, role)

    return authorised


Reader = Annotated[ApiKey, Depends(require("read"))]
Submitter = Annotated[ApiKey, Depends(require("submit"))]
Admin = Annotated[ApiKey, Depends(require("admin"))]


Position = TypeVar("Position")


def encode_cursor(position: str) -> str:
    """An opaque cursor naming where a page ended."""
    return base64.urlsafe_b64encode(position.encode()).decode()


def decode_cursor(cursor: str, parse: Callable[[str], Position]) -> Position:
    """The position a cursor this API returned names, read by `parse`; 400 for anything else."""
    try:
        return parse(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, binascii.Error):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None
