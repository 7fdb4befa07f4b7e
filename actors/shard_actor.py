"""`AccountShard`: the Ray actor that hosts a `ShardCore` and does its I/O.

A freeze is sent to the bridge the moment its effect appears and never waits for the database;
the journal is written in batches by a background task, and a failed write is kept and retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
import ray

from actors.account import Effect
from actors.events import AnyDomainEvent
from actors.plans import Plan
from actors.shard import AccountView, ShardCore, ShardStats
from bridge.codec import decode_event_batch, encode_batch
from bridge.commands import PlatformCommand
from bridge.events import AnyPlatformEvent, PriceTicked
from ledger.database import create_engine
from ledger.journal import Journal, JournalRecord
from ledger.snapshots import Snapshot, SnapshotStore

log = logging.getLogger(__name__)

_encode = msgspec.msgpack.encode  # a module function: Ray pickles actor classes by value


def journal_record(event: AnyPlatformEvent | AnyDomainEvent) -> JournalRecord:
    """The journal row of an event: the ledger stores it encoded, without knowing its type."""
    return JournalRecord(
        event_id=event.event_id,
        account_id=getattr(event, "account_id", None),
        kind=str(type(event).__struct_config__.tag),
        ts_ns=event.ts_ns,
        payload=_encode(event),
    )


class AccountShard:
    """Hosts thousands of account entities; one batch is applied at a time, in order."""

    def __init__(self, shard: int, database_url: str, flush_interval_s: float = 0.05) -> None:
        self.core = ShardCore(shard)
        engine = create_engine(database_url)
        self.journal = Journal(engine)
        self.snapshots = SnapshotStore(engine)
        self.flush_interval_s = flush_interval_s
        self.bridge: Any = None
        self.pending: list[JournalRecord] = []
        self.sent: dict[Any, bytes] = {}  # command batches handed to the bridge, until it acks
        self.command_errors = 0
        self.flusher: asyncio.Task[None] | None = None

    async def attach(self, bridge: Any) -> None:
        """Set where platform commands go and start the journal writer."""
        self.bridge = bridge
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_forever())

    async def register(self, accounts: Sequence[tuple[str, Plan]]) -> int:
        return self.core.register(accounts)

    async def apply_batch(self, payload: bytes) -> int:
        """Apply a msgpack batch of platform events; returns how many were applied."""
        events = decode_event_batch(payload)
        effects = self.core.apply(events)
        self._dispatch(effects)
        self.pending.extend(journal_record(e) for e in events if not isinstance(e, PriceTicked))
        self.pending.extend(
            journal_record(e) for e in effects if not isinstance(e, PlatformCommand)
        )
        return len(events)

    def _dispatch(self, effects: list[Effect]) -> None:
        commands = [e for e in effects if isinstance(e, PlatformCommand)]
        if commands:
            self._send(encode_batch(commands))

    def _send(self, payload: bytes) -> None:
        if self.bridge is None:
            raise RuntimeError("shard has no bridge attached; call attach() before apply_batch()")
        self.sent[self.bridge.submit.remote(payload)] = payload

    async def account(self, account_id: str) -> AccountView | None:
        account = self.core.accounts.get(account_id)
        return AccountView.of(account) if account is not None else None

    async def stats(self) -> ShardStats:
        return self.core.stats

    async def breached(self) -> list[str]:
        return self.core.breached()

    async def frozen(self) -> list[str]:
        return self.core.frozen()

    async def flush(self) -> int:
        """Write what is pending to the journal now; returns the rows newly inserted."""
        batch, self.pending = self.pending, []
        try:
            inserted = await self.journal.append(batch)
        except Exception:
            self.pending[:0] = batch  # keep order; the next flush retries, ids make it harmless
            raise
        self.core.stats.journal_rows += inserted
        return inserted

    async def checkpoint(self) -> int:
        """Flush the journal, then snapshot every account. Returns the number of snapshots."""
        await self.flush()
        snapshots = [
            Snapshot(account_id=a.account_id, version=a.version, ts_ns=a.ts_ns, state=_encode(a))
            for a in self.core.accounts.values()
        ]
        await self.snapshots.save(snapshots)
        return len(snapshots)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self._reap_sent()
            if not self.pending:
                continue
            try:
                await self.flush()
            except Exception:
                log.exception("journal write failed; %d records kept for retry", len(self.pending))

    async def _reap_sent(self) -> None:
        """Forget acknowledged command batches; send again the ones the bridge did not take."""
        if not self.sent:
            return
        ready, _ = ray.wait(list(self.sent), num_returns=len(self.sent), timeout=0)
        for ref in ready:
            payload = self.sent.pop(ref)
            try:
                await ref
            except Exception:
                self.command_errors += 1
                log.exception("bridge did not take a command batch; sending it again")
                self._send(payload)


RemoteAccountShard: Any = ray.remote(AccountShard)
