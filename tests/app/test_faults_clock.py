"""One clock: a process whose clock runs ahead of or behind the others' loses no run, because every time
comparison between processes is made on the database's clock. The worker runs as its own process under
libfaketime; the API runs in the test's process, on the real clock.

A quarter of a second of skew: less is hidden here by the time a quorum queue takes to confirm a publish (tens of
milliseconds on this host), which sits between a run's creation and its claim; on faster hosts 10 ms was enough."""

import asyncio

import pytest

from tests.app.conftest import register, running_platform, start, start_process, wait_answering, wait_for_run
from tests.app.faults import clock_skew, libfaketime

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(libfaketime() is None, reason="needs libfaketime (tests/ensure-services.sh installs it)"),
]

RUNS = 40


@pytest.mark.parametrize("skew_s", [-0.25, 0.25], ids=["worker-behind", "worker-ahead"])
async def test_every_run_succeeds_when_the_worker_clock_is_skewed_from_the_api(settings, skew_s):
    async with running_platform(settings, with_worker=False) as (_, api, _worker):
        await register(
            api,
            "skewed",
            [
                {"name": "first", "task": "builtin.noop"},
                {"name": "then", "task": "builtin.fail", "depends_on": ["first"], "retries": 1, "input": {"times": 1}},
            ],
        )
        with clock_skew(skew_s):
            process, port = start_process("worker", settings)
        try:
            await wait_answering(f"http://127.0.0.1:{port}/healthz")
            created = []
            for _ in range(RUNS):
                created.append(await start(api, "skewed"))
                await asyncio.sleep(0.01)  # one run at a time: each claim follows its creation within milliseconds
            runs = [await wait_for_run(api, run["id"], timeout=15) for run in created]
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 10)
    assert [run["status"] for run in runs] == ["succeeded"] * RUNS
