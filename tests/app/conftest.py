"""Fixtures for the app's tests: a fresh PostgreSQL database per session, a RabbitMQ queue per test, Redis, and a
platform (API in-process over ASGI, worker in-process) built exactly as `python -m app` builds it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
import pytest_asyncio

from app import migrations
from app.adapters.broker import dead_letter_queue
from app.http.api import create_app
from app.runtime import Platform
from app.settings import Settings

POSTGRES = os.environ.get("APP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("APP_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS = os.environ.get("APP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]
TABLES = "events, steps, runs, workflows, api_keys, dead_letters"


@pytest.fixture(scope="session")
def database_url() -> str:
    name = f"workflow_test_{uuid.uuid4().hex[:10]}"
    base, _, _ = POSTGRES.rpartition("/")

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(POSTGRES)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    migrations.upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_settings(database_url: str, **overrides) -> Settings:
    """Settings for a platform on the test services, with a queue of its own and short timings."""
    defaults = {
        "database_url": database_url,
        "amqp_url": AMQP,
        "redis_url": REDIS,
        "worker_queue": f"test.{uuid.uuid4().hex[:12]}",
        "worker_concurrency": 64,
        "lease_s": 2,
        "lease_grace_s": 0.5,
        "republish_after_s": 1,
        "relay_interval_s": 0.2,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "max_task_timeout_s": 30,
        "delivery_limit": 2,
        "max_body_bytes": 64 * 1024,
        "rate_limit_per_second": 10_000,
        "api_key_cache_s": 0,
        "task_modules": ["tests.app.tasks_for_tests"],
        "log_format": "text",
    }
    return Settings(**{**defaults, **overrides})


@pytest.fixture
def settings(database_url: str) -> Settings:
    asyncio.run(_truncate(database_url))
    return make_settings(database_url)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(
    role: str, settings: Settings, stdout=None, metrics_port: int | None = None
) -> tuple[subprocess.Popen, int]:
    """`python -m app <role>` as the container runs it, configured from `settings`; returns it and its HTTP port
    (the API's port, or the worker's health and metrics port). The API's liveness thread listens on
    `metrics_port` (a free port of its own when not given)."""
    port = free_port()
    metrics_port = metrics_port or (free_port() if role == "api" else port)
    env = {**os.environ, "APP_HOST": "127.0.0.1", "APP_PORT": str(port), "APP_METRICS_PORT": str(metrics_port)}
    for name, value in settings.model_dump(exclude={"host", "port", "metrics_port"}).items():
        env[f"APP_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    process = subprocess.Popen([sys.executable, "-m", "app", role], cwd=ROOT, env=env, stdout=stdout, text=True)
    return process, port


async def wait_answering(url: str) -> None:
    """Waits until `url` (a process's /healthz or /readyz) answers 200."""
    async with httpx.AsyncClient() as client:
        for _ in range(400):
            try:
                if (await client.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200")


async def _truncate(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


async def delete_queues(queue: str) -> None:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for name in (queue, dead_letter_queue(queue)):
            await channel.queue_delete(name)


@asynccontextmanager
async def running_platform(settings: Settings, *, with_worker: bool = True):
    """A started platform, an admin-authenticated API client to it, and (optionally) an in-process worker."""
    platform = Platform.build(settings, embedded=not settings.amqp_url)
    await platform.start()
    admin_key = f"test-admin-{uuid.uuid4().hex}"
    await platform.ensure_admin_key(admin_key)
    worker = platform.worker() if with_worker else None
    if worker:
        await worker.start()
    transport = httpx.ASGITransport(app=create_app(platform, manage_lifecycle=False))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers={"Authorization": f"Bearer {admin_key}"}
        ) as client:
            yield platform, client, worker
    finally:
        if worker:
            await worker.drain()
        await platform.stop()
        await delete_queues(settings.worker_queue)


@pytest_asyncio.fixture
async def running(settings: Settings):
    async with running_platform(settings) as parts:
        yield parts


@pytest.fixture
def platform(running) -> Platform:
    return running[0]


@pytest.fixture
def api(running) -> httpx.AsyncClient:
    return running[1]


@pytest.fixture
def worker(running):
    return running[2]


async def wait_for_run(api: httpx.AsyncClient, run_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=20):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = (await api.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in statuses:
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s: {run}")
        await asyncio.sleep(0.05)


async def register(api: httpx.AsyncClient, name: str, steps: list[dict]) -> dict:
    response = await api.post("/v1/workflows", json={"name": name, "steps": steps})
    assert response.status_code in (200, 201), response.text
    return response.json()


async def start(api: httpx.AsyncClient, workflow: str, run_input: dict | None = None, **headers) -> dict:
    response = await api.post(f"/v1/workflows/{workflow}/runs", json={"input": run_input or {}}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()
