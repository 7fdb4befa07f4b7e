"""The aiohttp application: one factory, typed app keys, endpoints declared once.

`create_app` wires the admin API (`api/admin/`), its OpenAPI document (`GET /api/openapi.json`)
and docs page (`GET /api/docs`) over a running supervisor and the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from api.admin.follower import Follower, FollowerConfig
from api.auth import Tokens
from api.endpoints import Endpoint, errors, install
from api.problems import problem as problem  # re-exported for the ingestion routes
from api.services import (
    AFFILIATES,
    ENGINE,
    KYC,
    KYC_WEBHOOK_SECRET,
    PAYOUTS,
    SUPERVISOR,
    TOKENS,
    Operator,
    Supervisor,
)
from api.stream import (
    STREAM,
    StreamConfig,
    StreamServer,
    say_goodbye,
    stream_handler,
    streaming,
)

API_TITLE = "propvisor admin"
API_VERSION = "1.0.0"


OPENAPI = web.AppKey("openapi", dict)

_json = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(value), status=status, content_type="application/json")


def endpoints() -> list[Endpoint]:
    """Every endpoint of the admin API, in the order the docs list them."""
    from api.admin import (
        accounts,
        affiliates,
        audit,
        kyc,
        leads,
        payouts,
        plans,
        purchases,
        reports,
        risk,
        system,
        timeline,
        traders,
    )

    modules = (
        system, plans, traders, leads, purchases, accounts, payouts, kyc, affiliates, timeline,
        reports, risk, audit,
    )  # fmt: skip
    return [endpoint for module in modules for endpoint in module.ENDPOINTS]


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def docs(request: web.Request) -> web.Response:
    from api.openapi import docs_page

    return web.Response(text=docs_page(request.app[OPENAPI]), content_type="text/html")


def create_app(
    supervisor: Supervisor,
    engine: AsyncEngine,
    *,
    tokens: Tokens | None = None,
    follow: FollowerConfig | None = None,
    hub: Any = None,
    stream: StreamConfig | None = None,
    payouts: Any = None,
    kyc: Any = None,
    kyc_webhook_secret: bytes | None = None,
    affiliates: Any = None,
) -> web.Application:
    """The HTTP app over a running supervisor and its database. With `follow`, it also runs
    the registry follower (phase outcomes, provisioning retries) while it serves. With `hub`
    (the risk hub's actor handle), it follows the hub and serves the risk stream
    (`/api/v1/stream`) and the live risk page (`/risk/`). With `payouts` (the payout
    supervisor's actor handle), it serves the payout endpoints. With `kyc` (the KYC supervisor's
    handle) and `kyc_webhook_secret`, it takes the verification provider's webhooks. With
    `affiliates` (the affiliate supervisor's handle), it runs affiliate payouts."""
    from api.openapi import document

    app = web.Application(middlewares=[errors])
    app[SUPERVISOR] = supervisor
    app[ENGINE] = engine
    app[TOKENS] = tokens or Tokens(engine)
    if payouts is not None:
        app[PAYOUTS] = payouts
    if kyc is not None:
        app[KYC] = kyc
    if affiliates is not None:
        app[AFFILIATES] = affiliates
    if kyc is not None and kyc_webhook_secret:
        from api.kyc_webhook import kyc_webhook

        app[KYC_WEBHOOK_SECRET] = kyc_webhook_secret
        app.router.add_post("/webhooks/v1/kyc", kyc_webhook)
    declared = endpoints()
    install(app, declared)
    app[OPENAPI] = document(declared, title=API_TITLE, version=API_VERSION)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/docs", docs)
    app.router.add_get("/api/v1/stream", stream_handler)
    app.router.add_get("/risk", _to_risk_page)
    app.router.add_get("/risk/", _risk_page)
    app.router.add_static("/risk/", RISK_PAGE)
    if hub is not None:
        server = StreamServer(hub, stream)
        app[STREAM] = server
        app.cleanup_ctx.append(streaming(server))
        app.on_shutdown.append(say_goodbye)
    if follow is not None:
        app.cleanup_ctx.append(_following(follow))
    return app


RISK_PAGE = Path(__file__).with_name("static") / "risk"


async def _to_risk_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/risk/")


async def _risk_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(RISK_PAGE / "index.html")


def _following(config: FollowerConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        operator: Operator = app[SUPERVISOR]  # type: ignore[assignment]
        follower = Follower(app[ENGINE], operator, config, kyc=app.get(KYC))
        task = asyncio.create_task(follower.run_forever())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return run
