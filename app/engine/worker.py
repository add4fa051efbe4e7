"""The worker: consumes step messages, claims their steps in batches, runs the tasks, records the outcomes in
batches, then acks. Beside it run the relay (republishes ready steps nobody confirmed, hands lost steps to other
workers) and the dead-letter consumer.

Batching is what makes it fast: whatever messages arrive while one claim (or one completion) is in flight are
claimed (or completed) together in the next statement, so at light load nothing waits and at heavy load each
database round trip serves many steps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field, replace

from app.adapters.broker import Broker, Delivery
from app.adapters.payloads import PayloadError, PayloadStore
from app.adapters.store import Changes, ClaimedStep, Store
from app.engine.engine import TRACE_HEADER, Dispatcher, decode_message, next_batch
from app.engine.state import Outcome
from app.engine.tasks import PermanentTaskError, TaskContext, TaskRegistry
from app.observability import metrics, step_log_context, tracing

log = logging.getLogger(__name__)

MAX_BATCH = 500


@dataclass
class _Message:
    delivery: Delivery
    unfinished: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class WorkerSettings:
    queue: str
    concurrency: int
    prefetch: int
    lease_s: float
    relay_interval_s: float


class Worker:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        dispatcher: Dispatcher,
        tasks: TaskRegistry,
        payloads: PayloadStore,
        settings: WorkerSettings,
    ):
        self.store = store
        self.broker = broker
        self.dispatcher = dispatcher
        self.tasks = tasks
        self.payloads = payloads
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._arrivals: asyncio.Queue[tuple[Delivery, list[int]]] = asyncio.Queue()
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.concurrency)
        # A step can sit in more than one message (a republish); each is acked once all its steps are recorded.
        self._messages_by_step: dict[int, list[_Message]] = {}
        self._running: dict[int, asyncio.Task] = {}
        self._loops: list[asyncio.Task] = []
        self._accepting = True

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="claim"),
            asyncio.create_task(self._complete_loop(), name="complete"),
            asyncio.create_task(self._lease_loop(), name="leases"),
            asyncio.create_task(self._relay_loop(), name="relay"),
        ]
        await self.broker.consume(self.settings.queue, self.settings.prefetch, self._on_message)
        await self.broker.consume_dead_letters(self.settings.queue, self._on_dead_letter)

    async def drain(self) -> None:
        """SIGTERM: take no new messages, finish every running step, record it, ack, then stop."""
        self._accepting = False
        await self.broker.stop_consuming()
        while self._running or not self._arrivals.empty() or not self._outcomes.empty() or self._messages_by_step:
            await asyncio.sleep(0.05)
        for loop in self._loops:
            loop.cancel()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def _on_message(self, delivery: Delivery) -> None:
        try:
            step_ids = decode_message(delivery.body)
        except ValueError as error:
            log.warning("rejecting a malformed message to the dead-letter queue: %s", error)
            await delivery.reject()
            return
        self._arrivals.put_nowait((delivery, step_ids))

    async def _claim_loop(self) -> None:
        while True:
            batch = await next_batch(self._arrivals, MAX_BATCH)
            try:
                await self._claim(batch)
            except Exception:  # noqa: BLE001 - the messages stay unacked; the broker redelivers them
                log.exception("claiming %d messages failed", len(batch))
                await asyncio.sleep(0.5)
                for delivery, step_ids in batch:
                    self._arrivals.put_nowait((delivery, step_ids))

    async def _claim(self, batch: list[tuple[Delivery, list[int]]]) -> None:
        step_ids = list(dict.fromkeys(step_id for _, ids in batch for step_id in ids))
        claimed, changes = await self.store.claim(step_ids, self.owner, self.settings.lease_s)
        self.dispatcher.submit(changes)
        claimed_ids = {step.id for step in claimed}
        for delivery, ids in batch:
            message = _Message(delivery, {step_id for step_id in ids if step_id in claimed_ids})
            if not message.unfinished:
                await delivery.ack()  # its steps are done, running elsewhere, or cancelled
                continue
            for step_id in message.unfinished:
                self._messages_by_step.setdefault(step_id, []).append(message)
        for step in claimed:
            traces = self._messages_by_step[step.id][0].delivery.headers.get(TRACE_HEADER) or {}
            parent = traces.get(str(step.id)) or step.run_trace_context or {}
            self._running[step.id] = asyncio.create_task(self._execute(step, parent))

    async def _execute(self, step: ClaimedStep, parent_trace: dict) -> None:
        step_log_context.set(
            {"run_id": str(step.run_id), "step": step.name, "step_id": step.id, "attempt": step.attempt}
        )
        async with self._slots:
            started = time.perf_counter()
            with tracing.tracer.start_as_current_span(
                f"step {step.task}",
                context=tracing.extract(parent_trace),
                attributes={"workflow.run_id": str(step.run_id), "workflow.step": step.name, "attempt": step.attempt},
            ):
                outcome = await self._attempt(step)
                trace_context = tracing.inject_headers() or None
            elapsed = time.perf_counter() - started
            outcome_label = "succeeded" if outcome.succeeded else ("retry" if outcome.retryable else "failed")
            metrics.STEP_DURATION.labels(step.task, outcome_label).observe(elapsed)
            metrics.STEPS.labels(step.task, outcome_label).inc()
            if not outcome.succeeded and outcome.retryable:
                metrics.RETRIES.labels(step.task).inc()
            self._outcomes.put_nowait(replace(outcome, duration_s=elapsed, trace_context=trace_context))

    async def _attempt(self, step: ClaimedStep) -> Outcome:
        try:
            context = TaskContext(
                run_id=str(step.run_id),
                step=step.name,
                attempt=step.attempt,
                run_input=await self.payloads.resolve(step.run_input),
                step_input=step.input,
                upstream={name: await self.payloads.resolve(value) for name, value in step.upstream.items()},
            )
            async with asyncio.timeout(step.timeout_s):
                result = await self.tasks.run(step.task, context)
            output = await self.payloads.offload(result, f"outputs/{step.run_id}/{step.name}")
            return Outcome(step.id, True, output=output)
        except TimeoutError:
            return Outcome(step.id, False, error=_error("Timeout", f"the task ran longer than {step.timeout_s} s"))
        except (PermanentTaskError, PayloadError) as error:
            return Outcome(step.id, False, error=_error(type(error).__name__, str(error)), retryable=False)
        except Exception as error:  # noqa: BLE001 - any task failure is the step's outcome, not the worker's
            log.info("the step's attempt failed: %s", error)
            return Outcome(step.id, False, error=_error(type(error).__name__, str(error)))

    async def _complete_loop(self) -> None:
        while True:
            batch = await next_batch(self._outcomes, MAX_BATCH)
            while True:
                try:
                    changes = await self.store.complete(batch, self.owner)
                    break
                except Exception:  # noqa: BLE001 - keep the outcomes and try again; the lease keeps the steps ours
                    log.exception("recording %d outcomes failed; retrying", len(batch))
                    await asyncio.sleep(0.5)
            self.dispatcher.submit(changes)
            for outcome in batch:
                self._running.pop(outcome.step_id, None)
                for message in self._messages_by_step.pop(outcome.step_id, []):
                    message.unfinished.discard(outcome.step_id)
                    if not message.unfinished:
                        await message.delivery.ack()

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await self.store.renew_leases(self.owner, list(self._running), self.settings.lease_s)
            except Exception:  # noqa: BLE001 - a missed renewal is retried at the next tick
                log.exception("renewing leases failed")

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.relay_interval_s)
            try:
                await self.relay_once()
            except Exception:  # noqa: BLE001 - the relay retries at its next tick
                log.exception("relay pass failed")

    async def relay_once(self) -> None:
        """Republishes ready steps nobody confirmed, and requeues steps whose worker stopped renewing its lease."""
        due = await self.store.take_due_dispatches(limit=5000)
        if due:
            self.dispatcher.submit(Changes(dispatches=due))
        expired = await self.store.expired_leases(limit=5000)
        if expired:
            log.warning("requeueing %d steps whose worker was lost", len(expired))
            self.dispatcher.submit(await self.store.requeue_lost(expired))
        metrics.QUEUE_DEPTH.labels(self.settings.queue).set(await self.broker.depth(self.settings.queue))

    async def _on_dead_letter(self, delivery: Delivery) -> None:
        try:
            step_ids = decode_message(delivery.body)
        except ValueError:
            step_ids = []
        reason = str(delivery.headers.get("x-first-death-reason", "rejected"))
        metrics.DEAD_LETTERS.labels(self.settings.queue).inc()
        try:
            changes = await self.store.record_dead_letter(
                self.settings.queue, reason, step_ids, delivery.body.decode(errors="replace")
            )
        except Exception:  # noqa: BLE001 - leave it in the dead-letter queue for the next try
            log.exception("recording a dead letter failed")
            return
        self.dispatcher.submit(changes)
        await delivery.ack()


def _error(kind: str, message: str) -> dict[str, str]:
    return {"type": kind, "message": message[:2000]}
