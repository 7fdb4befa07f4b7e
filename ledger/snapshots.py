"""Account snapshots and shard checkpoints.

A snapshot is the latest encoded state of one account, never replaced by an older one. A shard
checkpoint is a shard's own recovery point (opaque bytes to the ledger), saved in the same
transaction as the snapshots it goes with, so a shard recovers to one consistent instant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import dialect_insert
from ledger.schema import account_snapshots, shard_checkpoints

# Bound parameters per IN list: well under the limits of asyncpg (32,767) and SQLite (32,766).
_IN_CHUNK = 5_000


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An account's encoded state after `version` applied events, as of `ts_ns`."""

    account_id: str
    version: int
    ts_ns: int
    state: bytes
    shard: str | None = None


class SnapshotStore:
    """Save and load account snapshots on PostgreSQL or SQLite."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def save(
        self, snapshots: Sequence[Snapshot], checkpoint: tuple[str, bytes] | None = None
    ) -> None:
        """Upsert snapshots (one with a lower version than the stored one is ignored) and, with
        `checkpoint` = (shard, state), that shard's checkpoint, all in one transaction."""
        latest = _latest_per_account(snapshots)
        if not latest and checkpoint is None:
            return
        updated_ns = time.time_ns()
        async with self._engine.begin() as conn:
            if latest:
                rows = [_row(snapshot, updated_ns) for snapshot in latest]
                await conn.execute(_upsert(self._engine), rows)
            if checkpoint is not None:
                shard, state = checkpoint
                await conn.execute(
                    _checkpoint_upsert(self._engine),
                    {"shard": shard, "state": state, "updated_ns": updated_ns},
                )

    async def load_shard(self, shard: str) -> tuple[list[Snapshot], bytes | None]:
        """The snapshots of the accounts `shard` hosts and its checkpoint (None if it has none)."""
        snapshots = select(account_snapshots).where(account_snapshots.c.shard == shard)
        checkpoint = select(shard_checkpoints.c.state).where(shard_checkpoints.c.shard == shard)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(snapshots)).mappings().all()
            state = (await conn.execute(checkpoint)).scalar_one_or_none()
        return [_snapshot(row) for row in rows], None if state is None else bytes(state)

    async def load(self, account_ids: Sequence[str] | None = None) -> dict[str, Snapshot]:
        """Snapshots by account id: all of them, or only those of `account_ids` that exist."""
        if account_ids is None:
            queries = [select(account_snapshots)]
        else:
            queries = [
                select(account_snapshots).where(account_snapshots.c.account_id.in_(chunk))
                for chunk in _chunks(account_ids, _IN_CHUNK)
            ]
        found: dict[str, Snapshot] = {}
        async with self._engine.connect() as conn:
            for query in queries:
                for row in (await conn.execute(query)).mappings():
                    found[row["account_id"]] = _snapshot(row)
        return found


def _upsert(engine: AsyncEngine) -> Any:
    insert = dialect_insert(engine, account_snapshots)
    excluded = insert.excluded
    # Never go backwards: a retried or late save of an older state must not win.
    return insert.on_conflict_do_update(
        index_elements=[account_snapshots.c.account_id],
        set_={
            name: excluded[name] for name in ("version", "ts_ns", "state", "updated_ns", "shard")
        },
        where=account_snapshots.c.version <= excluded.version,
    )


def _checkpoint_upsert(engine: AsyncEngine) -> Any:
    insert = dialect_insert(engine, shard_checkpoints)
    return insert.on_conflict_do_update(
        index_elements=[shard_checkpoints.c.shard],
        set_={"state": insert.excluded.state, "updated_ns": insert.excluded.updated_ns},
    )


def _latest_per_account(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    # One row per account per statement: PostgreSQL refuses to upsert the same row twice at once.
    latest: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        known = latest.get(snapshot.account_id)
        if known is None or snapshot.version >= known.version:
            latest[snapshot.account_id] = snapshot
    return list(latest.values())


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row(snapshot: Snapshot, updated_ns: int) -> dict[str, Any]:
    return {
        "account_id": snapshot.account_id,
        "version": snapshot.version,
        "ts_ns": snapshot.ts_ns,
        "state": snapshot.state,
        "updated_ns": updated_ns,
        "shard": snapshot.shard,
    }


def _snapshot(row: Any) -> Snapshot:
    return Snapshot(
        account_id=row["account_id"],
        version=row["version"],
        ts_ns=row["ts_ns"],
        state=bytes(row["state"]),
        shard=row["shard"],
    )
