"""The embedded adapters behind `python -m app dev`: SQLite, the in-process broker and fakeredis run the same
engine code as production, and the dev command serves the demo workflow from a fresh start."""

import asyncio
import os
import re
import subprocess
import sys

import httpx
import pytest

from app.adapters.broker import MemoryBroker, dead_letter_queue
from app.adapters.cache import EventDoorbell, RateLimiter, connect
from app.settings import Settings
from tests.app.conftest import ROOT, free_port, register, running_platform, start, wait_for_run

pytestmark = pytest.mark.asyncio


@pytest.fixture
def embedded(tmp_path) -> Settings:
    from app import migrations

    url = f"sqlite:///{tmp_path / 'dev.sqlite3'}"
    migrations.upgrade(url)
    return Settings(database_url=url, worker_queue="dev.steps", retry_base_s=0.01, retry_max_s=0.05, lease_s=2)


async def test_the_memory_broker_delivers_and_waits_for_acks():
    broker = MemoryBroker()
    received = []

    async def handler(delivery):
        received.append(delivery.body)
        await delivery.ack()

    await broker.consume("q", prefetch=10, handler=handler)
    await broker.publish("q", [(b"one", {}), (b"two", {})])
    await asyncio.sleep(0.05)
    await broker.stop_consuming()
    assert received == [b"one", b"two"]


async def test_the_memory_broker_dead_letters_what_a_consumer_rejects():
    broker = MemoryBroker()

    async def reject(delivery):
        await delivery.reject()

    await broker.consume("q", prefetch=10, handler=reject)
    await broker.publish("q", [(b"poison", {})])
    await asyncio.sleep(0.05)
    await broker.stop_consuming()
    assert await broker.depth(dead_letter_queue("q")) == 1


async def test_the_memory_broker_holds_back_deliveries_beyond_the_prefetch():
    broker = MemoryBroker()
    held = []

    async def hold(delivery):
        held.append(delivery)

    await broker.consume("q", prefetch=2, handler=hold)
    await broker.publish("q", [(body, {}) for body in (b"1", b"2", b"3")])
    await asyncio.sleep(0.05)
    assert len(held) == 2
    await held[0].ack()
    await asyncio.sleep(0.05)
    assert len(held) == 3
    await broker.stop_consuming()


async def test_the_embedded_rate_limiter_counts_per_key():
    limiter = RateLimiter(connect(""), per_second=2)
    results = [(await limiter.take("key")).allowed for _ in range(3)]
    assert results[:2] == [True, True] and results[2] is False
    assert (await limiter.take("other")).allowed


async def test_a_doorbell_ring_wakes_only_the_listeners_of_the_runs_it_names():
    doorbell = EventDoorbell(connect(""))
    first, second, second_again = doorbell.listen("run-1"), doorbell.listen("run-2"), doorbell.listen("run-2")
    for listener in (first, second, second_again):
        await anext(listener)  # subscribed
    try:
        await doorbell.ring({"run-1", "run-3"})
        await asyncio.wait_for(anext(first), timeout=2)
        quiet = asyncio.ensure_future(anext(second))
        await asyncio.sleep(0.2)
        assert not quiet.done()
        await doorbell.ring({"run-2"})
        await asyncio.wait_for(quiet, timeout=2)
        await asyncio.wait_for(anext(second_again), timeout=2)
    finally:
        for listener in (first, second, second_again):
            await listener.aclose()
        await doorbell.close()


async def test_the_embedded_platform_runs_a_diamond_with_retries(embedded):
    async with running_platform(embedded) as (_, api, _worker):
        await register(
            api,
            "diamond",
            [
                {"name": "a", "task": "builtin.echo"},
                {"name": "b", "task": "builtin.fail", "depends_on": ["a"], "input": {"times": 1}, "retries": 1},
                {"name": "c", "task": "builtin.echo", "depends_on": ["a"]},
                {"name": "d", "task": "builtin.echo", "depends_on": ["b", "c"]},
            ],
        )
        run = await wait_for_run(api, (await start(api, "diamond", {"order": 1}))["id"])
    steps = {step["name"]: step for step in run["steps"]}
    assert run["status"] == "succeeded"
    assert steps["b"]["attempt"] == 2
    assert set(steps["d"]["output"]["upstream"]) == {"b", "c"}


async def test_embedded_timestamps_are_answered_in_utc_as_on_postgresql(embedded):
    async with running_platform(embedded) as (_, api, _worker):
        await register(api, "one", [{"name": "a", "task": "builtin.noop"}])
        run = await wait_for_run(api, (await start(api, "one"))["id"])
    assert all(run[field].endswith("Z") for field in ("created_at", "started_at", "finished_at"))
    assert run["steps"][0]["finished_at"].endswith("Z")


async def test_the_embedded_platform_cancels_and_keeps_idempotency(embedded):
    async with running_platform(embedded) as (_, api, _worker):
        await register(api, "slow", [{"name": "s", "task": "builtin.sleep", "input": {"seconds": 2}}])
        first = await start(api, "slow", **{"Idempotency-Key": "k"})
        assert (await start(api, "slow", **{"Idempotency-Key": "k"}))["id"] == first["id"]
        assert (await api.post(f"/v1/runs/{first['id']}/cancel")).json()["status"] == "cancelled"


async def test_the_dev_command_serves_the_demo_workflow_from_a_fresh_start(tmp_path):
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    for name in ("APP_DATABASE_URL", "APP_AMQP_URL", "APP_REDIS_URL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        while "API key" not in output:
            line = await asyncio.to_thread(process.stdout.readline)
            assert line, f"dev exited early:\n{output}"
            output += line
        key = re.search(r"API key\s+(\S+)", output).group(1)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        ) as api:
            for _ in range(100):
                try:
                    if (await api.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert (await api.get("/docs")).status_code == 200
            run = await wait_for_run(api, (await start(api, "demo.diamond", {"order": 42}))["id"])
        assert run["status"] == "succeeded"
        assert [step["name"] for step in run["steps"]] == ["fetch", "left", "right", "join"]
    finally:
        process.terminate()
        process.wait(timeout=10)
