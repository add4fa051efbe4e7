"""The workflow engine's service layer: registering workflows, starting, cancelling and retrying runs, and the
dispatcher that publishes ready steps once their transaction has committed."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from app.domain import ApiKey, Changes, CreatedRun, Dispatch, NewRun, Workflow
from app.engine import definitions, idempotency
from app.engine.definitions import WorkflowSpec
from app.engine.ports import Broker, Doorbell, Payloads, Store
from app.engine.tasks import TaskRegistry
from app.engine.transitions import Transitions
from app.observability import metrics, tracing

log = logging.getLogger(__name__)

# Steps per broker message: a worker claims a message's steps in one statement; a cap keeps work spread out.
STEPS_PER_MESSAGE = 64


class UnknownWorkflowError(LookupError):
    pass


@dataclass(frozen=True)
class RunRequest:
    workflow: str
    input: Any
    idempotency_key: str | None = None


async def next_batch(queue: asyncio.Queue, limit: int) -> list:
    """Waits for one item, then takes whatever else is already waiting (up to `limit`): at light load nothing
    waits for a batch to fill, at heavy load one round trip serves many items."""
    batch = [await queue.get()]
    while not queue.empty() and len(batch) < limit:
        batch.append(queue.get_nowait())
    return batch


def encode_message(step_ids: list[int]) -> bytes:
    return orjson.dumps({"steps": step_ids})


TRACE_HEADER = "trace"


def _message(dispatches: list[Dispatch]) -> tuple[bytes, dict]:
    """A message's body names its steps; its `trace` header maps each step id to the trace context that made the
    step ready, so every step is traced where it belongs even when one message carries many runs."""
    traces = {str(d.step_id): d.trace_context for d in dispatches if d.trace_context}
    return encode_message([d.step_id for d in dispatches]), ({TRACE_HEADER: traces} if traces else {})


def decode_message(body: bytes) -> list[int]:
    """The step ids of a message; ValueError for anything else (such a message is dead-lettered)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"message is not JSON: {error}") from None
    ids = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError("message has no list of integer step ids under 'steps'")
    # Step ids are positive BIGINTs: anything else names no step, and the database would refuse it outright.
    if not all(0 < i < 2**63 for i in ids):
        raise ValueError("message has a step id out of range (1 to 2^63-1)")
    return ids


class Dispatcher:
    """Publishes ready steps and rings event doorbells after commit, coalescing what many concurrent
    transactions hand it into few broker messages. What it fails to publish stays unpublished in the database,
    where the relay finds it again: nothing committed is lost.

    Recording that steps were published is off the publishing path: it only spares the relay a duplicate
    message, so the next publish need not wait for it."""

    def __init__(self, store: Store, broker: Broker, doorbell: Doorbell):
        self._store = store
        self._broker = broker
        self._doorbell = doorbell
        self._pending: asyncio.Queue[tuple[Changes, float]] = asyncio.Queue()
        self._published: asyncio.Queue[list[Dispatch]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="dispatcher"),
            asyncio.create_task(self._mark_published_loop(), name="mark-published"),
        ]

    async def stop(self) -> None:
        await self._pending.join()
        await self._published.join()
        for task in self._tasks:
            task.cancel()

    def submit(self, changes: Changes) -> None:
        if changes.dispatches or changes.events:
            self._pending.put_nowait((changes, time.perf_counter()))

    async def _publish_loop(self) -> None:
        while True:
            batch = await next_batch(self._pending, limit=1000)
            try:
                await self._flush(batch)
            except Exception:  # noqa: BLE001 - the relay republishes whatever this flush could not
                log.exception("dispatch failed; the relay will publish the steps again")
            finally:
                for _ in batch:
                    self._pending.task_done()

    async def _flush(self, batch: list[tuple[Changes, float]]) -> None:
        by_queue: dict[str, list[Dispatch]] = defaultdict(list)
        run_ids: set[str] = set()
        for changes, _ in batch:
            for dispatch in changes.dispatches:
                by_queue[dispatch.queue].append(dispatch)
            run_ids.update(str(event["run_id"]) for event in changes.events)
        published: list[Dispatch] = []
        for queue, dispatches in by_queue.items():
            unique = list({dispatch.step_id: dispatch for dispatch in dispatches}.values())
            messages = [_message(unique[i : i + STEPS_PER_MESSAGE]) for i in range(0, len(unique), STEPS_PER_MESSAGE)]
            await self._broker.publish(queue, messages)
            published.extend(unique)
        confirmed = time.perf_counter()
        for changes, committed in batch:
            for _ in changes.dispatches:
                metrics.ROUTING_LATENCY.observe(confirmed - committed)
        if published:
            self._published.put_nowait(published)
        await self._doorbell.ring(run_ids)

    async def _mark_published_loop(self) -> None:
        while True:
            batch = await next_batch(self._published, limit=1000)
            try:
                await self._store.mark_published([dispatch for dispatches in batch for dispatch in dispatches])
            except Exception:  # noqa: BLE001 - unmarked steps are merely published again by the relay
                log.exception("recording %d publishes failed", sum(len(dispatches) for dispatches in batch))
            finally:
                for _ in batch:
                    self._published.task_done()


class Engine:
    def __init__(
        self,
        store: Store,
        transitions: Transitions,
        dispatcher: Dispatcher,
        payloads: Payloads,
        tasks: TaskRegistry,
        *,
        max_steps: int,
        max_timeout_s: float,
    ):
        self.store = store
        self.transitions = transitions
        self.dispatcher = dispatcher
        self.payloads = payloads
        self.tasks = tasks
        self.max_steps = max_steps
        self.max_timeout_s = max_timeout_s
        # Latest version of each workflow, refreshed on registration here and at most a second stale elsewhere.
        self._latest: dict[str, tuple[float, Workflow]] = {}
        self._creations: asyncio.Queue[tuple[list[NewRun], asyncio.Future]] = asyncio.Queue()
        self._creator: asyncio.Task | None = None

    def start(self) -> None:
        self._creator = asyncio.create_task(self._create_loop(), name="run-creator")

    async def stop(self) -> None:
        await self._creations.join()
        if self._creator:
            self._creator.cancel()

    async def register_workflow(self, spec: WorkflowSpec) -> tuple[Workflow, bool]:
        definitions.validate(
            spec, known_tasks=set(self.tasks.names()), max_steps=self.max_steps, max_timeout_s=self.max_timeout_s
        )
        workflow, created = await self.store.register_workflow(spec)
        self._latest[workflow.name] = (time.monotonic(), workflow)
        return workflow, created

    async def latest_workflow(self, name: str) -> Workflow:
        cached = self._latest.get(name)
        if cached and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        workflow = await self.store.workflow(name)
        if workflow is None:
            raise UnknownWorkflowError(name)
        self._latest[name] = (time.monotonic(), workflow)
        return workflow

    async def start_runs(self, requests: list[RunRequest], api_key_id: uuid.UUID | None) -> list[CreatedRun]:
        """Creates the runs all together or none of them: an idempotency key reused for a different request
        (`idempotency.py`) is refused before anything commits."""
        idempotency.check_batch([(r.workflow, r.input, r.idempotency_key) for r in requests])
        workflows = {name: await self.latest_workflow(name) for name in {r.workflow for r in requests}}
        trace_context = tracing.inject_headers() or None
        new_runs = [
            NewRun(
                workflow=workflows[request.workflow],
                input=await self.payloads.offload(request.input, "run-input"),
                api_key_id=api_key_id,
                idempotency_key=request.idempotency_key,
                trace_context=trace_context,
            )
            for request in requests
        ]
        created_by = asyncio.get_running_loop().create_future()
        self._creations.put_nowait((new_runs, created_by))
        return await created_by

    async def _create_loop(self) -> None:
        """Group commit: the runs of every request waiting meanwhile are created in one transaction, so many
        clients each starting one run cost about one round trip per batch, not one per run."""
        while True:
            batch = await next_batch(self._creations, limit=64)
            try:
                await self._create(batch)
            except Exception as error:  # noqa: BLE001 - one request's bad data must not fail the others with it
                if len(batch) == 1:
                    _settle(batch[0][1], error=error)
                else:
                    for request in batch:
                        try:
                            await self._create([request])
                        except Exception as own_error:  # noqa: BLE001 - the request's own failure is its answer
                            _settle(request[1], error=own_error)
            finally:
                for _ in batch:
                    self._creations.task_done()

    async def _create(self, batch: list[tuple[list[NewRun], asyncio.Future]]) -> None:
        grouped = [run for new_runs, _ in batch for run in new_runs]
        created, changes = await self.transitions.create_runs(
            grouped, lambda reuses: idempotency.check_reuses(grouped, reuses)
        )
        self.dispatcher.submit(changes)
        metrics.RUNS_STARTED.inc(sum(run.created for run in created))
        offset = 0
        for new_runs, created_by in batch:
            _settle(created_by, result=created[offset : offset + len(new_runs)])
            offset += len(new_runs)

    async def cancel_run(self, run_id: uuid.UUID) -> tuple[str | None, bool]:
        """The run's status afterwards (None: no such run) and whether this call changed it."""
        status, changes = await self.transitions.cancel_run(run_id)
        self.dispatcher.submit(changes)
        return status, bool(changes.events)

    async def retry_run(self, run_id: uuid.UUID) -> tuple[str | None, bool]:
        status, changes = await self.transitions.retry_run(run_id)
        self.dispatcher.submit(changes)
        return status, bool(changes.events)

    async def create_api_key(self, name: str, role: str, secret: str) -> ApiKey:
        """A new active key with `role`; only the secret's hash is kept."""
        return await self.store.create_api_key(name, role, secret)

    async def revoke_api_key(self, key_id: uuid.UUID) -> bool:
        """Whether an active key was revoked (False: no such key, or already revoked)."""
        return await self.store.revoke_api_key(key_id)


def _settle(future: asyncio.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Answers a waiting request, unless its client already went away."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
