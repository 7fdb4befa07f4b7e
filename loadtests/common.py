"""What several scenarios share: argument types, the JSON report file, a scratch database."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import msgspec
import ray
from sqlalchemy.engine import make_url

from ledger.database import upgrade

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The PostgreSQL server (and a database to connect to) where scratch databases are made."""


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@contextlib.contextmanager
def local_ray() -> Iterator[None]:
    """A new Ray of our own on this node (`address="local"`: never another process's), unless
    this process already runs one; shut down afterwards if it was ours."""
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
    try:
        yield
    finally:
        if owns_ray:
            ray.shutdown()


def write_report(path: Path, report: object) -> None:
    """Write a report as indented JSON (creating the directory) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    print(f"report written to {path}", flush=True)


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str = DEFAULT_ADMIN_URL) -> AsyncIterator[str]:
    """A new PostgreSQL database on `admin_url`'s server, migrated; dropped afterwards."""
    name = f"propvisor_bench_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    try:
        rendered = url.render_as_string(hide_password=False)
        await upgrade(rendered)
        yield rendered
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
