"""How fast the web console is with many runs, measured in a real browser (Debian's Chromium driven by Playwright)
against `python -m app dev` on its own SQLite file:

- the runs page's first screen (its first page of runs drawn) with 10,000 runs in the database, from navigation
  start, over several loads;
- a run of 200 steps: its DAG drawn and coloured, and the longest task that held the page's main thread meanwhile.

Prints one JSON line per figure. Not a test: nothing is asserted.

    .venv/bin/python -m bench.console_load [--runs 10000] [--steps 200] [--loads 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import create_engine, insert, select

from app.adapters.database import runs, workflows
from tools.chromium import launch as launch_chromium

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "console-bench-admin-key"
STATUSES = ["succeeded"] * 7 + ["failed", "cancelled", "running"]
# Collects the page's long tasks (main thread busy over 50 ms) from its first moment on.
OBSERVE_LONG_TASKS = """
window.longTasks = [];
new PerformanceObserver((list) => window.longTasks.push(...list.getEntries().map((e) => e.duration)))
  .observe({ type: "longtask", buffered: true });
"""


def report(measure: str, **figures) -> None:
    print(json.dumps({"measure": measure, **figures}), flush=True)


@contextmanager
def dev_platform(directory: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(directory), "APP_BOOTSTRAP_API_KEY": ADMIN_KEY}
    for name in ("APP_DATABASE_URL", "APP_AMQP_URL", "APP_REDIS_URL"):
        env.pop(name, None)
    database = directory / "dev.sqlite3"
    command = [sys.executable, "-m", "app", "dev", "--port", str(port), "--database", str(database)]
    with open(directory / "dev.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(900):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, database
    finally:
        process.terminate()
        process.wait(timeout=30)


def seed_runs(database: Path, count: int) -> None:
    """`count` finished or running runs of demo.diamond over the last week, written straight to the database."""
    engine = create_engine(f"sqlite:///{database}")
    chance = random.Random(7)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        workflow = connection.execute(select(workflows).where(workflows.c.name == "demo.diamond")).first()
        rows = []
        for _ in range(count):
            created = now - timedelta(seconds=chance.uniform(60, 7 * 86_400))
            status = chance.choice(STATUSES)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "workflow_id": workflow.id,
                    "workflow_name": workflow.name,
                    "workflow_version": workflow.version,
                    "status": status,
                    "input": {"order": chance.randint(1, 10**6)},
                    "steps_remaining": 0 if status != "running" else 2,
                    "event_seq": 0,
                    "created_at": created,
                    "started_at": created + timedelta(milliseconds=20),
                    "finished_at": None if status == "running" else created + timedelta(seconds=chance.uniform(0.3, 9)),
                }
            )
        connection.execute(insert(runs), rows)
    engine.dispose()


def layered_workflow(steps: int, width: int = 10) -> list[dict]:
    """`steps` noop steps in layers of `width`, each depending on up to two steps of the layer before."""
    chance = random.Random(11)
    names = [f"s{index:03}" for index in range(steps)]
    definition = []
    for index, name in enumerate(names):
        layer_start = (index // width) * width
        previous = names[max(layer_start - width, 0) : layer_start]
        parents = chance.sample(previous, min(2, len(previous)))
        definition.append({"name": name, "task": "builtin.noop", "depends_on": parents})
    return definition


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/console")
    page.fill("#api-key", ADMIN_KEY)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#who-name")


def runs_first_screen_ms(page: Page, url: str) -> tuple[float, float]:
    """From navigation start to the first 50 runs drawn; and how long the page's /v1/runs request took."""
    page.goto(f"{url}/console/runs")
    page.wait_for_function("() => document.querySelectorAll('#runs tr[data-run]').length === 50", polling="raf")
    drawn = page.evaluate("() => performance.now()")
    request = page.evaluate(
        "() => performance.getEntriesByType('resource').find((e) => e.name.includes('/v1/runs')).duration"
    )
    return drawn, request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, dev_platform(Path(directory)) as (url, database):
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        api.post("/v1/workflows", json={"name": "bench.layered", "steps": layered_workflow(args.steps)})
        started = time.perf_counter()
        seed_runs(database, args.runs)
        report("seed", runs=args.runs, seconds=round(time.perf_counter() - started, 2))
        big_run = api.post("/v1/workflows/bench.layered/runs", json={"input": {}}).json()["id"]
        while api.get(f"/v1/runs/{big_run}").json()["status"] != "succeeded":
            time.sleep(0.2)

        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            # The page's policy forbids eval, which Playwright's waits use; the browser measures, the page is as served.
            page = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900}).new_page()
            page.add_init_script(OBSERVE_LONG_TASKS)
            sign_in(page, url)
            loads = [runs_first_screen_ms(page, url) for _ in range(args.loads)]
            report(
                "runs_page_first_screen",
                runs_in_database=args.runs + 1,
                loads=args.loads,
                median_ms=round(statistics.median(drawn for drawn, _ in loads), 1),
                max_ms=round(max(drawn for drawn, _ in loads), 1),
                api_request_median_ms=round(statistics.median(request for _, request in loads), 1),
            )

            page.goto(f"{url}/console/runs/{big_run}")
            page.wait_for_function(
                f"() => document.querySelectorAll('.dag-node[data-status=succeeded]').length === {args.steps}",
                polling="raf",
            )
            drawn = page.evaluate("() => performance.now()")
            long_tasks = page.evaluate("() => window.longTasks")
            report(
                "run_page_dag",
                steps=args.steps,
                drawn_ms=round(drawn, 1),
                longest_task_ms=round(max(long_tasks, default=0), 1),
                long_tasks=len(long_tasks),
            )
            browser.close()


if __name__ == "__main__":
    main()
