"""`python -m app migrate` as the migrations Job runs it: it keeps trying to reach a database that is not up yet,
within a bound, and then says which address it could not reach and why; a migration that fails is not retried."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from app import migrations
from tests.app.conftest import POSTGRES, ROOT, free_port

TABLES = {"api_keys", "workflows", "runs", "steps", "events", "dead_letters"}


def migrate(database_url: str, connect_timeout_s: float) -> tuple[subprocess.CompletedProcess, float]:
    """Runs the real command with a short backoff; returns it finished, and how long it took."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("APP_")}
    env |= {
        "APP_DATABASE_URL": database_url,
        "APP_LOG_FORMAT": "text",
        "APP_MIGRATE_CONNECT_TIMEOUT_S": str(connect_timeout_s),
        "APP_MIGRATE_RETRY_INITIAL_S": "0.2",
        "APP_MIGRATE_RETRY_MAX_S": "0.5",
    }
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=connect_timeout_s + 60,
    )
    return process, time.monotonic() - started


def url_of(database: str, port: int | None = None) -> str:
    """The test server's URL for `database`, with its credentials; through 127.0.0.1:`port` when one is given."""
    parts = urlsplit(POSTGRES)
    if port is not None:
        userinfo, at, _ = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{port}")
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def empty_database():
    """A database without any schema on the test server; yields its name."""
    name = f"workflow_migrate_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class LateDatabase:
    """A TCP proxy to the test server that resets every connection until `opens_after_s` after the first one, as a
    database still starting up (or a Service without ready endpoints) does, and forwards connections after that."""

    def __init__(self, opens_after_s: float):
        upstream = urlsplit(POSTGRES)
        self._upstream = (upstream.hostname, upstream.port or 5432)
        self._opens_after_s = opens_after_s
        self._opens_at: float | None = None
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            now = time.monotonic()
            self._opens_at = self._opens_at or now + self._opens_after_s
            if now < self._opens_at:
                # Linger 0: close with a reset, as a port with nothing ready behind it answers.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                self.refused += 1
                continue
            server = socket.create_connection(self._upstream)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@contextmanager
def late_database(opens_after_s: float):
    proxy = LateDatabase(opens_after_s)
    try:
        yield proxy
    finally:
        proxy.close()


async def _schema(database_url: str) -> tuple[set[str], str]:
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    return {row["tablename"] for row in tables}, version


def test_migrate_gives_up_on_an_unreachable_database_within_its_bound_naming_the_address_and_the_error():
    port = free_port()
    process, took = migrate(f"postgresql://workflow:secret-password@127.0.0.1:{port}/workflow", connect_timeout_s=3)
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert output.count("not reachable (attempt") >= 3, output
    assert f"database at 127.0.0.1:{port} did not accept a connection in 3 s" in output
    assert "last error: ConnectionRefusedError" in output
    assert "secret-password" not in output
    # Retried for the whole bound, then stopped: the rest is the interpreter starting.
    assert 3 <= took < 3 + 30


def test_migrate_waits_for_a_database_that_comes_up_late_and_applies_every_migration(empty_database):
    with late_database(opens_after_s=2) as database:
        process, _ = migrate(url_of(empty_database, database.port), connect_timeout_s=60)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert database.refused >= 2
    assert f"database at 127.0.0.1:{database.port} reachable after" in output
    tables, version = asyncio.run(_schema(url_of(empty_database)))
    assert tables >= TABLES | {"alembic_version"}
    assert version == ScriptDirectory.from_config(migrations.alembic_config(POSTGRES)).get_current_head()


def test_a_failing_migration_is_reported_at_once_not_retried(empty_database):
    # A table the first migration creates is already there, so that migration fails on a reachable database.
    asyncio.run(_conflicting_table(url_of(empty_database)))
    process, took = migrate(url_of(empty_database), connect_timeout_s=120)
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert 'relation "api_keys" already exists' in output
    assert "not reachable" not in output
    assert took < 60


async def _conflicting_table(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CREATE TABLE api_keys (id integer)")
    finally:
        await connection.close()
