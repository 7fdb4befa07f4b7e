"""Traders over HTTP: strict validation naming the field, and the newest-first list walked page
by page."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import Role
from tests.api import serve


def trader(n: int, **changes: str) -> dict[str, str]:
    return {"email": f"t{n}@example.com", "name": f"Trader {n}", "country": "de",
            "language": "DE", "timezone": "Europe/Berlin", "source": "ads", **changes}  # fmt: skip


async def test_list_when_walked_two_at_a_time_then_every_trader_once_newest_first(
    engine: AsyncEngine,
) -> None:
    async with serve(engine) as api:
        made = [(await api.call("POST", "/api/v1/traders", json=trader(n)))[1] for n in range(5)]
        seen, cursor = [], None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            status, page = await api.call(
                "GET", "/api/v1/traders", role=Role.SUPPORT, params=params
            )
            assert status == 200, page
            seen += [t["id"] for t in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break

    assert made[0]["country"] == "DE"
    assert made[0]["language"] == "de"
    newest_first = sorted(made, key=lambda t: (t["created_ns"], t["id"]), reverse=True)
    assert seen == [t["id"] for t in newest_first]


async def test_create_when_fields_are_wrong_then_422_names_each(engine: AsyncEngine) -> None:
    async with serve(engine) as api:
        status, problem = await api.call(
            "POST", "/api/v1/traders", json=trader(1, country="XX", timezone="Mars/Base")
        )
        duplicate = await api.call("POST", "/api/v1/traders", json=trader(2))
        again = await api.call("POST", "/api/v1/traders", json=trader(2))
        unknown = await api.call("POST", "/api/v1/traders", json={**trader(3), "vip": "yes"})

    assert status == 422
    assert {e["field"] for e in problem["errors"]} == {"body.country", "body.timezone"}
    assert duplicate[0] == 201
    assert again[0] == 409
    assert (unknown[0], unknown[1]["errors"][0]["field"]) == (422, "body.vip")
