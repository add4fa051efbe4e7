"""The platform's plain reads, named for what they answer: the API reads through them, so it need not know how or
where the rows are stored. They decide nothing and change nothing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from app.domain import ApiKey, Workflow


class ReadStore(Protocol):
    """The reads `Queries` needs from the store."""

    async def workflow(self, name: str, version: int | None = None) -> Workflow | None: ...
    async def list_workflows(self, after_name: str | None, limit: int) -> list[tuple[str, int, int]]: ...
    async def list_workflow_versions(self, name: str, before_version: int | None, limit: int) -> list[Workflow]: ...
    async def get_run(self, run_id: uuid.UUID) -> tuple[Any, list[Any]] | None: ...
    async def run_statuses(self, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]: ...
    async def list_runs(
        self, workflow: str | None, status: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Any]: ...
    async def events_after(self, run_id: uuid.UUID, seq: int) -> list[Any]: ...
    async def list_dead_letters(self, after_id: int | None, limit: int) -> list[Any]: ...
    async def api_key_by_secret(self, secret: str) -> ApiKey | None: ...
    async def list_api_keys(self) -> list[ApiKey]: ...


class PayloadReader(Protocol):
    async def resolve(self, value: Any) -> Any: ...


class Queries:
    def __init__(self, store: ReadStore, payloads: PayloadReader):
        self._store = store
        self._payloads = payloads

    async def workflow(self, name: str, version: int | None = None) -> Workflow | None:
        """The given version of a workflow, or its latest; None if there is no such workflow or version."""
        return await self._store.workflow(name, version)

    async def workflows(self, after_name: str | None, limit: int) -> list[tuple[str, int, int]]:
        """(name, latest version, number of versions) of each workflow by name, those after `after_name` if given."""
        return await self._store.list_workflows(after_name, limit)

    async def workflow_versions(self, name: str, before_version: int | None, limit: int) -> list[Workflow]:
        """A workflow's versions newest first, those below `before_version` if given."""
        return await self._store.list_workflow_versions(name, before_version, limit)

    async def run_with_steps(self, run_id: uuid.UUID) -> tuple[Any, list[Any]] | None:
        """A run and its steps in creation order; None if there is no such run."""
        return await self._store.get_run(run_id)

    async def run_input(self, run: Any) -> Any:
        """The input a run was started with, fetched back from the payload store if it was offloaded there."""
        return await self._payloads.resolve(run.input)

    async def run_exists(self, run_id: uuid.UUID) -> bool:
        return bool(await self._store.run_statuses([run_id]))

    async def runs(
        self, workflow: str | None, status: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Any]:
        """Runs newest first, optionally of one workflow and one status, after the (created_at, id) of a previous
        page's last run."""
        return await self._store.list_runs(workflow, status, after, limit)

    async def events_after(self, run_id: uuid.UUID, seq: int) -> list[Any]:
        """A run's events numbered above `seq`, in order."""
        return await self._store.events_after(run_id, seq)

    async def dead_letters(self, before_id: int | None, limit: int) -> list[Any]:
        """Dead-lettered messages newest first, those with an id below `before_id` if given."""
        return await self._store.list_dead_letters(before_id, limit)

    async def api_key_by_secret(self, secret: str) -> ApiKey | None:
        """The active (unrevoked) API key with this secret, or None."""
        return await self._store.api_key_by_secret(secret)

    async def api_keys(self) -> list[ApiKey]:
        """Every API key, revoked ones included, oldest first."""
        return await self._store.list_api_keys()
