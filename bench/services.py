"""The local services the platform and every peer are measured on, and the small helpers the benchmark needs on them.

Everything the benchmark creates carries a ``bench`` name (queues, databases, Redis key), so
preparing and cleaning up never touches what the platform's tests keep on the same services.
"""

from __future__ import annotations

import os

import pika
import pika.exceptions
import psycopg
import redis
from psycopg import sql

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Celery's result backend gets a database of its own, dropped after every run.
CELERY_RESULT_DATABASE = "bench_celery"
CELERY_RESULT_BACKEND_URL = f"db+postgresql://postgres@127.0.0.1:5432/{CELERY_RESULT_DATABASE}"

# The peers that keep no results count their completions here instead (one INCR per task).
COMPLETED_COUNTER_KEY = "bench:peers:completed"

_redis_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    # One client per process; redis-py's pool notices a fork and reconnects in the child.
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(REDIS_URL)
    return _redis_client


def record_completion() -> None:
    """What a counted task does as its only work: the same tiny cost on every peer that uses it."""
    _redis().incr(COMPLETED_COUNTER_KEY)


def completed_count() -> int:
    return int(_redis().get(COMPLETED_COUNTER_KEY) or 0)


def reset_completed_counter() -> None:
    _redis().delete(COMPLETED_COUNTER_KEY)


# RabbitMQ


def _amqp_channel() -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    return connection, connection.channel()


def delete_queues(queue_names: list[str], exchange_names: list[str] = ()) -> None:
    """Delete queues (with any messages left in them) and exchanges; missing ones are fine."""
    connection, channel = _amqp_channel()
    try:
        for queue_name in queue_names:
            channel.queue_delete(queue=queue_name)
        for exchange_name in exchange_names:
            channel.exchange_delete(exchange=exchange_name)
    finally:
        connection.close()


def consumer_count(queue_name: str) -> int:
    """How many consumers the queue has; 0 while the queue does not exist yet."""
    connection, channel = _amqp_channel()
    try:
        declared = channel.queue_declare(queue=queue_name, passive=True)
        return declared.method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0  # 404: no worker has declared it yet
    finally:
        if connection.is_open:
            connection.close()


# PostgreSQL


def _admin_execute(statement: sql.Composable) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction, hence autocommit.
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(statement)


def recreate_database(name: str) -> None:
    drop_database(name)
    _admin_execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(name: str) -> None:
    # FORCE ends sessions a worker that died uncleanly may have left behind (PostgreSQL 13+).
    _admin_execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_url(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def connect_database(name: str) -> psycopg.Connection:
    """A connection kept open for polling, so polling does not fork a PostgreSQL backend each time."""
    # autocommit: every poll must see the rows committed since the previous one.
    return psycopg.connect(database_url(name), autocommit=True)


def count_rows(connection: psycopg.Connection, query: str) -> int:
    return int(connection.execute(query).fetchone()[0])
