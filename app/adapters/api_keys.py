"""API keys: only a digest of each secret is stored."""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import select, update

from app.adapters.database import api_keys
from app.adapters.sql import SqlDatabase, now
from app.domain import ApiKey


def hash_key(secret: str) -> str:
    # API keys are long random tokens, so a fast digest is as strong as a slow one here.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyRecords(SqlDatabase):
    async def create_api_key(self, name: str, role: str, secret: str) -> ApiKey:
        row = {"id": uuid.uuid4(), "name": name, "key_hash": hash_key(secret), "role": role, "created_at": now()}
        async with self.transaction() as connection:
            await connection.execute(
                self.dialect.insert(api_keys).on_conflict_do_nothing(index_elements=["key_hash"]), row
            )
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


def _api_key(row) -> ApiKey:
    return ApiKey(row.id, row.name, row.role, row.created_at, row.revoked_at)
