"""Reports over HTTP on both databases: transactions by country and time (JSON pages with
totals, CSV), cohorts by acquisition source, their validation and who may read them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.admin import reports
from api.admin.reports import amount_text
from api.auth import Role
from api.pagination import encode_cursor
from ledger.schema import accounts, purchases, traders
from tests.api import Api, serve

T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
DAY = 86_400 * 1_000_000_000
TRANSACTIONS = "/api/v1/reports/transactions"
COHORTS = "/api/v1/reports/cohorts"
JANUARY_1 = {"from": "2026-01-01", "to": "2026-01-02"}


def trader(id_: str, source: str, created_ns: int, campaign: str | None = None) -> dict[str, Any]:
    return {"id": id_, "email": f"{id_}@example.com", "name": id_, "country": "DE",
            "language": "de", "timezone": "Europe/Berlin", "source": source,
            "campaign": campaign, "affiliate_code": None, "rep_id": None,
            "created_ns": created_ns}  # fmt: skip


def purchase(
    id_: str, trader_id: str, created_ns: int, amount_minor: int, currency: str = "USD",
    country: str = "DE",
) -> dict[str, Any]:  # fmt: skip
    return {"id": id_, "trader_id": trader_id, "plan_id": "p100k", "plan_version": 1,
            "payment_reference": f"ref-{id_}", "amount_minor": amount_minor,
            "currency": currency, "country": country, "account_id": f"acc_{id_}",
            "created_ns": created_ns}  # fmt: skip


def account(
    id_: str, purchase_id: str, trader_id: str, status: str, failed_rule: str | None = None,
    previous_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {"id": id_, "trader_id": trader_id, "purchase_id": purchase_id, "plan_id": "p100k",
            "plan_version": 1, "phase": "challenge" if previous_id is None else "verification",
            "status": status, "connection": "sim", "platform_login": None,
            "failed_rule": failed_rule, "reason": None, "attempts": 1,
            "previous_id": previous_id, "created_ns": T0, "updated_ns": T0}  # fmt: skip


async def seed(
    engine: AsyncEngine,
    traders_: Sequence[dict[str, Any]] = (),
    purchases_: Sequence[dict[str, Any]] = (),
    accounts_: Sequence[dict[str, Any]] = (),
) -> None:
    async with engine.begin() as conn:
        for table, rows in ((traders, traders_), (purchases, purchases_), (accounts, accounts_)):
            if rows:
                await conn.execute(table.insert(), list(rows))


async def seed_january(engine: AsyncEngine) -> None:
    """Purchases around 2026-01-01 in Germany and France, at and beside the window's edges."""
    await seed(
        engine,
        purchases_=[
            purchase("pur_before", "trd_1", T0 - 1, 1000),
            purchase("pur_first", "trd_1", T0, 9900),  # at `from`: in
            purchase("pur_yen", "trd_2", T0 + 5, 12000, "JPY"),
            purchase("pur_france", "trd_3", T0 + 10, 15000, "EUR", country="FR"),
            purchase("pur_last", "trd_2", T0 + DAY - 1, 15050),
            purchase("pur_at_to", "trd_2", T0 + DAY, 2000),  # at `to`: out
        ],
    )


async def get(
    api: Api, path: str, params: dict[str, str] | None = None, role: Role = Role.FINANCE
) -> tuple[int, Any]:
    return await api.call("GET", path, role=role, params=params or {})


# -- transactions ------------------------------------------------------------------------------


async def test_transactions_in_a_country_and_day_keep_from_and_drop_to(
    engine: AsyncEngine,
) -> None:
    await seed_january(engine)
    async with serve(engine) as api:
        status, body = await get(api, TRANSACTIONS, {"country": "DE", **JANUARY_1})
    assert status == 200
    assert [t["id"] for t in body["items"]] == ["pur_first", "pur_yen", "pur_last"]
    assert body["next_cursor"] is None
    assert body["items"][0] == {
        "id": "pur_first",
        "kind": "purchase",
        "ts": "2026-01-01T00:00:00Z",
        "ts_ns": T0,
        "trader_id": "trd_1",
        "country": "DE",
        "amount": "99.00",
        "currency": "USD",
        "reference": "ref-pur_first",
        "plan_id": "p100k",
        "plan_version": 1,
        "account_id": "acc_pur_first",
    }
    assert body["items"][1]["amount"] == "12000"  # yen have no minor unit
    assert body["items"][2]["ts"] == "2026-01-01T23:59:59.999999999Z"
    assert body["totals"] == [
        {"currency": "JPY", "count": 1, "amount": "12000"},
        {"currency": "USD", "count": 2, "amount": "249.50"},
    ]


async def test_transactions_without_filters_list_every_country_and_time(
    engine: AsyncEngine,
) -> None:
    await seed_january(engine)
    async with serve(engine) as api:
        status, body = await get(api, TRANSACTIONS)
        _, french = await get(api, TRANSACTIONS, {"country": "fr"})  # any case in
    assert status == 200
    assert len(body["items"]) == 6
    assert [t["id"] for t in french["items"]] == ["pur_france"]
    assert french["totals"] == [{"currency": "EUR", "count": 1, "amount": "150.00"}]


async def test_transactions_with_an_offset_are_read_in_utc(engine: AsyncEngine) -> None:
    await seed_january(engine)
    async with serve(engine) as api:
        # 01:00+01:00 is midnight UTC: pur_first is in, pur_before is not.
        status, body = await get(
            api, TRANSACTIONS, {"from": "2026-01-01T01:00:00+01:00", "to": "2026-01-01T00:00:01Z"}
        )
    assert status == 200
    assert [t["id"] for t in body["items"]] == ["pur_first", "pur_yen", "pur_france"]


async def test_transactions_between_far_dates_are_every_transaction(engine: AsyncEngine) -> None:
    await seed_january(engine)
    async with serve(engine) as api:
        # Past the columns' nanosecond range at both ends: open bounds, not an error.
        status, body = await get(api, TRANSACTIONS, {"from": "0001-01-01", "to": "9999-12-31"})
    assert status == 200
    assert len(body["items"]) == 6


async def test_transaction_pages_return_every_row_once_with_totals_over_all(
    engine: AsyncEngine,
) -> None:
    # Three share a timestamp: the id breaks the tie, and the cursor must not skip or repeat.
    rows = [purchase(f"pur_{n}", "trd_1", T0 + (n // 3), 1000 + n) for n in range(7)]
    await seed(engine, purchases_=rows)
    seen: list[str] = []
    async with serve(engine) as api:
        params: dict[str, str] = {"limit": "2"}
        while True:
            status, body = await get(api, TRANSACTIONS, params)
            assert status == 200
            assert body["totals"] == [{"currency": "USD", "count": 7, "amount": "70.21"}]
            seen += [t["id"] for t in body["items"]]
            if body["next_cursor"] is None:
                break
            params = {"limit": "2", "cursor": body["next_cursor"]}
    assert seen == [f"pur_{n}" for n in range(7)]


CSV_JANUARY_DE = (
    "id,kind,ts,ts_ns,trader_id,country,amount,currency,reference,plan_id,plan_version,"
    "account_id\r\n"
    f"pur_first,purchase,2026-01-01T00:00:00Z,{T0},trd_1,DE,99.00,USD,ref-pur_first,p100k,1,"
    "acc_pur_first\r\n"
    f"pur_yen,purchase,2026-01-01T00:00:00.000000005Z,{T0 + 5},trd_2,DE,12000,JPY,ref-pur_yen,"
    "p100k,1,acc_pur_yen\r\n"
    f"pur_last,purchase,2026-01-01T23:59:59.999999999Z,{T0 + DAY - 1},trd_2,DE,150.50,USD,"
    "ref-pur_last,p100k,1,acc_pur_last\r\n"
)


async def test_transactions_as_csv_are_a_header_and_every_row_to_the_cent(
    engine: AsyncEngine,
) -> None:
    await seed_january(engine)
    async with serve(engine) as api:
        params = {"country": "DE", "format": "csv", **JANUARY_1}
        async with api.session.get(
            api.url + TRANSACTIONS,
            params=params,
            headers={"Authorization": f"Bearer {api.tokens[Role.COMPLIANCE]}"},
        ) as response:
            assert response.status == 200
            assert response.content_type == "text/csv"
            assert response.headers["Content-Disposition"] == (
                'attachment; filename="transactions-DE-2026-01-01-2026-01-02.csv"'
            )
            assert response.headers["X-Request-Id"]
            text = await response.text()
    assert text == CSV_JANUARY_DE


async def test_transactions_accepting_text_csv_get_csv(engine: AsyncEngine) -> None:
    await seed_january(engine)
    async with serve(engine) as api:
        status, text = await api.call(
            "GET",
            TRANSACTIONS,
            role=Role.FINANCE,
            params={"country": "DE", **JANUARY_1},
            headers={"Accept": "text/csv"},
        )
        _, json_body = await api.call(
            "GET", TRANSACTIONS, role=Role.FINANCE, headers={"Accept": "application/json"}
        )
    assert status == 200
    assert text == CSV_JANUARY_DE
    assert len(json_body["items"]) == 6


async def test_transactions_csv_larger_than_a_chunk_has_every_row_once(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports, "CSV_CHUNK", 2)
    await seed(engine, purchases_=[purchase(f"pur_{n}", "trd_1", T0, 100) for n in range(5)])
    async with serve(engine) as api:
        status, text = await get(api, TRANSACTIONS, {"format": "csv"})
    assert status == 200
    lines = text.split("\r\n")
    assert lines[0].startswith("id,kind,ts,")
    assert [line.split(",")[0] for line in lines[1:-1]] == [f"pur_{n}" for n in range(5)]
    assert lines[-1] == ""


async def test_transactions_csv_quotes_a_reference_a_spreadsheet_would_run(
    engine: AsyncEngine,
) -> None:
    row = purchase("pur_1", "trd_1", T0, 100)
    row["payment_reference"] = '=HYPERLINK("http://x","a, b")'
    await seed(engine, purchases_=[row])
    async with serve(engine) as api:
        status, text = await get(api, TRANSACTIONS, {"format": "csv"})
    assert status == 200
    assert ',"\'=HYPERLINK(""http://x"",""a, b"")",' in text.split("\r\n")[1]


async def test_transactions_csv_with_nothing_matching_is_the_header_alone(
    engine: AsyncEngine,
) -> None:
    async with serve(engine) as api:
        status, text = await get(api, TRANSACTIONS, {"format": "csv", "country": "DE"})
    assert status == 200
    assert text == ",".join(reports.COLUMNS) + "\r\n"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"country": "XX"}, "query.country"),
        ({"country": "DEU"}, "query.country"),
        ({"from": "2026-01-02", "to": "2026-01-01"}, "query.to"),
        ({"from": "2026-01-01", "to": "2026-01-01"}, "query.to"),
        ({"from": "1767225600"}, "query.from"),
        ({"to": "yesterday"}, "query.to"),
        ({"format": "xml"}, "query.format"),
        ({"limit": "0"}, "query.limit"),
        ({"from_": "2026-01-01"}, "query.from_"),
    ],
)
async def test_transactions_with_an_invalid_query_are_422_naming_the_field(
    engine: AsyncEngine, params: dict[str, str], field: str
) -> None:
    async with serve(engine) as api:
        status, body = await get(api, TRANSACTIONS, params)
    assert status == 422
    assert [e["field"] for e in body["errors"]] == [field]


async def test_transactions_with_a_forged_cursor_are_400(engine: AsyncEngine) -> None:
    forged = encode_cursor([2**63, "pur_1", "purchase"])
    async with serve(engine) as api:
        status, body = await get(api, TRANSACTIONS, {"cursor": forged})
        nul_status, _ = await get(api, TRANSACTIONS, {"cursor": encode_cursor([1, "\x00", ""])})
    assert (status, nul_status) == (400, 400)
    assert body["errors"][0]["field"] == "query.cursor"


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.FINANCE, 200),
        (Role.COMPLIANCE, 200),
        (Role.ADMIN, 200),
        (Role.SUPPORT, 403),
        (Role.AFFILIATE_MANAGER, 403),
        (Role.RISK, 403),
        (None, 401),
    ],
)
async def test_transactions_are_for_finance_and_compliance_only(
    engine: AsyncEngine, role: Role | None, expected: int
) -> None:
    async with serve(engine) as api:
        for params in ({}, {"format": "csv"}):
            status, _ = await api.call("GET", TRANSACTIONS, role=role, params=params)
            assert status == expected


# -- cohorts -----------------------------------------------------------------------------------


async def seed_cohorts(engine: AsyncEngine) -> None:
    """Traders from ads (a campaign and none), an affiliate and organic search, signed up on
    2026-01-01, and two ads traders just outside that day; their purchases and accounts."""
    await seed(
        engine,
        traders_=[
            trader("t1", "ads", T0, "spring"),
            trader("t2", "ads", T0 + 1, "spring"),
            trader("t3", "ads", T0 + 2, "spring"),
            trader("t4", "ads", T0 + 3),
            trader("t5", "affiliate", T0 + 4, "partner-x"),
            trader("t6", "affiliate", T0 + 5, "partner-x"),
            trader("t7", "organic", T0 + 6),
            trader("t_early", "ads", T0 - 1, "spring"),  # before `from`
            trader("t_late", "ads", T0 + DAY, "spring"),  # at `to`
        ],
        purchases_=[
            purchase("p1", "t1", T0 + 10, 9900),
            purchase("p2", "t1", T0 + 11, 15000),
            purchase("p3", "t2", T0 + 12, 20000, "EUR"),
            purchase("p4", "t4", T0 + 13, 9900),
            purchase("p5", "t5", T0 + 14, 9900),
            purchase("p_early", "t_early", T0 + 15, 9900),
            purchase("p_late", "t_late", T0 + DAY + 1, 9900),
        ],
        accounts_=[
            account("a1", "p1", "t1", "passed"),
            # The next phase failing is not a first-phase failure.
            account("a1_next", "p1", "t1", "failed", "daily_loss", previous_id="a1"),
            account("a2", "p2", "t1", "failed", "daily_loss"),
            account("a3", "p3", "t2", "failed", "max_loss"),
            account("a4", "p4", "t4", "active"),  # still trading: not concluded
            account("a5", "p5", "t5", "failed", None),  # failed, no rule recorded
            account("a_early", "p_early", "t_early", "failed", "max_loss"),
            account("a_late", "p_late", "t_late", "passed"),
        ],
    )


ADS = {
    "source": "ads",
    "campaign": None,
    "traders": 4,
    "traders_with_purchase": 3,
    "conversion": 3 / 4,
    "purchases": 4,
    "revenue": [
        {"currency": "EUR", "count": 1, "amount": "200.00"},
        {"currency": "USD", "count": 3, "amount": "348.00"},
    ],
    "first_phase_concluded": 3,
    "first_phase_passed": 1,
    "first_phase_failed": 2,
    "pass_rate": 1 / 3,
    "failed_by_rule": {"daily_loss": 1, "max_loss": 1},
    "breach_rate_by_rule": {"daily_loss": 1 / 3, "max_loss": 1 / 3},
}
AFFILIATE = {
    "source": "affiliate",
    "campaign": None,
    "traders": 2,
    "traders_with_purchase": 1,
    "conversion": 0.5,
    "purchases": 1,
    "revenue": [{"currency": "USD", "count": 1, "amount": "99.00"}],
    "first_phase_concluded": 1,
    "first_phase_passed": 0,
    "first_phase_failed": 1,
    "pass_rate": 0.0,
    "failed_by_rule": {"unspecified": 1},
    "breach_rate_by_rule": {"unspecified": 1.0},
}
NOTHING_BOUGHT = {
    "traders_with_purchase": 0,
    "conversion": 0.0,
    "purchases": 0,
    "revenue": [],
    "first_phase_concluded": 0,
    "first_phase_passed": 0,
    "first_phase_failed": 0,
    "pass_rate": None,
    "failed_by_rule": {},
    "breach_rate_by_rule": {},
}
ORGANIC = {"source": "organic", "campaign": None, "traders": 1, **NOTHING_BOUGHT}


async def test_cohorts_by_source_count_traders_revenue_and_first_phase_outcomes(
    engine: AsyncEngine,
) -> None:
    await seed_cohorts(engine)
    async with serve(engine) as api:
        status, body = await get(api, COHORTS, JANUARY_1, Role.AFFILIATE_MANAGER)
    assert status == 200
    assert body == {
        "by": "source",
        "signed_up_from": "2026-01-01T00:00:00Z",
        "signed_up_to": "2026-01-02T00:00:00Z",
        "rows": [ADS, AFFILIATE, ORGANIC],
    }


async def test_cohorts_by_campaign_split_a_source_and_keep_traders_without_one(
    engine: AsyncEngine,
) -> None:
    await seed_cohorts(engine)
    async with serve(engine) as api:
        status, body = await get(api, COHORTS, {"by": "campaign", **JANUARY_1})
    assert status == 200
    rows = {(r["source"], r["campaign"]): r for r in body["rows"]}
    assert list(rows) == [
        ("ads", None),
        ("ads", "spring"),
        ("affiliate", "partner-x"),
        ("organic", None),
    ]
    assert rows[("ads", None)]["revenue"] == [{"currency": "USD", "count": 1, "amount": "99.00"}]
    assert rows[("ads", None)]["pass_rate"] is None
    spring = rows[("ads", "spring")]
    assert (spring["traders"], spring["traders_with_purchase"], spring["purchases"]) == (3, 2, 3)
    assert spring["revenue"] == [
        {"currency": "EUR", "count": 1, "amount": "200.00"},
        {"currency": "USD", "count": 2, "amount": "249.00"},
    ]
    assert spring["pass_rate"] == 1 / 3
    assert rows[("affiliate", "partner-x")] == {**AFFILIATE, "campaign": "partner-x"}


async def test_cohorts_of_one_source_and_no_window_count_every_signup(
    engine: AsyncEngine,
) -> None:
    await seed_cohorts(engine)
    async with serve(engine) as api:
        status, body = await get(api, COHORTS, {"source": "ads"})
        _, none = await get(api, COHORTS, {"source": "newsletter"})
    assert status == 200
    [ads] = body["rows"]
    assert (ads["traders"], ads["purchases"], ads["first_phase_concluded"]) == (6, 6, 5)
    assert ads["failed_by_rule"] == {"daily_loss": 1, "max_loss": 2}
    assert (body["signed_up_from"], body["signed_up_to"]) == (None, None)
    assert none["rows"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-01-02", "to": "2026-01-01"}, "query.to"),
        ({"by": "rep"}, "query.by"),
        ({"source": ""}, "query.source"),
        ({"source": "a\x00b"}, "query.source"),
        ({"country": "DE"}, "query.country"),  # not a filter of this report
    ],
)
async def test_cohorts_with_an_invalid_query_are_422_naming_the_field(
    engine: AsyncEngine, params: dict[str, str], field: str
) -> None:
    async with serve(engine) as api:
        status, body = await get(api, COHORTS, params)
    assert status == 422
    assert [e["field"] for e in body["errors"]] == [field]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.AFFILIATE_MANAGER, 200),
        (Role.FINANCE, 200),
        (Role.RISK, 200),
        (Role.OPERATIONS, 200),
        (Role.SUPPORT, 403),
        (Role.COMPLIANCE, 403),
    ],
)
async def test_cohorts_are_for_the_roles_that_read_acquisition(
    engine: AsyncEngine, role: Role, expected: int
) -> None:
    async with serve(engine) as api:
        status, _ = await get(api, COHORTS, {}, role)
    assert status == expected


# -- money -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (9900, "USD", "99.00"),
        (5, "EUR", "0.05"),
        (-12345, "EUR", "-123.45"),
        (12000, "JPY", "12000"),
        (1234, "KWD", "1.234"),
        (-1, "BHD", "-0.001"),
        (10**18 + 1, "USD", "10000000000000000.01"),
    ],
)
def test_amounts_are_shown_in_their_currency_minor_units(
    minor: int, currency: str, text: str
) -> None:
    assert amount_text(minor, currency) == text
