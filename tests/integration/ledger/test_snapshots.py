"""Account snapshots on both databases: upsert, load, never go backwards."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.snapshots import Snapshot, SnapshotStore


def _snapshot(account_id: str, version: int) -> Snapshot:
    state = bytes([version % 256, 0, 255]) + f"{account_id}@{version}".encode()
    return Snapshot(account_id=account_id, version=version, ts_ns=1_000 + version, state=state)


async def test_save_when_new_accounts_then_load_returns_them(engine: AsyncEngine) -> None:
    store = SnapshotStore(engine)
    saved = [_snapshot("a", 1), _snapshot("b", 7)]
    await store.save(saved)
    assert await store.load() == {s.account_id: s for s in saved}


async def test_save_when_version_higher_then_replaces(engine: AsyncEngine) -> None:
    store = SnapshotStore(engine)
    await store.save([_snapshot("a", 1)])
    await store.save([_snapshot("a", 5)])
    assert (await store.load())["a"] == _snapshot("a", 5)


async def test_save_when_version_equal_then_replaces(engine: AsyncEngine) -> None:
    store = SnapshotStore(engine)
    await store.save([_snapshot("a", 3)])
    newer_state = Snapshot(account_id="a", version=3, ts_ns=9, state=b"\x00again")
    await store.save([newer_state])
    assert (await store.load())["a"] == newer_state


async def test_save_when_version_lower_then_snapshot_kept(engine: AsyncEngine) -> None:
    store = SnapshotStore(engine)
    await store.save([_snapshot("a", 5)])
    await store.save([_snapshot("a", 2)])
    assert (await store.load())["a"] == _snapshot("a", 5)


async def test_save_when_account_twice_in_batch_then_highest_version_wins(
    engine: AsyncEngine,
) -> None:
    store = SnapshotStore(engine)
    await store.save([_snapshot("a", 4), _snapshot("a", 9), _snapshot("a", 2)])
    assert await store.load() == {"a": _snapshot("a", 9)}


async def test_load_when_ids_given_then_only_existing_of_them(engine: AsyncEngine) -> None:
    store = SnapshotStore(engine)
    await store.save([_snapshot(f"acc-{n}", n) for n in range(10)])
    loaded = await store.load(["acc-1", "acc-3", "missing"])
    assert set(loaded) == {"acc-1", "acc-3"}
    assert await store.load([]) == {}


async def test_load_when_many_ids_then_all_found(engine: AsyncEngine) -> None:
    store = SnapshotStore(engine)
    ids = [f"acc-{n}" for n in range(12_000)]
    await store.save([_snapshot(account_id, 1) for account_id in ids])
    assert set(await store.load(ids)) == set(ids)
