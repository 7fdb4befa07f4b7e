"""The aiohttp application: one factory, typed app keys, short handlers."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from aiohttp import web

from actors.runtime import RuntimeStats
from actors.shard import AccountView
from actors.supervisor import Health


class Supervisor(Protocol):
    """What the HTTP layer needs of the running system."""

    async def account(self, account_id: str) -> AccountView | None: ...

    async def stats(self) -> RuntimeStats: ...

    async def health(self) -> Health: ...


SUPERVISOR = web.AppKey("supervisor", Supervisor)

_json = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(value), status=status, content_type="application/json")


def problem(status: int, title: str, detail: str) -> web.Response:
    """An RFC 9457 problem+json answer."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        body=_json.encode(body), status=status, content_type="application/problem+json"
    )


async def health(request: web.Request) -> web.Response:
    """Every actor's state; 503 when one is down for good (restarting is still a 200)."""
    found = await request.app[SUPERVISOR].health()
    return json_response(found, status=503 if found.status == "down" else 200)


async def get_account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    view = await request.app[SUPERVISOR].account(account_id)
    if view is None:
        return problem(404, "Account not found", f"no account with id {account_id!r}")
    return json_response(view)


async def get_stats(request: web.Request) -> web.Response:
    return json_response(await request.app[SUPERVISOR].stats())


def create_app(supervisor: Supervisor) -> web.Application:
    """The HTTP app over a running supervisor."""
    app = web.Application()
    app[SUPERVISOR] = supervisor
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/api/v1/stats", get_stats)
    app.router.add_get("/api/v1/accounts/{account_id}", get_account)
    return app
