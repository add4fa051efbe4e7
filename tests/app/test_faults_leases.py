"""Leases follow liveness: a live worker keeps its steps through a database outage longer than a lease, and a run
cancelled then retried at once never has one step running twice at the same time."""

import asyncio

import pytest

from tests.app.conftest import register, running_platform, start, start_process, wait_answering, wait_for_run
from tests.app.faults import FaultProxy

pytestmark = pytest.mark.asyncio


def overlapping(lines: list[str]) -> bool:
    """Whether the journal shows one run's step started again before its previous start finished."""
    running: set[str] = set()
    for line in lines:
        kind, run_id, _attempt = line.split()
        if kind == "start":
            if run_id in running:
                return True
            running.add(run_id)
        else:
            running.discard(run_id)
    return False


async def test_a_run_cancelled_then_retried_at_once_never_runs_its_step_twice_at_the_same_time(api, worker, tmp_path):
    journal = tmp_path / "journal"
    await register(
        api, "slow", [{"name": "work", "task": "test.record", "input": {"journal": str(journal), "seconds": 1}}]
    )
    run_id = (await start(api, "slow"))["id"]
    while not journal.exists():
        await asyncio.sleep(0.02)
    assert (await api.post(f"/v1/runs/{run_id}/cancel")).status_code == 200
    assert (await api.post(f"/v1/runs/{run_id}/retry")).status_code == 200
    run = await wait_for_run(api, run_id, timeout=15)
    lines = journal.read_text().splitlines()
    assert not overlapping(lines), lines
    assert lines == [f"start {run_id} 1", f"done {run_id} 1", f"start {run_id} 2", f"done {run_id} 2"]
    assert run["status"] == "succeeded" and run["steps"][0]["attempt"] == 2


async def test_a_worker_cut_off_from_the_database_longer_than_a_lease_keeps_its_steps(settings, tmp_path):
    """The worker process reaches PostgreSQL through a proxy that refuses and drops its connections for 3 s
    (lease 2 s) while its steps run: on reconnecting it renews first, so nothing is requeued or run twice."""
    journal = tmp_path / "journal"
    settings = settings.model_copy(update={"lease_renew_s": 0.5, "lease_grace_s": 3})
    async with (
        FaultProxy.to(settings.database_url) as proxy,
        running_platform(settings, with_worker=False) as (
            _,
            api,
            _,
        ),
    ):
        step = {"name": "work", "task": "test.record", "retries": 1}
        await register(api, "long", [{**step, "input": {"journal": str(journal), "seconds": 5}}])
        cut_off = settings.model_copy(update={"database_url": proxy.url(settings.database_url)})
        process, port = start_process("worker", cut_off)
        try:
            await wait_answering(f"http://127.0.0.1:{port}/healthz")
            created = [await start(api, "long") for _ in range(10)]
            while not journal.exists() or journal.read_text().count("start") < 10:
                await asyncio.sleep(0.05)
            await proxy.refuse()
            proxy.drop_connections()
            await asyncio.sleep(3)
            await proxy.accept()
            runs = [await wait_for_run(api, run["id"], timeout=20) for run in created]
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 10)
    lines = journal.read_text().splitlines()
    assert [run["status"] for run in runs] == ["succeeded"] * 10
    assert sorted(lines) == sorted(f"{kind} {run['id']} 1" for run in created for kind in ("start", "done"))
