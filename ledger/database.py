"""Database URLs, engines and migrations: one code path for PostgreSQL (asyncpg) and SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Table, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

_SQLITE_PRAGMAS = (
    # WAL lets readers run beside the one writer; several OS processes share the file.
    "PRAGMA journal_mode=WAL",
    # Wait for another process's write lock instead of failing at once with "database is locked".
    "PRAGMA busy_timeout=10000",
    # Durable at each checkpoint and safe with WAL, without an fsync per commit.
    "PRAGMA synchronous=NORMAL",
)

# Any fixed 64-bit key: every process migrating the same PostgreSQL database takes this one lock.
_MIGRATION_LOCK_KEY = 0x70726F7076_1500

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"

DialectInsert: TypeAlias = postgresql.Insert | sqlite.Insert


def normalize_url(url: str) -> str:
    """Return the async-driver form of a PostgreSQL or SQLite URL, or of a bare file path."""
    if "://" not in url:
        return f"sqlite+aiosqlite:///{url}"
    scheme, rest = url.split("://", 1)
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite:///"
        )
    return f"{driver}://{rest}"


def database_label(url: str) -> str:
    """A short label for humans: backend, user, host and database, never the password."""
    parsed = make_url(normalize_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return f"sqlite:///{parsed.database or ':memory:'}"
    bare = URL.create(
        backend,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    return bare.render_as_string()


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine; SQLite gets its directory created and WAL-mode pragmas."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed)
    _create_parent_directory(parsed)
    engine = create_async_engine(parsed)
    event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


def is_sqlite(engine: AsyncEngine) -> bool:
    """Whether the engine talks to SQLite (else PostgreSQL)."""
    return engine.dialect.name == "sqlite"


def dialect_insert(engine: AsyncEngine, table: Table) -> DialectInsert:
    """An INSERT with the dialect's ON CONFLICT clauses (both databases spell them alike)."""
    if is_sqlite(engine):
        return sqlite.insert(table)
    return postgresql.insert(table)


async def upgrade(url: str) -> None:
    """Run the migrations to head; safe when several processes call it at once."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if is_sqlite(engine):
                await _upgrade_sqlite(conn, url)
            else:
                await _upgrade_postgresql(conn, url)
    finally:
        await engine.dispose()


def alembic_config(url: str) -> Config:
    """An alembic configuration built in code: no alembic.ini, works from an installed package."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    # ConfigParser interpolation would choke on a '%' in a URL-encoded password.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


async def _upgrade_postgresql(conn: AsyncConnection, url: str) -> None:
    # A session-level advisory lock serialises concurrent migrators; the late ones find head.
    await conn.execute(select(func.pg_advisory_lock(_MIGRATION_LOCK_KEY)))
    await conn.commit()
    try:
        await conn.begin()
        await conn.run_sync(_run_alembic, alembic_config(url))
        await conn.commit()
    finally:
        await conn.rollback()
        await conn.execute(select(func.pg_advisory_unlock(_MIGRATION_LOCK_KEY)))
        await conn.commit()


async def _upgrade_sqlite(conn: AsyncConnection, url: str) -> None:
    # BEGIN IMMEDIATE takes the file's write lock before alembic reads its version table,
    # so a second process waits (busy_timeout) and then finds the schema at head.
    await conn.exec_driver_sql("BEGIN IMMEDIATE")
    await conn.run_sync(_run_alembic, alembic_config(url))
    await conn.commit()


def _run_alembic(connection: Connection, config: Config) -> None:
    # env.py picks this connection up instead of opening its own.
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _create_parent_directory(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()
