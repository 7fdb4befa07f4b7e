"""Migrations create the ledger tables, are re-runnable and safe to run concurrently."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine, upgrade
from ledger.schema import metadata

PROJECT_ROOT = Path(__file__).resolve().parents[3]


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _version(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
        return [row[0] for row in rows]


async def test_upgrade_when_run_then_ledger_tables_exist(engine: AsyncEngine) -> None:
    tables = set(metadata.tables)  # every table the code declares, the admin API's included
    assert tables | {"alembic_version"} <= await _table_names(engine)
    assert await _version(engine) == ["0010"]


async def test_upgrade_when_run_twice_then_harmless(database_url: str, engine: AsyncEngine) -> None:
    await upgrade(database_url)
    assert await _version(engine) == ["0010"]


async def test_upgrade_when_sqlite_directory_missing_then_created(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "propvisor.db"
    await upgrade(str(path))
    assert path.exists()


async def _upgrade_in_subprocess(url: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    code = f"import asyncio; from ledger.database import upgrade; asyncio.run(upgrade({url!r}))"
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env)
    return await process.wait()


@pytest.mark.postgres
async def test_upgrade_when_two_processes_race_on_fresh_postgresql_then_both_succeed(
    fresh_postgres_url: str,
) -> None:
    codes = await asyncio.gather(*(_upgrade_in_subprocess(fresh_postgres_url) for _ in range(2)))
    assert codes == [0, 0]
    engine = create_engine(fresh_postgres_url)
    try:
        assert await _version(engine) == ["0010"]
    finally:
        await engine.dispose()


async def test_upgrade_when_two_processes_race_on_fresh_sqlite_then_both_succeed(
    sqlite_url: str,
) -> None:
    codes = await asyncio.gather(*(_upgrade_in_subprocess(sqlite_url) for _ in range(2)))
    assert codes == [0, 0]
    engine = create_engine(sqlite_url)
    try:
        assert await _version(engine) == ["0010"]
    finally:
        await engine.dispose()


async def test_upgrade_when_sqlite_then_wal_mode(sqlite_url: str) -> None:
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
    finally:
        await engine.dispose()
    assert (mode, timeout) == ("wal", 10000)
