"""What the engine needs from the world, as Protocols: a store, a broker, a doorbell and a payload store. The
adapters in `app/adapters/` implement them without importing the engine; `app/runtime.py` plugs them in."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from app.domain import ApiKey, Dispatch, RunState, Workflow, WorkflowSpec

T = TypeVar("T")


class Transaction(Protocol):
    """The guarded statements transitions are made of, in one database transaction. Each is one round trip and
    touches only rows its guard still matches, so a transition that lost a race changes nothing; the column values
    they write come from `state.py`."""

    async def now(self) -> datetime:
        """The database's time: the one clock every process compares (ready_at, dispatch_after, leases)."""

    async def lock_runs(self, run_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, RunState]: ...

    async def save_runs(self, states: Sequence[RunState]) -> None: ...

    async def record_events(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def insert_runs(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def insert_runs_once_per_key(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Inserts the runs whose (api key, idempotency key) is new; the ids of those inserted."""

    async def runs_by_keys(self, keys: Sequence[tuple[uuid.UUID | None, str]]) -> dict[tuple, Any]: ...

    async def insert_steps(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Inserts steps; their ids, in the order of `rows`."""

    async def claim_ready(self, step_ids: Sequence[int], values: dict[str, Any], timestamp: datetime) -> list[Any]:
        """Steps that are ready, due and not leased by a live attempt take `values` and their next attempt."""

    async def outputs_of(self, wanted: Iterable[tuple[uuid.UUID, str]]) -> dict[uuid.UUID, dict[str, Any]]:
        """The outputs of the (run, step name) pairs, by run and name."""

    async def end_attempts(
        self, attempts: dict[int, int], owner: str | None, statuses: Sequence[str], values: dict[str, Any]
    ) -> list[Any]:
        """Steps (id: attempt) still in one of `statuses` and, with an `owner`, still running that attempt under
        its lease, take `values`; returns id, run_id, name, attempt and dependents of each."""

    async def lock_attempts(self, attempts: dict[int, int], owner: str | None, statuses: Sequence[str]) -> list[Any]:
        """The same guard as `end_attempts`, locking the rows: id, run_id, name, attempt, max_attempts."""

    async def release_stale_leases(self, attempts: dict[int, int], owner: str, values: dict[str, Any]) -> None:
        """Steps (id: attempt) that `owner` still leases but that are no longer running take `values`."""

    async def update_steps(self, rows: Sequence[dict[str, Any]]) -> None:
        """Each row's columns (all rows name the same ones) on the step of its `step_id`."""

    async def set_steps(self, step_ids: Sequence[int], values: dict[str, Any], *, if_status: str | None = None):
        """`values` on the steps (only those in `if_status`, when given)."""

    async def cancel_unfinished(
        self, run_ids: Sequence[uuid.UUID], statuses: Iterable[str], values: dict[str, Any]
    ) -> dict[uuid.UUID, list[str]]:
        """The runs' steps in `statuses` take `values`; the names of those steps, by run."""

    async def count_down(self, run_id: uuid.UUID, names: Sequence[str]) -> list[Any]:
        """One dependency fewer to wait for in each named waiting step (a name twice: two fewer); id, name,
        queue, waiting_on and attempt of each."""

    async def lost_leases(self, step_ids: Sequence[int], expired_before: datetime) -> list[Any]:
        """The running steps whose lease expired before then: id, attempt, max_attempts, queue."""

    async def run_steps(self, run_id: uuid.UUID) -> list[Any]: ...

    async def definition_of_run(self, run_id: uuid.UUID) -> WorkflowSpec: ...

    async def insert_dead_letter(self, queue: str, reason: str, step_ids: list[int], body: str) -> None: ...


class Store(Protocol):
    async def in_transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Runs `work` in one transaction, again from the start if it lost to a deadlock or a dropped
        connection."""

    async def register_workflow(self, spec: WorkflowSpec) -> tuple[Workflow, bool]: ...

    async def workflow(self, name: str, version: int | None = None) -> Workflow | None: ...

    async def create_api_key(self, name: str, role: str, secret: str) -> ApiKey: ...

    async def revoke_api_key(self, key_id: uuid.UUID) -> bool: ...

    async def mark_published(self, dispatches: list[Dispatch]) -> None: ...

    async def take_due_dispatches(
        self, limit: int, republish_after: timedelta, unclaimed_after: timedelta
    ) -> list[Any]:
        """The recovery sweep's ready steps to publish, each next due `republish_after` later: id, queue, attempt,
        ready_at, published_at and `due_at` (the `dispatch_after` it was due at)."""

    async def ready_step_ages(self, queue: str) -> tuple[float, float]:
        """Seconds the oldest due ready step of `queue` has waited by the database's clock (0: none), among those
        the broker has not confirmed and among those it has."""

    async def expired_leases(self, limit: int, grace_s: float) -> list[int]: ...

    async def renew_leases(self, owner: str, step_ids: list[int], lease_s: float) -> None: ...


class Delivery(Protocol):
    body: bytes
    headers: dict[str, Any]
    delivery_count: int

    async def ack(self) -> None: ...

    async def reject(self) -> None:
        """Refuse the message for good: it goes to the dead-letter queue."""


Handler = Callable[[Delivery], Awaitable[None]]


class Broker(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def publish(self, queue: str, messages: list[tuple[bytes, dict[str, Any]]]) -> None:
        """Publishes (body, headers) messages; returns once the broker has confirmed every one."""

    async def consume(self, queue: str, prefetch: int, handler: Handler) -> None: ...

    async def consume_dead_letters(self, queue: str, handler: Handler) -> None: ...

    async def stop_consuming(self) -> None: ...

    async def depth(self, queue: str) -> int: ...


class Doorbell(Protocol):
    async def ring(self, run_ids: set[str]) -> None:
        """Tells the watchers of these runs that they have new events."""


class Payloads(Protocol):
    async def offload(self, value: Any, key_hint: str) -> Any:
        """`value`, or a reference to where it was stored when it is too large to keep inline."""

    async def resolve(self, value: Any) -> Any: ...


# Tells an outage (retry later) from a refusal (the data is at fault): the adapters know their own errors.
IsOutage = Callable[[BaseException], bool]
