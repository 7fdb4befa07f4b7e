"""The risk stream with real websocket clients: a real risk hub actor (Ray), a real aiohttp
server, PostgreSQL. Rows and events are published to the hub as shards publish them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from actors.alerts import AlertRule, Breach, LossLimit
from actors.events import BreachAction, RuleBreached, RuleName
from actors.hub import HubConfig, HubState, RemoteRiskHub, encode_published
from actors.risk import CurrencyLeg, Leg, RiskRow
from api.app import create_app
from api.auth import Role, create_token
from api.stream import CLOSE_FORBIDDEN, CLOSE_SLOW, CLOSE_UNAUTHORIZED, STREAM, StreamConfig
from ledger.database import create_engine
from ledger.schema import accounts, alert_rules
from tests.api import NoSupervisor, partner_scope
from tests.conftest import eventually
from tests.database import run_async, truncate_ledger

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("ray_session")]


def row(
    account_id: str,
    equity: int,
    *,
    plan: str = "p100k",
    phase: str = "challenge",
    book: str = "evaluation",
    symbol: str | None = None,
    daily_used: float = 10.0,
) -> RiskRow:
    legs: tuple[Leg, ...] = ()
    currencies: tuple[CurrencyLeg, ...] = ()
    if symbol is not None:
        legs = (Leg(symbol=symbol, lots=1.0, notional=10_000_000),)
        currencies = (CurrencyLeg(currency=symbol[:3], amount=100_000.0, notional=10_000_000),)
    return RiskRow(
        account_id=account_id,
        plan=plan,
        phase=phase,
        book=book,
        status="active",
        frozen=False,
        currency="USD",
        balance=10_000_000,
        equity=equity,
        daily_floor=9_500_000,
        max_floor=9_000_000,
        daily_used_pct=daily_used,
        max_used_pct=5.0,
        legs=legs,
        currencies=currencies,
        ts_ns=1,
    )


def breach(account_id: str, n: int) -> RuleBreached:
    return RuleBreached(
        event_id=f"breach:{account_id}:daily_loss:{n}",
        ts_ns=n,
        account_id=account_id,
        caused_by=f"deal-{n}",
        rule=RuleName.DAILY_LOSS,
        action=BreachAction.FAIL,
        value=-5_100.0,
        limit=-5_000.0,
        phase="challenge",
    )


class Stream:
    """A served app following a real hub, and tokens per role."""

    def __init__(self, url: str, hub: Any, app: web.Application, tokens: dict[Role, str]) -> None:
        self.url = url
        self.hub = hub
        self.app = app
        self.tokens = tokens

    async def publish(self, rows: list[RiskRow], events: list[Any] = ()) -> None:  # type: ignore[assignment]
        await self.hub.publish.remote(encode_published(rows, list(events), time.time_ns()))

    @property
    def server(self) -> Any:
        return self.app[STREAM]

    async def caught_up(self) -> None:
        """Until this process has read everything the hub sent."""
        last = (await self.hub.stats.remote())["seq"]
        await eventually(lambda: _now(self.server.mirror.seq), lambda seq: seq >= last)


@pytest.fixture
def clean_url(migrated_postgres_url: str) -> Iterator[str]:
    run_async(truncate_ledger(migrated_postgres_url))
    return migrated_postgres_url


@asynccontextmanager
async def serving(url: str, config: StreamConfig | None = None) -> AsyncIterator[Stream]:
    engine = create_engine(url)
    async with engine.begin() as conn:
        tokens = {
            role: (await create_token(conn, role.value, role, partner_scope(role))).token
            for role in Role
        }
    hub = RemoteRiskHub.remote(url, HubConfig(exposure_interval_s=0.05))
    await hub.ready.remote()
    app = create_app(NoSupervisor(), engine, hub=hub, stream=config)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    await asyncio.wait_for(app[STREAM].synced.wait(), 10)
    try:
        yield Stream(f"http://{host}:{port}", hub, app, tokens)
    finally:
        await runner.cleanup()
        await hub.close.remote()
        await engine.dispose()


class Client:
    """A websocket client that keeps every message it received, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.epoch: str | None = None
        self.seq = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            self.frames.append(frame)
            if frame["type"] == "snapshot":
                self.epoch, self.seq = frame["epoch"], frame["seq"]
            elif frame["type"] == "resumed":
                self.epoch = frame["epoch"]
            for item in frame.get("messages", ()):
                self.messages.append(item)
                if frame["type"] == "deltas":
                    self.seq = max(self.seq, item["seq"])

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def accounts(self) -> set[str]:
        return {m["row"]["account_id"] for m in self.of("account")}

    async def close(self) -> None:
        await self.ws.close()
        await self.task


@asynccontextmanager
async def connect(
    stream: Stream, role: Role | None = Role.RISK, **subscribe: Any
) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(stream.url + "/api/v1/stream")
        token = stream.tokens[role] if role is not None else None
        await ws.send_str(json.dumps({"type": "subscribe", "token": token, **subscribe}))
        client = Client(ws)
        try:
            yield client
        finally:
            await client.close()


async def test_stream_without_a_token_is_refused(clean_url: str) -> None:
    async with serving(clean_url) as stream, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(stream.url + "/api/v1/stream")
        await ws.send_str(json.dumps({"type": "subscribe"}))
        closed = await ws.receive(timeout=10)
        assert closed.type == aiohttp.WSMsgType.CLOSE
        assert closed.data == CLOSE_UNAUTHORIZED
        assert "unauthorized" in closed.extra

        ws = await session.ws_connect(stream.url + "/api/v1/stream")
        await ws.send_str(json.dumps({"type": "subscribe", "token": "pv_not-a-token"}))
        closed = await ws.receive(timeout=10)
        assert closed.data == CLOSE_UNAUTHORIZED

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(
                stream.url + "/api/v1/stream", headers={"Authorization": "Bearer pv_wrong"}
            )
        assert refused.value.status == 401

        # A role without risk:read: refused by header (403) and in the subscribe message.
        support = {"Authorization": f"Bearer {stream.tokens[Role.SUPPORT]}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as forbidden:
            await session.ws_connect(stream.url + "/api/v1/stream", headers=support)
        assert forbidden.value.status == 403
        ws = await session.ws_connect(stream.url + "/api/v1/stream")
        await ws.send_str(json.dumps({"type": "subscribe", "token": stream.tokens[Role.SUPPORT]}))
        closed = await ws.receive(timeout=10)
        assert closed.data == CLOSE_FORBIDDEN


async def test_stream_with_a_header_token_sends_a_snapshot_then_deltas(clean_url: str) -> None:
    async with serving(clean_url) as stream, aiohttp.ClientSession() as session:
        await stream.publish([row("a1", 9_900_000)])
        await stream.caught_up()
        headers = {"Authorization": f"Bearer {stream.tokens[Role.ADMIN]}"}
        ws = await session.ws_connect(stream.url + "/api/v1/stream", headers=headers)
        await ws.send_str(json.dumps({"type": "subscribe"}))
        client = Client(ws)
        await eventually(lambda: _now(client.frames), lambda f: len(f) >= 1)
        snapshot = client.frames[0]
        assert snapshot["type"] == "snapshot"
        assert [m["row"]["equity"] for m in snapshot["messages"] if m["type"] == "account"] == [
            9_900_000
        ]
        await stream.publish([row("a1", 9_800_000)])
        await eventually(lambda: _now(client.of("account")), lambda m: len(m) == 2)
        assert client.of("account")[-1]["row"]["equity"] == 9_800_000
        assert client.of("account")[-1]["seq"] > snapshot["seq"]
        await client.close()


async def _now(value: Any) -> Any:
    return value


async def test_filters_pick_the_messages_each_client_asked_for(clean_url: str) -> None:
    engine = create_engine(clean_url)
    async with engine.begin() as conn:
        now = time.time_ns()
        await conn.execute(
            accounts.insert(),
            [
                {
                    "id": account_id,
                    "trader_id": trader,
                    "purchase_id": f"pur-{account_id}",
                    "plan_id": "p100k",
                    "plan_version": 1,
                    "phase": "challenge",
                    "status": "active",
                    "connection": "sim",
                    "attempts": 1,
                    "created_ns": now,
                    "updated_ns": now,
                }
                for account_id, trader in (("a1", "trd_ann"), ("a2", "trd_bob"))
            ],
        )
    await engine.dispose()
    async with (
        serving(clean_url) as stream,
        connect(stream, filters={"accounts": ["a1"]}) as by_account,
        connect(stream, filters={"traders": ["trd_bob"]}) as by_trader,
        connect(stream, filters={"plans": ["p50k"]}) as by_plan,
        connect(stream, filters={"phases": ["funded"]}) as by_phase,
        connect(stream, filters={"symbols": ["GBPUSD"]}) as by_symbol,
        connect(stream, filters={"kinds": ["breach"]}) as breaches_only,
        connect(stream) as everything,
    ):
        clients = (by_account, by_trader, by_plan, by_phase, by_symbol, breaches_only)
        await eventually(
            lambda: _now([len(c.frames) for c in (*clients, everything)]),
            lambda counts: all(counts),
        )
        await stream.publish(
            [
                row("a1", 9_900_000),
                row("a2", 9_900_000),
                row("a3", 9_900_000, plan="p50k"),
                row("a4", 9_900_000, phase="funded", book="funded"),
                row("a5", 9_900_000, symbol="GBPUSD"),
            ],
            [breach("a2", 1)],
        )
        await eventually(lambda: _now(everything.accounts()), lambda a: len(a) == 5)
        await eventually(lambda: _now(by_symbol.accounts()), lambda a: a == {"a5"})
        await eventually(lambda: _now(breaches_only.of("breach")), lambda b: len(b) == 1)
        # Whatever else arrives comes with the everything-client's last message or before.
        await eventually(lambda: _now(by_trader.of("breach")), lambda b: len(b) == 1)
        assert by_account.accounts() == {"a1"}
        assert by_trader.accounts() == {"a2"}
        assert by_trader.of("account")[0]["trader_id"] == "trd_bob"
        assert by_plan.accounts() == {"a3"}
        assert by_phase.accounts() == {"a4"}
        assert by_symbol.accounts() == {"a5"}
        assert breaches_only.of("account") == []
        assert breaches_only.of("exposure") == []
        assert by_account.of("breach") == []
        # Exposure tables are firm-wide: account filters let them through.
        await eventually(lambda: _now(by_account.of("exposure")), lambda e: len(e) >= 1)


async def test_resume_after_a_disconnect_has_no_gap_and_no_duplicate(clean_url: str) -> None:
    async with serving(clean_url) as stream:
        async with connect(stream) as first:
            await stream.publish([row("a1", 9_000_000 + i) for i in range(1)], [breach("a1", 1)])
            await eventually(lambda: _now(first.of("breach")), lambda b: len(b) == 1)
            epoch, seen = first.epoch, first.seq
            seen_seqs = [m["seq"] for m in first.messages if m["type"] != "exposure"]
        # Offline: breaches (each must arrive once) and many rows of one account (latest wins).
        for n in range(2, 12):
            await stream.publish([row("a1", 9_000_000 + n)], [breach("a1", n)])
        missed = (await stream.hub.stats.remote())["seq"]
        await eventually(lambda: _now(stream.server.mirror.seq), lambda s: s == missed)
        async with connect(stream, resume={"epoch": epoch, "seq": seen}) as second:
            await eventually(lambda: _now(second.seq), lambda s: s >= missed)
            assert second.frames[0]["type"] == "resumed"
            assert second.frames[0]["after"] == seen
            got = [m["seq"] for m in second.messages]
            assert got == sorted(set(got)), "in order, each once"
            assert min(got) > seen, "nothing seen before the disconnect comes again"
            assert set(got).isdisjoint(seen_seqs)
            assert [m["event"]["ts_ns"] for m in second.of("breach")] == list(range(2, 12))
            assert second.of("account")[-1]["row"]["equity"] == 9_000_011
            # The offline rows conflated: the latest of the account, not each step.
            assert len(second.of("account")) == 1
        # A cursor of another epoch (a restarted hub) gets a new snapshot, said why.
        async with connect(stream, resume={"epoch": "gone", "seq": 3}) as third:
            await eventually(lambda: _now(third.frames), lambda f: len(f) >= 1)
            assert third.frames[0]["type"] == "snapshot"
            assert "resnapshot" in third.frames[0]["reason"]
            assert [m["row"]["equity"] for m in third.of("account")] == [9_000_011]


class RawClient:
    """A websocket client on a bare socket with a small receive buffer, that reads only when
    told to: a client that falls behind."""

    def __init__(self, url: str, token: str, filters: dict[str, Any] | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /api/v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.send({"type": "subscribe", "token": token, "filters": filters or {}})
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        self.send_frame(json.dumps(message).encode())

    def send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def frames(self, timeout_s: float = 10.0) -> Iterator[tuple[int, bytes]]:
        """Every frame until the connection ends: (opcode, payload)."""
        self.sock.settimeout(timeout_s)
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return
            if not chunk:
                return
            self.buffer += chunk
            while (frame := self._frame()) is not None:
                yield frame

    def trickle(self, pause_s: float, limit_s: float) -> tuple[list[tuple[int, bytes]], bool]:
        """Read 4 KiB every `pause_s`, steadily, for up to `limit_s`, answering pings as a
        websocket library does when it parses them: the frames, and whether the server ended
        the connection meanwhile."""
        found: list[tuple[int, bytes]] = []
        self.sock.settimeout(limit_s)
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(4096)
            except ConnectionResetError:
                return found, True
            except TimeoutError:
                break
            if not chunk:
                return found, True
            self.buffer += chunk
            while (frame := self._frame()) is not None:
                found.append(frame)
                if frame[0] == 0x9:
                    self.send_frame(frame[1], opcode=0xA)
            time.sleep(pause_s)
        return found, False

    def _frame(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        size, at = data[1] & 0x7F, 2
        if size == 126:
            size, at = int.from_bytes(data[2:4]), 4
        elif size == 127:
            size, at = int.from_bytes(data[2:10]), 10
        if len(data) < at + size:
            return None
        self.buffer = data[at + size :]
        return data[0] & 0x0F, data[at : at + size]

    def close(self) -> None:
        self.sock.close()


async def test_a_client_that_falls_behind_gets_the_latest_row_not_every_step(
    clean_url: str,
) -> None:
    config = StreamConfig(send_buffer_bytes=4096, max_stall_s=60.0, max_behind_s=60.0)
    async with serving(clean_url, config) as stream:
        # Blocking socket calls: off the loop the server runs on.
        slow = await asyncio.to_thread(RawClient, stream.url, stream.tokens[Role.RISK])
        try:
            await eventually(lambda: _now(len(stream.server.clients)), lambda n: n == 1)
            # Enough other rows to fill the socket, so the writer waits and rows queue up...
            filler = [row(f"f{i:04d}", 9_000_000 + i, symbol="EURUSD") for i in range(2_000)]
            await stream.publish(filler)
            # ...then 200 steps of one account while it waits.
            for n in range(200):
                await stream.publish([row("hot", 9_500_000 + n)])
            client = next(iter(stream.server.clients))
            await eventually(lambda: _now(client.conflated), lambda c: c > 0)
            hot: list[int] = []
            for opcode, payload in await asyncio.to_thread(lambda: list(slow.frames(3.0))):
                if opcode == 0x9:  # the server's probes (pings) between frames
                    continue
                assert opcode == 0x1
                frame = json.loads(payload)
                hot += [
                    m["row"]["equity"]
                    for m in frame.get("messages", ())
                    if m["type"] == "account" and m["row"]["account_id"] == "hot"
                ]
            assert hot[-1] == 9_500_199, "the latest row arrives"
            assert len(hot) < 200, "rows queued for a slow client conflate"
            assert hot == sorted(hot)
        finally:
            slow.close()


async def test_a_client_that_stays_behind_is_dropped_while_fast_ones_keep_receiving(
    clean_url: str,
) -> None:
    config = StreamConfig(send_buffer_bytes=4096, max_stall_s=1.0, max_pending=1_000)
    async with serving(clean_url, config) as stream, connect(stream) as fast:
        await eventually(lambda: _now(fast.frames), lambda f: len(f) >= 1)
        # Blocking socket calls: off the loop the server runs on.
        slow = await asyncio.to_thread(RawClient, stream.url, stream.tokens[Role.RISK])
        try:
            await eventually(lambda: _now(len(stream.server.clients)), lambda n: n == 2)
            for n in range(30):
                rows = [
                    row(f"acct{i:04d}", 9_000_000 + n * 10 + i, symbol="EURUSD") for i in range(200)
                ]
                events = [breach(f"acct{i:04d}", n * 1_000 + i) for i in range(20)]
                await stream.publish(rows, events)
                await asyncio.sleep(0.05)
            await eventually(lambda: _now(stream.server.dropped_slow), lambda d: d == 1)
            assert len(stream.server.clients) == 1
            await stream.publish([row("last", 1)])
            await eventually(lambda: _now(fast.accounts()), lambda a: "last" in a)
            assert len(fast.of("breach")) == 600, "the fast client missed nothing"
            ends = await asyncio.to_thread(lambda: list(slow.frames(5.0)))
            closes = [payload for opcode, payload in ends if opcode == 8]
            if closes:  # the close frame, if the socket took it before it was cut
                assert int.from_bytes(closes[0][:2]) == CLOSE_SLOW
                assert b"slow consumer" in closes[0][2:]
        finally:
            slow.close()


async def test_a_client_that_reads_steadily_but_too_slowly_is_dropped(clean_url: str) -> None:
    """Its queue conflates, so the queue limit never fires, and the stall rule is set to 60 s;
    it is dropped for being more than `max_behind_s` behind (it answers pings, but reads them
    only after the frames before them, and a frame takes it seconds to read)."""
    config = StreamConfig(send_buffer_bytes=4096, max_stall_s=60.0, max_behind_s=1.0)
    async with serving(clean_url, config) as stream, connect(stream) as fast:
        await eventually(lambda: _now(fast.frames), lambda f: len(f) >= 1)
        slow = await asyncio.to_thread(RawClient, stream.url, stream.tokens[Role.RISK])
        try:
            await eventually(lambda: _now(len(stream.server.clients)), lambda n: n == 2)
            reading = asyncio.create_task(asyncio.to_thread(slow.trickle, 0.2, 20.0))
            for n in range(100):  # 5 s of 4,000 rows/s
                rows = [row(f"acct{i:03d}", 9_000_000 + n * 1_000 + i) for i in range(200)]
                await stream.publish(rows)
                await asyncio.sleep(0.05)
                if stream.server.dropped_slow:
                    break
            await eventually(lambda: _now(stream.server.dropped_slow), lambda d: d == 1)
            assert len(stream.server.clients) == 1, "the fast client stays"
            frames, ended = await reading
            assert ended, "the server closed the slow reader's connection"
            closes = [payload for opcode, payload in frames if opcode == 8]
            if closes:  # read before the socket was cut
                assert int.from_bytes(closes[0][:2]) == CLOSE_SLOW
                assert b"more than 1 s behind the stream" in closes[0][2:]
            await stream.publish([row("last", 1)])
            await eventually(lambda: _now(fast.accounts()), lambda a: "last" in a)
        finally:
            slow.close()


async def test_alert_raised_then_acknowledged_reaches_every_stream_and_the_audit(
    clean_url: str,
) -> None:
    engine = create_engine(clean_url)
    rule = AlertRule(id="ar_t", name="at 90%", severity="critical", condition=LossLimit(pct=90.0))
    breached = AlertRule(id="ar_b", name="breach", condition=Breach())
    async with engine.begin() as conn:
        for r in (rule, breached):
            await conn.execute(
                alert_rules.insert().values(
                    id=r.id,
                    name=r.name,
                    severity=r.severity,
                    enabled=1,
                    condition=msgspec.json.encode(r.condition).decode(),
                    created_ns=1,
                    updated_ns=1,
                )
            )
    async with serving(clean_url) as stream, connect(stream, filters={"severity": "critical"}) as c:
        await stream.hub.reload_rules.remote()
        await stream.publish([row("a1", 9_600_000, daily_used=80.0)])
        await stream.publish([row("a1", 9_540_000, daily_used=92.0)], [breach("a1", 7)])
        await eventually(lambda: _now(c.of("alert")), lambda a: len(a) == 1)
        alert = c.of("alert")[0]["alert"]
        assert alert["kind"] == "loss_limit"
        assert alert["account_id"] == "a1"
        assert alert["value"] == 92.0
        # The same condition holding does not raise again; the warning-level breach alert is
        # filtered out of this critical-only stream.
        await stream.publish([row("a1", 9_530_000, daily_used=93.0)])
        # Acknowledged at once: the API has the hub write it first if it has not yet.
        headers = {"Authorization": f"Bearer {stream.tokens[Role.RISK]}"}
        async with aiohttp.ClientSession() as session:
            url = f"{stream.url}/api/v1/alerts/{alert['id']}/acknowledge"
            async with session.post(url, json={"note": "called the trader"}, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["acknowledged_by"] == "risk"
            async with session.post(url, json={}, headers=headers) as r:
                assert r.status == 409
            params = {"status": "all"}
            async with session.get(
                f"{stream.url}/api/v1/alerts", params=params, headers=headers
            ) as r:
                listed = (await r.json())["items"]
            async with session.get(
                f"{stream.url}/api/v1/audit",
                params={"action": "alert.acknowledge"},
                headers=headers,
            ) as r:
                audited = (await r.json())["items"]
        await eventually(lambda: _now(c.messages), lambda m: m[-1]["type"] == "alert_ack")
        assert c.messages[-1]["alert_id"] == alert["id"]
        assert len(c.of("alert")) == 1
        assert sorted(a["kind"] for a in listed) == ["breach", "loss_limit"]
        assert [a["target_id"] for a in audited] == [alert["id"]]
    await engine.dispose()


async def test_a_resume_too_far_behind_gets_a_snapshot_not_a_backlog_that_would_drop_it(
    clean_url: str,
) -> None:
    async with serving(clean_url, StreamConfig(max_pending=10)) as stream:
        async with connect(stream) as first:
            await stream.publish([row("a1", 9_000_000)])
            await eventually(lambda: _now(first.accounts()), lambda a: a == {"a1"})
            epoch, seen = first.epoch, first.seq
        await stream.publish([], [breach("a1", n) for n in range(1, 21)])  # 20 > 10 / 2
        last = (await stream.hub.stats.remote())["seq"]
        await eventually(lambda: _now(stream.server.mirror.seq), lambda s: s == last)
        async with connect(stream, resume={"epoch": epoch, "seq": seen}) as second:
            await eventually(lambda: _now(second.frames), lambda f: len(f) >= 1)
            assert second.frames[0]["type"] == "snapshot"
            assert "resnapshot" in second.frames[0]["reason"]
            assert len(second.of("breach")) == 20  # the snapshot's recent breaches


async def test_two_api_processes_follow_one_hub_and_a_client_resumes_on_the_other(
    clean_url: str,
) -> None:
    async with serving(clean_url) as one:
        engine = create_engine(clean_url)
        other_app = create_app(NoSupervisor(), engine, hub=one.hub)  # type: ignore[arg-type]
        runner = web.AppRunner(other_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        other = Stream(f"http://{host}:{port}", one.hub, other_app, one.tokens)
        try:
            await asyncio.wait_for(other_app[STREAM].synced.wait(), 10)
            async with connect(one) as first:
                await one.publish([row("a1", 9_000_001)], [breach("a1", 1)])
                await eventually(lambda: _now(first.of("breach")), lambda b: len(b) == 1)
                epoch, seen = first.epoch, first.seq
            await one.publish([row("a1", 9_000_002)], [breach("a1", 2)])
            last = (await one.hub.stats.remote())["seq"]
            await eventually(lambda: _now(other.server.mirror.seq), lambda s: s == last)
            async with connect(other, resume={"epoch": epoch, "seq": seen}) as second:
                await eventually(lambda: _now(second.seq), lambda s: s >= last)
                assert second.frames[0]["type"] == "resumed"
                assert [m["event"]["ts_ns"] for m in second.of("breach")] == [2]
                assert second.of("account")[-1]["row"]["equity"] == 9_000_002
        finally:
            await runner.cleanup()
            await engine.dispose()


async def test_a_restarted_hub_starts_a_new_epoch_and_clients_get_a_new_snapshot(
    clean_url: str,
) -> None:
    import ray

    engine = create_engine(clean_url)
    async with engine.begin() as conn:
        tokens = {Role.RISK: (await create_token(conn, "risk", Role.RISK)).token}
    hub = RemoteRiskHub.options(max_restarts=-1).remote(clean_url, HubConfig())
    first_epoch = await hub.ready.remote()
    app = create_app(NoSupervisor(), engine, hub=hub, stream=StreamConfig(read_wait_s=0.2))  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    stream = Stream(f"http://{host}:{port}", hub, app, tokens)
    try:
        await asyncio.wait_for(app[STREAM].synced.wait(), 10)
        async with connect(stream) as client:
            await stream.publish([row("a1", 9_000_001)])
            await eventually(lambda: _now(client.accounts()), lambda a: a == {"a1"})
            ray.kill(hub, no_restart=False)  # the process dies; Ray starts it again
            await eventually(lambda: _now(client.epoch), lambda e: e != first_epoch, 30)
            snapshots = [f for f in client.frames if f["type"] == "snapshot"]
            assert len(snapshots) == 2
            assert snapshots[1]["messages"] == []  # a new hub knows no rows until shards resend
            assert "resnapshot" in snapshots[1]["reason"]
            await stream.publish([row("a1", 9_000_002)])
            await eventually(
                lambda: _now(client.of("account")),
                lambda m: m[-1]["row"]["equity"] == 9_000_002,
            )
    finally:
        await runner.cleanup()
        await engine.dispose()


async def test_an_older_publication_arriving_late_never_replaces_a_newer_row(
    clean_url: str,
) -> None:
    async with serving(clean_url) as stream, connect(stream, filters={"accounts": ["a1"]}) as c:
        await eventually(lambda: _now(c.frames), lambda f: len(f) >= 1)
        newer = encode_published([row("a1", 9_000_002)], [], time.time_ns(), "shard-0", 2)
        older = encode_published([row("a1", 9_000_001)], [breach("a1", 1)], 1, "shard-0", 1)
        await stream.hub.publish.remote(newer)
        await stream.hub.publish.remote(older)
        await eventually(lambda: _now(c.of("breach")), lambda b: len(b) == 1)  # events still count
        assert [m["row"]["equity"] for m in c.of("account")] == [9_000_002]
        state = msgspec.msgpack.decode(await stream.hub.state.remote(), type=HubState)
        assert [u.row.equity for u in state.accounts] == [9_000_002]
