"""The API's refusals, with no service reachable: each answers its status in the one error shape,
`{"error": {"code", "message", "details"}}`. The platform is built on its embedded twins and never started; its
reads are a stand-in that knows one API key per role."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from app.domain import ApiKey
from app.http.api import create_app
from app.runtime import Platform
from app.settings import Settings

pytestmark = pytest.mark.asyncio

BODY_LIMIT = 1024
ROLES = ("read", "submit", "admin")


class StandInReads:
    """Knows the keys `read`, `submit` and `admin` (each holding the role it is named after); listing runs raises
    `runs_error` when one is set."""

    def __init__(self):
        self.keys = {role: ApiKey(uuid.uuid4(), role, role, datetime.now(UTC), None) for role in ROLES}
        self.runs_error: Exception | None = None

    async def api_key_by_secret(self, secret: str) -> ApiKey | None:
        return self.keys.get(secret)

    async def runs(self, *_args) -> list:
        if self.runs_error:
            raise self.runs_error
        return []


@pytest.fixture
def reads() -> StandInReads:
    return StandInReads()


def client(reads: StandInReads, *, key: str = "admin", rate_limit_per_second: int = 1000) -> httpx.AsyncClient:
    settings = Settings(
        database_url="sqlite://",
        max_body_bytes=BODY_LIMIT,
        rate_limit_per_second=rate_limit_per_second,
        api_key_cache_s=0,
    )
    platform = Platform.build(settings, embedded=True)
    platform.queries = reads
    app = create_app(platform, manage_lifecycle=False)
    # The answer a real server sends for an unhandled error, instead of the exception.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {key}"})


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


async def test_a_request_without_an_api_key_answers_401(reads):
    async with client(reads) as api:
        error = error_of(await api.get("/v1/runs", headers={"Authorization": ""}), 401)
    assert error["code"] == "unauthenticated" and "Bearer" in error["message"]


async def test_an_unknown_api_key_answers_401(reads):
    async with client(reads, key="wfp_nope") as api:
        error = error_of(await api.get("/v1/runs"), 401)
    assert error["code"] == "unauthenticated" and "unknown" in error["message"]


async def test_a_key_without_the_role_answers_403_naming_both_roles(reads):
    async with client(reads, key="read") as api:
        error = error_of(await api.post("/v1/api-keys", json={"name": "ops", "role": "read"}), 403)
    assert error["code"] == "forbidden" and "'admin'" in error["message"] and "'read'" in error["message"]


async def test_requests_over_the_rate_limit_answer_429_with_retry_after(reads):
    async with client(reads, rate_limit_per_second=1) as api:
        # Three within at most two one-second windows: one of them is over the limit.
        responses = [await api.get("/v1/runs") for _ in range(3)]
    limited = [response for response in responses if response.status_code == 429]
    assert limited and error_of(limited[0], 429)["code"] == "rate_limited"
    assert int(limited[0].headers["Retry-After"]) >= 1


async def test_an_invalid_parameter_answers_422_naming_it(reads):
    async with client(reads) as api:
        error = error_of(await api.get("/v1/runs", params={"limit": 0}), 422)
    assert error["code"] == "invalid_request" and error["message"].startswith("query.limit: ")
    assert [detail["location"] for detail in error["details"]] == ["query.limit"]


async def test_a_cursor_the_api_did_not_issue_answers_400(reads):
    async with client(reads) as api:
        error = error_of(await api.get("/v1/runs", params={"cursor": "garbage"}), 400)
    assert error["code"] == "invalid_cursor"


async def test_a_body_over_the_limit_answers_413_naming_the_limit(reads):
    async with client(reads) as api:
        response = await api.post("/v1/workflows/x/runs", json={"input": {"blob": "x" * BODY_LIMIT}})
    error = error_of(response, 413)
    assert error["code"] == "body_too_large" and str(BODY_LIMIT) in error["message"]


async def test_an_unknown_path_answers_404(reads):
    async with client(reads) as api:
        assert error_of(await api.get("/v1/nothing-here"), 404)["code"] == "not_found"


async def test_a_method_a_path_does_not_serve_answers_405_naming_every_method_it_does(reads):
    async with client(reads) as api:
        response = await api.delete("/v1/api-keys")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, POST"


async def test_an_unreachable_dependency_answers_503_with_retry_after(reads):
    reads.runs_error = ConnectionRefusedError("database refused the connection")
    async with client(reads) as api:
        response = await api.get("/v1/runs")
    assert error_of(response, 503)["code"] == "unavailable"
    assert response.headers["Retry-After"] == "1"


async def test_an_unexpected_error_answers_500_without_its_message(reads):
    reads.runs_error = RuntimeError("a bug")
    async with client(reads) as api:
        response = await api.get("/v1/runs")
    assert error_of(response, 500)["code"] == "internal"
    assert "a bug" not in response.text
