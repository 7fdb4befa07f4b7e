"""What the handlers share, as typed app keys: the database, the token store, the supervisor."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.plans import Plan
from actors.runtime import Opened, RuntimeStats
from actors.shard import AccountView
from actors.supervisor import Health
from api.auth import Tokens


class Supervisor(Protocol):
    """What the HTTP layer needs of the running system (`actors.runtime.Runtime`)."""

    async def account(self, account_id: str) -> AccountView | None: ...

    async def stats(self) -> RuntimeStats: ...

    async def health(self) -> Health: ...


class Operator(Supervisor, Protocol):
    """What the admin API needs on top: open accounts and freeze or unfreeze them by hand."""

    async def open_account(
        self, account_id: str, plan: Plan, *, phase: str | None = None
    ) -> Opened: ...

    async def set_trading(
        self,
        account_id: str,
        *,
        enabled: bool,
        reason: str,
        command_id: str,
        connection: str | None = None,
    ) -> None: ...


ENGINE = web.AppKey("engine", AsyncEngine)
TOKENS = web.AppKey("tokens", Tokens)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
PAYOUTS: web.AppKey[Any] = web.AppKey("payouts")
"""The payout supervisor's actor handle (`actors/payouts.py`), when the app has one."""
KYC: web.AppKey[Any] = web.AppKey("kyc")
AFFILIATES: web.AppKey[Any] = web.AppKey("affiliates")
KYC_WEBHOOK_SECRET = web.AppKey("kyc_webhook_secret", bytes)
