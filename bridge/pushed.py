"""A platform connection whose events are pushed to us (`POST /ingest/v1/{connection}/events`).

The ingestion endpoint stores pushed events in the inbox (`ledger/inbox.py`) before it answers;
`PushedEvents` hands them to the bridge worker in inbox order, and sends commands and queries to
the platform's own adapter (`inner`).

The delivery cursor: the worker tells us (`durable`) which fetched batches every shard's
checkpoint holds, and only then does the cursor move past them. After a restart, of the worker or
of a shard and the worker together, the worker starts after the recorded cursor; a batch
delivered but not yet durable is delivered again, which is harmless (the worker and shards drop
repeated event and deal ids).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from bridge.commands import AnyPlatformCommand
from bridge.platform import AccountState, BatchStates, OpenPosition, Platform
from ledger.database import create_engine
from ledger.inbox import Inbox


class PushedEvents:
    """`Platform`: events from the inbox of `connection`, everything else from `inner`."""

    def __init__(self, connection: str, database_url: str, inner: Platform) -> None:
        self.connection = connection
        self.database_url = database_url
        self.inner = inner
        self._inbox: Inbox | None = None  # made in the process that uses it (Ray pickles us)
        self.read: int | None = None  # the last seq handed to the worker (None: not started)
        self.handed: deque[int] = deque()  # the last seq of each batch not yet durable

    @property
    def inbox(self) -> Inbox:
        if self._inbox is None:
            self._inbox = Inbox(create_engine(self.database_url))
        return self._inbox

    async def fetch(self, max_events: int) -> list[bytes]:
        if self.read is None:
            self.read = await self.inbox.cursor(self.connection)
        rows = await self.inbox.read(self.connection, self.read, max_events)
        if rows:
            self.read = rows[-1][0]
            self.handed.append(self.read)
        return [payload for _, payload in rows]

    async def durable(self, batches: int) -> None:
        """`Replayable`: move the cursor past the oldest `batches` batches handed over."""
        await self.inbox.advance(self.connection, self.handed[batches - 1])
        for _ in range(batches):  # only once recorded: a failed write is confirmed again later
            self.handed.popleft()

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        return await self.inner.execute(commands)

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        return await self.inner.history(account_id, since_ns)

    async def positions(self, account_id: str) -> list[OpenPosition]:
        return await self.inner.positions(account_id)

    async def account_state(self, account_id: str) -> AccountState:
        return await self.inner.account_state(account_id)


class PushedBatchEvents(PushedEvents):
    """`PushedEvents` over an adapter with a batch call for account states (`BatchStates`)."""

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState]:
        assert isinstance(self.inner, BatchStates)
        return await self.inner.account_states(account_ids)
