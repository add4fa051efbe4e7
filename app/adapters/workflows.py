"""Workflow definitions, stored by name and version."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from app.adapters.database import workflows
from app.adapters.sql import SqlDatabase, now
from app.domain import Workflow, WorkflowSpec


class WorkflowRecords(SqlDatabase):
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

    async def list_workflows(self, after_name: str | None, limit: int) -> list[tuple[str, int, int]]:
        """(name, latest version, number of versions) of each workflow, by name."""
        query = select(workflows.c.name, func.max(workflows.c.version), func.count()).group_by(workflows.c.name)
        if after_name is not None:
            query = query.where(workflows.c.name > after_name)
        async with self.reading() as connection:
            rows = await connection.execute(query.order_by(workflows.c.name).limit(limit))
            return [tuple(row) for row in rows]

    async def list_workflow_versions(self, name: str, before_version: int | None, limit: int) -> list[Workflow]:
        query = select(workflows).where(workflows.c.name == name)
        if before_version is not None:
            query = query.where(workflows.c.version < before_version)
        async with self.reading() as connection:
            rows = await connection.execute(query.order_by(workflows.c.version.desc()).limit(limit))
            return [_workflow(row) for row in rows]


def _workflow(row) -> Workflow:
    return Workflow(row.id, row.name, row.version, WorkflowSpec.from_canonical(row.definition), row.created_at)
