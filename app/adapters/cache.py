"""Redis (Valkey) for what is shared and short-lived: per-key rate limits and the doorbell that tells WebSocket
listeners a run has new events. fakeredis stands in for it in `dev`."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import fakeredis
import redis.asyncio as redis


def connect(url: str) -> redis.Redis:
    if url:
        # A blocking pool: a burst of requests waits briefly for a connection instead of failing.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=5, decode_responses=True, health_check_interval=30
        )
        return redis.Redis.from_pool(pool)
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)


@dataclass(frozen=True)
class Allowance:
    allowed: bool
    retry_after_s: int


class RateLimiter:
    """A fixed one-second window per API key: cheap (one round trip) and shared by every API pod."""

    def __init__(self, client: redis.Redis, per_second: int):
        self._client = client
        self._per_second = per_second

    async def take(self, key_id: str) -> Allowance:
        window = int(time.time())
        bucket = f"ratelimit:{key_id}:{window}"
        async with self._client.pipeline(transaction=True) as pipe:
            count, _ = await pipe.incr(bucket).expire(bucket, 2).execute()
        if count <= self._per_second:
            return Allowance(True, 0)
        return Allowance(False, max(1, math.ceil(window + 1 - time.time())))


class EventDoorbell:
    """Rings `run:<id>` after a transaction that added events to the run commits; listeners then read the events
    from the database, which alone decides their order."""

    def __init__(self, client: redis.Redis):
        self._client = client

    async def ring(self, run_ids: set[str]) -> None:
        if not run_ids:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.publish(f"run:{run_id}", "1")
            await pipe.execute()

    async def listen(self, run_id: str) -> AsyncIterator[None]:
        """Yields once subscribed, then once per ring."""
        pubsub = self._client.pubsub()
        await pubsub.subscribe(f"run:{run_id}")
        try:
            yield None
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield None
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()
