"""Alembic environment: migrations run over the app's own async engine (PostgreSQL, or SQLite in dev)."""

import asyncio

from alembic import context

from app.adapters.database import create_engine, metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters tables by copying them; PostgreSQL alters in place.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two migrations Jobs (or a retried one) must not apply the same migration at once.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(726372)")
        context.run_migrations()


async def main() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
        await connection.commit()
    await engine.dispose()


asyncio.run(main())
