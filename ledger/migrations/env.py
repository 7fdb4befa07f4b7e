"""Alembic environment: reuses the caller's connection, or opens an async engine of its own."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from ledger.database import create_engine
from ledger.schema import metadata


def run_migrations(connection: Connection) -> None:
    """Run the pending migrations on one synchronous (run_sync) connection."""
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    """Open an async engine and migrate through `run_sync` (the `alembic` command-line path)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    """Entry point alembic calls when it loads this file."""
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
    else:
        asyncio.run(run_async_migrations(context.config.get_main_option("sqlalchemy.url") or ""))


main()
