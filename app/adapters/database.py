"""The relational schema (PostgreSQL in production, SQLite embedded) and engine creation.

The schema is SQLAlchemy Core so one set of statements serves both databases; Alembic migrations create it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# JSONB on PostgreSQL (compact, indexable), JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite keys only on INTEGER PRIMARY KEY autoincrement, PostgreSQL on BIGINT identity.
Serial = BigInteger().with_variant(Integer(), "sqlite")


class Timestamp(TypeDecorator):
    """A point in time, always read back in UTC: PostgreSQL keeps the zone, SQLite drops it on the way in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, _dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("revoked_at", Timestamp),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("definition", Json, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("name", "version", name="workflows_name_version"),
    UniqueConstraint("name", "digest", name="workflows_name_digest"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("workflow_id", Serial, ForeignKey("workflows.id"), nullable=False),
    Column("workflow_name", String(200), nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Json, nullable=False),
    Column("error", Json),
    # Unfinished steps; the run ends when it reaches zero.
    Column("steps_remaining", Integer, nullable=False),
    # Last event sequence number; allocating under this row's lock keeps a run's events gap-free in commit order.
    Column("event_seq", Integer, nullable=False),
    Column("api_key_id", Uuid),
    Column("idempotency_key", String(200)),
    Column("created_at", Timestamp, nullable=False),
    Column("started_at", Timestamp),
    Column("finished_at", Timestamp),
    # W3C trace context of the request that started the run: its steps' spans join that trace.
    Column("trace_context", Json),
    UniqueConstraint("api_key_id", "idempotency_key", name="runs_idempotency"),
    Index("runs_listing", "created_at", "id"),
    Index("runs_by_workflow", "workflow_name", "created_at", "id"),
    Index("runs_by_status", "status", "created_at", "id"),
)

steps = Table(
    "steps",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("run_id", Uuid, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("task", String(200), nullable=False),
    Column("queue", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("depends_on", Json, nullable=False),
    Column("dependents", Json, nullable=False),
    # Dependencies not yet succeeded; the step becomes ready when it reaches zero.
    Column("waiting_on", Integer, nullable=False),
    Column("input", Json, nullable=False),
    Column("output", Json),
    Column("error", Json),
    # Outbox: a ready step is due for publishing at dispatch_after and stays unpublished until the broker confirms.
    Column("ready_at", Timestamp),
    Column("dispatch_after", Timestamp),
    Column("published_at", Timestamp),
    Column("lease_owner", String(100)),
    Column("lease_expires_at", Timestamp),
    Column("started_at", Timestamp),
    Column("finished_at", Timestamp),
    UniqueConstraint("run_id", "name", name="steps_run_name"),
    Index("steps_outbox", "status", "dispatch_after"),
    Index("steps_leases", "status", "lease_expires_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("run_id", Uuid, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("step", String(200)),
    Column("data", Json, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    UniqueConstraint("run_id", "seq", name="events_run_seq"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("queue", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("step_ids", Json, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)


def sqlalchemy_url(url: str) -> str:
    """The contract's standard URL (postgresql://...) with the async driver SQLAlchemy needs."""
    for prefix, driver in (("postgresql://", "postgresql+asyncpg://"), ("postgres://", "postgresql+asyncpg://")):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def encode_json(value) -> str:
    """One JSON encoding for every JSON column: orjson's, the same the payload size check measures."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# A database that accepts no TCP handshake (a partition, a blackholed host) fails a request within seconds (503),
# not after asyncpg's default of a minute.
CONNECT_TIMEOUT_S = 5


def create_engine(url: str, pool_size: int = 10, pool_overflow: int = 10) -> AsyncEngine:
    url = sqlalchemy_url(url)
    json_codec = {"json_serializer": encode_json, "json_deserializer": orjson.loads}
    if url.startswith("sqlite"):
        # One connection: SQLite has a single writer, and a shared connection never sees "database is locked".
        engine = create_async_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False}, **json_codec)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # No pre-ping: it costs two round trips per checkout. A connection found dead is invalidated with its pool,
    # and the store retries the transaction on a fresh one.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_overflow,
        connect_args={"timeout": CONNECT_TIMEOUT_S},
        **json_codec,
    )
