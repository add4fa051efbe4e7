"""A throttled API: the `python -m app api` process is paused 50 ms in every 150 ms (SIGSTOP/SIGCONT, as a CPU
quota does to a pod) while it takes `--runs` runs of a step that fails once, then succeeds.

    python -m bench.throttled_api --runs 4000

Prints the HTTP statuses, the runs by status 30 s after the throttling stops, and the step starts recorded: every
run should end `succeeded` after exactly two attempts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import threading
import time

import asyncpg
import httpx

from bench import platform as bench_platform

FLAKY = {"name": "flaky", "steps": [{"name": "once", "task": "builtin.fail", "retries": 1, "input": {"times": 1}}]}
SETTLE_S = 30


def _throttle(pid: int, stop: threading.Event, paused_s: float = 0.05, running_s: float = 0.10) -> None:
    while not stop.is_set():
        os.kill(pid, signal.SIGSTOP)
        time.sleep(paused_s)
        os.kill(pid, signal.SIGCONT)
        time.sleep(running_s)
    os.kill(pid, signal.SIGCONT)


async def _figures(url: str, api_pid: int, runs: int) -> dict:
    answers: collections.Counter[int] = collections.Counter()
    async with httpx.AsyncClient(base_url=url, headers=bench_platform._headers(), timeout=120) as client:
        (await client.post("/v1/workflows", json=FLAKY)).raise_for_status()
        stop = threading.Event()
        throttling = threading.Thread(target=_throttle, args=(api_pid, stop))
        throttling.start()
        slots = asyncio.Semaphore(64)

        async def start() -> None:
            async with slots:
                answers[(await client.post("/v1/workflows/flaky/runs", json={})).status_code] += 1

        try:
            await asyncio.gather(*(start() for _ in range(runs)))
        finally:
            stop.set()
            throttling.join()
    await asyncio.sleep(SETTLE_S)  # past every lease and republish deadline, the API running freely
    database = await asyncpg.connect(bench_platform.DATABASE_URL)
    try:
        by_status = dict(await database.fetch("SELECT status, count(*) FROM runs GROUP BY status"))
        starts = await database.fetchval("SELECT count(*) FROM events WHERE type = 'step.started'")
    finally:
        await database.close()
    return {"http": dict(answers), "runs": by_status, "step_starts": starts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    args = parser.parse_args()
    with bench_platform.platform(workers=1) as deployment:
        figures = asyncio.run(_figures(deployment.url, deployment.api_pid, args.runs))
    print(json.dumps({"submitted": args.runs, **figures}))


if __name__ == "__main__":
    main()
