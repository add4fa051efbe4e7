"""The platform's processes export what its alerts and dashboards read: finished runs by status, how long ready steps
wait unpublished and in the queue, lost leases, republished steps, the relay's last good pass and the worker's
slots. Each test reads the real value from the process's Prometheus registry."""

import asyncio
import time
import uuid

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app.observability import metrics
from tests.app.conftest import register, running_platform, start, wait_for_run

pytestmark = pytest.mark.asyncio


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def count(name: str, **labels: str) -> float:
    """A counter's value; one never incremented for these labels is 0."""
    return sample(name, **labels) or 0.0


def finished(status: str) -> float:
    return count("workflow_runs_finished_total", status=status)


async def eventually(condition, timeout: float = 5, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def repeat_until(action, condition, what: str, timeout: float = 5) -> None:
    """Runs `action` (a relay pass, a measurement), as the worker's loop does, until `condition` holds after one."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await action()
        if condition():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def step_id_of(database_url: str, run_id: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval("SELECT id FROM steps WHERE run_id = $1", uuid.UUID(run_id))
    finally:
        await connection.close()


async def test_a_succeeded_run_counts_once_as_finished_succeeded(api, worker):
    before = {status: finished(status) for status in ("succeeded", "failed", "cancelled")}
    await register(api, "fine", [{"name": "only", "task": "builtin.noop"}])
    run = await wait_for_run(api, (await start(api, "fine"))["id"])
    await eventually(lambda: finished("succeeded") > before["succeeded"], what="the run to be counted")

    assert run["status"] == "succeeded"
    assert {status: finished(status) - before[status] for status in before} == {
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
    }


async def test_a_failed_run_counts_as_finished_failed_once_whatever_its_attempts(api, worker):
    before = finished("failed")
    await register(api, "doomed", [{"name": "only", "task": "builtin.fail", "retries": 2}])
    run = await wait_for_run(api, (await start(api, "doomed"))["id"])
    await eventually(lambda: finished("failed") > before, what="the run to be counted")

    assert run["status"] == "failed" and run["steps"][0]["attempt"] == 3
    assert finished("failed") - before == 1


async def test_a_cancelled_run_counts_as_finished_cancelled(settings):
    async with running_platform(settings, with_worker=False) as (_, api, _):
        before = finished("cancelled")
        await register(api, "unwanted", [{"name": "only", "task": "builtin.noop"}])
        run_id = (await start(api, "unwanted"))["id"]
        response = await api.post(f"/v1/runs/{run_id}/cancel")

    assert response.json()["status"] == "cancelled"
    assert finished("cancelled") - before == 1


async def test_a_ready_step_not_yet_published_shows_its_age_until_it_is(settings):
    queue = settings.worker_queue
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        relay = platform.worker()  # never started: its relay passes are run here
        await register(api, "held", [{"name": "only", "task": "builtin.noop"}])
        await platform.dispatcher.stop()  # the step's transaction commits, its publish waits
        await start(api, "held")
        await asyncio.sleep(0.3)
        await relay.measure_queue()
        waiting = sample("workflow_ready_step_oldest_age_seconds", queue=queue)
        queued = sample("workflow_queue_oldest_message_age_seconds", queue=queue)
        platform.dispatcher.start()
        await repeat_until(
            relay.measure_queue,
            lambda: sample("workflow_ready_step_oldest_age_seconds", queue=queue) == 0,
            "the step's publish",
        )

    assert 0.3 <= waiting < 5 and queued == 0
    assert sample("workflow_queue_oldest_message_age_seconds", queue=queue) > 0


async def test_a_published_step_nobody_claims_shows_its_age_in_the_queue(settings):
    queue = settings.worker_queue
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        relay = platform.worker()
        await register(api, "unclaimed", [{"name": "only", "task": "builtin.noop"}])
        await start(api, "unclaimed")
        await platform.dispatcher.stop()  # published, and marked so
        platform.dispatcher.start()
        await asyncio.sleep(0.5)
        await relay.measure_queue()

    assert 0.5 <= sample("workflow_queue_oldest_message_age_seconds", queue=queue) < 5
    assert sample("workflow_ready_step_oldest_age_seconds", queue=queue) == 0


async def test_a_step_whose_worker_stopped_renewing_its_lease_counts_as_a_lease_expiry(settings):
    queue = settings.worker_queue
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        relay = platform.worker()
        await register(api, "abandoned", [{"name": "only", "task": "builtin.noop", "retries": 1}])
        step_id = await step_id_of(settings.database_url, (await start(api, "abandoned"))["id"])
        # A worker claims the step, then is never heard from again.
        claimed, _ = await platform.transitions.claim([step_id], "lost-worker", lease_s=0.1)
        assert [step.id for step in claimed] == [step_id]
        await repeat_until(
            relay.relay_once, lambda: count("workflow_lease_expiries_total", queue=queue) > 0, "the requeue"
        )
        await relay.relay_once()

    assert count("workflow_lease_expiries_total", queue=queue) == 1


async def test_a_ready_step_the_broker_never_confirmed_counts_as_republished_unconfirmed(settings):
    queue = settings.worker_queue
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        relay = platform.worker()
        await register(api, "unconfirmed", [{"name": "only", "task": "builtin.noop"}])
        await platform.dispatcher.stop()  # its publish after commit never happens
        await start(api, "unconfirmed")
        await asyncio.sleep(settings.republish_after_s + 0.2)
        await relay.relay_once()
        platform.dispatcher.start()

    assert count("workflow_steps_republished_total", queue=queue, reason="unconfirmed") == 1
    assert count("workflow_steps_republished_total", queue=queue, reason="unclaimed") == 0


async def test_a_published_step_nobody_claimed_in_time_counts_as_republished_unclaimed(settings):
    settings = settings.model_copy(update={"unclaimed_republish_s": 0.5})
    queue = settings.worker_queue
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        relay = platform.worker()
        await register(api, "ignored", [{"name": "only", "task": "builtin.noop"}])
        await start(api, "ignored")
        await platform.dispatcher.stop()  # published, and marked so
        platform.dispatcher.start()
        await asyncio.sleep(settings.republish_after_s + 0.2)
        await relay.relay_once()

    assert count("workflow_steps_republished_total", queue=queue, reason="unclaimed") == 1
    assert count("workflow_steps_republished_total", queue=queue, reason="unconfirmed") == 0


async def test_a_retry_published_at_the_end_of_its_backoff_is_not_counted_as_republished(settings):
    queue = settings.worker_queue
    async with running_platform(settings) as (_, api, _worker):
        await register(api, "flaky", [{"name": "f", "task": "builtin.fail", "input": {"times": 2}, "retries": 2}])
        run = await wait_for_run(api, (await start(api, "flaky"))["id"])

    # Only the relay publishes a retry: the run succeeding on its third attempt means it did, twice.
    assert run["status"] == "succeeded" and run["steps"][0]["attempt"] == 3
    assert count("workflow_steps_republished_total", queue=queue, reason="unconfirmed") == 0
    assert count("workflow_steps_republished_total", queue=queue, reason="unclaimed") == 0


async def test_a_relay_pass_that_completes_records_when(settings):
    async with running_platform(settings, with_worker=False) as (platform, _, _):
        relay = platform.worker()
        before = time.time()
        await relay.relay_once()
        after = time.time()

    assert before <= sample("workflow_relay_last_success_timestamp_seconds", queue=settings.worker_queue) <= after


async def test_a_worker_starts_its_relays_clock_so_a_relay_that_never_completes_a_pass_still_ages(settings):
    queue = settings.worker_queue
    async with running_platform(settings, with_worker=False) as (platform, _, _):
        metrics.RELAY_LAST_SUCCESS.labels(queue).set(0)
        worker = platform.worker()
        before = time.time()
        await worker.start()
        after = time.time()
        try:
            assert before <= sample("workflow_relay_last_success_timestamp_seconds", queue=queue) <= after
        finally:
            await worker.drain()


async def test_busy_slots_count_a_running_step_and_return_to_zero_once_it_ends(settings):
    queue = settings.worker_queue
    async with running_platform(settings) as (_, api, _worker):
        slots = sample("workflow_worker_slots", queue=queue)
        await register(api, "slow", [{"name": "s", "task": "builtin.sleep", "input": {"seconds": 1}}])
        run_id = (await start(api, "slow"))["id"]
        await eventually(lambda: sample("workflow_worker_busy_slots", queue=queue) == 1, what="the step to run")
        run = await wait_for_run(api, run_id)

    assert slots == settings.worker_concurrency
    assert run["status"] == "succeeded"
    assert sample("workflow_worker_busy_slots", queue=queue) == 0
