"""An open-loop load generator: POSTs a run at a fixed rate and reports latency percentiles as JSON.

    python -m bench.loadgen <api url> <api key> <requests per second> <seconds>

Each request is due at start + i/rate; its latency counts from when it was due, so a stall shows up in every
request it delayed (no coordinated omission).
"""

import asyncio
import json
import sys
import time

import aiohttp

from bench.platform import percentile


async def main(url: str, key: str, rate: float, seconds: float) -> None:
    total = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=200)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=url, headers=headers, connector=connector) as client:

        async def one(due: float | None = None) -> None:
            async with client.post("/v1/workflows/bench.noop/runs", json={}) as response:
                await response.read()
            if due is not None:
                latencies.append(time.perf_counter() - due)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        for _ in range(10):
            await one()
        start = time.perf_counter()
        pending = []
        for i in range(total):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            pending.append(asyncio.create_task(one(due)))
        await asyncio.gather(*pending)
        achieved = total / (time.perf_counter() - start)
    print(
        json.dumps(
            {
                "requests": total,
                "target_rate": rate,
                "achieved_rate": round(achieved, 1),
                "statuses": statuses,
                "post_run_ms_p50": round(percentile(latencies, 0.50) * 1000, 2),
                "post_run_ms_p99": round(percentile(latencies, 0.99) * 1000, 2),
                "post_run_ms_max": round(max(latencies) * 1000, 2),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
