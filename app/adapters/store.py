"""Persistence of workflows, runs, steps, events, dead letters and API keys on PostgreSQL (or the embedded
SQLite): the engine's `Store`. Every write is batched, and every state change a guarded statement (`step_statements`,
`run_statements`) writing values the engine decided, so a duplicate message or a lost worker can never finish a step
twice. A transaction that loses to a deadlock or a serialization failure is retried whole (`sql.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.api_keys import ApiKeyRecords
from app.adapters.dead_letters import DeadLetterRecords, DeadLetterStatements
from app.adapters.outbox import Outbox
from app.adapters.run_records import RunRecords
from app.adapters.run_statements import RunStatements
from app.adapters.step_statements import StepStatements
from app.adapters.workflows import WorkflowRecords

T = TypeVar("T")


class SqlTransaction(RunStatements, StepStatements, DeadLetterStatements):
    """The statements of one transaction, on its connection."""


class Store(WorkflowRecords, RunRecords, Outbox, DeadLetterRecords, ApiKeyRecords):
    async def in_transaction(self, work: Callable[[SqlTransaction], Awaitable[T]]) -> T:
        async def on_connection(connection: AsyncConnection) -> T:
            return await work(SqlTransaction(connection, self.dialect))

        return await self.retrying(on_connection)
