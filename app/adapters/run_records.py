"""Reads of runs, their steps and their events, for the API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from app.adapters.database import events, runs, steps
from app.adapters.sql import SqlDatabase


class RunRecords(SqlDatabase):
    async def get_run(self, run_id: uuid.UUID) -> tuple[Any, list[Any]] | None:
        async with self.reading() as connection:
            run = (await connection.execute(select(runs).where(runs.c.id == run_id))).first()
            if run is None:
                return None
            step_rows = (
                await connection.execute(select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id))
            ).all()
            return run, step_rows

    async def run_statuses(self, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        async with self.reading() as connection:
            rows = await connection.execute(
                select(runs.c.id, runs.c.status).where(self.dialect.among(runs.c.id, run_ids))
            )
            return {row.id: row.status for row in rows}

    async def list_runs(
        self, workflow: str | None, status: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Any]:
        query = select(runs)
        if workflow:
            query = query.where(runs.c.workflow_name == workflow)
        if status:
            query = query.where(runs.c.status == status)
        if after:
            created_at, run_id = after
            query = query.where(
                or_(runs.c.created_at < created_at, and_(runs.c.created_at == created_at, runs.c.id < run_id))
            )
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        async with self.reading() as connection:
            return (await connection.execute(query)).all()

    async def events_after(self, run_id: uuid.UUID, seq: int) -> list[Any]:
        async with self.reading() as connection:
            return (
                await connection.execute(
                    select(events).where(events.c.run_id == run_id, events.c.seq > seq).order_by(events.c.seq)
                )
            ).all()
