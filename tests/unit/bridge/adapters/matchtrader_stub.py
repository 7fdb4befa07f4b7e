"""A stub Match-Trader Broker API, written from Match-Trade's public Broker API documentation.

v1 (documented paths and shapes): `GET /v1/trading-account`, the trading-data reads
(`open-positions`, `closed-positions`, `ledgers`), manual deposits and withdrawals, credit in,
and closing positions. v2 (documented methods and bodies; the paths are the adapter's
assumption, reproduced here): `GET`/`PATCH /v1/trading-accounts/{login}` with `accessRight` and
an optimistic-locking `version`, and creating a trading account with a custom login under a user
account. Errors are the documented problem bodies (`status`, `title`, `detail`, `path`,
`timestamp`); 401 without the API key in `Authorization`; 429 with `Retry-After` when asked to.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from aiohttp import web

Record = dict[str, Any]


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def problem(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    body = {
        "status": status,
        "title": title,
        "detail": detail,
        "path": request.path,
        "timestamp": iso(dt.datetime.now(dt.UTC)),
    }
    return web.json_response(body, status=status)


class MatchTraderStub:
    """One broker's trading system in memory, plus fault switches."""

    def __init__(self) -> None:
        self.api_key = "mt-api-key"
        self.system_uuid = "sys-1"
        self.gateway_uuid = "gw-manual"
        self.user_account_uuid = "user-1"
        self.accounts: dict[str, Record] = {}  # login -> v2 trading account (with financeInfo)
        self.open: dict[str, list[Record]] = {}
        self.closed: dict[str, list[Record]] = {}
        self.ledger: dict[str, list[Record]] = {}
        self.created: list[Record] = []
        self.patches: list[Record] = []
        self.payments: list[tuple[str, Record]] = []
        self.closes: list[Record] = []
        # fault switches
        self.rate_limited = 0  # answer this many next requests with 429
        self.retry_after = "7"
        self.http_status: int | None = None
        self.delay_s = 0.0
        self.version_conflicts = 0  # answer this many next PATCHes with 409
        self.payment_status = "DONE"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.faults])
        data = "/v1/trading-accounts/trading-data"
        app.router.add_get("/v1/trading-account", self.trading_account)
        app.router.add_get(f"{data}/open-positions", self.open_positions)
        app.router.add_get(f"{data}/closed-positions", self.closed_positions)
        app.router.add_get(f"{data}/ledgers", self.ledgers)
        app.router.add_post("/v1/deposits/manual", self.manual_payment)
        app.router.add_post("/v1/withdrawals/manual", self.manual_payment)
        app.router.add_post("/v1/credit/in", self.credit_in)
        app.router.add_post("/v1/trading-accounts/positions/close", self.close_positions)
        app.router.add_get("/v1/trading-accounts/{login}", self.v2_get)
        app.router.add_patch("/v1/trading-accounts/{login}", self.v2_patch)
        app.router.add_post("/v1/user-accounts/{user}/trading-accounts", self.v2_create)
        return app

    # Fixtures -------------------------------------------------------------------------------

    def add_account(self, login: str, balance: float = 0.0, access: str = "FULL") -> None:
        self.accounts[login] = {
            "uuid": str(uuid.uuid4()),
            "login": login,
            "group": "prop\\challenge",
            "leverageRatioPercent": 10000,
            "accessRight": access,
            "accountType": "DEMO",
            "version": 3,
            "missingInTradingSystem": False,
            "financeInfo": {
                "balance": balance,
                "equity": balance,
                "profit": 0,
                "netProfit": 0,
                "margin": 0,
                "freeMargin": balance,
                "marginLevel": 0,
                "credit": 0,
                "currency": "USD",
                "currencyPrecision": 2,
            },
        }
        self.open.setdefault(login, [])
        self.closed.setdefault(login, [])
        self.ledger.setdefault(login, [])

    def add_ledger(
        self, login: str, kind: str, amount: float, when: dt.datetime, comment: str = ""
    ) -> Record:
        entry = {
            "id": str(uuid.uuid4()),
            "type": kind,
            "time": iso(when),
            "profit": amount,
            "comment": comment,
        }
        self.ledger[login].append(entry)
        return entry

    def open_position(
        self, login: str, position_id: str, when: dt.datetime, **fields: Any
    ) -> Record:
        position = {
            "id": position_id,
            "symbol": "EURUSD",
            "alias": "EURUSD",
            "volume": 1.0,
            "side": "BUY",
            "openTime": iso(when),
            "openPrice": 1.1,
            "stopLoss": 0,
            "takeProfit": 0,
            "swap": 0,
            "profit": 25.0,
            "netProfit": 25.0,
            "currentPrice": 1.10025,
            "commission": -3.5,
            "positions": [],
        }
        position.update(fields)
        self.open[login].append(position)
        return position

    def close_position(
        self, login: str, position_id: str, when: dt.datetime, close_price: float, profit: float
    ) -> Record:
        position = next(p for p in self.open[login] if p["id"] == position_id)
        self.open[login].remove(position)
        closed = {
            "id": position_id,
            "openTime": position["openTime"],
            "openPrice": position["openPrice"],
            "symbol": position["symbol"],
            "alias": position["symbol"],
            "volume": position["volume"],
            "stopLoss": 0,
            "takeProfit": 0,
            "time": iso(when),
            "closePrice": close_price,
            "commission": -7.0,
            "swap": -1.25,
            "profit": profit,
            "side": position["side"],
            "netProfit": profit - 8.25,
            "closingOrderID": f"co-{position_id}",
        }
        self.closed[login].append(closed)
        return closed

    # Middleware -----------------------------------------------------------------------------

    @web.middleware
    async def faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.headers.get("Authorization") != self.api_key:
            return problem(request, 401, "Unauthorized", "Authentication failed")
        if self.http_status is not None:
            return problem(request, self.http_status, "Internal Server Error", "stub fault")
        if self.rate_limited:
            self.rate_limited -= 1
            response = problem(request, 429, "Too Many Requests", "500 requests/minute")
            response.headers["Retry-After"] = self.retry_after
            return response
        result: web.StreamResponse = await handler(request)
        return result

    def _account(self, request: web.Request, login: str | None = None) -> Record | None:
        if request.query.get("systemUuid", self.system_uuid) != self.system_uuid:
            return None
        return self.accounts.get(login or request.query.get("login", ""))

    # v1 reads -------------------------------------------------------------------------------

    async def trading_account(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return problem(request, 404, "Not Found", "trading account not found")
        body = {
            "uuid": account["uuid"],
            "login": account["login"],
            "created": "2026-03-01T00:00:00Z",
            "accountInfo": {"uuid": self.user_account_uuid, "email": "trader@example.com"},
            "offerUuid": "offer-1",
            "systemUuid": self.system_uuid,
            "financeInfo": account["financeInfo"],
        }
        return web.json_response(body)

    async def open_positions(self, request: web.Request) -> web.Response:
        if self._account(request) is None:
            return problem(request, 404, "Not Found", "trading account not found")
        return web.json_response({"positions": self.open[request.query["login"]]})

    async def closed_positions(self, request: web.Request) -> web.Response:
        if self._account(request) is None:
            return problem(request, 404, "Not Found", "trading account not found")
        low, high = self._window(request)
        found = [c for c in self.closed[request.query["login"]] if low <= parse(c["time"]) <= high]
        return web.json_response({"closedPositions": found})

    async def ledgers(self, request: web.Request) -> web.Response:
        if self._account(request) is None:
            return problem(request, 404, "Not Found", "trading account not found")
        types = request.query.getall("types", []) or request.query.getall("types[]", [])
        if not types:
            return problem(request, 400, "Bad Request", "Required parameter missing: types")
        low, high = self._window(request)
        found = [
            e
            for e in self.ledger[request.query["login"]]
            if e["type"] in types and low <= parse(e["time"]) <= high
        ]
        return web.json_response({"operations": found})

    def _window(self, request: web.Request) -> tuple[dt.datetime, dt.datetime]:
        low = parse(request.query.get("from", "1970-01-01T00:00:00Z"))
        high = parse(request.query.get("to", "2100-01-01T00:00:00Z"))
        return low, high

    # v1 payments and trading ----------------------------------------------------------------

    async def manual_payment(self, request: web.Request) -> web.Response:
        body: Record = await request.json()
        self.payments.append((request.path, body))
        account = self.accounts.get(body.get("login", ""))
        if account is None or body.get("paymentGatewayUuid") != self.gateway_uuid:
            return problem(request, 400, "Bad Request", "unknown account or payment gateway")
        withdrawal = request.path.startswith("/v1/withdrawals")
        amount = -float(body["amount"]) if withdrawal else float(body["amount"])
        finance = account["financeInfo"]
        if finance["balance"] + amount < 0:
            return problem(request, 422, "Unprocessable Entity", "not enough money")
        if self.payment_status == "DONE":
            finance["balance"] = round(finance["balance"] + amount, 2)
            finance["equity"] = round(finance["equity"] + amount, 2)
            self.add_ledger(
                body["login"],
                "WITHDRAWAL" if withdrawal else "DEPOSIT",
                amount,
                dt.datetime.now(dt.UTC),
                body.get("comment", ""),
            )
        return web.json_response(
            {
                "uuid": str(uuid.uuid4()),
                "created": iso(dt.datetime.now(dt.UTC)),
                "status": self.payment_status,
                "transactionInfo": {
                    "amount": abs(amount),
                    "netAmount": abs(amount),
                    "currency": "USD",
                },
            }
        )

    async def credit_in(self, request: web.Request) -> web.Response:
        body: Record = await request.json()
        self.payments.append((request.path, body))
        account = self.accounts.get(body.get("login", ""))
        if account is None:
            return problem(request, 400, "Bad Request", "unknown account")
        account["financeInfo"]["credit"] += float(body["amount"])
        self.add_ledger(
            body["login"],
            "CREDIT_IN",
            float(body["amount"]),
            dt.datetime.now(dt.UTC),
            body.get("comment", ""),
        )
        return web.Response(status=204)

    async def close_positions(self, request: web.Request) -> web.Response:
        body: Record = await request.json()
        self.closes.append(body)
        login = body.get("login", "")
        now = dt.datetime.now(dt.UTC)
        for item in body.get("closePositions", []):
            self.close_position(login, item["positionId"], now, 1.1, 0.0)
        return web.json_response({"status": "OK", "orderId": "o-1"})

    # v2 -------------------------------------------------------------------------------------

    async def v2_get(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.match_info["login"])
        if account is None:
            return problem(request, 404, "Not Found", "trading account not found")
        return web.json_response(account)

    async def v2_patch(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.match_info["login"])
        body: Record = await request.json()
        self.patches.append(body)
        if account is None:
            return problem(request, 404, "Not Found", "trading account not found")
        if "version" not in body:
            return problem(request, 400, "Bad Request", "version is required")
        if self.version_conflicts or str(body["version"]) != str(account["version"]):
            self.version_conflicts = max(0, self.version_conflicts - 1)
            account["version"] += 1  # somebody else updated it meanwhile
            return problem(request, 409, "Conflict", "version mismatch")
        account["accessRight"] = body.get("accessRight", account["accessRight"])
        account["version"] += 1
        return web.Response(status=204)

    async def v2_create(self, request: web.Request) -> web.Response:
        body: Record = await request.json()
        self.created.append(body)
        if request.match_info["user"] != self.user_account_uuid:
            return problem(request, 404, "Not Found", "user account not found")
        login = body.get("login") or str(900000 + len(self.accounts))
        if login in self.accounts:
            return problem(request, 400, "Bad Request", "login already exists")
        if not body.get("group") or "accountDetails" not in body:
            return problem(request, 400, "Bad Request", "group and accountDetails are required")
        self.add_account(login, access=body.get("accessRight", "FULL"))
        self.accounts[login]["leverageRatioPercent"] = body["leverageRatioPercent"]
        return web.json_response(self.accounts[login])
