"""No committed step is stranded: a late "published" mark does not hide a step that has since become ready again,
and the relay's recovery sweep publishes again any ready step nobody claimed, whatever its `published_at`."""

import asyncio

import pytest

from tests.app.conftest import delete_queues, register, running_platform, start, wait_for_run
from tests.app.faults import FaultProxy

pytestmark = pytest.mark.asyncio

RUNS = 150


async def test_a_late_published_mark_does_not_strand_a_retried_step(settings):
    """The API reaches PostgreSQL through 2 ms of latency, so its dispatcher's mark lands after the worker has run
    the step, failed it and made it ready for its retry."""
    async with FaultProxy.to(settings.database_url) as proxy:
        proxy.delay_s = 0.002
        slow_api = settings.model_copy(update={"database_url": proxy.url(settings.database_url)})
        async with (
            running_platform(slow_api, with_worker=False) as (_, api, _),
            running_platform(settings) as (_, _, _worker),
        ):
            await register(
                api, "flaky", [{"name": "once", "task": "builtin.fail", "retries": 1, "input": {"times": 1}}]
            )
            created = await asyncio.gather(*(start(api, "flaky") for _ in range(RUNS)))
            runs = [await wait_for_run(api, run["id"], timeout=20) for run in created]
    assert [run["status"] for run in runs] == ["succeeded"] * RUNS


async def test_a_published_step_whose_message_is_lost_is_published_again(settings):
    settings = settings.model_copy(update={"unclaimed_republish_s": 1.0})
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        await register(api, "lost", [{"name": "only", "task": "builtin.noop"}])
        run_id = (await start(api, "lost"))["id"]
        await platform.dispatcher.stop()  # published and marked so
        platform.dispatcher.start()
        await delete_queues(settings.worker_queue)  # the message is gone
        worker = platform.worker()
        await worker.start()
        try:
            run = await wait_for_run(api, run_id, timeout=10)
        finally:
            await worker.drain()
    assert run["status"] == "succeeded"
