"""The message broker: RabbitMQ quorum queues with publisher confirms, or an in-process twin for `dev`.

A message names ready steps; it is only a doorbell, the database holds the truth. Publishing returns once the
broker has confirmed every message; a message a consumer rejects, or that keeps failing past the delivery limit,
is dead-lettered to `<queue>.dead`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

log = logging.getLogger(__name__)


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


# Called with each delivery: its body and headers, `ack()` once handled, `reject()` to dead-letter it (the
# engine's `ports.Delivery`).
Handler = Callable[[Any], Awaitable[None]]


@dataclass
class _RabbitDelivery:
    message: AbstractIncomingMessage

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.message.headers or {})

    @property
    def delivery_count(self) -> int:
        # Quorum queues count earlier deliveries in x-delivery-count.
        return int((self.message.headers or {}).get("x-delivery-count", 0)) + 1

    async def ack(self) -> None:
        await _quietly(self.message.ack())

    async def reject(self) -> None:
        await _quietly(self.message.reject(requeue=False))


def _adapted(handler: Handler) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    async def on_message(message: AbstractIncomingMessage) -> None:
        await handler(_RabbitDelivery(message))

    return on_message


async def _quietly(operation: Awaitable[None]) -> None:
    """Acks on a channel that has closed cannot succeed; the broker redelivers and the step claim absorbs it."""
    try:
        await operation
    except Exception as error:  # noqa: BLE001 - any channel failure here means the same thing
        log.debug("acknowledgement lost with its channel: %s", error)


class RabbitBroker:
    def __init__(self, url: str, delivery_limit: int):
        self._url = url
        self._delivery_limit = delivery_limit
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._ping_channel: AbstractRobustChannel | None = None
        self._declared: set[str] = set()
        self._consumers: list[tuple[AbstractRobustChannel, aio_pika.abc.AbstractQueue, str]] = []
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self._url, client_properties={"connection_name": "workflow"})
        self._publish_channel = await self._connection.channel(publisher_confirms=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def ping(self) -> None:
        """A round trip to the broker (basic.qos on a channel of its own, which consumes nothing): a connection
        that looks open says nothing while the broker is unreachable and the heartbeat has not yet noticed. Its own
        channel, because a round trip cut short closes its channel, which must never be the publishing one."""
        if self._connection is None or self._connection.is_closed:
            raise ConnectionError("not connected to RabbitMQ")
        if self._ping_channel is None:
            self._ping_channel = await self._connection.channel(publisher_confirms=False)
        try:
            await self._ping_channel.set_qos(prefetch_count=0)
        except BaseException:
            # A round trip that failed or was cut short (a timeout's cancellation) leaves the channel closed by
            # aiormq: dropped (the connection holds its channels weakly), and the next ping opens another.
            self._ping_channel = None
            raise

    async def _declare(self, channel: AbstractRobustChannel, queue: str) -> aio_pika.abc.AbstractQueue:
        dead = dead_letter_queue(queue)
        await channel.declare_queue(dead, durable=True, arguments={"x-queue-type": "quorum"})
        return await channel.declare_queue(
            queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self._delivery_limit,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead,
            },
        )

    async def publish(self, queue: str, messages: list[tuple[bytes, dict[str, Any]]]) -> None:
        assert self._publish_channel is not None, "connect() first"
        if queue not in self._declared:
            async with self._lock:
                if queue not in self._declared:
                    await self._declare(self._publish_channel, queue)
                    self._declared.add(queue)
        exchange = self._publish_channel.default_exchange
        # Publishing concurrently lets the broker confirm the whole batch in a few frames.
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue,
                )
                for body, headers in messages
            )
        )

    async def consume(self, queue: str, prefetch: int, handler: Handler) -> None:
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await self._declare(channel, queue)
        tag = await declared.consume(_adapted(handler))
        self._consumers.append((channel, declared, tag))

    async def consume_dead_letters(self, queue: str, handler: Handler) -> None:
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=100)
        await self._declare(channel, queue)
        dead = await channel.declare_queue(dead_letter_queue(queue), durable=True, arguments={"x-queue-type": "quorum"})
        tag = await dead.consume(_adapted(handler))
        self._consumers.append((channel, dead, tag))

    async def stop_consuming(self) -> None:
        for _, declared, tag in self._consumers:
            await _quietly(declared.cancel(tag))

    async def depth(self, queue: str) -> int:
        assert self._publish_channel is not None, "connect() first"
        declared = await self._declare(self._publish_channel, queue)
        return declared.declaration_result.message_count or 0


@dataclass
class _MemoryMessage:
    body: bytes
    headers: dict[str, Any]
    delivery_count: int = 0


@dataclass
class _MemoryDelivery:
    broker: MemoryBroker
    queue: str
    message: _MemoryMessage
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.headers

    @property
    def delivery_count(self) -> int:
        return self.message.delivery_count

    async def ack(self) -> None:
        self.settled.set()

    async def reject(self) -> None:
        self.settled.set()
        self.broker._queue(dead_letter_queue(self.queue)).put_nowait(self.message)


@dataclass
class MemoryBroker:
    """RabbitMQ's semantics that the engine relies on, in one process: delivery with acks, prefetch, and dead
    letters for rejected messages. (Redelivery needs a consumer to die, which in one process ends the broker too.)"""

    _queues: dict[str, asyncio.Queue] = field(default_factory=dict)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def _queue(self, name: str) -> asyncio.Queue:
        return self._queues.setdefault(name, asyncio.Queue())

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        await self.stop_consuming()

    async def ping(self) -> None:
        return None

    async def publish(self, queue: str, messages: list[tuple[bytes, dict[str, Any]]]) -> None:
        for body, headers in messages:
            self._queue(queue).put_nowait(_MemoryMessage(body, dict(headers)))

    async def consume(self, queue: str, prefetch: int, handler: Handler) -> None:
        self._tasks.append(asyncio.create_task(self._deliver(queue, prefetch, handler)))

    async def consume_dead_letters(self, queue: str, handler: Handler) -> None:
        self._tasks.append(asyncio.create_task(self._deliver(dead_letter_queue(queue), 100, handler)))

    async def _deliver(self, queue: str, prefetch: int, handler: Handler) -> None:
        source = self._queue(queue)
        slots = asyncio.Semaphore(prefetch)
        while True:
            message = await source.get()
            message.delivery_count += 1
            await slots.acquire()
            delivery = _MemoryDelivery(self, queue, message)
            asyncio.create_task(self._handle(handler, delivery, slots))

    async def _handle(self, handler: Handler, delivery: _MemoryDelivery, slots: asyncio.Semaphore) -> None:
        try:
            await handler(delivery)
            await delivery.settled.wait()
        finally:
            slots.release()

    async def stop_consuming(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    async def depth(self, queue: str) -> int:
        return self._queue(queue).qsize()
