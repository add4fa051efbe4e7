"""Persistence of workflows, runs, steps and events: every write is batched, and every state change is a
conditional update, so a duplicate message or a lost worker can never finish a step twice.

Locks are taken in one order (runs, then steps) to keep concurrent transactions from deadlocking; a transaction
that still loses to a deadlock or a serialization failure is retried whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, any_, bindparam, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.database import api_keys, dead_letters, events, runs, steps, workflows
from app.engine.definitions import WorkflowSpec
from app.engine.idempotency import KeyReuse
from app.engine.state import (
    FINISHED_RUN,
    UNFINISHED_STEP,
    FailureDecision,
    Outcome,
    RetryPolicy,
    RunStatus,
    StepStatus,
    after_failure,
    run_status_after_step_success,
)

RETRIED_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def now() -> datetime:
    """This process's clock: only for what no other process compares (registration and API key times)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Workflow:
    id: int
    name: str
    version: int
    spec: WorkflowSpec
    created_at: datetime


@dataclass(frozen=True)
class NewRun:
    workflow: Workflow
    input: Any
    api_key_id: uuid.UUID | None = None
    idempotency_key: str | None = None
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True)
class CreatedRun:
    id: uuid.UUID
    workflow: str
    status: str
    created: bool


@dataclass(frozen=True)
class Dispatch:
    """A ready step to publish to its queue, with the trace context that made it ready when there is one."""

    step_id: int
    queue: str
    trace_context: dict[str, str] | None = None
    # The step's attempt count when it was made ready: marking it published must not mark a later readiness.
    attempt: int = 0


@dataclass(frozen=True)
class ClaimedStep:
    id: int
    run_id: uuid.UUID
    name: str
    task: str
    attempt: int
    timeout_s: float
    input: Any
    run_input: Any
    upstream: dict[str, Any]
    run_trace_context: dict[str, str] | None = None


@dataclass
class Changes:
    """What a transaction changed that others must hear about once it commits."""

    dispatches: list[Dispatch] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: Changes) -> None:
        self.dispatches.extend(other.dispatches)
        self.events.extend(other.events)


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(secret: str) -> str:
    # API keys are long random tokens, so a fast digest is as strong as a slow one here.
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    def __init__(
        self, engine: AsyncEngine, retry_policy: RetryPolicy, republish_after_s: float, unclaimed_after_s: float = 60
    ):
        self.engine = engine
        self.retry_policy = retry_policy
        self.republish_after = timedelta(seconds=republish_after_s)
        self.unclaimed_after = timedelta(seconds=unclaimed_after_s)
        self._dialect = engine.dialect.name
        # The embedded SQLite shares one connection: its transactions must take turns.
        self._turns = asyncio.Lock() if self._dialect == "sqlite" else None

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

    async def _retrying(self, work, *args):
        for attempt in range(5):
            try:
                async with self.transaction() as connection:
                    return await work(connection, *args)
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
                # A dropped connection (the database restarted) is replaced by the pool on the next attempt.
                retried = sqlstate in RETRIED_SQLSTATES or error.connection_invalidated
                if not retried or attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _among(self, column, values: Iterable):
        """`column IN values`. On PostgreSQL it is one array parameter (`= ANY($1)`): the statement's text does not
        change with the number of values, so it is compiled and prepared once, not once per batch size."""
        values = list(values)
        if self._dialect == "postgresql":
            return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
        return column.in_(values)

    def _insert(self, table):
        """INSERT with ON CONFLICT support in the current dialect."""
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    async def _clock(self, connection: AsyncConnection) -> datetime:
        """The database's time, the one clock every process compares against (ready_at, dispatch_after, leases):
        on PostgreSQL the transaction's `now()`, so it equals `now()` in any statement of the transaction. The
        embedded SQLite lives in one process, whose clock is the only one."""
        if self._dialect != "postgresql":
            return now()
        return (await connection.execute(select(func.now()))).scalar_one()

    async def ping(self) -> None:
        async with self.reading() as connection:
            await connection.execute(select(1))

    # Workflows

    async def register_workflow(self, spec: WorkflowSpec) -> tuple[Workflow, bool]:
        """Stores `spec` as the workflow's next version, unless this exact definition is already a version."""
        digest = spec.digest()
        for _ in range(3):
            try:
                async with self.transaction() as connection:
                    existing = (
                        await connection.execute(
                            select(workflows).where(workflows.c.name == spec.name, workflows.c.digest == digest)
                        )
                    ).first()
                    if existing:
                        return _workflow(existing), False
                    latest = await connection.scalar(
                        select(func.max(workflows.c.version)).where(workflows.c.name == spec.name)
                    )
                    row = {
                        "name": spec.name,
                        "version": (latest or 0) + 1,
                        "digest": digest,
                        "definition": spec.canonical(),
                        "created_at": now(),
                    }
                    workflow_id = (
                        await connection.execute(insert(workflows).returning(workflows.c.id), row)
                    ).scalar_one()
                    return Workflow(workflow_id, spec.name, row["version"], spec, row["created_at"]), True
            except IntegrityError:
                continue  # another registration of the same workflow won the race: read its result
        raise RuntimeError(f"could not register workflow {spec.name!r}")

    async def workflow(self, name: str, version: int | None = None) -> Workflow | None:
        query = select(workflows).where(workflows.c.name == name)
        query = query.where(workflows.c.version == version) if version else query.order_by(workflows.c.version.desc())
        async with self.reading() as connection:
            row = (await connection.execute(query.limit(1))).first()
        return _workflow(row) if row else None

    async def workflow_versions(self, name: str) -> list[Workflow]:
        async with self.reading() as connection:
            rows = await connection.execute(
                select(workflows).where(workflows.c.name == name).order_by(workflows.c.version)
            )
            return [_workflow(row) for row in rows]

    async def workflow_names(self) -> list[Workflow]:
        latest = select(workflows.c.name, func.max(workflows.c.version).label("version")).group_by(workflows.c.name)
        latest = latest.subquery()
        query = select(workflows).join(
            latest, and_(workflows.c.name == latest.c.name, workflows.c.version == latest.c.version)
        )
        async with self.reading() as connection:
            return [_workflow(row) for row in await connection.execute(query.order_by(workflows.c.name))]

    # Runs

    async def create_runs(
        self, requests: list[NewRun], check_reuses: Callable[[list[KeyReuse]], None]
    ) -> tuple[list[CreatedRun], Changes]:
        """Creates the runs (an idempotency key already used by the same API key returns its run), their steps
        and their first events, in one transaction. The ready steps come back for publishing after commit.

        `check_reuses` is handed every request that repeats a key, with what the key's first use started, before
        anything is committed: whatever it raises rolls the whole transaction back."""
        return await self._retrying(self._create_runs, requests, check_reuses)

    async def _create_runs(self, connection: AsyncConnection, requests: list[NewRun], check_reuses):
        timestamp = await self._clock(connection)
        results: list[CreatedRun | None] = [None] * len(requests)
        fresh: dict[int, uuid.UUID] = {}
        keyed: dict[tuple[uuid.UUID | None, str], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            if request.idempotency_key is None:
                fresh[index] = uuid.uuid4()
            else:
                keyed[(request.api_key_id, request.idempotency_key)].append(index)

        def run_row(index: int, run_id: uuid.UUID) -> dict[str, Any]:
            request = requests[index]
            return {
                "id": run_id,
                "workflow_id": request.workflow.id,
                "workflow_name": request.workflow.name,
                "workflow_version": request.workflow.version,
                "status": RunStatus.QUEUED,
                "input": request.input,
                "steps_remaining": len(request.workflow.spec.steps),
                "event_seq": 1,
                "api_key_id": request.api_key_id,
                "idempotency_key": request.idempotency_key,
                "created_at": timestamp,
                "trace_context": request.trace_context,
            }

        run_rows = [run_row(index, run_id) for index, run_id in fresh.items()]
        if run_rows:
            await connection.execute(insert(runs), run_rows)
        for index, run_id in fresh.items():
            results[index] = CreatedRun(run_id, requests[index].workflow.name, RunStatus.QUEUED, True)

        if keyed:
            candidates = {key: uuid.uuid4() for key in keyed}
            rows = [run_row(indexes[0], candidates[key]) for key, indexes in keyed.items()]
            inserted = set(
                (
                    await connection.execute(
                        self._insert(runs)
                        .on_conflict_do_nothing(index_elements=["api_key_id", "idempotency_key"])
                        .returning(runs.c.id),
                        rows,
                    )
                ).scalars()
            )
            existing_keys = [key for key in keyed if candidates[key] not in inserted]
            existing: dict[tuple, Any] = {}
            if existing_keys:
                found = await connection.execute(
                    select(
                        runs.c.id,
                        runs.c.workflow_name,
                        runs.c.status,
                        runs.c.input,
                        runs.c.api_key_id,
                        runs.c.idempotency_key,
                    ).where(tuple_(runs.c.api_key_id, runs.c.idempotency_key).in_(existing_keys))
                )
                existing = {(row.api_key_id, row.idempotency_key): row for row in found}
            reuses: list[KeyReuse] = []
            for key, indexes in keyed.items():
                first = requests[indexes[0]]
                for position, index in enumerate(indexes):
                    if candidates[key] in inserted:
                        results[index] = CreatedRun(
                            candidates[key], requests[index].workflow.name, RunStatus.QUEUED, position == 0
                        )
                        if position == 0:
                            fresh[index] = candidates[key]
                        else:
                            reuses.append(KeyReuse(index, first.workflow.name, first.input))
                    else:
                        row = existing[key]
                        results[index] = CreatedRun(row.id, row.workflow_name, row.status, False)
                        reuses.append(KeyReuse(index, row.workflow_name, row.input))
            check_reuses(reuses)

        step_rows, event_rows, changes = [], [], Changes()
        trace_of_run = {run_id: requests[index].trace_context for index, run_id in fresh.items()}
        for index, run_id in fresh.items():
            spec = requests[index].workflow.spec
            dependents = spec.dependents()
            initial = {}
            for step in spec.steps:
                ready = not step.depends_on
                initial[step.name] = StepStatus.READY if ready else StepStatus.WAITING
                step_rows.append(
                    {
                        "run_id": run_id,
                        "name": step.name,
                        "task": step.task,
                        "queue": step.queue,
                        "status": initial[step.name],
                        "attempt": 0,
                        "max_attempts": step.max_attempts,
                        "timeout_s": step.timeout_s,
                        "depends_on": list(step.depends_on),
                        "dependents": dependents[step.name],
                        "waiting_on": len(step.depends_on),
                        "input": step.input,
                        "ready_at": timestamp if ready else None,
                        "dispatch_after": timestamp + self.republish_after if ready else None,
                    }
                )
            event = _event(run_id, 1, "run.created", None, {"workflow": spec.name, "steps": initial}, timestamp)
            event_rows.append(event)
        if step_rows:
            ids = (
                await connection.execute(insert(steps).returning(steps.c.id, sort_by_parameter_order=True), step_rows)
            ).scalars()
            for row, step_id in zip(step_rows, ids, strict=True):
                if row["status"] == StepStatus.READY:
                    changes.dispatches.append(Dispatch(step_id, row["queue"], trace_of_run[row["run_id"]]))
        if event_rows:
            await connection.execute(insert(events), event_rows)
            changes.events.extend(event_rows)
        return results, changes

    async def mark_published(self, dispatches: list[Dispatch]) -> None:
        """The broker confirmed these steps' messages: the relay leaves them be until `unclaimed_after` has passed.
        Only the readiness that was published is marked (same attempt): a late mark must not hide a step that has
        since run and become ready again (a retry), whose own message is not yet published."""
        if not dispatches:
            return
        async with self.transaction() as connection:
            timestamp = await self._clock(connection)
            await connection.execute(
                update(steps)
                .where(
                    tuple_(steps.c.id, steps.c.attempt).in_([(d.step_id, d.attempt) for d in dispatches]),
                    steps.c.status == StepStatus.READY,
                )
                .values(published_at=timestamp, dispatch_after=timestamp + self.unclaimed_after)
            )

    async def take_due_dispatches(self, limit: int) -> list[Dispatch]:
        """The recovery sweep: every ready step whose `dispatch_after` has passed, published or not. That is one
        committed but not confirmed by the broker (a crash, a broker outage), one whose retry backoff has passed, and
        one published but still unclaimed after `unclaimed_after` (a lost message, a claim that found it not yet
        due): no ready step can be stranded. Their next check moves forward first, so concurrent relays do not
        publish them together; the index `steps_outbox (status, dispatch_after)` serves the query."""

        async def work(connection: AsyncConnection):
            timestamp = await self._clock(connection)
            due = (
                select(steps.c.id)
                .where(steps.c.status == StepStatus.READY, steps.c.dispatch_after <= timestamp)
                .order_by(steps.c.dispatch_after)
                .limit(limit)
            )
            if self._dialect == "postgresql":
                due = due.with_for_update(skip_locked=True)
            rows = await connection.execute(
                update(steps)
                .where(steps.c.id.in_(due.scalar_subquery()))
                .values(dispatch_after=timestamp + self.republish_after)
                .returning(steps.c.id, steps.c.queue, steps.c.attempt)
            )
            return [Dispatch(row.id, row.queue, attempt=row.attempt) for row in rows]

        return await self._retrying(work)

    # Steps

    async def claim(self, step_ids: list[int], owner: str, lease_s: float) -> tuple[list[ClaimedStep], Changes]:
        """Moves ready steps to running under `owner`'s lease. A step that is not ready (finished, running
        elsewhere, cancelled, or not yet due) is skipped: that is what makes a redelivered message harmless. A ready
        step whose previous attempt still holds a live lease (its run was cancelled, then retried, while it ran) is
        skipped too, so one step never runs twice at once; the relay publishes it again once that lease is gone."""
        return await self._retrying(self._claim, step_ids, owner, lease_s)

    async def _claim(self, connection: AsyncConnection, step_ids: list[int], owner: str, lease_s: float):
        timestamp = await self._clock(connection)
        changes = Changes()
        claimed_rows = (
            await connection.execute(
                update(steps)
                .where(
                    self._among(steps.c.id, step_ids),
                    steps.c.status == StepStatus.READY,
                    steps.c.ready_at <= timestamp,
                    or_(steps.c.lease_owner.is_(None), steps.c.lease_expires_at < timestamp),
                )
                .values(
                    status=StepStatus.RUNNING,
                    attempt=steps.c.attempt + 1,
                    lease_owner=owner,
                    lease_expires_at=timestamp + timedelta(seconds=lease_s),
                    started_at=timestamp,
                )
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
        ).all()
        if not claimed_rows:
            return [], changes
        # Steps first, then their runs: the same order as every transaction that ends steps.
        run_rows = await self._lock_runs(connection, {row.run_id for row in claimed_rows})
        upstream: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
        wanted = {(row.run_id, parent) for row in claimed_rows for parent in row.depends_on}
        if wanted:
            outputs = await connection.execute(
                select(steps.c.run_id, steps.c.name, steps.c.output).where(
                    tuple_(steps.c.run_id, steps.c.name).in_(list(wanted))
                )
            )
            for row in outputs:
                upstream[row.run_id][row.name] = row.output
        event_rows = []
        started_runs = {row.run_id for row in claimed_rows}
        for run_id in started_runs:
            run = run_rows[run_id]
            if run["status"] == RunStatus.QUEUED:
                run["status"], run["started_at"] = RunStatus.RUNNING, run["started_at"] or timestamp
        for row in claimed_rows:
            run = run_rows[row.run_id]
            run["event_seq"] += 1
            event_rows.append(
                _event(
                    row.run_id,
                    run["event_seq"],
                    "step.started",
                    row.name,
                    {"attempt": row.attempt, "run_status": run["status"]},
                    timestamp,
                )
            )
        await self._save_runs(connection, run_rows, started_runs)
        await connection.execute(insert(events), event_rows)
        changes.events.extend(event_rows)
        claimed = [
            ClaimedStep(
                id=row.id,
                run_id=row.run_id,
                name=row.name,
                task=row.task,
                attempt=row.attempt,
                timeout_s=row.timeout_s,
                input=row.input,
                run_input=run_rows[row.run_id]["input"],
                upstream={parent: upstream[row.run_id].get(parent) for parent in row.depends_on},
                run_trace_context=run_rows[row.run_id]["trace_context"],
            )
            for row in claimed_rows
        ]
        return claimed, changes

    async def renew_leases(self, owner: str, step_ids: list[int], lease_s: float) -> None:
        """Extends `owner`'s leases on the steps it is still executing, whatever their status: a step cancelled
        while it runs keeps its lease until its attempt ends, so a retry of the run cannot start it a second time."""
        if not step_ids:
            return
        async with self.transaction() as connection:
            timestamp = await self._clock(connection)
            await connection.execute(
                update(steps)
                .where(self._among(steps.c.id, step_ids), steps.c.lease_owner == owner)
                .values(lease_expires_at=timestamp + timedelta(seconds=lease_s))
            )

    async def complete(self, outcomes: list[Outcome], owner: str | None) -> Changes:
        """Records how attempts ended, in one transaction: successes release their dependents (and finish their
        run when it was the last step), failures retry after a backoff or fail the run and cancel the rest.
        Only steps still running the outcome's attempt under `owner` are touched; `owner` None is the platform
        itself (a lost worker, a dead-lettered message), which may also end steps that are merely ready. An
        attempt that is no longer the step's (its run was cancelled, or its lease was taken over) changes nothing
        but gives up its lease."""
        if not outcomes:
            return Changes()
        return await self._retrying(self._complete, outcomes, owner)

    async def _complete(self, connection: AsyncConnection, outcomes: list[Outcome], owner: str | None):
        timestamp = await self._clock(connection)
        by_id = {outcome.step_id: outcome for outcome in outcomes}
        allowed = [StepStatus.RUNNING] if owner is not None else [StepStatus.RUNNING, StepStatus.READY]

        def attempts(ids: list[int]):
            return tuple_(steps.c.id, steps.c.attempt).in_([(i, by_id[i].attempt) for i in ids])

        def live(query, ids: list[int]):
            query = query.where(self._among(steps.c.id, ids), steps.c.status.in_(allowed))
            return query.where(steps.c.lease_owner == owner, attempts(ids)) if owner is not None else query

        # Steps first (a success is recorded in the same statement that checks it is still ours), then their runs.
        success_ids = [o.step_id for o in outcomes if o.succeeded]
        failure_ids = [o.step_id for o in outcomes if not o.succeeded]
        succeeded_rows = []
        if success_ids:
            succeeded_rows = (
                await connection.execute(
                    live(update(steps), success_ids)
                    .values(
                        status=StepStatus.SUCCEEDED,
                        output=None,
                        error=None,
                        finished_at=timestamp,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                    .returning(steps.c.id, steps.c.run_id, steps.c.name, steps.c.attempt, steps.c.dependents)
                )
            ).all()
            outputs = [
                {"step_id": row.id, "output": by_id[row.id].output}
                for row in succeeded_rows
                if by_id[row.id].output is not None
            ]
            if outputs:
                await connection.execute(
                    update(steps).where(steps.c.id == bindparam("step_id")).values(output=bindparam("output")), outputs
                )
        failed_rows = []
        if failure_ids:
            query = live(
                select(steps.c.id, steps.c.run_id, steps.c.name, steps.c.attempt, steps.c.max_attempts), failure_ids
            )
            failed_rows = (
                await connection.execute(query.with_for_update() if self._dialect == "postgresql" else query)
            ).all()
        stale = sorted(by_id.keys() - {row.id for row in [*succeeded_rows, *failed_rows]})
        if stale and owner is not None:
            # The attempt has ended: its lease no longer keeps a retried step from being claimed, and the relay
            # publishes such a step at once.
            await connection.execute(
                update(steps)
                .where(attempts(stale), steps.c.lease_owner == owner, steps.c.status != StepStatus.RUNNING)
                .values(lease_owner=None, lease_expires_at=None, dispatch_after=timestamp)
            )
        if not succeeded_rows and not failed_rows:
            return Changes()
        run_rows = await self._lock_runs(connection, {row.run_id for row in [*succeeded_rows, *failed_rows]})

        changes = Changes()
        event_rows: list[dict[str, Any]] = []
        touched_runs: set[uuid.UUID] = set()

        def emit(run_id: uuid.UUID, kind: str, step: str | None, data: dict[str, Any]) -> None:
            run = run_rows[run_id]
            run["event_seq"] += 1
            event_rows.append(_event(run_id, run["event_seq"], kind, step, data, timestamp))
            touched_runs.add(run_id)

        retried, failed_runs = [], {}
        releases: dict[uuid.UUID, list[str]] = defaultdict(list)
        releasing_trace: dict[uuid.UUID, dict[str, str] | None] = {}
        for row in succeeded_rows:
            run = run_rows[row.run_id]
            if row.dependents:
                releasing_trace[row.run_id] = by_id[row.id].trace_context
            emit(
                row.run_id, "step.succeeded", row.name, {"attempt": row.attempt, "duration_s": by_id[row.id].duration_s}
            )
            releases[row.run_id].extend(row.dependents)
            run["steps_remaining"] -= 1
            new_status = run_status_after_step_success(run["steps_remaining"], RunStatus(run["status"]))
            if new_status != run["status"]:
                run["status"], run["finished_at"] = new_status, timestamp
                emit(row.run_id, f"run.{new_status}", None, {})
        for row in failed_rows:
            outcome = by_id[row.id]
            if after_failure(outcome, row.attempt, row.max_attempts) is FailureDecision.RETRY:
                ready_at = timestamp + self.retry_policy.delay(row.attempt)
                retried.append({"step_id": row.id, "error": outcome.error, "ready_at": ready_at})
                emit(
                    row.run_id,
                    "step.retrying",
                    row.name,
                    {"attempt": row.attempt, "error": outcome.error, "next_attempt_at": ready_at.isoformat()},
                )
            else:
                failed_runs.setdefault(row.run_id, (row, outcome))

        if retried:
            await connection.execute(
                update(steps)
                .where(steps.c.id == bindparam("step_id"))
                .values(
                    status=StepStatus.READY,
                    error=bindparam("error"),
                    ready_at=bindparam("ready_at"),
                    dispatch_after=bindparam("ready_at"),
                    published_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                ),
                retried,
            )
        for run_id, (row, outcome) in failed_runs.items():
            await connection.execute(
                update(steps)
                .where(steps.c.id == row.id)
                .values(status=StepStatus.FAILED, error=outcome.error, finished_at=timestamp, lease_owner=None)
            )
            emit(run_id, "step.failed", row.name, {"attempt": row.attempt, "error": outcome.error})
            cancelled = await self._cancel_unfinished(connection, [run_id], timestamp)
            for name in cancelled.get(run_id, []):
                emit(run_id, "step.cancelled", name, {})
            run = run_rows[run_id]
            run["status"], run["finished_at"] = RunStatus.FAILED, timestamp
            run["error"] = {"step": row.name, **(outcome.error or {})}
            emit(run_id, "run.failed", None, {"step": row.name, "error": outcome.error})
            releases.pop(run_id, None)

        for run_id, names in releases.items():
            if run_rows[run_id]["status"] in FINISHED_RUN or not names:
                continue
            for ready in await self._release(connection, run_id, names, timestamp):
                changes.dispatches.append(
                    Dispatch(ready.id, ready.queue, releasing_trace.get(run_id), attempt=ready.attempt)
                )
                emit(run_id, "step.ready", ready.name, {})

        await self._save_runs(connection, run_rows, touched_runs)
        if event_rows:
            await connection.execute(insert(events), event_rows)
        changes.events.extend(event_rows)
        return changes

    async def _release(self, connection: AsyncConnection, run_id: uuid.UUID, names: list[str], timestamp: datetime):
        """One fewer dependency to wait for in each named step; those with none left become ready."""
        counts: dict[str, int] = defaultdict(int)
        for name in names:
            counts[name] += 1
        ready = []
        by_count: dict[int, list[str]] = defaultdict(list)
        for name, count in counts.items():
            by_count[count].append(name)
        for count, group in by_count.items():
            rows = await connection.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.name.in_(group), steps.c.status == StepStatus.WAITING)
                .values(waiting_on=steps.c.waiting_on - count)
                .returning(steps.c.id, steps.c.name, steps.c.queue, steps.c.waiting_on, steps.c.attempt)
            )
            ready.extend(row for row in rows if row.waiting_on == 0)
        if ready:
            await connection.execute(
                update(steps)
                .where(self._among(steps.c.id, [row.id for row in ready]))
                .values(
                    status=StepStatus.READY,
                    ready_at=timestamp,
                    dispatch_after=timestamp + self.republish_after,
                    published_at=None,
                )
            )
        return ready

    async def _cancel_unfinished(self, connection: AsyncConnection, run_ids: list[uuid.UUID], timestamp: datetime):
        # A running step keeps its lease: its attempt goes on until the worker reports it, and until then a retry
        # of the run must not start the step again.
        rows = await connection.execute(
            update(steps)
            .where(self._among(steps.c.run_id, run_ids), steps.c.status.in_(list(UNFINISHED_STEP)))
            .values(status=StepStatus.CANCELLED, finished_at=timestamp)
            .returning(steps.c.run_id, steps.c.name)
        )
        cancelled: dict[uuid.UUID, list[str]] = defaultdict(list)
        for row in rows:
            cancelled[row.run_id].append(row.name)
        return cancelled

    async def _lock_runs(self, connection: AsyncConnection, run_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict]:
        query = select(
            runs.c.id,
            runs.c.status,
            runs.c.input,
            runs.c.steps_remaining,
            runs.c.event_seq,
            runs.c.started_at,
            runs.c.finished_at,
            runs.c.error,
            runs.c.trace_context,
        ).where(self._among(runs.c.id, run_ids))
        if self._dialect == "postgresql":
            query = query.order_by(runs.c.id).with_for_update()
        return {row.id: row._asdict() for row in await connection.execute(query)}

    async def _save_runs(self, connection: AsyncConnection, run_rows: dict[uuid.UUID, dict], run_ids: set) -> None:
        if not run_ids:
            return
        await connection.execute(
            update(runs)
            .where(runs.c.id == bindparam("run_id"))
            .values(
                status=bindparam("status"),
                steps_remaining=bindparam("steps_remaining"),
                event_seq=bindparam("event_seq"),
                started_at=bindparam("started_at"),
                finished_at=bindparam("finished_at"),
                error=bindparam("error"),
            ),
            [
                {
                    "run_id": run_id,
                    "status": run_rows[run_id]["status"],
                    "steps_remaining": run_rows[run_id]["steps_remaining"],
                    "event_seq": run_rows[run_id]["event_seq"],
                    "started_at": run_rows[run_id]["started_at"],
                    "finished_at": run_rows[run_id]["finished_at"],
                    "error": run_rows[run_id]["error"],
                }
                for run_id in run_ids
            ],
        )

    async def expired_leases(self, limit: int, grace_s: float) -> list[int]:
        """Running steps whose lease expired more than `grace_s` ago (by the database's clock)."""
        async with self.reading() as connection:
            timestamp = await self._clock(connection)
            rows = await connection.execute(
                select(steps.c.id)
                .where(
                    steps.c.status == StepStatus.RUNNING,
                    steps.c.lease_expires_at < timestamp - timedelta(seconds=grace_s),
                )
                .limit(limit)
            )
            return list(rows.scalars())

    async def requeue_lost(self, step_ids: list[int], grace_s: float) -> Changes:
        """Steps whose worker stopped renewing its lease (more than `grace_s` ago): back to ready while attempts
        remain, else failed."""
        return await self._retrying(self._requeue_lost, step_ids, grace_s)

    async def _requeue_lost(self, connection: AsyncConnection, step_ids: list[int], grace_s: float):
        timestamp = await self._clock(connection)
        rows = (
            await connection.execute(
                select(steps.c.id, steps.c.attempt, steps.c.max_attempts, steps.c.queue).where(
                    self._among(steps.c.id, step_ids),
                    steps.c.status == StepStatus.RUNNING,
                    steps.c.lease_expires_at < timestamp - timedelta(seconds=grace_s),
                )
            )
        ).all()
        retry = [row for row in rows if row.attempt < row.max_attempts]
        exhausted = [row.id for row in rows if row.attempt >= row.max_attempts]
        changes = Changes()
        if retry:
            await connection.execute(
                update(steps)
                .where(self._among(steps.c.id, [row.id for row in retry]), steps.c.status == StepStatus.RUNNING)
                .values(
                    status=StepStatus.READY,
                    ready_at=timestamp,
                    dispatch_after=timestamp + self.republish_after,
                    published_at=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            changes.dispatches.extend(Dispatch(row.id, row.queue, attempt=row.attempt) for row in retry)
        if exhausted:
            lost = {"type": "WorkerLost", "message": "the worker running this step stopped before it finished"}
            changes.merge(
                await self._complete(
                    connection, [Outcome(step_id, False, error=lost, retryable=False) for step_id in exhausted], None
                )
            )
        return changes

    async def cancel_run(self, run_id: uuid.UUID) -> tuple[str | None, Changes]:
        async def work(connection: AsyncConnection):
            run_rows = await self._lock_runs(connection, [run_id])
            if run_id not in run_rows:
                return None, Changes()
            run = run_rows[run_id]
            if run["status"] in FINISHED_RUN:
                return run["status"], Changes()
            timestamp = await self._clock(connection)
            cancelled = await self._cancel_unfinished(connection, [run_id], timestamp)
            event_rows = []
            for name in cancelled.get(run_id, []):
                run["event_seq"] += 1
                event_rows.append(_event(run_id, run["event_seq"], "step.cancelled", name, {}, timestamp))
            run["event_seq"] += 1
            event_rows.append(_event(run_id, run["event_seq"], "run.cancelled", None, {}, timestamp))
            run["status"], run["finished_at"] = RunStatus.CANCELLED, timestamp
            await self._save_runs(connection, run_rows, {run_id})
            await connection.execute(insert(events), event_rows)
            return RunStatus.CANCELLED, Changes(events=event_rows)

        return await self._retrying(work)

    async def retry_run(self, run_id: uuid.UUID) -> tuple[str | None, Changes]:
        """Runs the failed and cancelled steps of a failed or cancelled run again, keeping what succeeded. Each
        gets its full attempts again, numbered on from the ones it had (attempt 2 follows attempt 1), and a step
        whose last attempt may still be running keeps that attempt's lease: no claim starts it before it ends."""

        async def work(connection: AsyncConnection):
            run_rows = await self._lock_runs(connection, [run_id])
            if run_id not in run_rows:
                return None, Changes()
            run = run_rows[run_id]
            if run["status"] not in (RunStatus.FAILED, RunStatus.CANCELLED):
                return run["status"], Changes()
            timestamp = await self._clock(connection)
            rows = (await connection.execute(select(steps).where(steps.c.run_id == run_id))).all()
            definition = await connection.scalar(
                select(workflows.c.definition).where(
                    workflows.c.id == select(runs.c.workflow_id).where(runs.c.id == run_id).scalar_subquery()
                )
            )
            budget = {step.name: step.max_attempts for step in WorkflowSpec.from_canonical(definition).steps}
            done = {row.name for row in rows if row.status == StepStatus.SUCCEEDED}
            changes = Changes()
            event_rows = []
            redo = []
            for row in rows:
                if row.name in done:
                    continue
                waiting_on = sum(1 for parent in row.depends_on if parent not in done)
                ready = waiting_on == 0
                redo.append(
                    {
                        "step_id": row.id,
                        "status": StepStatus.READY if ready else StepStatus.WAITING,
                        "waiting_on": waiting_on,
                        "ready_at": timestamp if ready else None,
                        "dispatch_after": timestamp + self.republish_after if ready else None,
                        "max_attempts": row.attempt + budget[row.name],
                    }
                )
                if ready:
                    changes.dispatches.append(Dispatch(row.id, row.queue, attempt=row.attempt))
            await connection.execute(
                update(steps)
                .where(steps.c.id == bindparam("step_id"))
                .values(
                    status=bindparam("status"),
                    waiting_on=bindparam("waiting_on"),
                    ready_at=bindparam("ready_at"),
                    dispatch_after=bindparam("dispatch_after"),
                    max_attempts=bindparam("max_attempts"),
                    error=None,
                    output=None,
                    published_at=None,
                    started_at=None,
                    finished_at=None,
                ),
                redo,
            )
            run.update(status=RunStatus.QUEUED, steps_remaining=len(redo), finished_at=None, error=None)
            run["event_seq"] += 1
            event_rows.append(
                _event(
                    run_id, run["event_seq"], "run.retried", None, {"steps": [r["step_id"] for r in redo]}, timestamp
                )
            )
            await self._save_runs(connection, run_rows, {run_id})
            await connection.execute(insert(events), event_rows)
            changes.events.extend(event_rows)
            return RunStatus.QUEUED, changes

        return await self._retrying(work)

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
            rows = await connection.execute(select(runs.c.id, runs.c.status).where(self._among(runs.c.id, run_ids)))
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

    # Dead letters

    async def record_dead_letter(self, queue: str, reason: str, step_ids: list[int], body: str) -> Changes:
        async def work(connection: AsyncConnection):
            await connection.execute(
                insert(dead_letters),
                {"queue": queue, "reason": reason, "step_ids": step_ids, "body": body, "created_at": now()},
            )
            if not step_ids:
                return Changes()
            error = {"type": "DeadLettered", "message": f"the step's message was dead-lettered: {reason}"}
            return await self._complete(
                connection, [Outcome(step_id, False, error=error, retryable=False) for step_id in step_ids], None
            )

        return await self._retrying(work)

    async def list_dead_letters(self, after_id: int | None, limit: int) -> list[Any]:
        query = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if after_id:
            query = query.where(dead_letters.c.id < after_id)
        async with self.reading() as connection:
            return (await connection.execute(query)).all()

    # API keys

    async def create_api_key(self, name: str, role: str, secret: str) -> ApiKey:
        row = {"id": uuid.uuid4(), "name": name, "key_hash": hash_key(secret), "role": role, "created_at": now()}
        async with self.transaction() as connection:
            await connection.execute(self._insert(api_keys).on_conflict_do_nothing(index_elements=["key_hash"]), row)
            stored = (await connection.execute(select(api_keys).where(api_keys.c.key_hash == row["key_hash"]))).one()
        return _api_key(stored)

    async def api_key_by_secret(self, secret: str) -> ApiKey | None:
        async with self.reading() as connection:
            row = (
                await connection.execute(
                    select(api_keys).where(api_keys.c.key_hash == hash_key(secret), api_keys.c.revoked_at.is_(None))
                )
            ).first()
        return _api_key(row) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        async with self.reading() as connection:
            return [_api_key(row) for row in await connection.execute(select(api_keys).order_by(api_keys.c.created_at))]

    async def revoke_api_key(self, key_id: uuid.UUID) -> bool:
        async with self.transaction() as connection:
            result = await connection.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
            return result.rowcount > 0


def _workflow(row) -> Workflow:
    return Workflow(row.id, row.name, row.version, WorkflowSpec.from_canonical(row.definition), row.created_at)


def _api_key(row) -> ApiKey:
    return ApiKey(row.id, row.name, row.role, row.created_at, row.revoked_at)


def _event(run_id, seq, kind, step, data, timestamp) -> dict[str, Any]:
    return {"run_id": run_id, "seq": seq, "type": kind, "step": step, "data": data, "created_at": timestamp}
