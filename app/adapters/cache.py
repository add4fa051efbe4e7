"""Redis (Valkey) for what is shared and short-lived: per-key rate limits and the doorbell that tells WebSocket
listeners a run has new events. fakeredis stands in for it in `dev`."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import fakeredis
import redis.asyncio as redis

log = logging.getLogger(__name__)


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
    """Tells WebSocket listeners a run has new events, after the transaction that added them commits; listeners
    then read the events from the database, which alone decides their order.

    Rings go out on one channel, many run ids to a message, so a busy worker publishes once per batch, and each
    API process holds one subscription however many WebSockets it serves. A ring is only a hint: listeners also
    look on their own now and then, so a ring lost while the subscription reconnects only delays an event."""

    CHANNEL = "workflow:run-events"

    def __init__(self, client: redis.Redis):
        self._client = client
        self._listeners: dict[str, set[asyncio.Queue[None]]] = defaultdict(set)
        self._receiver: asyncio.Task | None = None
        self._subscribed: asyncio.Event | None = None

    async def ring(self, run_ids: set[str]) -> None:
        if run_ids:
            await self._client.publish(self.CHANNEL, " ".join(run_ids))

    async def listen(self, run_id: str) -> AsyncIterator[None]:
        """Yields once subscribed, then once per ring (rings that arrive meanwhile coalesce into one)."""
        if self._receiver is None or self._receiver.done():
            self._subscribed = asyncio.Event()
            self._receiver = asyncio.create_task(self._receive(self._subscribed), name="event-doorbell")
        await self._subscribed.wait()
        rung: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._listeners[run_id].add(rung)
        try:
            yield None
            while True:
                await rung.get()
                yield None
        finally:
            self._listeners[run_id].discard(rung)
            if not self._listeners[run_id]:
                del self._listeners[run_id]

    async def close(self) -> None:
        if self._receiver:
            self._receiver.cancel()

    async def _receive(self, subscribed: asyncio.Event) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.CHANNEL)
                subscribed.set()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._deliver(message["data"].split())
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                log.warning("event doorbell subscription lost (%s); resubscribing", error)
                await asyncio.sleep(1)
            finally:
                await pubsub.aclose()

    def _deliver(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            for rung in self._listeners.get(run_id, ()):
                if rung.empty():
                    rung.put_nowait(None)
