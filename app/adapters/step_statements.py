"""The statements on steps that transitions are made of, inside one transaction. Each is guarded (`WHERE status
IN (...)`, the attempt, the lease), so a step some other transaction already moved is left alone; the values they
write are given, never decided here."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update

from app.adapters.database import steps
from app.adapters.sql import Statements
from app.domain import StepStatus

ENDED_STEP_COLUMNS = (steps.c.id, steps.c.run_id, steps.c.name, steps.c.attempt)


class StepStatements(Statements):
    async def insert_steps(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        statement = insert(steps).returning(steps.c.id, sort_by_parameter_order=True)
        return list((await self.connection.execute(statement, list(rows))).scalars())

    async def claim_ready(self, step_ids: Sequence[int], values: dict[str, Any], timestamp: datetime) -> list[Any]:
        """Ready, due steps whose last attempt holds no live lease take `values` and start their next attempt."""
        statement = (
            update(steps)
            .where(
                self.dialect.among(steps.c.id, step_ids),
                steps.c.status == StepStatus.READY,
                steps.c.ready_at <= timestamp,
                or_(steps.c.lease_owner.is_(None), steps.c.lease_expires_at < timestamp),
            )
            .values(attempt=steps.c.attempt + 1, **values)
            .returning(
                steps.c.id,
                steps.c.run_id,
                steps.c.name,
                steps.c.task,
                steps.c.attempt,
                steps.c.timeout_s,
                steps.c.input,
                steps.c.depends_on,
            )
        )
        return list((await self.connection.execute(statement)).all())

    async def outputs_of(self, wanted: Iterable[tuple[uuid.UUID, str]]) -> dict[uuid.UUID, dict[str, Any]]:
        """The outputs of the (run, step name) pairs, by run and name."""
        rows = await self.connection.execute(
            select(steps.c.run_id, steps.c.name, steps.c.output).where(
                self.dialect.pairs_among(steps.c.run_id, steps.c.name, wanted)
            )
        )
        outputs: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
        for row in rows:
            outputs[row.run_id][row.name] = row.output
        return outputs

    def _attempts_guard(self, query, attempts: dict[int, int], owner: str | None, statuses: Sequence[str]):
        """Steps still in one of `statuses`; with an owner, also still running the given attempt under its lease."""
        query = query.where(self.dialect.among(steps.c.id, attempts), steps.c.status.in_(list(statuses)))
        if owner is None:
            return query
        return query.where(
            steps.c.lease_owner == owner, self.dialect.pairs_among(steps.c.id, steps.c.attempt, attempts.items())
        )

    async def end_attempts(
        self, attempts: dict[int, int], owner: str | None, statuses: Sequence[str], values: dict[str, Any]
    ) -> list[Any]:
        statement = self._attempts_guard(update(steps), attempts, owner, statuses).values(**values)
        returning = statement.returning(*ENDED_STEP_COLUMNS, steps.c.dependents)
        return list((await self.connection.execute(returning)).all())

    async def lock_attempts(self, attempts: dict[int, int], owner: str | None, statuses: Sequence[str]) -> list[Any]:
        query = self._attempts_guard(select(*ENDED_STEP_COLUMNS, steps.c.max_attempts), attempts, owner, statuses)
        return list((await self.connection.execute(self.dialect.locking(query))).all())

    async def release_stale_leases(self, attempts: dict[int, int], owner: str, values: dict[str, Any]) -> None:
        await self.connection.execute(
            update(steps)
            .where(
                self.dialect.pairs_among(steps.c.id, steps.c.attempt, attempts.items()),
                steps.c.lease_owner == owner,
                steps.c.status != StepStatus.RUNNING,
            )
            .values(**values)
        )

    async def update_steps(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        columns = [column for column in rows[0] if column != "step_id"]
        await self.connection.execute(
            update(steps)
            .where(steps.c.id == bindparam("step_id"))
            .values({column: bindparam(column) for column in columns}),
            list(rows),
        )

    async def set_steps(self, step_ids: Sequence[int], values: dict[str, Any], *, if_status: str | None = None):
        statement = update(steps).where(self.dialect.among(steps.c.id, step_ids))
        if if_status is not None:
            statement = statement.where(steps.c.status == if_status)
        await self.connection.execute(statement.values(**values))

    async def cancel_unfinished(
        self, run_ids: Sequence[uuid.UUID], statuses: Iterable[str], values: dict[str, Any]
    ) -> dict[uuid.UUID, list[str]]:
        rows = await self.connection.execute(
            update(steps)
            .where(self.dialect.among(steps.c.run_id, run_ids), steps.c.status.in_(list(statuses)))
            .values(**values)
            .returning(steps.c.run_id, steps.c.name)
        )
        names: dict[uuid.UUID, list[str]] = defaultdict(list)
        for row in rows:
            names[row.run_id].append(row.name)
        return names

    async def count_down(self, run_id: uuid.UUID, names: Sequence[str]) -> list[Any]:
        """One statement per distinct count: the steps released once, those released twice, ..."""
        by_count: dict[int, list[str]] = defaultdict(list)
        for name, count in Counter(names).items():
            by_count[count].append(name)
        counted = []
        for count, group in by_count.items():
            rows = await self.connection.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.name.in_(group), steps.c.status == StepStatus.WAITING)
                .values(waiting_on=steps.c.waiting_on - count)
                .returning(steps.c.id, steps.c.name, steps.c.queue, steps.c.waiting_on, steps.c.attempt)
            )
            counted.extend(rows)
        return counted

    async def lost_leases(self, step_ids: Sequence[int], expired_before: datetime) -> list[Any]:
        rows = await self.connection.execute(
            select(steps.c.id, steps.c.attempt, steps.c.max_attempts, steps.c.queue).where(
                self.dialect.among(steps.c.id, step_ids),
                steps.c.status == StepStatus.RUNNING,
                steps.c.lease_expires_at < expired_before,
            )
        )
        return list(rows.all())
