"""Lead routing on both databases: `route_lead` (rules, round-robin, capacity, concurrency) and
the sales-rep and lead-rule endpoints over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.admin.leads import DAY_NS, route_lead
from api.auth import Role
from api.pagination import encode_cursor
from ledger.schema import audit_log, lead_rules, sales_reps, traders
from tests.api import Api, serve

NOW = 1_772_442_000 * 1_000_000_000 + 13 * 3_600 * 1_000_000_000  # 13:00 UTC


# ---- helpers ------------------------------------------------------------------------------


async def add_rep(engine: AsyncEngine, *, capacity: int = 10, active: bool = True) -> str:
    rep_id = "rep_" + secrets.token_hex(8)
    async with engine.begin() as conn:
        await conn.execute(
            sales_reps.insert().values(
                id=rep_id,
                name=rep_id,
                email=f"{rep_id}@firm.example",
                daily_capacity=capacity,
                active=int(active),
                created_ns=NOW,
            )
        )
    return rep_id


async def add_rule(
    engine: AsyncEngine,
    reps: Sequence[str],
    *,
    priority: int = 10,
    languages: Sequence[str] = (),
    timezones: Sequence[str] = (),
) -> str:
    rule_id = "rule_" + secrets.token_hex(8)
    encode = msgspec.json.encode
    async with engine.begin() as conn:
        await conn.execute(
            lead_rules.insert().values(
                id=rule_id,
                priority=priority,
                languages=encode(list(languages)).decode(),
                timezones=encode(list(timezones)).decode(),
                rep_ids=encode(list(reps)).decode(),
                turn=0,
                created_ns=NOW,
            )
        )
    return rule_id


async def place(
    engine: AsyncEngine,
    *,
    language: str = "en",
    timezone: str = "Europe/London",
    now_ns: int = NOW,
    barrier: asyncio.Barrier | None = None,
) -> str | None:
    """Route a new trader and insert it in the same transaction, as the traders endpoint does."""
    async with engine.begin() as conn:
        if barrier is not None:
            await barrier.wait()  # every routing starts together
        rep = await route_lead(conn, language=language, timezone=timezone, now_ns=now_ns)
        trader_id = "trd_" + secrets.token_hex(8)
        await conn.execute(
            traders.insert().values(
                id=trader_id,
                email=f"{trader_id}@example.com",
                name="Trader",
                country="GB",
                language=language,
                timezone=timezone,
                source="test",
                rep_id=rep,
                created_ns=now_ns,
            )
        )
    return rep


async def place_many(engine: AsyncEngine, count: int, **kwargs: Any) -> list[str | None]:
    return [await place(engine, **kwargs) for _ in range(count)]


async def turn_of(engine: AsyncEngine, rule_id: str) -> int:
    async with engine.connect() as conn:
        turn = await conn.scalar(select(lead_rules.c.turn).where(lead_rules.c.id == rule_id))
    assert turn is not None
    return int(turn)


async def audit_actions(engine: AsyncEngine, target_id: str) -> list[tuple[str, Any, Any]]:
    statement = select(audit_log).where(audit_log.c.target_id == target_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(statement.order_by(audit_log.c.seq))).all()
    decode = msgspec.json.decode
    return [(r.action, r.before and decode(r.before), r.after and decode(r.after)) for r in rows]


def fields(body: dict[str, Any]) -> list[str]:
    return [error["field"] for error in body["errors"]]


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Api]:
    async with serve(engine) as api:
        yield api


async def post_rep(api: Api, role: Role = Role.OPERATIONS, **given: Any) -> tuple[int, Any]:
    body = {"name": "Ana Silva", "email": "ana@firm.example", "daily_capacity": 5, **given}
    return await api.call("POST", "/api/v1/sales-reps", role=role, json=body)


# ---- routing ------------------------------------------------------------------------------


async def test_route_lead_when_reps_have_room_then_rule_takes_them_in_turn(
    engine: AsyncEngine,
) -> None:
    reps = [await add_rep(engine) for _ in range(3)]
    rule = await add_rule(engine, reps)

    placed = await place_many(engine, 7)

    assert placed == [*reps, *reps, reps[0]]
    assert await turn_of(engine, rule) == 7


async def test_route_lead_when_rep_at_capacity_then_others_take_turns(
    engine: AsyncEngine,
) -> None:
    small, large = await add_rep(engine, capacity=1), await add_rep(engine, capacity=3)
    await add_rule(engine, [small, large])

    placed = await place_many(engine, 4)

    assert Counter(placed) == {small: 1, large: 3}
    assert placed[:2] == [small, large]


async def test_route_lead_when_first_rule_full_then_next_matching_rule_places(
    engine: AsyncEngine,
) -> None:
    first, second = await add_rep(engine, capacity=1), await add_rep(engine, capacity=5)
    await add_rule(engine, [first], priority=1)
    second_rule = await add_rule(engine, [second], priority=2)

    placed = await place_many(engine, 3)

    assert placed == [first, second, second]
    assert await turn_of(engine, second_rule) == 2


async def test_route_lead_when_every_matching_rule_full_then_unassigned(
    engine: AsyncEngine,
) -> None:
    first, second = await add_rep(engine, capacity=1), await add_rep(engine, capacity=1)
    await add_rule(engine, [first], priority=1)
    await add_rule(engine, [second], priority=2)

    placed = await place_many(engine, 3)

    assert placed == [first, second, None]


async def test_route_lead_when_next_utc_day_then_capacity_is_free_again(
    engine: AsyncEngine,
) -> None:
    rep = await add_rep(engine, capacity=1)
    await add_rule(engine, [rep])
    midnight = NOW - NOW % DAY_NS + DAY_NS

    before_midnight = await place_many(engine, 2, now_ns=midnight - 1)
    after_midnight = await place_many(engine, 2, now_ns=midnight)

    assert before_midnight == [rep, None]
    assert after_midnight == [rep, None]


async def test_route_lead_when_rep_inactive_then_skipped(engine: AsyncEngine) -> None:
    away, present = await add_rep(engine, active=False), await add_rep(engine)
    await add_rule(engine, [away, present])

    assert await place_many(engine, 3) == [present] * 3


async def test_route_lead_when_only_inactive_reps_then_unassigned(engine: AsyncEngine) -> None:
    await add_rule(engine, [await add_rep(engine, active=False)])

    assert await place(engine) is None


async def test_route_lead_when_no_rule_then_unassigned(engine: AsyncEngine) -> None:
    assert await place(engine) is None


async def test_route_lead_when_languages_listed_then_only_those_match_and_empty_takes_any(
    engine: AsyncEngine,
) -> None:
    german, anyone = await add_rep(engine), await add_rep(engine)
    await add_rule(engine, [german], priority=1, languages=["de", "fr"])
    await add_rule(engine, [anyone], priority=2)

    assert await place(engine, language="de") == german
    assert await place(engine, language="fr") == german
    assert await place(engine, language="en") == anyone
    assert await place(engine, language="de-AT") == german  # a region keeps its language


async def test_route_lead_when_timezones_given_then_prefixes_and_exact_names_match(
    engine: AsyncEngine,
) -> None:
    europe, new_york = await add_rep(engine), await add_rep(engine)
    await add_rule(engine, [europe], priority=1, timezones=["Europe/"])
    await add_rule(engine, [new_york], priority=2, timezones=["America/New_York"])

    assert await place(engine, timezone="Europe/Berlin") == europe
    assert await place(engine, timezone="Europe/London") == europe
    assert await place(engine, timezone="America/New_York") == new_york
    assert await place(engine, timezone="America/New_York_City") is None  # exact, not a prefix
    assert await place(engine, timezone="America/Chicago") is None
    assert await place(engine, timezone="Asia/Tokyo") is None


async def test_route_lead_when_language_and_timezone_both_listed_then_both_must_match(
    engine: AsyncEngine,
) -> None:
    rep = await add_rep(engine)
    await add_rule(engine, [rep], languages=["es"], timezones=["America/"])

    assert await place(engine, language="es", timezone="America/Mexico_City") == rep
    assert await place(engine, language="es", timezone="Europe/Madrid") is None
    assert await place(engine, language="en", timezone="America/Mexico_City") is None


async def test_route_lead_when_priorities_differ_then_lowest_tried_first_whatever_the_order(
    engine: AsyncEngine,
) -> None:
    late, early = await add_rep(engine), await add_rep(engine)
    await add_rule(engine, [late], priority=20)
    await add_rule(engine, [early], priority=5)

    assert await place(engine) == early


async def test_route_lead_when_concurrent_routings_then_each_rep_of_capacity_one_taken_once(
    engine: AsyncEngine,
) -> None:
    reps = [await add_rep(engine, capacity=1) for _ in range(4)]
    rule = await add_rule(engine, reps)
    barrier = asyncio.Barrier(10)

    placed = await asyncio.gather(*(place(engine, barrier=barrier) for _ in range(10)))

    once_each: dict[str | None, int] = {**dict.fromkeys(reps, 1), None: 6}
    assert Counter(placed) == once_each
    async with engine.connect() as conn:
        rows = (await conn.execute(select(traders.c.rep_id))).scalars().all()
    assert Counter(rows) == once_each
    assert await turn_of(engine, rule) == 4


async def test_route_lead_when_concurrent_routings_through_two_rules_then_shared_rep_taken_once(
    engine: AsyncEngine,
) -> None:
    shared = await add_rep(engine, capacity=1)
    await add_rule(engine, [shared], languages=["en"])
    await add_rule(engine, [shared], languages=["de"])
    barrier = asyncio.Barrier(10)

    placed = await asyncio.gather(
        *(place(engine, language=("en", "de")[i % 2], barrier=barrier) for i in range(10))
    )

    assert Counter(placed) == {shared: 1, None: 9}


# ---- sales reps over HTTP -----------------------------------------------------------------


async def test_post_sales_rep_when_valid_then_created_audited_and_readable(
    api: Api, engine: AsyncEngine
) -> None:
    status, rep = await post_rep(api)

    assert status == 201
    assert rep["id"].startswith("rep_")
    assert (rep["active"], rep["daily_capacity"], rep["assigned_today"]) == (True, 5, 0)
    status, read = await api.call("GET", f"/api/v1/sales-reps/{rep['id']}", role=Role.ADMIN)
    assert (status, read) == (200, rep)
    [(action, before, after)] = await audit_actions(engine, rep["id"])
    assert (action, before) == ("sales_rep.create", None)
    assert after["email"] == "ana@firm.example"
    assert "assigned_today" not in after


async def test_get_sales_rep_when_leads_assigned_today_then_counted(
    api: Api, engine: AsyncEngine
) -> None:
    _, rep = await post_rep(api)
    await add_rule(engine, [rep["id"]])
    now = time.time_ns()
    await place_many(engine, 2, now_ns=now)
    await place(engine, now_ns=now - DAY_NS)  # yesterday's lead does not count

    _, read = await api.call("GET", f"/api/v1/sales-reps/{rep['id']}")

    assert read["assigned_today"] == 2


async def test_get_sales_rep_when_unknown_then_404(api: Api) -> None:
    status, _ = await api.call("GET", "/api/v1/sales-reps/rep_0000000000000000")
    shapeless, _ = await api.call("GET", "/api/v1/sales-reps/not-a-rep")
    with_nul, problem = await api.call("GET", "/api/v1/sales-reps/not%00a-rep")

    assert (status, shapeless) == (404, 404)
    assert (with_nul, problem["errors"][0]["field"]) == (422, "path.rep_id")


async def test_list_sales_reps_when_more_than_a_page_then_cursor_reaches_the_rest(
    api: Api,
) -> None:
    created = [(await post_rep(api, email=f"rep{i}@firm.example"))[1]["id"] for i in range(3)]

    status, first = await api.call("GET", "/api/v1/sales-reps", params={"limit": "2"})
    cursor = first["next_cursor"]
    _, second = await api.call("GET", "/api/v1/sales-reps", params={"limit": "2", "cursor": cursor})

    assert status == 200
    assert [r["id"] for r in first["items"] + second["items"]] == created
    assert second["next_cursor"] is None


async def test_post_sales_rep_when_fields_invalid_then_422_names_each(api: Api) -> None:
    status, body = await post_rep(api, daily_capacity=0, email="nope", colour="blue")
    _, text_capacity = await post_rep(api, daily_capacity="5")
    _, blank = await post_rep(api, name="  ")

    assert status == 422
    assert sorted(fields(body)) == ["body.colour", "body.daily_capacity", "body.email"]
    assert fields(text_capacity) == ["body.daily_capacity"]
    assert fields(blank) == ["body.name"]


async def test_post_sales_rep_when_same_key_and_body_then_same_rep_and_other_body_409(
    api: Api,
) -> None:
    key = {"Idempotency-Key": "rep-ana-1"}
    body = {"name": "Ana", "email": "ana@firm.example", "daily_capacity": 3}
    send = api.call

    first = await send("POST", "/api/v1/sales-reps", json=body, headers=key)
    again = await send("POST", "/api/v1/sales-reps", json=body, headers=key)
    other = await send(
        "POST", "/api/v1/sales-reps", json={**body, "daily_capacity": 4}, headers=key
    )

    assert first[0] == again[0] == 201
    assert again[1]["id"] == first[1]["id"]
    assert other[0] == 409
    _, page = await api.call("GET", "/api/v1/sales-reps")
    assert len(page["items"]) == 1


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [
        (Role.ADMIN, 200, 201),
        (Role.OPERATIONS, 200, 201),
        (Role.AFFILIATE_MANAGER, 200, 403),
        (Role.SUPPORT, 403, 403),
        (Role.RISK, 403, 403),
    ],
)
async def test_leads_endpoints_when_role_given_then_matrix_decides(
    api: Api, role: Role, read: int, write: int
) -> None:
    rep_status, _ = await post_rep(api, role=role)
    rule_status, _ = await api.call(
        "POST", "/api/v1/lead-rules", role=role, json={"priority": 1, "rep_ids": []}
    )
    list_status, _ = await api.call("GET", "/api/v1/sales-reps", role=role)
    rules_status, _ = await api.call("GET", "/api/v1/lead-rules", role=role)

    assert rep_status == write
    assert rule_status == (422 if write == 201 else 403)
    assert list_status == rules_status == read


async def test_leads_endpoints_when_no_token_then_401(api: Api) -> None:
    status, _ = await api.call("GET", "/api/v1/sales-reps", role=None)

    assert status == 401


async def test_patch_sales_rep_when_capacity_and_active_changed_then_audited_before_after(
    api: Api, engine: AsyncEngine
) -> None:
    _, rep = await post_rep(api)
    path = f"/api/v1/sales-reps/{rep['id']}"

    status, changed = await api.call(
        "PATCH", path, role=Role.OPERATIONS, json={"daily_capacity": 9, "active": False}
    )

    assert status == 200
    assert (changed["daily_capacity"], changed["active"]) == (9, False)
    assert (await api.call("GET", path))[1] == changed
    action, before, after = (await audit_actions(engine, rep["id"]))[-1]
    assert action == "sales_rep.update"
    assert (before["daily_capacity"], before["active"]) == (5, True)
    assert (after["daily_capacity"], after["active"]) == (9, False)


async def test_patch_sales_rep_when_deactivated_then_routing_skips_them(
    api: Api, engine: AsyncEngine
) -> None:
    _, rep = await post_rep(api)
    await add_rule(engine, [rep["id"]])

    await api.call("PATCH", f"/api/v1/sales-reps/{rep['id']}", json={"active": False})

    assert await place(engine) is None


async def test_patch_sales_rep_when_body_empty_null_or_unknown_field_then_422(api: Api) -> None:
    _, rep = await post_rep(api)
    path = f"/api/v1/sales-reps/{rep['id']}"

    empty = await api.call("PATCH", path, json={})
    null = await api.call("PATCH", path, json={"active": None})
    unknown = await api.call("PATCH", path, json={"name": "Other"})
    low = await api.call("PATCH", path, json={"daily_capacity": 0})

    assert [s for s, _ in (empty, null, unknown, low)] == [422] * 4
    assert fields(empty[1]) == ["body"]
    assert fields(null[1]) == ["body.active"]
    assert fields(unknown[1]) == ["body.name"]
    assert fields(low[1]) == ["body.daily_capacity"]


async def test_patch_sales_rep_when_unknown_then_404(api: Api) -> None:
    status, _ = await api.call(
        "PATCH", "/api/v1/sales-reps/rep_0000000000000000", json={"active": False}
    )

    assert status == 404


# ---- lead rules over HTTP -----------------------------------------------------------------


async def test_post_lead_rule_when_valid_then_created_audited_and_routes(
    api: Api, engine: AsyncEngine
) -> None:
    reps = [(await post_rep(api, email=f"r{i}@firm.example"))[1]["id"] for i in range(2)]
    body = {
        "priority": 3,
        "languages": ["pt", "es"],
        "timezones": ["America/", "Europe/Lisbon"],
        "rep_ids": reps,
    }

    status, rule = await api.call("POST", "/api/v1/lead-rules", json=body)

    assert status == 201
    assert rule["id"].startswith("rule_")
    assert {k: rule[k] for k in body} == body
    assert rule["turn"] == 0
    [(action, _, after)] = await audit_actions(engine, rule["id"])
    assert (action, after["rep_ids"]) == ("lead_rule.create", reps)
    placed = await place_many(engine, 3, language="pt", timezone="America/Sao_Paulo")
    assert placed == [reps[0], reps[1], reps[0]]
    assert await place(engine, language="pt", timezone="Europe/Porto") is None


async def test_post_lead_rule_when_rep_unknown_then_422_names_its_index(api: Api) -> None:
    _, rep = await post_rep(api)
    body = {"priority": 1, "rep_ids": [rep["id"], "rep_0000000000000000"]}

    status, problem = await api.call("POST", "/api/v1/lead-rules", json=body)

    assert status == 422
    assert fields(problem) == ["body.rep_ids[1]"]
    _, page = await api.call("GET", "/api/v1/lead-rules")
    assert page["items"] == []


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"languages": ["en", "xx"]}, "body.languages[1]"),
        ({"languages": ["EN"]}, "body.languages[0]"),
        ({"languages": ["en", "en"]}, "body.languages"),
        ({"timezones": ["Europe/Londn"]}, "body.timezones[0]"),
        ({"timezones": ["Europe/London", "Mars/"]}, "body.timezones[1]"),
        ({"timezones": ["Europe"]}, "body.timezones[0]"),
        ({"rep_ids": []}, "body.rep_ids"),
        ({"rep_ids": ["someone"]}, "body.rep_ids[0]"),
        ({"priority": -1}, "body.priority"),
        ({"priority": "1"}, "body.priority"),
        ({"weight": 2}, "body.weight"),
    ],
)
async def test_post_lead_rule_when_field_invalid_then_422_names_it(
    api: Api, given: dict[str, Any], field: str
) -> None:
    _, rep = await post_rep(api)
    body = {"priority": 1, "rep_ids": [rep["id"]], **given}

    status, problem = await api.call("POST", "/api/v1/lead-rules", json=body)

    assert status == 422
    assert fields(problem) == [field]


async def test_post_lead_rule_when_same_key_and_body_then_same_rule_and_other_body_409(
    api: Api,
) -> None:
    _, rep = await post_rep(api)
    key = {"Idempotency-Key": "rule-1"}
    body = {"priority": 1, "rep_ids": [rep["id"]]}

    first = await api.call("POST", "/api/v1/lead-rules", json=body, headers=key)
    again = await api.call("POST", "/api/v1/lead-rules", json=body, headers=key)
    other = await api.call("POST", "/api/v1/lead-rules", json={**body, "priority": 2}, headers=key)

    assert (first[0], again[0], other[0]) == (201, 201, 409)
    assert again[1]["id"] == first[1]["id"]


async def test_list_lead_rules_when_paged_then_in_priority_order(api: Api) -> None:
    _, rep = await post_rep(api)
    for priority in (30, 10, 20):
        await api.call(
            "POST", "/api/v1/lead-rules", json={"priority": priority, "rep_ids": [rep["id"]]}
        )

    _, first = await api.call("GET", "/api/v1/lead-rules", params={"limit": "2"})
    _, second = await api.call(
        "GET", "/api/v1/lead-rules", params={"limit": "2", "cursor": first["next_cursor"]}
    )
    bad, problem = await api.call("GET", "/api/v1/lead-rules", params={"cursor": "zz"})
    past = encode_cursor([2**40, "rule_"])  # beyond the INTEGER column: refused, not a 500
    beyond, _ = await api.call("GET", "/api/v1/lead-rules", params={"cursor": past})

    assert [r["priority"] for r in first["items"] + second["items"]] == [10, 20, 30]
    assert second["next_cursor"] is None
    assert (bad, fields(problem)) == (400, ["query.cursor"])
    assert beyond == 400


async def test_delete_lead_rule_when_exists_then_204_empty_audited_and_no_longer_routes(
    api: Api, engine: AsyncEngine
) -> None:
    _, rep = await post_rep(api)
    _, rule = await api.call(
        "POST", "/api/v1/lead-rules", json={"priority": 1, "rep_ids": [rep["id"]]}
    )

    status, body = await api.call("DELETE", f"/api/v1/lead-rules/{rule['id']}")
    again, _ = await api.call("DELETE", f"/api/v1/lead-rules/{rule['id']}")

    assert (status, body, again) == (204, "", 404)
    action, before, after = (await audit_actions(engine, rule["id"]))[-1]
    assert (action, before["id"], after) == ("lead_rule.delete", rule["id"], None)
    assert await place(engine) is None


async def test_delete_lead_rule_when_support_then_403_and_rule_kept(api: Api) -> None:
    _, rep = await post_rep(api)
    _, rule = await api.call(
        "POST", "/api/v1/lead-rules", json={"priority": 1, "rep_ids": [rep["id"]]}
    )

    status, _ = await api.call("DELETE", f"/api/v1/lead-rules/{rule['id']}", role=Role.SUPPORT)

    assert status == 403
    _, page = await api.call("GET", "/api/v1/lead-rules")
    assert [r["id"] for r in page["items"]] == [rule["id"]]


async def test_post_trader_when_rule_matches_then_trader_gets_the_reps_in_turn(api: Api) -> None:
    reps = [(await post_rep(api, email=f"r{i}@firm.example"))[1]["id"] for i in range(2)]
    rule = {"priority": 1, "languages": ["de"], "timezones": ["Europe/"], "rep_ids": reps}
    await api.call("POST", "/api/v1/lead-rules", json=rule)

    assigned = []
    for i in range(3):
        trader = {"email": f"t{i}@example.com", "name": "Tina", "country": "DE",
                  "language": "de", "timezone": "Europe/Berlin", "source": "ads"}  # fmt: skip
        status, body = await api.call("POST", "/api/v1/traders", json=trader)
        assert status == 201
        assigned.append(body["rep_id"])

    assert assigned == [reps[0], reps[1], reps[0]]
    _, rep = await api.call("GET", f"/api/v1/sales-reps/{reps[0]}")
    assert rep["assigned_today"] == 2
