"""The API under the faults of a real cluster (issue 8): a database that refuses connections, a broker that cannot
be reached, a saturated API process. Each fault is injected for real: a role at its connection limit, a server
answering PostgreSQL's own refusal, a TCP proxy that refuses or drops traffic (`tests/app/faults.py`)."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest

from app.http.api import create_app
from app.liveness import Liveness
from app.runtime import Platform
from app.settings import Settings
from tests.app.conftest import AMQP, POSTGRES, free_port, register, start_process, wait_answering
from tests.app.faults import FaultProxy, RefusingPostgres

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def api_on(settings: Settings):
    """An API over `settings` whose unhandled errors come back as the answer a real server sends."""
    platform = Platform.build(settings)
    await platform.start()
    app = create_app(platform, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers={"Authorization": "Bearer some-key"}
        ) as client:
            yield client
    finally:
        await platform.stop()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"] == "1"


@asynccontextmanager
async def role_at_its_connection_limit(database_url: str):
    """A login role allowed one connection, which the test holds: the role's next connection is refused with
    SQLSTATE 53300 ("too many connections for role")."""
    role = f"limited_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    base, _, database = database_url.rpartition("/")
    url = f"postgresql://{role}@127.0.0.1:5432/{database}"
    held = await asyncpg.connect(url)
    try:
        yield role, url
    finally:
        await held.close()
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


# Item 9: a database refusing connections is an outage (503, retry later), never a 500


async def test_a_role_at_its_connection_limit_answers_503_with_retry_after(settings):
    async with role_at_its_connection_limit(settings.database_url) as (_role, url):
        async with api_on(settings.model_copy(update={"database_url": url})) as api:
            assert_unavailable(await api.get("/v1/runs"))


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is starting up"),
        ("57P03", "the database system is not accepting connections"),
        ("53300", "sorry, too many clients already"),
    ],
)
async def test_a_database_refusing_connections_answers_503_with_retry_after(settings, sqlstate, message):
    async with RefusingPostgres(sqlstate, message) as database:
        async with api_on(settings.model_copy(update={"database_url": database.url()})) as api:
            assert_unavailable(await api.get("/v1/runs"))


async def test_a_database_whose_port_refuses_tcp_connections_answers_503_with_retry_after(settings):
    async with FaultProxy.to(settings.database_url) as proxy:
        await proxy.refuse()
        async with api_on(settings.model_copy(update={"database_url": proxy.url(settings.database_url)})) as api:
            assert_unavailable(await api.get("/v1/runs"))


async def test_readiness_names_the_database_without_its_error_or_role(settings):
    async with role_at_its_connection_limit(settings.database_url) as (role, url):
        async with api_on(settings.model_copy(update={"database_url": url})) as api:
            response = await api.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("not_ready", "not ready: database unreachable")
    assert role not in response.text


async def test_the_database_pool_is_sized_by_the_settings(settings):
    platform = Platform.build(settings.model_copy(update={"database_pool_size": 3, "database_pool_overflow": 2}))
    try:
        pool = platform.store.engine.pool
        assert (pool.size(), pool._max_overflow) == (3, 2)
    finally:
        await platform.store.engine.dispose()
        await platform.redis.aclose()


# Item 12: readiness follows the broker


async def ready(api: httpx.AsyncClient, expected: int, timeout_s: float = 20) -> httpx.Response:
    """Polls /readyz until it answers `expected`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await api.get("/readyz")
        if response.status_code == expected or asyncio.get_running_loop().time() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_readiness_fails_naming_the_broker_while_its_traffic_is_dropped_and_recovers(settings):
    async with FaultProxy.to(AMQP) as proxy:
        async with api_on(settings.model_copy(update={"amqp_url": proxy.url(AMQP)})) as api:
            assert (await ready(api, 200)).status_code == 200
            proxy.blackhole = True
            response = await ready(api, 503)
            assert response.status_code == 503
            assert response.json()["error"]["message"] == "not ready: broker unreachable"
            proxy.blackhole = False
            assert (await ready(api, 200)).status_code == 200


async def test_readiness_fails_naming_the_broker_while_it_refuses_connections(settings):
    async with FaultProxy.to(AMQP) as proxy:
        async with api_on(settings.model_copy(update={"amqp_url": proxy.url(AMQP)})) as api:
            assert (await ready(api, 200)).status_code == 200
            await proxy.refuse()
            proxy.drop_connections()
            response = await ready(api, 503)
            assert response.status_code == 503
            assert response.json()["error"]["message"] == "not ready: broker unreachable"
            await proxy.accept()
            assert (await ready(api, 200)).status_code == 200


# Item 12: liveness does not wait for a busy event loop


async def test_liveness_answers_on_its_own_port_while_the_api_is_saturated(settings):
    liveness_port = free_port()
    process, port = start_process(
        "api", settings.model_copy(update={"bootstrap_api_key": "saturating"}), None, liveness_port
    )
    try:
        await wait_answering(f"http://127.0.0.1:{port}/readyz")
        headers = {"Authorization": "Bearer saturating"}
        limits = httpx.Limits(max_connections=500)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=60
        ) as api:
            await register(api, "orders", [{"name": "only", "task": "builtin.noop"}])
            load = asyncio.gather(*(api.post("/v1/workflows/orders/runs", json={}) for _ in range(500)))
            async with httpx.AsyncClient() as probe:
                answers = []
                while not load.done():
                    answers.append((await probe.get(f"http://127.0.0.1:{liveness_port}/healthz", timeout=10)).json())
                    await asyncio.sleep(0.02)
            assert {response.status_code for response in await load} == {201}
        assert answers and all(answer == {"status": "ok"} for answer in answers)
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_liveness_fails_once_the_event_loop_stops_beating():
    liveness = Liveness("127.0.0.1", 0, stalled_after_s=0.2)
    liveness.start()
    try:
        url = f"http://127.0.0.1:{liveness.port}/healthz"
        assert (await asyncio.to_thread(httpx.get, url)).status_code == 200
        await asyncio.sleep(0.3)  # nothing runs liveness.beat(): as if the loop it watches were stuck
        stalled = await asyncio.to_thread(httpx.get, url)
        assert (stalled.status_code, stalled.json()) == (503, {"status": "stalled"})
    finally:
        liveness.stop()
