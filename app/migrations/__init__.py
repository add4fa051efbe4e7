"""Database migrations (Alembic), applied by `python -m app migrate`."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from app.adapters.database import create_engine, sqlalchemy_url

LOCATION = Path(__file__).parent
# SQLSTATEs of a server that is there but cannot take the connection yet: class 08 (connection exception) and
# 57P03 cannot_connect_now ("the database system is starting up", or shutting down, or in recovery).
_NOT_YET_SQLSTATES = ("08", "57P03")

log = logging.getLogger("app.migrations")


@dataclass(frozen=True)
class ConnectRetry:
    """How long to keep trying to reach a database that is not up yet: exponential backoff between attempts, from
    `initial_s` up to `max_s`, for `timeout_s` in all; one attempt never waits longer than `attempt_timeout_s`."""

    timeout_s: float
    initial_s: float
    max_s: float
    attempt_timeout_s: float = 10


class DatabaseUnreachable(RuntimeError):
    """The database did not accept a connection within the retry bound."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(LOCATION))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Brings the database to the newest schema; safe to run again, and concurrently (an advisory lock serialises)."""
    command.upgrade(alembic_config(database_url), "head")


def upgrade_when_reachable(database_url: str, retry: ConnectRetry) -> None:
    """Waits for the database to accept connections, then upgrades it. Only reaching the database is retried: a
    migration that fails raises at once (its transaction rolled back), for the Job to report."""
    wait_until_reachable(database_url, retry)
    upgrade(database_url)


def wait_until_reachable(database_url: str, retry: ConnectRetry) -> None:
    """Returns once the database answers a query; raises DatabaseUnreachable, naming the address and the last
    error, when it has not within `retry.timeout_s`. Errors other than a failure to connect are raised at once."""
    address = _address(database_url)
    deadline = time.monotonic() + retry.timeout_s
    delay = retry.initial_s
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            asyncio.run(_answers(database_url, max(0.1, min(retry.attempt_timeout_s, remaining))))
        except Exception as error:
            if not _is_connection_failure(error):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnreachable(
                    f"database at {address} did not accept a connection in {retry.timeout_s:g} s "
                    f"({attempt} attempts); last error: {_describe(error)}"
                ) from error
            pause = min(delay, remaining)
            log.warning(
                "database at %s not reachable (attempt %d): %s; next attempt in %.1f s",
                address,
                attempt,
                _describe(error),
                pause,
            )
            time.sleep(pause)
            delay = min(delay * 2, retry.max_s)
            continue
        if attempt > 1:
            log.info("database at %s reachable after %d attempts", address, attempt)
        return


async def _answers(database_url: str, timeout_s: float) -> None:
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        async with asyncio.timeout(timeout_s):
            async with engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
    finally:
        await engine.dispose()


def _is_connection_failure(error: BaseException) -> bool:
    # OSError covers a refused connection, an unresolvable or unreachable host and a reset; TimeoutError is one too.
    if isinstance(error, OSError):
        return True
    # asyncpg's own errors carry the SQLSTATE; SQLAlchemy's wrappers carry it on the error they wrap.
    sqlstate = getattr(error, "sqlstate", None) or getattr(getattr(error, "orig", None), "sqlstate", None) or ""
    return sqlstate.startswith(_NOT_YET_SQLSTATES)


def _address(database_url: str) -> str:
    """host:port, never the credentials."""
    url = make_url(sqlalchemy_url(database_url))
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
