"""Messages no worker could process, kept with the reason for inspection (GET /v1/dead-letters)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from app.adapters.database import dead_letters
from app.adapters.sql import SqlDatabase, Statements, now


class DeadLetterStatements(Statements):
    async def insert_dead_letter(self, queue: str, reason: str, step_ids: list[int], body: str) -> None:
        await self.connection.execute(
            insert(dead_letters),
            {"queue": queue, "reason": reason, "step_ids": step_ids, "body": body, "created_at": now()},
        )


class DeadLetterRecords(SqlDatabase):
    async def list_dead_letters(self, after_id: int | None, limit: int) -> list[Any]:
        query = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if after_id:
            query = query.where(dead_letters.c.id < after_id)
        async with self.reading() as connection:
            return (await connection.execute(query)).all()
