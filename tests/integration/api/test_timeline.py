"""The trader timeline over HTTP: accounts, journal events and operator actions of one trader,
newest first, paginated and filtered, on PostgreSQL and SQLite."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.events import (
    AccountFrozen,
    BreachAction,
    DomainEvent,
    PhaseFailed,
    RuleBreached,
    RuleName,
    RuleProgressed,
)
from actors.shard_actor import journal_record
from api.auth import Role
from api.pagination import encode_cursor
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    Side,
)
from ledger import audit
from ledger.audit import AuditRecord
from ledger.journal import Journal, JournalRecord
from ledger.schema import accounts, audit_log, traders
from tests.api import Api, serve

S = 1_000_000_000
T0 = time.time_ns() - 3_600 * S  # the trading happened an hour ago; the operators act "now"
LATER = time.time_ns() + 3_600 * S  # a platform confirmation stamped after the operators acted

# The expected timeline of trd-1, newest first (ids; journal seqs follow the append order below).
# Ties are on purpose: within a source (same ts: seq desc) and across sources (same ts: the
# account, then the audit, then the journal source), so a cursor landing on a tie is tested.
EXPECTED = [
    "journal:13",  # account_frozen at LATER
    "audit:3",  # account.freeze, appended with the trader.create records: same ts, seq desc
    "audit:1",  # trader.create trd-1 (audit:2 is trd-2's)
    "journal:12",  # acc-2 rule_progressed stamped with the audit records' ts: after them
    "journal:11",  # acc-2 deal at T0+6s
    "journal:10",  # acc-2 unknown kind at T0+5.5s
    "journal:8",  # acc-2 deposit at T0+5s
    "journal:6",  # acc-1 phase_failed, T0+3s (the same ts as the deal and the breach: seq desc)
    "journal:5",  # acc-1 rule_breached, T0+3s
    "journal:4",  # acc-1 deal out, T0+3s
    "journal:2",  # acc-1 deal in, T0+2s
    "journal:1",  # acc-1 deposit, T0+1s
    "account:acc-1",  # both accounts opened at T0: by account id
    "account:acc-2",
    "journal:9",  # acc-2's first deposit, at T0 too: the journal source after the accounts
]


def deposit(account_id: str, n: int, ts_ns: int) -> BalanceOperated:
    return BalanceOperated(
        event_id=f"bal:{account_id}:{n}",
        ts_ns=ts_ns,
        account_id=account_id,
        deal_id=n,
        kind=BalanceKind.DEPOSIT,
        amount=100_000.0,
    )


def deal(account_id: str, n: int, ts_ns: int, entry: DealEntry, profit: float) -> DealExecuted:
    return DealExecuted(
        event_id=f"deal:{account_id}:{n}",
        ts_ns=ts_ns,
        account_id=account_id,
        deal_id=n,
        position_id=7,
        symbol="EURUSD",
        entry=entry,
        side=Side.BUY if entry is DealEntry.IN else Side.SELL,
        volume=1.0,
        price=1.085,
        profit=profit,
    )


def breach(account_id: str, cause: str, ts_ns: int) -> RuleBreached:
    return RuleBreached(
        event_id=f"breach:{account_id}",
        ts_ns=ts_ns,
        account_id=account_id,
        caused_by=cause,
        rule=RuleName.DAILY_LOSS,
        action=BreachAction.FAIL,
        value=94_800.0,
        limit=95_000.0,
        phase="phase1",
    )


def failed(account_id: str, cause: str, ts_ns: int) -> PhaseFailed:
    return PhaseFailed(
        event_id=f"failed:{account_id}",
        ts_ns=ts_ns,
        account_id=account_id,
        caused_by=cause,
        phase="phase1",
        rule=RuleName.DAILY_LOSS,
    )


def warning(account_id: str, ts_ns: int) -> RuleProgressed:
    return RuleProgressed(
        event_id=f"warning:{account_id}",
        ts_ns=ts_ns,
        account_id=account_id,
        caused_by="tick",
        rule=RuleName.DAILY_LOSS,
        level=50.0,
        used_pct=52.0,
        equity=97_400.0,
        limit=95_000.0,
    )


def unknown_kind(account_id: str, ts_ns: int) -> JournalRecord:
    """A row of a kind this version does not know (a newer writer's): shown raw."""
    payload = {"type": "payout_requested", "account_id": account_id, "amount_cents": 50_000}
    return JournalRecord(
        event_id=f"payout:{account_id}",
        account_id=account_id,
        kind="payout_requested",
        ts_ns=ts_ns,
        payload=msgspec.msgpack.encode(payload),
    )


def account_row(account_id: str, trader_id: str) -> dict[str, Any]:
    return dict(
        id=account_id, trader_id=trader_id, purchase_id=f"pur-{account_id}", plan_id="classic",
        plan_version=1, phase="phase1", status="active", connection="sim", platform_login="1001",
        failed_rule=None, reason=None, attempts=1, previous_id=None, created_ns=T0,
        updated_ns=T0,
    )  # fmt: skip


def trader_row(trader_id: str) -> dict[str, Any]:
    return dict(
        id=trader_id, email=f"{trader_id}@example.com", name=trader_id, country="DE",
        language="de", timezone="Europe/Berlin", source="organic", created_ns=T0,
    )  # fmt: skip


def record(action: str, target_type: str, target_id: str, trader_id: str) -> AuditRecord:
    return AuditRecord(
        actor="ops",
        role="operations",
        action=action,
        target_type=target_type,
        target_id=target_id,
        trader_id=trader_id,
        after={"reason": "dispute"} if action == "account.freeze" else {"id": trader_id},
        request_id=f"req-{action}-{trader_id}",
    )


async def seed(engine: AsyncEngine) -> None:
    """trd-1 with acc-1 and acc-2, trd-2 with acc-9; journal seqs 1..13 (3 and 7 are trd-2's)."""
    async with engine.begin() as conn:
        await conn.execute(traders.insert(), [trader_row("trd-1"), trader_row("trd-2")])
        rows = [account_row("acc-1", "trd-1"), account_row("acc-2", "trd-1")]
        await conn.execute(accounts.insert(), [*rows, account_row("acc-9", "trd-2")])
    first: list[AnyPlatformEvent | DomainEvent] = [
        deposit("acc-1", 1, T0 + 1 * S),
        deal("acc-1", 2, T0 + 2 * S, DealEntry.IN, 0.0),
        deal("acc-9", 3, T0 + 3 * S, DealEntry.IN, 0.0),
        deal("acc-1", 4, T0 + 3 * S, DealEntry.OUT, -5_200.0),
        breach("acc-1", "deal:acc-1:4", T0 + 3 * S),
        failed("acc-1", "deal:acc-1:4", T0 + 3 * S),
        deposit("acc-9", 5, T0 + 4 * S),
        deposit("acc-2", 6, T0 + 5 * S),
        deposit("acc-2", 8, T0),
    ]
    journal = Journal(engine)
    await journal.append([journal_record(e) for e in first])
    await journal.append([unknown_kind("acc-2", T0 + 5_500_000_000)])
    await journal.append([journal_record(deal("acc-2", 7, T0 + 6 * S, DealEntry.IN, 0.0))])
    async with engine.begin() as conn:
        await audit.append(
            conn,
            [
                record("trader.create", "trader", "trd-1", "trd-1"),
                record("trader.create", "trader", "trd-2", "trd-2"),
                record("account.freeze", "account", "acc-1", "trd-1"),
            ],
        )
        acted_ns = (await conn.execute(select(audit_log.c.ts_ns).limit(1))).scalar_one()
    await journal.append([journal_record(warning("acc-2", acted_ns))])
    frozen = AccountFrozen(
        event_id="frozen:acc-1", ts_ns=LATER, account_id="acc-1", caused_by="ops",
        command_id="freeze:acc-1:ops", reason="manual",
    )  # fmt: skip
    await journal.append([journal_record(frozen)])


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Api]:
    await seed(engine)
    async with serve(engine) as client:
        yield client


async def timeline(
    api: Api, params: dict[str, str] | None = None, *, of: str = "trd-1", role: Role = Role.SUPPORT
) -> tuple[int, Any]:
    """One page of trader `of`'s timeline, asked as `role` (support by default)."""
    return await api.call("GET", f"/api/v1/traders/{of}/timeline", role=role, params=params)


async def walk(
    api: Api, limit: int, params: dict[str, str] | None = None, *, of: str = "trd-1"
) -> list[dict[str, Any]]:
    """Every item, following the cursors page by page (a cursor that never ends fails)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        page_params = {"limit": str(limit), **(params or {})}
        if cursor is not None:
            page_params["cursor"] = cursor
        status, body = await timeline(api, page_params, of=of)
        assert status == 200, body
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    pytest.fail(f"the cursors did not end; items so far: {ids(items)}")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def test_timeline_when_trader_has_accounts_events_and_actions_then_all_newest_first(
    api: Api,
) -> None:
    status, body = await timeline(api)

    assert status == 200, body
    assert ids(body["items"]) == EXPECTED
    assert body["next_cursor"] is None
    by_id = {item["id"]: item for item in body["items"]}
    kinds = {i: (by_id[i]["source"], by_id[i]["kind"]) for i in EXPECTED}
    assert kinds == {
        "journal:13": ("journal", "account_frozen"),
        "audit:3": ("audit", "account.freeze"),
        "audit:1": ("audit", "trader.create"),
        "journal:12": ("journal", "rule_progressed"),
        "journal:11": ("journal", "deal"),
        "journal:10": ("journal", "payout_requested"),
        "journal:8": ("journal", "balance"),
        "journal:6": ("journal", "phase_failed"),
        "journal:5": ("journal", "rule_breached"),
        "journal:4": ("journal", "deal"),
        "journal:2": ("journal", "deal"),
        "journal:1": ("journal", "balance"),
        "account:acc-1": ("account", "account_opened"),
        "account:acc-2": ("account", "account_opened"),
        "journal:9": ("journal", "balance"),
    }
    summaries = {i: by_id[i]["summary"] for i in EXPECTED}
    assert summaries["journal:13"] == "Frozen on the platform: manual"
    assert summaries["audit:3"] == "account.freeze account acc-1 by ops (operations)"
    assert summaries["journal:6"] == "Failed phase phase1 on daily_loss"
    assert summaries["journal:5"] == (
        "Breached daily_loss (fail): equity 94,800.00, floor 95,000.00"
    )
    assert summaries["journal:4"] == (
        "Deal 1.00 EURUSD sell at 1.085, closing position 7: profit -5,200.00"
    )
    assert summaries["journal:2"] == "Deal 1.00 EURUSD buy at 1.085, opening position 7"
    assert summaries["journal:1"] == "Deposit 100,000.00"
    assert summaries["journal:10"] == "payout_requested"
    assert summaries["journal:12"] == (
        "daily_loss warning: 52% of the allowed loss used (level 50%), equity 97,400.00"
    )
    assert summaries["account:acc-1"] == (
        "Account acc-1 opened: plan classic v1, phase phase1, status now active"
    )


async def test_timeline_items_when_listed_then_carry_their_decoded_details(api: Api) -> None:
    _, body = await timeline(api)
    by_id = {item["id"]: item for item in body["items"]}

    out = by_id["journal:4"]
    assert out["account_id"] == "acc-1"
    assert out["ts_ns"] == T0 + 3 * S
    assert datetime.fromisoformat(out["ts"]).timestamp() == pytest.approx((T0 + 3 * S) / S)
    assert out["ts"].endswith("Z")
    assert out["data"]["symbol"] == "EURUSD"
    assert out["data"]["entry"] == "out"
    assert out["data"]["profit"] == -5_200.0
    assert by_id["journal:5"]["data"]["rule"] == "daily_loss"
    assert by_id["journal:10"]["data"] == {
        "type": "payout_requested",
        "account_id": "acc-2",
        "amount_cents": 50_000,
    }
    freeze = by_id["audit:3"]
    assert freeze["account_id"] == "acc-1"
    assert freeze["data"]["after"] == {"reason": "dispute"}
    assert freeze["data"]["actor"] == "ops"
    assert by_id["audit:1"]["account_id"] is None
    assert by_id["account:acc-2"]["data"]["plan_id"] == "classic"
    assert by_id["account:acc-2"]["data"]["status"] == "active"


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_timeline_when_walked_by_cursor_then_every_item_comes_once_in_order(
    api: Api, limit: int
) -> None:
    walked = await walk(api, limit)

    assert ids(walked) == EXPECTED


async def test_timeline_when_filtered_by_kinds_then_only_those_kinds_across_sources(
    api: Api,
) -> None:
    status, body = await timeline(api, {"kinds": "deal,account.freeze,account_opened"})

    assert status == 200, body
    assert ids(body["items"]) == [
        "audit:3",
        "journal:11",
        "journal:4",
        "journal:2",
        "account:acc-1",
        "account:acc-2",
    ]
    assert ids(await walk(api, 1, {"kinds": "rule_breached"})) == ["journal:5"]


async def test_timeline_when_filtered_by_account_then_only_that_accounts_items(
    api: Api,
) -> None:
    _, second = await timeline(api, {"account_id": "acc-2"})
    _, first = await timeline(api, {"account_id": "acc-1", "kinds": "account.freeze,balance"})

    assert ids(second["items"]) == [
        "journal:12",
        "journal:11",
        "journal:10",
        "journal:8",
        "account:acc-2",
        "journal:9",
    ]
    assert ids(first["items"]) == ["audit:3", "journal:1"]


async def test_timeline_when_filtered_by_another_traders_account_then_empty(api: Api) -> None:
    status, body = await timeline(api, {"account_id": "acc-9"})

    assert status == 200, body
    assert body == {"items": [], "next_cursor": None}


async def test_timeline_when_two_traders_then_neither_sees_the_others_events(api: Api) -> None:
    _, other = await timeline(api, of="trd-2")

    assert ids(other["items"]) == ["audit:2", "journal:7", "journal:3", "account:acc-9"]
    assert {item["account_id"] for item in other["items"]} == {"acc-9", None}


async def test_timeline_when_trader_unknown_then_404(api: Api) -> None:
    status, body = await timeline(api, of="trd-404")

    assert status == 404
    assert body["title"] == "Trader not found"


async def test_timeline_when_affiliate_manager_then_403_and_support_allowed(api: Api) -> None:
    denied, _ = await timeline(api, role=Role.AFFILIATE_MANAGER)
    allowed, _ = await timeline(api, role=Role.SUPPORT)

    assert (denied, allowed) == (403, 200)


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"cursor": encode_cursor([2**63, "journal", 1, ""])}, 400, "query.cursor"),
        ({"cursor": encode_cursor([1, "journal", 1])}, 400, "query.cursor"),
        ({"kinds": "deal,,balance"}, 422, "query.kinds"),
        ({"kinds": ",".join(f"k{n}" for n in range(51))}, 422, "query.kinds"),
        ({"limit": "501"}, 422, "query.limit"),
        ({"account": "acc-1"}, 422, "query.account"),
    ],
)
async def test_timeline_when_query_invalid_then_problem_names_the_field(
    api: Api, params: dict[str, str], status: int, field: str
) -> None:
    answered, body = await timeline(api, params)

    assert answered == status, body
    assert [error["field"] for error in body["errors"]] == [field]


async def test_timeline_when_trader_has_many_accounts_then_walk_still_sees_each_item_once(
    engine: AsyncEngine, api: Api
) -> None:
    # Past 32 accounts the journal is read in one scan of them all instead of a seek each.
    names = [f"many-{n:02d}" for n in range(40)]
    async with engine.begin() as conn:
        await conn.execute(traders.insert(), [trader_row("trd-many")])
        await conn.execute(accounts.insert(), [account_row(a, "trd-many") for a in names])
    await Journal(engine).append(
        [journal_record(deposit(a, n, T0 + (n % 7) * S)) for n, a in enumerate(names, 1)]
    )
    _, whole = await timeline(api, {"limit": "500"}, of="trd-many")

    walked = await walk(api, 7, of="trd-many")

    assert ids(walked) == ids(whole["items"])
    assert len(set(ids(walked))) == 80
    assert [i["ts_ns"] for i in walked] == sorted((i["ts_ns"] for i in walked), reverse=True)
