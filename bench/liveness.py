"""Liveness under full load: `/healthz` latency while concurrent `POST` runs saturate one API process, on the API's
port (answered by the busy event loop) and on the liveness port (`APP_METRICS_PORT`, answered by a thread of its
own). Kubernetes' liveness probe times out after 2 s; the target is within 100 ms.

    python -m bench.liveness --concurrent 2000

Probes run in threads of this process, one request every 50 ms per port; a probe that fails or times out (10 s)
is counted, not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import urllib.request

import httpx

from bench.platform import _free_port, _headers, _register, percentile, platform


def _probe(url: str, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
            latencies.append(time.perf_counter() - started)
        except OSError as error:
            failures.append(type(error).__name__)
        stop.wait(0.05)


async def _saturate(url: str, concurrent: int) -> dict[int, int]:
    """`concurrent` POSTs at once, each on its own connection, written as raw HTTP/1.1: a client this cheap keeps
    them all in flight together, so the API process, not the client, is the bottleneck."""
    async with httpx.AsyncClient(base_url=url, headers=_headers(), timeout=120) as client:
        await _register(client)
    host, port = url.removeprefix("http://").split(":")
    body = b'{"input": {}}'
    request = (
        f"POST /v1/workflows/bench.noop/runs HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {_headers()['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body

    async def post() -> int:
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            status_line = await asyncio.wait_for(reader.readline(), timeout=120)
            await reader.read()
            writer.close()
            return int(status_line.split()[1])
        except (OSError, TimeoutError, IndexError, ValueError):
            return 0

    statuses: dict[int, int] = {}
    for status in await asyncio.gather(*(post() for _ in range(concurrent))):
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def _figures(latencies: list[float], failures: list[str]) -> dict:
    if not latencies:
        return {"answered": 0, "failed": len(failures)}
    milliseconds = [latency * 1000 for latency in latencies]
    return {
        "answered": len(latencies),
        "failed": len(failures),
        "p50_ms": round(percentile(milliseconds, 0.5), 1),
        "p99_ms": round(percentile(milliseconds, 0.99), 1),
        "max_ms": round(max(milliseconds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=2000)
    args = parser.parse_args()
    liveness_port = _free_port()
    with platform(workers=0, extra_env={"APP_METRICS_PORT": str(liveness_port)}) as deployment:
        probes = {
            "api_port": f"{deployment.url}/healthz",
            "liveness_port": f"http://127.0.0.1:{liveness_port}/healthz",
        }
        stop = threading.Event()
        results = {name: ([], []) for name in probes}
        threads = [
            threading.Thread(target=_probe, args=(url, stop, *results[name]), daemon=True)
            for name, url in probes.items()
        ]
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        statuses = asyncio.run(_saturate(deployment.url, args.concurrent))
        elapsed = time.perf_counter() - started
        stop.set()
        for thread in threads:
            thread.join()
    print(
        json.dumps(
            {
                "concurrent_posts": args.concurrent,
                "post_statuses": statuses,
                "seconds": round(elapsed, 2),
                **{name: _figures(*results[name]) for name in probes},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
