"""One breach through every layer: platform, bridge, shard, back to the platform, journal, HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.alerts import Breach
from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from api.auth import Role
from bridge.connections import EmbeddedConnection
from bridge.simulator import SimulatorConfig, SimulatorReport
from ledger.database import create_engine
from ledger.journal import Journal
from ledger.schema import alert_rules
from tests.api import Api, serve
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("ray_session")

TS = 1_772_442_000_000_000_000


def message(**body: object) -> bytes:
    return msgspec.json.encode(body)


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    quiet = SimulatorConfig(server="loop", ticks_per_second=0.0, trades_per_trader_per_minute=0.0)
    config = RuntimeConfig(
        database_url=database_url,
        shards=2,
        plan=DEFAULT_PLAN,
        connections=(EmbeddedConnection(name="loop", simulator=quiet),),
    )
    runtime = Runtime(config)
    await runtime.start(["t-1", "t-2"])
    yield runtime
    await runtime.close()


@pytest.fixture
async def api(runtime: Runtime, engine: AsyncEngine) -> AsyncIterator[Api]:
    async with serve(engine, runtime) as client:
        yield client


async def crash_eurusd(runtime: Runtime) -> None:
    """t-1 buys 10 lots at 1.0851; the bid falls to 1.0790: 6,100 lost, past the 5,000 limit."""
    messages = [
        message(type="tick", event_id="x:1", ts_ns=TS + 1, symbol="EURUSD", bid=1.0850, ask=1.0851),
        message(type="deal", event_id="x:2", ts_ns=TS + 2, account_id="t-1", deal_id=900,
                position_id=900, symbol="EURUSD", entry="in", side="buy", volume=10.0,
                price=1.0851),
        message(type="tick", event_id="x:3", ts_ns=TS + 3, symbol="EURUSD", bid=1.0790, ask=1.0791),
    ]  # fmt: skip
    await runtime.cell().server.inject.remote(messages)


async def test_breach_when_equity_crosses_daily_limit_then_platform_disables_account(
    runtime: Runtime, database_url: str
) -> None:
    await crash_eurusd(runtime)

    async def report() -> SimulatorReport:
        result: SimulatorReport = await runtime.cell().server.report.remote()
        return result

    final = await eventually(report, lambda r: "t-1" in r.disabled)
    assert final.disabled == ["t-1"]
    stats = await eventually(runtime.stats, lambda s: s.frozen == 1 and s.journal_rows >= 4)
    assert stats.breaches == 1
    engine = create_engine(database_url)
    try:
        kinds = [e.kind for e in await Journal(engine).read(account_id="t-1")]
    finally:
        await engine.dispose()
    assert kinds == ["deal", "rule_breached", "phase_failed", "trading_disabled", "account_frozen"]


async def test_account_endpoint_shows_breach_and_freeze(runtime: Runtime, api: Api) -> None:
    await crash_eurusd(runtime)
    await eventually(runtime.stats, lambda s: s.frozen == 1)

    status, found = await api.call("GET", "/api/v1/accounts/t-1", role=Role.SUPPORT)
    assert status == 200
    assert found["registered"] is None  # hosted directly, not sold through the API
    body = found["live"]
    untouched = (await api.call("GET", "/api/v1/accounts/t-2", role=Role.SUPPORT))[1]["live"]
    status, missing = await api.call("GET", "/api/v1/accounts/nobody", role=Role.SUPPORT)
    assert status == 404

    assert (body["status"], body["phase"]) == ("failed", "challenge")
    assert body["frozen"] is True
    assert body["breaches"][-1]["rule"] == "daily_loss"
    assert body["breaches"][-1]["caused_by"] == "x:3"
    assert body["equity"] == 100_000.0 - 6100.0
    assert [b["action"] for b in body["breaches"]] == ["fail"]
    assert (untouched["status"], untouched["frozen"]) == ("active", False)
    assert "nobody" in missing["detail"]


async def test_stream_shows_the_position_then_the_breach_the_alert_and_the_freeze(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    """Shards publish to the runtime's risk hub; a risk manager's websocket sees it all."""
    rule = Breach(failing_only=True)
    async with engine.begin() as conn:
        await conn.execute(
            alert_rules.insert().values(
                id="ar_test_breach",
                name="failing breach",
                severity="critical",
                enabled=1,
                condition=msgspec.json.encode(rule).decode(),
                created_ns=1,
                updated_ns=1,
            )
        )
    await runtime.hub.reload_rules.remote()
    async with serve(engine, runtime, hub=runtime.hub) as api:
        ws = await api.session.ws_connect(api.url + "/api/v1/stream")
        token = api.tokens[Role.RISK]
        await ws.send_str(json.dumps({"type": "subscribe", "token": token}))
        seen: list[dict[str, Any]] = []

        async def read() -> None:
            async for frame in ws:
                seen.extend(json.loads(frame.data).get("messages", ()))

        reader = asyncio.create_task(read())
        await eventually(_of(seen, "account"), lambda rows: {"t-1", "t-2"} <= rows)
        await crash_eurusd(runtime)

        def frozen(rows: set[str]) -> bool:
            return any(
                m["row"]["account_id"] == "t-1" and m["row"]["frozen"]
                for m in seen
                if m["type"] == "account"
            )

        await eventually(_of(seen, "account"), frozen)
        await eventually(_alerts(seen, "ar_test_breach"), lambda a: bool(a))
        positions = [m["row"]["legs"] for m in seen if m["type"] == "account" and m["row"]["legs"]]
        assert positions[0] == [
            {"symbol": "EURUSD", "lots": 10.0, "notional": positions[0][0]["notional"]}
        ]
        assert positions[0][0]["notional"] > 10 * 100_000 * 100  # over a million dollars, in cents
        breaches = [m["event"] for m in seen if m["type"] == "breach"]
        assert [(b["account_id"], b["rule"]) for b in breaches] == [("t-1", "daily_loss")]
        # (On SQLite the migration's default rules raise alerts of their own too.)
        alerts = [m["alert"] for m in seen if m["type"] == "alert"]
        alerts = [a for a in alerts if a["rule_id"] == "ar_test_breach"]
        assert [(a["account_id"], a["kind"], a["severity"]) for a in alerts] == [
            ("t-1", "breach", "critical")
        ]
        failed = [
            m["row"] for m in seen if m["type"] == "account" and m["row"]["status"] == "failed"
        ]
        assert failed[0]["daily_used_pct"] is None
        await ws.close()
        await reader


def _of(seen: list[dict[str, Any]], kind: str) -> Any:
    async def probe() -> set[str]:
        if kind == "account":
            return {m["row"]["account_id"] for m in seen if m["type"] == "account"}
        return {m["seq"] for m in seen if m["type"] == kind}

    return probe


def _alerts(seen: list[dict[str, Any]], rule_id: str) -> Any:
    async def probe() -> list[str]:
        return [
            m["alert"]["id"]
            for m in seen
            if m["type"] == "alert" and m["alert"]["rule_id"] == rule_id
        ]

    return probe


async def test_a_restarted_hub_gets_every_row_again_from_quiet_shards(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    """Nothing trades: the shards still learn of the new hub and send it all their rows."""
    import ray

    first = await runtime.hub.ready.remote()
    await eventually(runtime.hub.stats.remote, lambda s: s["accounts"] == 2)
    ray.kill(runtime.hub, no_restart=False)

    async def after_restart() -> dict[str, int]:
        try:
            if await runtime.hub.ready.remote() == first:
                return {"accounts": -1}
            stats: dict[str, int] = await runtime.hub.stats.remote()
            return stats
        except Exception:  # restarting
            return {"accounts": -1}

    await eventually(after_restart, lambda s: s["accounts"] == 2, timeout_s=30)
