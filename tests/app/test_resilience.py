"""No run is lost: not when a worker process is killed mid-step, not when the broker drops every connection during
a burst, and a worker told to stop finishes what it runs first. Workers here are real `python -m app worker`
processes."""

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from tests.app.conftest import register, running_platform, start, start_process, wait_answering, wait_for_run

pytestmark = pytest.mark.asyncio


async def wait_until(condition, timeout: float = 20, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_step_whose_worker_is_killed_runs_to_completion_once_on_another_worker(settings, tmp_path):
    journal = tmp_path / "journal"
    async with running_platform(settings, with_worker=False) as (platform, api, _):
        await register(
            api,
            "survivor",
            [{"name": "work", "task": "test.record", "retries": 2, "input": {"journal": str(journal), "seconds": 1.5}}],
        )
        doomed, port = start_process("worker", settings)
        try:
            await wait_answering(f"http://127.0.0.1:{port}/healthz")
            run_id = (await start(api, "survivor"))["id"]
            await wait_until(lambda: journal.exists() and "start" in journal.read_text(), what="the step to start")
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
        finally:
            doomed.kill()
        survivor = platform.worker()
        await survivor.start()
        try:
            run = await wait_for_run(api, run_id, timeout=30)
        finally:
            await survivor.drain()
    lines = journal.read_text().splitlines()
    assert run["status"] == "succeeded"
    assert lines == [f"start {run_id} 1", f"start {run_id} 2", f"done {run_id} 2"]


async def test_a_worker_told_to_stop_finishes_its_running_step_first(settings, tmp_path):
    journal = tmp_path / "journal"
    async with running_platform(settings, with_worker=False) as (_, api, _worker):
        await register(
            api, "finish", [{"name": "work", "task": "test.record", "input": {"journal": str(journal), "seconds": 1}}]
        )
        process, port = start_process("worker", settings)
        try:
            await wait_answering(f"http://127.0.0.1:{port}/healthz")
            run_id = (await start(api, "finish"))["id"]
            await wait_until(lambda: journal.exists() and "start" in journal.read_text(), what="the step to start")
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(process.wait, 20)
        finally:
            process.kill()
        run = (await api.get(f"/v1/runs/{run_id}")).json()
    assert exit_code == 0
    assert run["status"] == "succeeded" and run["steps"][0]["attempt"] == 1
    assert journal.read_text().splitlines() == [f"start {run_id} 1", f"done {run_id} 1"]


@pytest.mark.skipif(not Path("/usr/sbin/rabbitmqctl").exists(), reason="needs rabbitmqctl to close connections")
async def test_no_run_is_lost_when_the_broker_drops_every_connection_during_a_burst(settings):
    async with running_platform(settings) as (_, api, _worker):
        await register(api, "burst", [{"name": "work", "task": "builtin.sleep", "input": {"seconds": 0.01}}])
        run_ids: list[str] = []

        async def submit(batches: int) -> None:
            for _ in range(batches):
                response = await api.post("/v1/runs:batch", json={"runs": [{"workflow": "burst"}] * 100})
                assert response.status_code == 201, response.text
                run_ids.extend(run["id"] for run in response.json()["runs"])
                await asyncio.sleep(0.05)

        submitting = asyncio.create_task(submit(20))
        await wait_until(lambda: len(run_ids) >= 500, what="half the burst")
        closed = await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "close_all_connections", "test: connections dropped mid-burst"],
            capture_output=True,
            text=True,
        )
        assert closed.returncode == 0, closed.stderr
        await submitting
        statuses = {}
        for run_id in run_ids:
            statuses[run_id] = (await wait_for_run(api, run_id, timeout=60))["status"]
    assert len(run_ids) == 2000
    assert set(statuses.values()) == {"succeeded"}
