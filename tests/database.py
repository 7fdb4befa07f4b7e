"""Database fixtures (a pytest plugin): a throwaway PostgreSQL database per run, SQLite per test.

PostgreSQL is required: without one the suite fails with instructions, it never skips.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.audit import GENESIS
from ledger.database import create_engine, upgrade

T = TypeVar("T")

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LEDGER_TABLES = (
    "journal",
    "ledger_accounts",
    "ledger_transfers",
    "payouts",
    "kyc_tiers",
    "kyc_hits",
    "kyc_verifications",
    "kyc_lists",
    "affiliates",
    "affiliate_codes",
    "commission_plans",
    "affiliate_touches",
    "affiliate_attributions",
    "sale_events",
    "affiliate_lines",
    "affiliate_volumes",
    "affiliate_payouts",
    "affiliate_statements",
    "account_snapshots",
    "shard_checkpoints",
    "ingest_inbox",
    "ingest_cursors",
    "api_tokens",
    "audit_log",
    "idempotency_keys",
    "plans",
    "traders",
    "sales_reps",
    "lead_rules",
    "purchases",
    "accounts",
    "followers",
    "alert_rules",
    "alerts",
    "calendar_events",
)

POSTGRES_REQUIRED = (
    "PostgreSQL is required for the test suite and was not reachable at {url} ({error}). "
    "Start a server on 127.0.0.1:5432 with trust auth for the role 'postgres', "
    "or set PROPVISOR_TEST_DATABASE_URL to a database the tests may use "
    "(PROPVISOR_TEST_PG_ADMIN_URL overrides the server used to create test databases)."
)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on its own loop in a helper thread.

    Sync fixtures use this so they never collide with pytest-asyncio's running loops.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def admin_url() -> str:
    """The server-level URL used to create and drop test databases.

    PROPVISOR_TEST_PG_ADMIN_URL if set; else the server of PROPVISOR_TEST_DATABASE_URL; else local.
    """
    explicit = os.environ.get("PROPVISOR_TEST_PG_ADMIN_URL")
    if explicit:
        return explicit
    given = os.environ.get("PROPVISOR_TEST_DATABASE_URL")
    if given:
        server = make_url(given).set(drivername="postgresql", database="postgres")
        return server.render_as_string(hide_password=False)
    return DEFAULT_ADMIN_URL


def database_url_on_server(name: str) -> str:
    """The async SQLAlchemy URL of database `name` on the admin server."""
    url = make_url(admin_url()).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


async def _admin_connect() -> asyncpg.Connection:
    return await _connect(admin_url())


async def _probe(url: str) -> None:
    """Fail with the how-to message if `url` cannot be reached."""
    conn = await _connect(url)
    await conn.close()


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        error = exc
    # Failing outside the except block keeps the report to the one message that matters.
    pytest.fail(POSTGRES_REQUIRED.format(url=url, error=error), pytrace=False)


async def create_database() -> str:
    """Create an empty database with a random name and return that name."""
    name = f"propvisor_test_{secrets.token_hex(6)}"
    conn = await _admin_connect()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    """Drop a test database, disconnecting whoever still uses it."""
    conn = await _admin_connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def truncate_ledger(url: str) -> None:
    """Empty the ledger tables so each test starts from nothing."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
    try:
        await conn.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)} RESTART IDENTITY")
        await conn.execute(f"UPDATE audit_head SET seq = 0, hash = '{GENESIS}'")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for the whole run: PROPVISOR_TEST_DATABASE_URL, or a throwaway one."""
    given = os.environ.get("PROPVISOR_TEST_DATABASE_URL")
    if given:
        run_async(_probe(make_url(given).set(drivername="postgresql").render_as_string(False)))
        yield make_url(given).set(drivername="postgresql+asyncpg").render_as_string(False)
        return
    name = run_async(create_database())
    try:
        yield database_url_on_server(name)
    finally:
        run_async(drop_database(name))


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A new empty PostgreSQL database for one test (never migrated), dropped afterwards."""
    name = run_async(create_database())
    try:
        yield database_url_on_server(name)
    finally:
        run_async(drop_database(name))


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, migrated to head once."""
    run_async(upgrade(postgres_url))
    return postgres_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file database in the test's temporary directory (not migrated)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'propvisor.db'}"


@pytest.fixture(
    params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"],
    ids=["postgresql", "sqlite"],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database with empty ledger tables, on PostgreSQL and on SQLite."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        run_async(upgrade(url))
        return url
    url = request.getfixturevalue("migrated_postgres_url")
    run_async(truncate_ledger(url))
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on `database_url`, disposed after the test."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
