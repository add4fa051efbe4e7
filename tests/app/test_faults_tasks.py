"""Misbehaving tasks: one raising CancelledError of its own fails that attempt (and is retried), and hung `def`
tasks neither make other steps time out before they start nor starve the worker of the threads it resolves host
names with."""

import asyncio

import pytest
import pytest_asyncio

from tests.app.conftest import register, running_platform, start, wait_for_run

pytestmark = pytest.mark.asyncio


async def test_a_task_raising_cancelled_error_fails_that_attempt_and_is_retried(api, worker):
    await register(api, "cancels", [{"name": "step", "task": "test.cancelled_once", "retries": 1}])
    run = await wait_for_run(api, (await start(api, "cancels"))["id"], timeout=10)
    assert run["status"] == "succeeded"
    assert run["steps"][0]["attempt"] == 2 and run["steps"][0]["output"] == {"attempt": 2}


CONCURRENCY = 8


@pytest_asyncio.fixture
async def small_worker(settings):
    async with running_platform(settings.model_copy(update={"worker_concurrency": CONCURRENCY})) as parts:
        yield parts


async def test_hung_sync_steps_neither_time_out_the_next_steps_unstarted_nor_block_name_resolution(
    small_worker, tmp_path
):
    _, api, _worker = small_worker
    journal = tmp_path / "journal"
    sleep = {"name": "step", "task": "test.sync_sleep", "retries": 0}
    await register(api, "hung", [{**sleep, "timeout_s": 0.5, "input": {"journal": str(journal), "seconds": 3}}])
    await register(api, "quick", [{**sleep, "timeout_s": 1, "input": {"journal": str(journal), "seconds": 0}}])
    hung = [await start(api, "hung") for _ in range(CONCURRENCY)]
    while not journal.exists() or journal.read_text().count("start") < 6:
        await asyncio.sleep(0.05)
    quick = [await start(api, "quick") for _ in range(4)]
    await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo("localhost", 5432), timeout=1)
    quick_runs = [await wait_for_run(api, run["id"], timeout=15) for run in quick]
    hung_runs = [await wait_for_run(api, run["id"], timeout=15) for run in hung]
    started = journal.read_text()
    assert [run["status"] for run in quick_runs] == ["succeeded"] * 4
    assert [run["steps"][0]["error"]["type"] for run in hung_runs] == ["Timeout"] * CONCURRENCY
    assert all(f"start {run['id']} 1" in started for run in hung_runs), "a step timed out before it started"
