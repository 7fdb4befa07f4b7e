"""A stub MT5 Web API server, written from MetaQuotes' public Web API documentation (REST form).

It reproduces what the adapter relies on: the two-step challenge login (`/api/auth/start`,
`/api/auth/answer`, MD5 over the UTF-16LE password and "WebAPI"), a session cookie, answers
shaped `{"retcode": "<code> <text>", "answer": ...}` with every number as a string, the
documented retcodes (0 Done, 3 invalid parameters, 12 too frequent requests, 13 not found,
3004 account exists, 10019 no money), and the user, deal, position, balance and dealer
endpoints, with the `get_batch` reads of several logins. A wrong login answer gets HTTP 403
(what integrators report of real servers). Deal times are server time; the stub's server clock
is UTC unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import secrets
import time
from typing import Any

from aiohttp import web

from bridge.adapters.mt5 import challenge_answer

Record = dict[str, Any]


def done(answer: Any = None, **extra: Any) -> web.Response:
    body: Record = {"retcode": "0 Done", **extra}
    if answer is not None:
        body["answer"] = answer
    return web.json_response(body)


def failed(retcode: str) -> web.Response:
    return web.json_response({"retcode": retcode})


class Mt5Stub:
    """In-memory trade server: users, trade accounts, deals and positions, plus fault switches."""

    def __init__(self, manager_login: int = 1000, password: str = "Mgr#Pass1") -> None:
        self.manager_login = manager_login
        self.password = password
        self.groups: dict[str, Record] = {"demo\\pv": {"Group": "demo\\pv", "Currency": "USD"}}
        self.users: dict[str, Record] = {}
        self.accounts: dict[str, Record] = {}
        self.deals: list[Record] = []
        self.positions: list[Record] = []
        self.dealer_requests: list[Record] = []
        self.user_adds: list[tuple[dict[str, str], Record]] = []  # (query, body)
        self.sessions: set[str] = set()
        self.challenges: set[str] = set()
        self.logins = 0
        self.next_ticket = 5000
        # fault switches
        self.too_frequent = 0  # answer this many next requests with retcode 12
        self.http_status: int | None = None  # answer every request with this status
        self.delay_s = 0.0
        self.paths: list[str] = []  # every request's path, in order

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.faults, self.session])
        routes = {
            "/api/auth/start": self.auth_start,
            "/api/auth/answer": self.auth_answer,
            "/api/user/add": self.user_add,
            "/api/user/get": self.user_get,
            "/api/user/update": self.user_update,
            "/api/user/account/get": self.account_get,
            "/api/user/account/get_batch": self.account_get_batch,
            "/api/user/get_batch": self.user_get_batch,
            "/api/group/get": self.group_get,
            "/api/trade/balance": self.trade_balance,
            "/api/deal/get_batch": self.deal_get_batch,
            "/api/deal/get_page": self.deal_get_page,
            "/api/position/get_batch": self.position_get_batch,
            "/api/dealer/send_request": self.dealer_send,
        }
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        return app

    # Fixtures -------------------------------------------------------------------------------

    def add_user(self, login: str, balance: float = 0.0, rights: int = 0x163) -> None:
        self.users[login] = {
            "Login": login,
            "Group": "demo\\pv",
            "Rights": str(rights),
            "Leverage": "100",
            "Name": login,
        }
        self.accounts[login] = {
            "Login": login,
            "CurrencyDigits": "2",
            "Balance": f"{balance:.2f}",
            "Credit": "0.00",
            "Equity": f"{balance:.2f}",
            "Margin": "0.00",
        }

    def add_deal(self, login: str, action: int, time_s: int, **fields: Any) -> Record:
        ticket = self.next_ticket = self.next_ticket + 1
        deal = {
            "Deal": str(ticket),
            "ExternalID": "",
            "Login": login,
            "Action": str(action),
            "Entry": "0",
            "Time": str(time_s),
            "TimeMsc": str(time_s * 1000 + 250),
            "Symbol": "",
            "Price": "0.00000",
            "Volume": "0",
            "VolumeExt": "0",
            "Profit": "0.00",
            "Storage": "0.00",
            "Commission": "0.00",
            "PositionID": "0",
            "Comment": "",
        }
        deal.update({key: str(value) for key, value in fields.items()})
        self.deals.append(deal)
        return deal

    def add_position(self, login: str, ticket: int, **fields: Any) -> None:
        position = {
            "Position": str(ticket),
            "Login": login,
            "Symbol": "EURUSD",
            "Action": "0",
            "Digits": "5",
            "Volume": "10000",
            "VolumeExt": "100000000",
            "PriceOpen": "1.10000",
            "PriceCurrent": "1.10250",
            "Profit": "250.00",
            "Storage": "0.00",
        }
        position.update({key: str(value) for key, value in fields.items()})
        self.positions.append(position)

    # Middleware -----------------------------------------------------------------------------

    @web.middleware
    async def faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.paths.append(request.path)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.http_status is not None:
            return web.Response(status=self.http_status, text="stub fault")
        if self.too_frequent and not request.path.startswith("/api/auth/"):
            self.too_frequent -= 1
            return failed("12 Too frequent requests")
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def session(self, request: web.Request, handler: Any) -> web.StreamResponse:
        signed_in = request.cookies.get("MT5WebAPI") in self.sessions
        if not request.path.startswith("/api/auth/") and not signed_in:
            return web.Response(status=403, text="not authorized")
        response: web.StreamResponse = await handler(request)
        return response

    # Authentication ---------------------------------------------------------------------------

    async def auth_start(self, request: web.Request) -> web.Response:
        query = request.query
        valid = (
            query.get("type") == "manager"
            and int(query.get("version", "0")) >= 484
            and query.get("agent", "").strip()
            and " " not in query["agent"]
        )
        if not valid:
            return failed("3 Invalid parameters")
        if query.get("login") != str(self.manager_login):
            return web.Response(status=403, text="unknown manager")
        challenge = secrets.token_hex(16)
        self.challenges.add(challenge)
        return web.json_response(
            {"retcode": "0 Done", "version_access": "1290", "srv_rand": challenge}
        )

    async def auth_answer(self, request: web.Request) -> web.Response:
        answer, client_random = request.query["srv_rand_answer"], request.query["cli_rand"]
        expected = {challenge_answer(self.password, c) for c in self.challenges}
        self.challenges.clear()
        if answer not in expected:
            return web.Response(status=403, text="authorization failed")
        self.logins += 1
        token = secrets.token_hex(8)
        self.sessions.add(token)
        response = web.json_response(
            {"retcode": "0 Done", "cli_rand_answer": challenge_answer(self.password, client_random)}
        )
        response.set_cookie("MT5WebAPI", token)
        return response

    # Users ------------------------------------------------------------------------------------

    async def user_add(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        body: Record = json.loads(await request.text() or "{}")
        self.user_adds.append((query, body))
        login = query.get("login", "0")
        if not body.get("PassMain") or not body.get("PassInvestor"):
            return failed("3 Invalid parameters")
        if login in self.users:
            return failed("3004 Account already exists")
        if query.get("group") not in self.groups:
            return failed("8 Not enough permissions")
        self.add_user(login)
        self.users[login]["Leverage"] = query.get("leverage", "100")
        return done(self.users[login], login=login)

    async def user_get(self, request: web.Request) -> web.Response:
        user = self.users.get(request.query.get("login", ""))
        return done(user) if user else failed("13 Not found")

    async def user_update(self, request: web.Request) -> web.Response:
        user = self.users.get(request.query.get("login", ""))
        if user is None:
            return failed("13 Not found")
        if "rights" in request.query:
            user["Rights"] = request.query["rights"]
        return done(user)

    async def account_get(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.query.get("login", ""))
        return done(account) if account else failed("13 Not found")

    async def account_get_batch(self, request: web.Request) -> web.Response:
        return self._batch(self.accounts, request)

    async def user_get_batch(self, request: web.Request) -> web.Response:
        return self._batch(self.users, request)

    def _batch(self, records: dict[str, Record], request: web.Request) -> web.Response:
        """The records of the listed logins that exist; "13 Not found" if none does (what
        MetaQuotes' single reads answer; the adapter reads an empty answer the same way)."""
        logins = request.query.get("login", "").split(",")
        found = [records[login] for login in logins if login in records]
        return done(found) if found else failed("13 Not found")

    async def group_get(self, request: web.Request) -> web.Response:
        group = self.groups.get(request.query.get("group", ""))
        return done(group) if group else failed("13 Not found")

    # Trading ----------------------------------------------------------------------------------

    async def trade_balance(self, request: web.Request) -> web.Response:
        query = request.query
        login, kind, amount = query["login"], int(query["type"]), float(query["balance"])
        account = self.accounts.get(login)
        if account is None:
            return failed("13 Not found")
        field = "Credit" if kind == 3 else "Balance"
        if float(account[field]) + amount < 0:
            return failed("10019 Not enough money")
        account[field] = f"{float(account[field]) + amount:.2f}"
        deal = self.add_deal(
            login, kind, int(time.time()), Profit=f"{amount:.2f}", Comment=query.get("comment", "")
        )
        return done({"Ticket": deal["Deal"]})

    async def deal_get_batch(self, request: web.Request) -> web.Response:
        query = request.query
        masks = query.get("group", "*").split(",")
        low, high = int(query.get("from", "0")), int(query.get("to", "0"))
        found = [
            d
            for d in self.deals
            if low <= int(d["Time"]) <= high
            and any(fnmatch.fnmatch(self.users[d["Login"]]["Group"], m) for m in masks)
        ]
        return done(found)

    async def deal_get_page(self, request: web.Request) -> web.Response:
        query = request.query
        total = int(query.get("total", "100"))
        if total > 100:
            return failed("3 Invalid parameters")
        low, high = int(query.get("from", "0")), int(query.get("to", "0"))
        found = [
            d
            for d in self.deals
            if d["Login"] == query.get("login") and low <= int(d["Time"]) <= high
        ]
        offset = int(query.get("offset", "0"))
        return done(found[offset : offset + total])

    async def position_get_batch(self, request: web.Request) -> web.Response:
        logins = request.query.get("login", "").split(",")
        return done([p for p in self.positions if p["Login"] in logins])

    async def dealer_send(self, request: web.Request) -> web.Response:
        body: Record = json.loads(await request.text())
        self.dealer_requests.append(body)
        ticket = body.get("Position")
        self.positions = [p for p in self.positions if p["Position"] != ticket]
        return done({"ID": str(len(self.dealer_requests))})
