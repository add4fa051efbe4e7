"""Carries out the transitions of runs and steps, each in one transaction: it reads the rows a transition needs
through the store's guarded statements, asks `state.py` what they become, and has the store write exactly that.
Nothing here decides; the statement count of each transition is fixed (batched, never one per step), since the
worker's hot path (claim, complete) goes through it."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from app.domain import (
    Changes,
    ClaimedStep,
    CreatedRun,
    Dispatch,
    KeyReuse,
    NewRun,
    Outcome,
    RunStatus,
    StepStatus,
)
from app.engine import state
from app.engine.ports import Store, Transaction
from app.engine.state import Timings, Transition
from app.observability import metrics

# The event each final run status records (`state.after_outcomes`, `after_run_failed`, `after_cancel`).
FINISHING_EVENTS = {f"run.{status}": status for status in state.FINISHED_RUN}


class Transitions:
    def __init__(self, store: Store, timings: Timings):
        self.store = store
        self.timings = timings

    async def create_runs(
        self, requests: list[NewRun], check_reuses: Callable[[list[KeyReuse]], None]
    ) -> tuple[list[CreatedRun], Changes]:
        """Creates the runs (an idempotency key already used by the same API key returns its run), their steps
        and their first events, in one transaction. The ready steps come back for publishing after commit.

        `check_reuses` is handed every request that repeats a key, with what the key's first use started, before
        anything is committed: whatever it raises rolls the whole transaction back."""
        return await self.store.in_transaction(lambda tx: self._create_runs(tx, requests, check_reuses))

    async def _create_runs(self, tx: Transaction, requests: list[NewRun], check_reuses) -> tuple[list, Changes]:
        timestamp = await tx.now()
        results: list[CreatedRun | None] = [None] * len(requests)
        fresh: dict[int, uuid.UUID] = {}
        keyed: dict[tuple[uuid.UUID | None, str], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            if request.idempotency_key is None:
                fresh[index] = uuid.uuid4()
            else:
                keyed[(request.api_key_id, request.idempotency_key)].append(index)
        if fresh:
            await tx.insert_runs([state.new_run(requests[index], run_id, timestamp) for index, run_id in fresh.items()])
        for index, run_id in fresh.items():
            results[index] = CreatedRun(run_id, requests[index].workflow.name, RunStatus.QUEUED, True)
        if keyed:
            check_reuses(await self._create_keyed_runs(tx, requests, keyed, fresh, results, timestamp))
        changes = Changes()
        step_rows = []
        for index, run_id in fresh.items():
            rows, created = state.new_steps(requests[index], run_id, self.timings, timestamp)
            step_rows.extend(rows)
            changes.events.append(created)
        if step_rows:
            trace_of_run = {run_id: requests[index].trace_context for index, run_id in fresh.items()}
            for row, step_id in zip(step_rows, await tx.insert_steps(step_rows), strict=True):
                if row["status"] == StepStatus.READY:
                    changes.dispatches.append(Dispatch(step_id, row["queue"], trace_of_run[row["run_id"]]))
        if changes.events:
            await tx.record_events(changes.events)
        return results, changes

    async def _create_keyed_runs(self, tx: Transaction, requests, keyed, fresh, results, timestamp) -> list[KeyReuse]:
        """Creates the first run of each new key; every other request with a key is answered with the key's run.
        Returns those repeats, with what the key's first use started."""
        candidates = {key: uuid.uuid4() for key in keyed}
        rows = [state.new_run(requests[indexes[0]], candidates[key], timestamp) for key, indexes in keyed.items()]
        inserted = await tx.insert_runs_once_per_key(rows)
        existing_keys = [key for key in keyed if candidates[key] not in inserted]
        existing = await tx.runs_by_keys(existing_keys) if existing_keys else {}
        reuses: list[KeyReuse] = []
        for key, indexes in keyed.items():
            first = requests[indexes[0]]
            for position, index in enumerate(indexes):
                if candidates[key] in inserted:
                    is_first = position == 0
                    results[index] = CreatedRun(
                        candidates[key], requests[index].workflow.name, RunStatus.QUEUED, is_first
                    )
                    if is_first:
                        fresh[index] = candidates[key]
                    else:
                        reuses.append(KeyReuse(index, first.workflow.name, first.input))
                else:
                    row = existing[key]
                    results[index] = CreatedRun(row.id, row.workflow_name, row.status, False)
                    reuses.append(KeyReuse(index, row.workflow_name, row.input))
        return reuses

    async def claim(self, step_ids: list[int], owner: str, lease_s: float) -> tuple[list[ClaimedStep], Changes]:
        """Moves ready steps to running under `owner`'s lease. A step that is not ready (finished, running
        elsewhere, cancelled, or not yet due) is skipped: that is what makes a redelivered message harmless. A ready
        step whose previous attempt still holds a live lease (its run was cancelled, then retried, while it ran) is
        skipped too, so one step never runs twice at once; the relay publishes it again once that lease is gone."""
        return await self.store.in_transaction(lambda tx: self._claim(tx, step_ids, owner, lease_s))

    async def _claim(self, tx: Transaction, step_ids: list[int], owner: str, lease_s: float):
        timestamp = await tx.now()
        claimed_rows = await tx.claim_ready(step_ids, state.claim(owner, lease_s, timestamp), timestamp)
        if not claimed_rows:
            return [], Changes()
        # Steps first, then their runs: the same order as every transaction that ends steps.
        runs = await tx.lock_runs({row.run_id for row in claimed_rows})
        wanted = {(row.run_id, parent) for row in claimed_rows for parent in row.depends_on}
        upstream = await tx.outputs_of(wanted) if wanted else {}
        transition = state.after_claim(claimed_rows, runs, timestamp)
        await self._save(tx, transition)
        claimed = [
            ClaimedStep(
                id=row.id,
                run_id=row.run_id,
                name=row.name,
                task=row.task,
                attempt=row.attempt,
                timeout_s=row.timeout_s,
                input=row.input,
                run_input=runs[row.run_id].input,
                upstream={parent: upstream.get(row.run_id, {}).get(parent) for parent in row.depends_on},
                run_trace_context=runs[row.run_id].trace_context,
            )
            for row in claimed_rows
        ]
        return claimed, transition.changes()

    async def complete(self, outcomes: list[Outcome], owner: str | None) -> Changes:
        """Records how attempts ended, in one transaction: successes release their dependents (and finish their
        run when it was the last step), failures retry after a backoff or fail the run and cancel the rest.
        Only steps still running the outcome's attempt under `owner` are touched; `owner` None is the platform
        itself (a lost worker, a dead-lettered message), which may also end steps that are merely ready. An
        attempt that is no longer the step's (its run was cancelled, or its lease was taken over) changes nothing
        but gives up its lease."""
        if not outcomes:
            return Changes()
        return _counted(await self.store.in_transaction(lambda tx: self._complete(tx, outcomes, owner)))

    async def _complete(self, tx: Transaction, outcomes: list[Outcome], owner: str | None) -> Changes:
        timestamp = await tx.now()
        by_id = {outcome.step_id: outcome for outcome in outcomes}
        statuses = state.ENDABLE_BY_WORKER if owner is not None else state.ENDABLE_BY_PLATFORM
        successes = {o.step_id: o.attempt for o in outcomes if o.succeeded}
        failures = {o.step_id: o.attempt for o in outcomes if not o.succeeded}
        # Steps first (a success is recorded in the same statement that checks it is still ours), then their runs.
        succeeded_rows = []
        if successes:
            succeeded_rows = await tx.end_attempts(successes, owner, statuses, state.succeeded(timestamp))
            outputs = [
                {"step_id": row.id, "output": by_id[row.id].output}
                for row in succeeded_rows
                if by_id[row.id].output is not None
            ]
            if outputs:
                await tx.update_steps(outputs)
        failed_rows = await tx.lock_attempts(failures, owner, statuses) if failures else []
        ended = {row.id for row in [*succeeded_rows, *failed_rows]}
        stale = {step_id: by_id[step_id].attempt for step_id in sorted(by_id.keys() - ended)}
        if stale and owner is not None:
            await tx.release_stale_leases(stale, owner, state.stale_attempt_released(timestamp))
        if not ended:
            return Changes()
        runs = await tx.lock_runs({row.run_id for row in [*succeeded_rows, *failed_rows]})
        plan = state.after_outcomes(succeeded_rows, failed_rows, by_id, runs, self.timings, timestamp)
        if plan.retries:
            await tx.update_steps(plan.retries)
        for failure in plan.failures:
            await tx.update_steps([{"step_id": failure.step_id, **state.failed(failure.error, timestamp)}])
            cancelled = await self._cancel_unfinished(tx, failure.run_id, timestamp)
            state.after_run_failed(plan.transition, failure, cancelled)
        for release in plan.releases:
            now_ready = state.waiting_on_nothing(await tx.count_down(release.run_id, release.names))
            if now_ready:
                await tx.set_steps([row.id for row in now_ready], state.ready_now(self.timings, timestamp))
            state.after_release(plan.transition, release, now_ready)
        await self._save(tx, plan.transition)
        return plan.transition.changes()

    async def requeue_lost(self, step_ids: list[int], grace_s: float) -> Changes:
        """Steps whose worker stopped renewing its lease (more than `grace_s` ago): back to ready while attempts
        remain, else failed."""
        return _counted(await self.store.in_transaction(lambda tx: self._requeue_lost(tx, step_ids, grace_s)))

    async def _requeue_lost(self, tx: Transaction, step_ids: list[int], grace_s: float) -> Changes:
        timestamp = await tx.now()
        rows = await tx.lost_leases(step_ids, timestamp - timedelta(seconds=grace_s))
        decisions = {row.id: state.after_lost_lease(row) for row in rows}
        requeue = [row for row in rows if decisions[row.id] is state.FailureDecision.RETRY]
        exhausted = [row.id for row in rows if decisions[row.id] is state.FailureDecision.FAIL]
        changes = Changes()
        if requeue:
            values = state.requeued(self.timings, timestamp)
            await tx.set_steps([row.id for row in requeue], values, if_status=StepStatus.RUNNING)
            changes.dispatches.extend(Dispatch(row.id, row.queue, attempt=row.attempt) for row in requeue)
        if exhausted:
            changes.merge(await self._complete(tx, [state.worker_lost(step_id) for step_id in exhausted], None))
        return changes

    async def record_dead_letter(self, queue: str, reason: str, step_ids: list[int], body: str) -> Changes:
        """Keeps a message no worker could process, and fails for good the steps it named."""

        async def work(tx: Transaction) -> Changes:
            await tx.insert_dead_letter(queue, reason, step_ids, body)
            if not step_ids:
                return Changes()
            return await self._complete(tx, [state.dead_lettered(step_id, reason) for step_id in step_ids], None)

        return _counted(await self.store.in_transaction(work))

    async def cancel_run(self, run_id: uuid.UUID) -> tuple[str | None, Changes]:
        """The run's status afterwards (None: no such run) and what changed."""

        async def work(tx: Transaction) -> tuple[str | None, Changes]:
            runs = await tx.lock_runs([run_id])
            if run_id not in runs:
                return None, Changes()
            if not state.can_cancel(runs[run_id].status):
                return runs[run_id].status, Changes()
            timestamp = await tx.now()
            cancelled = await self._cancel_unfinished(tx, run_id, timestamp)
            transition = state.after_cancel(runs[run_id], cancelled, timestamp)
            await self._save(tx, transition)
            return RunStatus.CANCELLED, transition.changes()

        status, changes = await self.store.in_transaction(work)
        return status, _counted(changes)

    async def retry_run(self, run_id: uuid.UUID) -> tuple[str | None, Changes]:
        """Runs the failed and cancelled steps of a failed or cancelled run again, keeping what succeeded
        (`state.retry_run`)."""

        async def work(tx: Transaction) -> tuple[str | None, Changes]:
            runs = await tx.lock_runs([run_id])
            if run_id not in runs:
                return None, Changes()
            if not state.can_retry(runs[run_id].status):
                return runs[run_id].status, Changes()
            timestamp = await tx.now()
            steps = await tx.run_steps(run_id)
            spec = await tx.definition_of_run(run_id)
            attempts = {step.name: step.max_attempts for step in spec.steps}
            plan = state.retry_run(runs[run_id], steps, attempts, self.timings, timestamp)
            await tx.update_steps(plan.steps)
            await self._save(tx, plan.transition)
            return RunStatus.QUEUED, plan.transition.changes()

        return await self.store.in_transaction(work)

    async def _cancel_unfinished(self, tx: Transaction, run_id: uuid.UUID, timestamp: datetime) -> list[str]:
        cancelled = await tx.cancel_unfinished([run_id], state.UNFINISHED_STEP, state.cancelled(timestamp))
        return cancelled.get(run_id, [])

    async def _save(self, tx: Transaction, transition: Transition) -> None:
        await tx.save_runs(transition.saved_runs())
        if transition.events:
            await tx.record_events(transition.events)


def _counted(changes: Changes) -> Changes:
    """Counts the runs a committed transaction finished: after the commit, as a transaction retried whole would
    count them twice."""
    for event in changes.events:
        if event["type"] in FINISHING_EVENTS:
            metrics.RUNS_FINISHED.labels(FINISHING_EVENTS[event["type"]]).inc()
    return changes
