"""Serving the admin API in tests: a real aiohttp server on a free port, a token per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from api.admin.follower import FollowerConfig
from api.app import create_app
from api.auth import Role, create_token
from api.services import Supervisor


class NoSupervisor:
    """For tests of resources that never reach the running system."""

    async def account(self, account_id: str) -> None:
        return None

    async def stats(self) -> None:
        raise AssertionError("this test has no running system")

    async def health(self) -> None:
        raise AssertionError("this test has no running system")


@dataclass
class Api:
    """A client of the served app: `call` sends as a role (its token), or as no one."""

    url: str
    session: aiohttp.ClientSession
    tokens: dict[Role, str] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: Role | None = Role.ADMIN,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body; text for other content types)."""
        sent = dict(headers or {})
        if role is not None:
            sent["Authorization"] = f"Bearer {self.tokens[role]}"
        async with self.session.request(
            method, self.url + path, json=json, headers=sent, params=params
        ) as response:
            if "json" in response.content_type:
                return response.status, await response.json()
            return response.status, await response.text()


@asynccontextmanager
async def serve(
    engine: AsyncEngine,
    supervisor: Supervisor | None = None,
    follow: FollowerConfig | None = None,
    hub: Any = None,
    payouts: Any = None,
    kyc: Any = None,
    kyc_webhook_secret: bytes | None = None,
    port: int = 0,
    affiliates: Any = None,
) -> AsyncIterator[Api]:
    """The app on 127.0.0.1, a free port, with one token per role (named after the role);
    with `follow`, the registry follower runs too; with `hub`, the risk stream."""
    async with engine.begin() as conn:
        tokens = {
            role: (await create_token(conn, role.value, role, partner_scope(role))).token
            for role in Role
        }
    app = create_app(
        supervisor or NoSupervisor(),  # type: ignore[arg-type]
        engine,
        follow=follow,
        hub=hub,
        payouts=payouts,
        kyc=kyc,
        kyc_webhook_secret=kyc_webhook_secret,
        affiliates=affiliates,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(url=f"http://{host}:{port}", session=session, tokens=tokens)
    finally:
        await runner.cleanup()


def partner_scope(role: Role) -> str | None:
    """A partner's token is scoped to an affiliate (`partner-x`, which tests may create)."""
    return "affiliate:partner-x" if role is Role.PARTNER else None
