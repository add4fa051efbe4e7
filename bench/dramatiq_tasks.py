"""The Dramatiq broker and actor that the benchmark's Dramatiq workers import (``dramatiq bench.dramatiq_tasks``).

Dramatiq's default middleware, no Results middleware: completion is seen in the Redis counter.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.services import AMQP_URL, record_completion

QUEUE_NAME = "bench_dramatiq"
# Dramatiq declares a delay queue and a dead-letter queue next to every queue.
ALL_QUEUE_NAMES = [QUEUE_NAME, f"{QUEUE_NAME}.DQ", f"{QUEUE_NAME}.XQ"]

broker = RabbitmqBroker(url=AMQP_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE_NAME)
def noop_counted() -> None:
    record_completion()
