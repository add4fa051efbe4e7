"""The outbox: ready steps are published after their transaction commits, and the recovery sweep publishes again
whatever the broker did not confirm or nobody claimed in time. Also the leases that keep running steps their
worker's."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.database import Timestamp, steps
from app.adapters.sql import SqlDatabase
from app.domain import Dispatch, StepStatus


class Outbox(SqlDatabase):
    async def mark_published(self, dispatches: list[Dispatch]) -> None:
        """The broker confirmed these steps' messages: the sweep leaves them be until they go unclaimed too long.
        Only the readiness that was published is marked (same attempt): a late mark must not hide a step that has
        since run and become ready again (a retry), whose own message is not yet published. Only `published_at`
        changes, a column no index holds, so PostgreSQL updates the row in place (HOT) on this hot path."""
        if not dispatches:
            return
        async with self.transaction() as connection:
            await connection.execute(
                update(steps)
                .where(
                    self.dialect.pairs_among(steps.c.id, steps.c.attempt, [(d.step_id, d.attempt) for d in dispatches]),
                    steps.c.status == StepStatus.READY,
                )
                .values(published_at=self.dialect.now_in_statement())
            )

    async def take_due_dispatches(
        self, limit: int, republish_after: timedelta, unclaimed_after: timedelta
    ) -> list[Any]:
        """The recovery sweep: every ready step whose `dispatch_after` has passed, unless the broker confirmed its
        message less than `unclaimed_after` ago. That is one committed but not confirmed by the broker (a crash, a
        broker outage), one whose retry backoff has passed, and one published but still unclaimed after
        `unclaimed_after` (a lost message, a claim that found it not yet due): no ready step can be stranded. Their
        next check moves `republish_after` forward first, so concurrent relays do not publish them together; the
        index `steps_outbox (status, dispatch_after)` serves the query. Returns id, queue, attempt, ready_at,
        published_at and `due_at`, the `dispatch_after` it was due at: selected first, as an UPDATE returns only the
        new value, then moved by a second statement when any is due."""

        async def work(connection: AsyncConnection) -> list[Any]:
            timestamp = self.dialect.now_in_statement()
            due = (
                select(
                    steps.c.id,
                    steps.c.queue,
                    steps.c.attempt,
                    steps.c.ready_at,
                    steps.c.published_at,
                    steps.c.dispatch_after.label("due_at"),
                )
                .where(
                    steps.c.status == StepStatus.READY,
                    steps.c.dispatch_after <= timestamp,
                    or_(steps.c.published_at.is_(None), steps.c.published_at <= timestamp - unclaimed_after),
                )
                .order_by(steps.c.dispatch_after)
                .limit(limit)
            )
            if self.dialect.is_postgresql:
                due = due.with_for_update(skip_locked=True)
            rows = (await connection.execute(due)).all()
            if rows:
                await connection.execute(
                    update(steps)
                    .where(self.dialect.among(steps.c.id, [row.id for row in rows]))
                    .values(dispatch_after=timestamp + republish_after)
                )
            return list(rows)

        return await self.retrying(work)

    async def ready_step_ages(self, queue: str) -> tuple[float, float]:
        """How long the oldest due ready step of `queue` has waited, in seconds by the database's clock (0 when
        there is none): among those the broker has not confirmed, and among those it has (waiting in the queue,
        unclaimed). One aggregate over the ready steps, found through an index on `status` (no index may hold
        `published_at`: its mark stays a HOT update)."""
        timestamp = self.dialect.now_in_statement()
        oldest = func.min(steps.c.ready_at)
        async with self.reading() as connection:
            result = await connection.execute(
                select(
                    type_coerce(timestamp, Timestamp),
                    oldest.filter(steps.c.published_at.is_(None)),
                    oldest.filter(steps.c.published_at.is_not(None)),
                ).where(steps.c.status == StepStatus.READY, steps.c.queue == queue, steps.c.ready_at <= timestamp)
            )
            now, unpublished, published = result.one()
        return _seconds_between(unpublished, now), _seconds_between(published, now)

    async def expired_leases(self, limit: int, grace_s: float) -> list[int]:
        """Running steps whose lease expired more than `grace_s` ago (by the database's clock)."""
        async with self.reading() as connection:
            timestamp = self.dialect.now_in_statement()
            rows = await connection.execute(
                select(steps.c.id)
                .where(
                    steps.c.status == StepStatus.RUNNING,
                    steps.c.lease_expires_at < timestamp - timedelta(seconds=grace_s),
                )
                .limit(limit)
            )
            return list(rows.scalars())

    async def renew_leases(self, owner: str, step_ids: list[int], lease_s: float) -> None:
        """Extends `owner`'s leases on the steps it is still executing, whatever their status: a step cancelled
        while it runs keeps its lease until its attempt ends, so a retry of the run cannot start it a second time."""
        if not step_ids:
            return
        async with self.transaction() as connection:
            timestamp = self.dialect.now_in_statement()
            await connection.execute(
                update(steps)
                .where(self.dialect.among(steps.c.id, step_ids), steps.c.lease_owner == owner)
                .values(lease_expires_at=timestamp + timedelta(seconds=lease_s))
            )


def _seconds_between(start: datetime | None, end: datetime) -> float:
    return 0.0 if start is None else (end - start).total_seconds()
