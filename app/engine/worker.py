"""The worker: consumes step messages, claims their steps in batches, runs the tasks, records the outcomes in
batches, then acks. Beside it run the relay (republishes ready steps nobody confirmed, hands lost steps to other
workers) and the dead-letter consumer.

Batching is what makes it fast: whatever messages arrive while one claim (or one completion) is in flight are
claimed (or completed) together in the next statement, so at light load nothing waits and at heavy load each
database round trip serves many steps.

Leases follow liveness. A worker that loses the database keeps running its steps, stops claiming new ones (it
could not report them), and retries renewing its leases often; renewal is the first thing it does when the
database is back, before recording outcomes or claiming. The relay requeues only leases expired by more than a
grace, and only once its own database path has worked for a full renewal interval, so a live worker always gets to
renew first. What is inherent: a worker cut off for longer than lease + grace cannot be told from a dead one; its
steps run again elsewhere (at most once more per such outage), and its own late outcome is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from app.domain import Changes, ClaimedStep, Dispatch, Outcome, PayloadError, storable_text
from app.engine import state
from app.engine.engine import TRACE_HEADER, Dispatcher, decode_message, next_batch
from app.engine.ports import Broker, Delivery, IsOutage, Payloads, Store
from app.engine.tasks import PermanentTaskError, TaskContext, TaskRegistry
from app.engine.transitions import Transitions
from app.observability import metrics, step_log_context, tracing

log = logging.getLogger(__name__)

MAX_BATCH = 500
# How often a worker that lost the database tries to renew its leases (and so to get back to work).
RECONNECT_S = 0.25
# The queue's ages scan its ready steps: measured a few times per Prometheus scrape (15 s), not at every relay pass,
# which would scan a burst's backlog twice a second.
QUEUE_MEASURE_INTERVAL_S = 5.0
# The error kind of a step whose outcome the database refused to store: it fails for good, never retried forever.
UNRECORDABLE = "OutcomeNotRecordable"


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
    lease_renew_s: float = 5.0
    lease_grace_s: float = 15.0


class Worker:
    def __init__(
        self,
        store: Store,
        transitions: Transitions,
        broker: Broker,
        dispatcher: Dispatcher,
        tasks: TaskRegistry,
        payloads: Payloads,
        settings: WorkerSettings,
        is_outage: IsOutage,
    ):
        self.store = store
        self.transitions = transitions
        self.is_outage = is_outage
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
        # Sync tasks get threads of their own, one per slot: asyncio's default pool also resolves host names.
        self._threads = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="task")
        # Set while the database answers; cleared on an outage until a lease renewal succeeds again.
        self._database_ok = asyncio.Event()
        self._database_ok.set()
        self._database_ok_since = time.monotonic()
        self._busy_slots = metrics.WORKER_BUSY_SLOTS.labels(settings.queue)

    async def start(self) -> None:
        metrics.WORKER_SLOTS.labels(self.settings.queue).set(self.settings.concurrency)
        # The relay's clock starts with the worker: a relay that never completes a pass still ages, and is alerted on.
        metrics.RELAY_LAST_SUCCESS.labels(self.settings.queue).set_to_current_time()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="claim"),
            asyncio.create_task(self._complete_loop(), name="complete"),
            asyncio.create_task(self._lease_loop(), name="leases"),
            asyncio.create_task(self._relay_loop(), name="relay"),
            asyncio.create_task(self._measure_loop(), name="measure"),
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
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _database_lost(self, error: BaseException) -> None:
        if self._database_ok.is_set():
            log.warning("lost the database (%s): running steps go on, no new ones are claimed", error)
        self._database_ok.clear()

    def _database_back(self) -> None:
        if not self._database_ok.is_set():
            log.info("the database is back; leases renewed")
            self._database_ok_since = time.monotonic()
        self._database_ok.set()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def _on_message(self, delivery: Delivery) -> None:
        try:
            step_ids = decode_message(delivery.body)
        except ValueError as error:
            await self._dead_letter(delivery, f"malformed message: {error}")
            return
        self._arrivals.put_nowait((delivery, step_ids))

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """A message no claim can serve: recorded as a dead letter with its reason (GET /v1/dead-letters), then
        acked. Should the database refuse that too, the broker's dead-letter queue keeps it for the consumer."""
        log.warning("dead-lettering a message: %s", reason)
        try:
            await self.transitions.record_dead_letter(
                self.settings.queue, storable_text(reason), [], storable_text(delivery.body.decode(errors="replace"))
            )
        except Exception:  # noqa: BLE001 - the broker's dead-letter queue is the fallback
            log.exception("recording a dead letter failed; rejecting it to the dead-letter queue")
            await delivery.reject()
            return
        await delivery.ack()

    async def _claim_loop(self) -> None:
        while True:
            batch = await next_batch(self._arrivals, MAX_BATCH)
            # A worker that cannot record outcomes takes no new work: it would run it blind.
            await self._database_ok.wait()
            try:
                await self._claim(batch)
            except Exception as error:  # noqa: BLE001 - an outage keeps the messages for later; poison is isolated
                if not self.is_outage(error):
                    await self._claim_apart(batch, error)
                    continue
                self._database_lost(error)
                await asyncio.sleep(RECONNECT_S)
                for message in batch:
                    self._arrivals.put_nowait(message)

    async def _claim_apart(self, batch: list[tuple[Delivery, list[int]]], error: Exception) -> None:
        """A batch whose claim failed for a reason other than an outage: its messages are claimed one by one, so
        a poison message (an id the database cannot take) is dead-lettered alone and the others run."""
        if len(batch) == 1:
            await self._dead_letter(batch[0][0], f"claiming its steps failed: {error!r}")
            return
        for index, message in enumerate(batch):
            try:
                await self._claim([message])
            except Exception as own_error:  # noqa: BLE001 - see _claim_loop
                if self.is_outage(own_error):
                    self._database_lost(own_error)
                    for rest in batch[index:]:
                        self._arrivals.put_nowait(rest)
                    return
                await self._dead_letter(message[0], f"claiming its steps failed: {own_error!r}")

    async def _claim(self, batch: list[tuple[Delivery, list[int]]]) -> None:
        step_ids = list(dict.fromkeys(step_id for _, ids in batch for step_id in ids))
        claimed, changes = await self.transitions.claim(step_ids, self.owner, self.settings.lease_s)
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
            with (
                self._busy_slots.track_inprogress(),
                tracing.tracer.start_as_current_span(
                    f"step {step.task}",
                    context=tracing.extract(parent_trace),
                    attributes={
                        "workflow.run_id": str(step.run_id),
                        "workflow.step": step.name,
                        "attempt": step.attempt,
                    },
                ),
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
            result = await self.tasks.run(step.task, context, step.timeout_s, self._threads)
            output = await self.payloads.offload(result, f"outputs/{step.run_id}/{step.name}")
            return Outcome(step.id, True, output=output, attempt=step.attempt)
        except TimeoutError:
            error = _error("Timeout", f"the task ran longer than {step.timeout_s} s")
            return Outcome(step.id, False, error=error, attempt=step.attempt)
        except (PermanentTaskError, PayloadError) as error:
            error = _error(type(error).__name__, str(error))
            return Outcome(step.id, False, error=error, retryable=False, attempt=step.attempt)
        except asyncio.CancelledError as error:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker itself is being stopped: not the task's doing
            # The task raised CancelledError of its own (a cancelled inner future): a failed attempt like any other.
            log.info("the step's attempt raised CancelledError")
            error = _error("CancelledError", str(error) or "the task raised asyncio.CancelledError")
            return Outcome(step.id, False, error=error, attempt=step.attempt)
        except Exception as error:  # noqa: BLE001 - any task failure is the step's outcome, not the worker's
            log.info("the step's attempt failed: %s", error)
            return Outcome(step.id, False, error=_error(type(error).__name__, str(error)), attempt=step.attempt)

    async def _complete_loop(self) -> None:
        while True:
            batch = await next_batch(self._outcomes, MAX_BATCH)
            changes = await self._record(batch)
            self.dispatcher.submit(changes)
            for outcome in batch:
                self._running.pop(outcome.step_id, None)
                for message in self._messages_by_step.pop(outcome.step_id, []):
                    message.unfinished.discard(outcome.step_id)
                    if not message.unfinished:
                        await message.delivery.ack()

    async def _record(self, outcomes: list[Outcome]) -> Changes:
        """Records outcomes, through any database outage (the leases keep the steps ours meanwhile). A batch the
        database refuses for another reason is recorded one outcome at a time, and an outcome it cannot store at
        all fails its step for good: nothing is retried forever, and no bad outcome holds up the others."""
        while True:
            await self._database_ok.wait()  # after an outage, the leases are renewed first
            try:
                return await self.transitions.complete(outcomes, self.owner)
            except Exception as error:  # noqa: BLE001 - classified: outage or refused
                if self.is_outage(error):
                    self._database_lost(error)
                    continue
                if len(outcomes) > 1:
                    log.warning("recording %d outcomes failed (%r); recording them one by one", len(outcomes), error)
                    changes = Changes()
                    for outcome in outcomes:
                        changes.merge(await self._record([outcome]))
                    return changes
                outcome = outcomes[0]
                if outcome.error and outcome.error.get("type") == UNRECORDABLE:
                    log.error(
                        "not even the failure of step %d can be recorded (%r); its lease will lapse and "
                        "it is requeued until its attempts run out",
                        outcome.step_id,
                        error,
                    )
                    return Changes()
                log.warning("the outcome of step %d cannot be stored (%r): the step fails", outcome.step_id, error)
                message = f"the step's outcome could not be stored: {error!r}"
                outcomes = [
                    replace(outcome, succeeded=False, output=None, error=_error(UNRECORDABLE, message), retryable=False)
                ]

    async def _lease_loop(self) -> None:
        while True:
            # A worker without its database tries often, so renewing is the first thing it does once it is back.
            await asyncio.sleep(self.settings.lease_renew_s if self._database_ok.is_set() else RECONNECT_S)
            try:
                await asyncio.wait_for(
                    self.store.renew_leases(self.owner, list(self._running), self.settings.lease_s),
                    self.settings.lease_renew_s,
                )
            except Exception as error:  # noqa: BLE001 - retried at the next tick
                self._database_lost(error)
                continue
            self._database_back()

    async def _relay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.relay_interval_s)
            try:
                await self.relay_once()
            except Exception:  # noqa: BLE001 - the relay retries at its next tick
                log.exception("relay pass failed")

    async def relay_once(self) -> None:
        """Republishes ready steps that are due (unpublished, past their backoff, or unclaimed too long), and
        requeues steps whose worker stopped renewing its lease. A relay whose own database path was down requeues
        nothing until it has worked for a full renewal interval: live workers renew first."""
        await self._republish_due()
        if self._database_ok.is_set() and time.monotonic() - self._database_ok_since >= self.settings.lease_renew_s:
            await self._requeue_lost()
        metrics.RELAY_LAST_SUCCESS.labels(self.settings.queue).set_to_current_time()

    async def _measure_loop(self) -> None:
        while True:
            await asyncio.sleep(QUEUE_MEASURE_INTERVAL_S)
            try:
                await self.measure_queue()
            except Exception:  # noqa: BLE001 - measured again at the next tick
                log.exception("measuring the queue failed")

    async def measure_queue(self) -> None:
        """How long the queue's oldest ready steps have waited, unpublished and published, and its depth."""
        queue = self.settings.queue
        unpublished_s, queued_s = await self.store.ready_step_ages(queue)
        metrics.READY_STEP_OLDEST_AGE.labels(queue).set(unpublished_s)
        metrics.QUEUE_OLDEST_MESSAGE_AGE.labels(queue).set(queued_s)
        metrics.QUEUE_DEPTH.labels(queue).set(await self.broker.depth(queue))

    async def _republish_due(self) -> None:
        timings = self.transitions.timings
        due = await self.store.take_due_dispatches(
            limit=5000, republish_after=timings.republish_after, unclaimed_after=timings.unclaimed_after
        )
        if due:
            self.dispatcher.submit(
                Changes(dispatches=[Dispatch(row.id, row.queue, attempt=row.attempt) for row in due])
            )
        for row in due:
            reason = state.republish_reason(row)
            if reason is not None:
                metrics.STEPS_REPUBLISHED.labels(row.queue, reason).inc()

    async def _requeue_lost(self) -> None:
        grace_s = self.settings.lease_grace_s
        expired = await self.store.expired_leases(limit=5000, grace_s=grace_s)
        if not expired:
            return
        log.warning("requeueing %d steps whose worker was lost", len(expired))
        changes = await self.transitions.requeue_lost(expired, grace_s)
        self.dispatcher.submit(changes)
        # What goes back to its queue comes back as its dispatch; a step out of attempts fails instead.
        for dispatch in changes.dispatches:
            metrics.LEASE_EXPIRIES.labels(dispatch.queue).inc()

    async def _on_dead_letter(self, delivery: Delivery) -> None:
        try:
            step_ids = decode_message(delivery.body)
        except ValueError:
            step_ids = []
        reason = str(delivery.headers.get("x-first-death-reason", "rejected"))
        metrics.DEAD_LETTERS.labels(self.settings.queue).inc()
        try:
            changes = await self.transitions.record_dead_letter(
                self.settings.queue,
                storable_text(reason),
                step_ids,
                storable_text(delivery.body.decode(errors="replace")),
            )
        except Exception:  # noqa: BLE001 - leave it in the dead-letter queue for the next try
            log.exception("recording a dead letter failed")
            return
        self.dispatcher.submit(changes)
        await delivery.ack()


def _error(kind: str, message: str) -> dict[str, str]:
    """An attempt's error as stored: text the database cannot hold is cleaned as outputs are checked."""
    return {"type": storable_text(kind), "message": storable_text(message[:2000])}
