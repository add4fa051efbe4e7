"""The workflow platform measured as it is deployed: `python -m app api` and `python -m app worker` processes on
the local PostgreSQL, RabbitMQ and Redis, driven over HTTP.

    python -m bench.platform throughput --runs 20000
    python -m bench.platform latency --runs 300
    python -m bench.platform api --rate 300 --seconds 10

Every figure comes from what the platform itself records (run timestamps in PostgreSQL, the routing-latency
histogram on each process's /metrics) or from the client's clock on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.adapters.broker import dead_letter_queue
from bench import services

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench_workflow"
DATABASE_URL = services.database_url(DATABASE)
QUEUE = "bench.workflow.steps"
QUEUES = [QUEUE, dead_letter_queue(QUEUE)]
API_KEY = "bench-" + uuid.uuid4().hex
NOOP_WORKFLOW = {"name": "bench.noop", "steps": [{"name": "noop", "task": "builtin.noop"}]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Deployment:
    url: str
    metrics_urls: list[str]
    api_pid: int


@contextmanager
def platform(workers: int = 1, extra_env: dict[str, str] | None = None):
    """A fresh database and queue, the migrations Job's work, an API process and `workers` worker processes."""
    services.recreate_database(DATABASE)
    port = _free_port()
    env = {
        **os.environ,
        "APP_DATABASE_URL": DATABASE_URL,
        "APP_AMQP_URL": services.AMQP_URL,
        "APP_REDIS_URL": services.REDIS_URL,
        "APP_WORKER_QUEUE": QUEUE,
        "APP_BOOTSTRAP_API_KEY": API_KEY,
        "APP_LOG_LEVEL": "WARNING",
        "APP_RATE_LIMIT_PER_SECOND": "1000000",
        "APP_MAX_BODY_BYTES": str(16 * 1024 * 1024),
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(port),
        "APP_METRICS_PORT": str(_free_port()),  # the API's liveness thread (workers get one each below)
        **(extra_env or {}),
    }
    services.delete_queues(QUEUES)
    subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    processes = [subprocess.Popen([sys.executable, "-m", "app", "api"], cwd=REPO_ROOT, env=env)]
    url = f"http://127.0.0.1:{port}"
    metrics_urls = [f"{url}/metrics"]
    for _ in range(workers):
        metrics_port = _free_port()
        worker_env = {**env, "APP_METRICS_PORT": str(metrics_port)}
        processes.append(subprocess.Popen([sys.executable, "-m", "app", "worker"], cwd=REPO_ROOT, env=worker_env))
        metrics_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        for ready_url in [f"{url}/readyz", *(m.replace("/metrics", "/healthz") for m in metrics_urls[1:])]:
            _wait_ready(ready_url)
        yield Deployment(url, metrics_urls, processes[0].pid)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        services.delete_queues(QUEUES)
        services.drop_database(DATABASE)


ROUTING_HISTOGRAM = "workflow_routing_latency_seconds"


def routing_buckets(metrics_urls: list[str]) -> dict[float, float]:
    """The routing-latency histogram's cumulative bucket counts, summed over the API and worker processes."""
    buckets: dict[float, float] = defaultdict(float)
    for metrics_url in metrics_urls:
        for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=5).text):
            if family.name != ROUTING_HISTOGRAM:
                continue
            for sample in family.samples:
                if sample.name == ROUTING_HISTOGRAM + "_bucket":
                    buckets[float(sample.labels["le"])] += sample.value
    return buckets


def histogram_quantile(fraction: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The quantile of what was observed between two scrapes, interpolated within its bucket as Prometheus's
    histogram_quantile does."""
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    total = counts[-1]
    if total == 0:
        return float("nan")
    rank = fraction * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return bounds[-2]


def routing_figures(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    return {
        "routing_ms_p50": round(histogram_quantile(0.50, before, after) * 1000, 2),
        "routing_ms_p99": round(histogram_quantile(0.99, before, after) * 1000, 2),
        "routing_samples": int(after[float("inf")] - before.get(float("inf"), 0.0)),
    }


def _wait_ready(url: str) -> None:
    for _ in range(400):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200")


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


async def _register(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workflows", json=NOOP_WORKFLOW)
    response.raise_for_status()


async def _succeeded(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT count(*) FROM runs WHERE status = 'succeeded'")


async def throughput(deployment: Deployment, runs: int, batch: int = 1000, concurrency: int = 4) -> dict:
    """Submit `runs` single-step noop runs through the batch endpoint; done when PostgreSQL has them succeeded."""
    async with httpx.AsyncClient(base_url=deployment.url, headers=_headers(), timeout=120) as client:
        await _register(client)
        database = await asyncpg.connect(DATABASE_URL)
        body = {"runs": [{"workflow": "bench.noop"}] * batch}
        slots = asyncio.Semaphore(concurrency)

        async def submit() -> None:
            async with slots:
                (await client.post("/v1/runs:batch", json=body)).raise_for_status()

        routing_before = routing_buckets(deployment.metrics_urls)
        started = time.perf_counter()
        await asyncio.gather(*(submit() for _ in range(runs // batch)))
        submitted = time.perf_counter() - started
        while await _succeeded(database) < runs:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        await database.close()
    return {
        "runs": runs,
        "seconds": round(elapsed, 2),
        "runs_per_s": round(runs / elapsed, 1),
        "submit_seconds": round(submitted, 2),
        **routing_figures(routing_before, routing_buckets(deployment.metrics_urls)),
    }


async def latency(deployment: Deployment, runs: int, gap_s: float = 0.02) -> dict:
    """Single runs one at a time at light load: from the client sending POST to PostgreSQL recording success."""
    async with httpx.AsyncClient(base_url=deployment.url, headers=_headers(), timeout=30) as client:
        await _register(client)
        database = await asyncpg.connect(DATABASE_URL)
        for _ in range(20):  # warm connections and caches
            await client.post("/v1/workflows/bench.noop/runs", json={})
        await asyncio.sleep(1)
        routing_before = routing_buckets(deployment.metrics_urls)
        sent: dict[str, datetime] = {}
        for _ in range(runs):
            before = datetime.now(UTC)
            response = await client.post("/v1/workflows/bench.noop/runs", json={})
            sent[response.json()["id"]] = before
            await asyncio.sleep(gap_s)
        while True:
            rows = await database.fetch(
                "SELECT id::text, finished_at FROM runs WHERE status = 'succeeded' AND id::text = ANY($1)", list(sent)
            )
            if len(rows) == runs:
                break
            await asyncio.sleep(0.1)
        await database.close()
    latencies = [(row["finished_at"] - sent[row["id"]]).total_seconds() * 1000 for row in rows]
    return {
        "runs": runs,
        "submit_to_succeeded_ms_p50": round(percentile(latencies, 0.50), 2),
        "submit_to_succeeded_ms_p95": round(percentile(latencies, 0.95), 2),
        "submit_to_succeeded_ms_p99": round(percentile(latencies, 0.99), 2),
        "submit_to_succeeded_ms_mean": round(statistics.fmean(latencies), 2),
        **routing_figures(routing_before, routing_buckets(deployment.metrics_urls)),
    }


def api_latency(url: str, rate: float, seconds: float) -> dict:
    """POST run latency at a fixed request rate, from a load generator in another process (open loop: each
    request's latency counts from when it was due, so a slow answer cannot hide the ones queued behind it)."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", url, API_KEY, str(rate), str(seconds)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measure", choices=["throughput", "latency", "api"])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with platform(workers=args.workers) as deployment:
        if args.measure == "throughput":
            figures = asyncio.run(throughput(deployment, args.runs))
        elif args.measure == "latency":
            figures = asyncio.run(latency(deployment, args.runs))
        else:
            with httpx.Client(base_url=deployment.url, headers=_headers()) as client:
                client.post("/v1/workflows", json=NOOP_WORKFLOW).raise_for_status()
            routing_before = routing_buckets(deployment.metrics_urls)
            figures = api_latency(deployment.url, args.rate, args.seconds)
            figures.update(routing_figures(routing_before, routing_buckets(deployment.metrics_urls)))
    print(json.dumps({"measure": args.measure, "workers": args.workers, **figures}))


if __name__ == "__main__":
    main()
