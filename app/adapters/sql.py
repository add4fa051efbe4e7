"""The SQL database under the store: transactions (retried whole when they lose to a deadlock, a serialization
failure or a dropped connection), read-only connections, and the few statements that differ between PostgreSQL and
the embedded SQLite.

Locks are taken in one order (runs, then steps) to keep concurrent transactions from deadlocking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import and_, any_, bindparam, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

RETRIED_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
ATTEMPTS = 5

T = TypeVar("T")


def now() -> datetime:
    """This process's clock: only for what no other process compares (registration and API key times)."""
    return datetime.now(UTC)


class Dialect:
    """What differs between PostgreSQL and the embedded SQLite, for statements that serve both."""

    def __init__(self, name: str):
        self.is_postgresql = name == "postgresql"

    def among(self, column, values: Iterable):
        """`column IN values`. On PostgreSQL it is one array parameter (`= ANY($1)`): the statement's text does not
        change with the number of values, so it is compiled and prepared once, not once per batch size."""
        values = list(values)
        if self.is_postgresql:
            return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
        return column.in_(values)

    def pairs_among(self, first, second, pairs: Iterable[tuple]):
        """`(first, second) IN pairs`. On PostgreSQL a join with two array parameters zipped by `unnest`, for the
        same reason as `among` (an expanded list of row values is a new statement for every batch size), and
        because the planner then looks each pair up by index instead of matching the table against a list."""
        pairs = list(pairs)
        if not self.is_postgresql:
            return tuple_(first, second).in_(pairs)
        firsts = bindparam(None, [pair[0] for pair in pairs], type_=postgresql.ARRAY(first.type))
        seconds = bindparam(None, [pair[1] for pair in pairs], type_=postgresql.ARRAY(second.type))
        zipped = func.unnest(firsts, seconds).table_valued("first", "second").render_derived()
        return and_(first == zipped.c.first, second == zipped.c.second)

    def insert(self, table):
        """INSERT with ON CONFLICT support in the current dialect."""
        return (postgresql.insert if self.is_postgresql else sqlite.insert)(table)

    def locking(self, query):
        """`query` FOR UPDATE where rows can be locked (SQLite's transactions take turns instead)."""
        return query.with_for_update() if self.is_postgresql else query

    def now_in_statement(self):
        """The database's time as a value of the statement itself, where nothing else needs to know it: no round
        trip of its own. SQLite's is this process's clock, the only one there."""
        return func.now() if self.is_postgresql else now()

    async def clock(self, connection: AsyncConnection) -> datetime:
        """The database's time, the one clock every process compares against (ready_at, dispatch_after, leases):
        on PostgreSQL the transaction's `now()`, so it equals `now()` in any statement of the transaction. The
        embedded SQLite lives in one process, whose clock is the only one."""
        if not self.is_postgresql:
            return now()
        return (await connection.execute(select(func.now()))).scalar_one()


class Statements:
    """Statements run on one connection, inside a transaction the caller holds."""

    def __init__(self, connection: AsyncConnection, dialect: Dialect):
        self.connection = connection
        self.dialect = dialect

    async def now(self) -> datetime:
        return await self.dialect.clock(self.connection)


class SqlDatabase:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.dialect = Dialect(engine.dialect.name)
        # The embedded SQLite shares one connection: its transactions must take turns.
        self._turns = None if self.dialect.is_postgresql else asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        if self._turns is None:
            async with self.engine.begin() as connection:
                yield connection
            return
        async with self._turns, self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        if self._turns is None:
            async with self.engine.connect() as connection:
                yield connection
            return
        async with self._turns, self.engine.connect() as connection:
            yield connection

    async def retrying(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Runs `work` in a transaction, again from the start when it lost to a deadlock or a serialization
        failure, or its connection dropped (the database restarted: the pool replaces it on the next attempt)."""
        for attempt in range(ATTEMPTS):
            try:
                async with self.transaction() as connection:
                    return await work(connection)
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
                retried = sqlstate in RETRIED_SQLSTATES or error.connection_invalidated
                if not retried or attempt == ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        async with self.reading() as connection:
            await connection.execute(select(1))
