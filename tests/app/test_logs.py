"""Logs are JSON lines, and every line logged while a step runs (the task's own included) names its run and step."""

import json
import subprocess

import pytest

from tests.app.conftest import register, running_platform, start, start_process, wait_answering, wait_for_run

pytestmark = pytest.mark.asyncio


async def test_lines_logged_while_a_step_runs_name_its_run_and_step(settings):
    worker, port = start_process("worker", settings.model_copy(update={"log_format": "json"}), stdout=subprocess.PIPE)
    try:
        await wait_answering(f"http://127.0.0.1:{port}/healthz")
        async with running_platform(settings, with_worker=False) as (_, api, _worker):
            await register(api, "orders", [{"name": "charge", "task": "test.log"}])
            run = await wait_for_run(api, (await start(api, "orders", {"order": 42}))["id"])
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    assert run["status"] == "succeeded"
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (charged,) = [line for line in lines if line["message"] == "charging order 42"]
    assert charged["run_id"] == run["id"] and charged["step"] == "charge" and charged["attempt"] == 1
    assert charged["levelname"] == "INFO" and charged["name"] == "orders"
