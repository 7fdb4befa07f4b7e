"""`AccountShard`: the Ray actor that hosts a `ShardCore` and does its I/O.

A freeze is sent to the bridge the moment its effect appears and never waits for the database. The
shard owns each freeze until the platform confirms it, sending it again (same command id, so the
platform treats it as one) until it does. The journal is written in batches by a background task; a
failed write is kept and retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import ray

from actors.events import AnyDomainEvent
from actors.plans import Plan
from actors.shard import AccountView, ShardCore, ShardStats
from bridge.codec import decode_event_batch, encode_batch
from bridge.commands import AnyPlatformCommand, DisableTrading, EnableTrading, PlatformCommand
from bridge.events import AnyPlatformEvent
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

    def __init__(
        self,
        shard: int,
        database_url: str,
        flush_interval_s: float = 0.05,
        resend_after_s: float = 1.0,
    ) -> None:
        self.core = ShardCore(shard)
        self.engine = create_engine(database_url)
        self.journal = Journal(self.engine)
        self.snapshots = SnapshotStore(self.engine)
        self.flush_interval_s = flush_interval_s
        self.resend_after_s = resend_after_s
        self.bridge: Any = None
        self.pending: list[JournalRecord] = []
        self.writing = asyncio.Lock()
        self.delivered: dict[str, int] = {}  # last delivery number applied, per bridge connection
        self.unconfirmed: dict[str, tuple[DisableTrading, float]] = {}  # account -> freeze, sent at
        self.sent: list[Any] = []
        self.flusher: asyncio.Task[None] | None = None

    async def attach(self, bridge: Any) -> None:
        """Set where platform commands go and start the background writer."""
        self.bridge = bridge
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_forever())

    async def register(self, accounts: Sequence[tuple[str, Plan]]) -> int:
        return self.core.register(accounts)

    async def apply_batch(self, payload: bytes, source: str = "", seq: int = 0) -> int:
        """Apply a msgpack batch of platform events; returns how many were applied.

        `seq` numbers the deliveries from `source`; a delivery already applied is ignored, so a
        bridge that retries after a lost reply does not apply the batch twice.
        """
        if seq and seq <= self.delivered.get(source, 0):
            return 0
        events = decode_event_batch(payload)
        applied = self.core.apply(events)
        if seq:
            self.delivered[source] = seq
        commands = [e for e in applied.effects if isinstance(e, PlatformCommand)]
        if commands:
            self._send(commands)
        self.pending.extend(journal_record(e) for e in applied.journal)
        return len(events)

    def _send(self, commands: Sequence[AnyPlatformCommand]) -> None:
        if self.bridge is None:
            raise RuntimeError("shard has no bridge attached; call attach() before apply_batch()")
        now = time.monotonic()
        for command in commands:
            if isinstance(command, DisableTrading):
                self.unconfirmed[command.account_id] = (command, now)
            elif isinstance(command, EnableTrading):  # a pause ended: stop resending its freeze
                self.unconfirmed.pop(command.account_id, None)
        self.sent.append(self.bridge.submit.remote(encode_batch(commands)))

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
        async with self.writing:  # one writer at a time keeps the journal in order
            batch, self.pending = self.pending, []
            try:
                inserted = await self.journal.append(batch)
            except Exception:
                self.pending[:0] = batch  # the next flush retries; ids make it harmless
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

    async def close(self) -> None:
        """Stop the background writer, write what is pending, release the database."""
        if self.flusher is not None:
            self.flusher.cancel()
            await asyncio.gather(self.flusher, return_exceptions=True)
            self.flusher = None
        await self.flush()
        await self.engine.dispose()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self._reap_sent()
                self._resend_unconfirmed()
                if self.pending:
                    await self.flush()
            except Exception:
                log.exception("background write failed; %d records kept", len(self.pending))

    async def _reap_sent(self) -> None:
        """Collect the bridge's answers; a refused batch is covered by `_resend_unconfirmed`."""
        if not self.sent:
            return
        ready, self.sent = ray.wait(self.sent, num_returns=len(self.sent), timeout=0)
        for ref in ready:
            try:
                await ref
            except Exception:
                self.core.stats.command_errors += 1
                log.exception("bridge did not take a command batch")

    def _resend_unconfirmed(self) -> None:
        """Send again every freeze the platform has not confirmed within `resend_after_s`."""
        now = time.monotonic()
        due: list[AnyPlatformCommand] = []
        for account_id, (command, sent_at) in list(self.unconfirmed.items()):
            if self.core.accounts[account_id].frozen is not None:
                del self.unconfirmed[account_id]
            elif now - sent_at >= self.resend_after_s:
                due.append(command)
        if due:
            log.warning("resending %d unconfirmed freezes", len(due))
            self._send(due)


RemoteAccountShard: Any = ray.remote(AccountShard)
