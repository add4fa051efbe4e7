"""The statements on runs and their events that transitions are made of, inside one transaction. They write the
values they are given and decide nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from app.adapters.database import events, runs, steps, workflows
from app.adapters.sql import Statements
from app.domain import RunState, WorkflowSpec

# The columns of a run that transitions read (`RunState`), and those they change.
RUN_STATE_COLUMNS = [
    runs.c.id,
    runs.c.status,
    runs.c.input,
    runs.c.steps_remaining,
    runs.c.event_seq,
    runs.c.started_at,
    runs.c.finished_at,
    runs.c.error,
    runs.c.trace_context,
]
SAVED_RUN_COLUMNS = ("status", "steps_remaining", "event_seq", "started_at", "finished_at", "error")


class RunStatements(Statements):
    async def lock_runs(self, run_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, RunState]:
        """The runs' states, locked in id order (every transaction locks runs in that order)."""
        query = select(*RUN_STATE_COLUMNS).where(self.dialect.among(runs.c.id, run_ids))
        if self.dialect.is_postgresql:
            query = query.order_by(runs.c.id).with_for_update()
        return {row.id: RunState(**row._asdict()) for row in await self.connection.execute(query)}

    async def save_runs(self, states: Sequence[RunState]) -> None:
        if not states:
            return
        await self.connection.execute(
            update(runs)
            .where(runs.c.id == bindparam("run_id"))
            .values({column: bindparam(column) for column in SAVED_RUN_COLUMNS}),
            [{"run_id": run.id, **{column: getattr(run, column) for column in SAVED_RUN_COLUMNS}} for run in states],
        )

    async def record_events(self, rows: Sequence[dict[str, Any]]) -> None:
        await self.connection.execute(insert(events), list(rows))

    async def insert_runs(self, rows: Sequence[dict[str, Any]]) -> None:
        await self.connection.execute(insert(runs), list(rows))

    async def insert_runs_once_per_key(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        statement = (
            self.dialect.insert(runs)
            .on_conflict_do_nothing(index_elements=["api_key_id", "idempotency_key"])
            .returning(runs.c.id)
        )
        return set((await self.connection.execute(statement, list(rows))).scalars())

    async def runs_by_keys(self, keys: Sequence[tuple[uuid.UUID | None, str]]) -> dict[tuple, Any]:
        """The runs already started under these (api key, idempotency key) pairs, with what they were started
        with."""
        found = await self.connection.execute(
            select(
                runs.c.id, runs.c.workflow_name, runs.c.status, runs.c.input, runs.c.api_key_id, runs.c.idempotency_key
            ).where(self.dialect.pairs_among(runs.c.api_key_id, runs.c.idempotency_key, keys))
        )
        return {(row.api_key_id, row.idempotency_key): row for row in found}

    async def run_steps(self, run_id: uuid.UUID) -> list[Any]:
        return list((await self.connection.execute(select(steps).where(steps.c.run_id == run_id))).all())

    async def definition_of_run(self, run_id: uuid.UUID) -> WorkflowSpec:
        definition = await self.connection.scalar(
            select(workflows.c.definition).where(
                workflows.c.id == select(runs.c.workflow_id).where(runs.c.id == run_id).scalar_subquery()
            )
        )
        return WorkflowSpec.from_canonical(definition)
