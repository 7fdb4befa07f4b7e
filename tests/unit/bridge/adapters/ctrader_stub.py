"""A stub cTrader Open API (JSON over WebSocket) and WebServices API, written from Spotware's
public documentation: `OpenApiMessages.proto`, `OpenApiModelMessages.proto`,
`OpenApiCommonMessages.proto` (spotware/openapi-proto-messages) for the message shapes and
payload types, help.ctrader.com "Sending and receiving JSON" for the envelope
(`clientMsgId`, `payloadType`, `payload`), and docs.spotware.com WebServices pages for the
manager token and `changebalance`.

Money is in the documented integer form scaled by `moneyDigits`, volumes in cents of units,
timestamps in Unix milliseconds, enums as numbers. Errors are `ProtoOAErrorRes` (2142) with
the documented codes (CH_CLIENT_AUTH_FAILURE, CH_ACCESS_TOKEN_INVALID, REQUEST_FREQUENCY_EXCEEDED,
BLOCKED_PAYLOAD_TYPE with `retryAfter`), and `ProtoOAOrderErrorEvent` (2132) for a close of a
position that is not there. The cash-flow request refuses windows longer than one week, as
documented.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

Record = dict[str, Any]
WEEK_MS = 604_800_000


class CTraderStub:
    """One cTrader environment in memory: trader accounts, deals, cash flows, positions."""

    def __init__(self) -> None:
        self.client_id = "app-id"
        self.client_secret = "app-secret"
        self.access_token = "access-token"
        self.manager_login = 9017800
        self.manager_password = "manager-password"
        self.webserv_token = secrets.token_hex(8)
        self.traders: dict[int, Record] = {}  # ctid -> ProtoOATrader
        self.logins: dict[str, int] = {}  # trader login -> ctid
        self.assets = [{"assetId": 15, "name": "USD", "displayName": "USD", "digits": 2}]
        self.symbols = {1: ("EURUSD", 10_000_000), 2: ("XAUUSD", 10_000)}  # id -> name, lot
        self.positions: dict[int, list[Record]] = {}
        self.stale: dict[int, list[Record]] = {}  # reconciled but already closed: not closable
        self.deals: dict[int, list[Record]] = {}
        self.flows: dict[int, list[Record]] = {}
        self.pnl: dict[int, int] = {}  # position id -> net unrealized (moneyDigits 2)
        self.sockets: list[web.WebSocketResponse] = []
        self.requests: list[int] = []
        self.balance_changes: list[Record] = []
        self.next_id = 90_000
        # fault switches
        self.frequency_exceeded = 0  # answer this many next requests REQUEST_FREQUENCY_EXCEEDED
        self.blocked_for_s: int | None = None  # answer the next request BLOCKED_PAYLOAD_TYPE
        self.silent = False  # read requests, answer none
        self.drop_next = False  # close the socket instead of answering the next request
        self.webserv_status: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.socket)
        app.router.add_post("/v2/webserv/managers/token", self.manager_token)
        app.router.add_post("/v2/webserv/traders/{login}/changebalance", self.change_balance)
        return app

    # Fixtures -------------------------------------------------------------------------------

    def add_trader(self, ctid: int, login: str, balance_cents: int = 0, digits: int = 2) -> None:
        self.traders[ctid] = {
            "ctidTraderAccountId": ctid,
            "balance": balance_cents * 10 ** (digits - 2),
            "balanceVersion": 1,
            "depositAssetId": 15,
            "accessRights": 0,
            "leverageInCents": 10000,
            "traderLogin": int(login),
            "moneyDigits": digits,
            "accountType": 0,
        }
        self.logins[login] = ctid
        self.positions[ctid], self.stale[ctid] = [], []
        self.deals[ctid], self.flows[ctid] = [], []

    def ids(self) -> int:
        self.next_id += 1
        return self.next_id

    def deal(
        self,
        ctid: int,
        position_id: int,
        side: int,
        ts_ms: int,
        price: float,
        volume: int = 10_000_000,
        closing: Record | None = None,
    ) -> Record:
        deal = {
            "dealId": self.ids(),
            "orderId": self.ids(),
            "positionId": position_id,
            "volume": volume,
            "filledVolume": volume,
            "symbolId": 1,
            "createTimestamp": ts_ms - 5,
            "executionTimestamp": ts_ms,
            "utcLastUpdateTimestamp": ts_ms,
            "executionPrice": price,
            "tradeSide": side,
            "dealStatus": 2,
            "commission": -350,
            "moneyDigits": 2,
        }
        if closing is not None:
            deal["closePositionDetail"] = {
                "entryPrice": 1.1,
                "swap": -120,
                "commission": -700,
                "balance": 0,
                "moneyDigits": 2,
                **closing,
            }
        self.deals[ctid].append(deal)
        return deal

    def flow(self, ctid: int, kind: int, delta: int, ts_ms: int, note: str = "") -> Record:
        self.traders[ctid]["balance"] += -delta if kind == 1 else delta
        flow = {
            "operationType": kind,
            "balanceHistoryId": self.ids(),
            "balance": self.traders[ctid]["balance"],
            "delta": delta,
            "changeBalanceTimestamp": ts_ms,
            "externalNote": note,
            "moneyDigits": 2,
        }
        self.flows[ctid].append(flow)
        return flow

    def open_position(
        self, ctid: int, position_id: int, side: int = 1, volume: int = 10_000_000, pnl: int = 0
    ) -> None:
        self.positions[ctid].append(
            {
                "positionId": position_id,
                "positionStatus": 1,
                "swap": 0,
                "price": 1.1,
                "moneyDigits": 2,
                "tradeData": {
                    "symbolId": 1,
                    "volume": volume,
                    "tradeSide": side,
                    "openTimestamp": 1,
                },
            }
        )
        self.pnl[position_id] = pnl

    async def push(self, ctid: int, execution_type: int, **fields: Any) -> None:
        """An execution event the server sends on its own (no clientMsgId)."""
        payload = {"ctidTraderAccountId": ctid, "executionType": execution_type, **fields}
        for ws in list(self.sockets):
            await ws.send_str(json.dumps({"payloadType": 2126, "payload": payload}))

    # Open API ---------------------------------------------------------------------------------

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        state: Record = {"app": False, "accounts": set()}
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    await self.answer(ws, state, json.loads(frame.data))
        finally:
            self.sockets.remove(ws)
        return ws

    async def answer(self, ws: web.WebSocketResponse, state: Record, message: Record) -> None:
        kind, payload, msg_id = (
            message["payloadType"],
            message.get("payload", {}),
            message.get("clientMsgId"),
        )
        if kind == 51:  # heartbeat
            return
        self.requests.append(kind)
        if kind not in (2100, 2102):
            if self.drop_next:
                self.drop_next = False
                await ws.close()
                return
            if self.silent:
                return
        answer = self.handle(state, kind, payload)
        for reply_kind, reply in answer:
            await ws.send_str(
                json.dumps({"clientMsgId": msg_id, "payloadType": reply_kind, "payload": reply})
            )

    def handle(self, state: Record, kind: int, payload: Record) -> list[tuple[int, Record]]:
        if kind == 2100:
            if (payload.get("clientId"), payload.get("clientSecret")) != (
                self.client_id,
                self.client_secret,
            ):
                return [
                    error(
                        "CH_CLIENT_AUTH_FAILURE",
                        "Open API client is not activated or wrong client credentials",
                    )
                ]
            state["app"] = True
            return [(2101, {})]
        if not state["app"]:
            return [error("CH_CLIENT_NOT_AUTHENTICATED", "application not authorized")]
        ctid = payload.get("ctidTraderAccountId")
        if kind == 2102:
            if payload.get("accessToken") != self.access_token or ctid not in self.traders:
                return [error("CH_ACCESS_TOKEN_INVALID", "Access token is invalid")]
            state["accounts"].add(ctid)
            return [(2103, {"ctidTraderAccountId": ctid})]
        if ctid not in state["accounts"]:
            return [error("ACCOUNT_NOT_AUTHORIZED", "account not authorized")]
        if self.frequency_exceeded:
            self.frequency_exceeded -= 1
            return [error("REQUEST_FREQUENCY_EXCEEDED", "Request frequency is reached")]
        if self.blocked_for_s is not None:
            blocked, self.blocked_for_s = self.blocked_for_s, None
            return [
                (
                    2142,
                    {
                        "errorCode": "BLOCKED_PAYLOAD_TYPE",
                        "retryAfter": blocked,
                        "description": "payload type blocked",
                    },
                )
            ]
        return self.account_request(ctid, kind, payload)

    def account_request(self, ctid: int, kind: int, payload: Record) -> list[tuple[int, Record]]:
        handlers = {
            2121: self.trader,
            2112: self.asset_list,
            2114: self.symbols_list,
            2116: self.symbol_by_id,
            2124: self.reconcile,
            2187: self.unrealized,
            2133: self.deal_list,
            2143: self.cash_flow,
            2111: self.close,
        }
        handler = handlers.get(kind)
        if handler is None:
            return [error("UNSUPPORTED_MESSAGE", f"payload type {kind} is not in the stub")]
        return handler(ctid, payload)

    def trader(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        return [(2122, {"ctidTraderAccountId": ctid, "trader": self.traders[ctid]})]

    def asset_list(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        return [(2113, {"ctidTraderAccountId": ctid, "asset": self.assets})]

    def symbols_list(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        light = [
            {"symbolId": i, "symbolName": name, "enabled": True}
            for i, (name, _) in self.symbols.items()
        ]
        return [(2115, {"ctidTraderAccountId": ctid, "symbol": light, "archivedSymbol": []})]

    def symbol_by_id(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        full = [
            {"symbolId": i, "digits": 5, "pipPosition": 4, "lotSize": self.symbols[i][1]}
            for i in payload.get("symbolId", [])
            if i in self.symbols
        ]
        return [(2117, {"ctidTraderAccountId": ctid, "symbol": full})]

    def reconcile(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        listed = self.positions[ctid] + self.stale[ctid]
        return [(2125, {"ctidTraderAccountId": ctid, "position": listed, "order": []})]

    def unrealized(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        pnl = [
            {
                "positionId": p["positionId"],
                "grossUnrealizedPnL": self.pnl[p["positionId"]],
                "netUnrealizedPnL": self.pnl[p["positionId"]],
            }
            for p in self.positions[ctid]
        ]
        body = {"ctidTraderAccountId": ctid, "positionUnrealizedPnL": pnl, "moneyDigits": 2}
        return [(2188, body)]

    def deal_list(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        low, high = payload.get("fromTimestamp", 0), payload.get("toTimestamp", 2147483646000)
        deals = [d for d in self.deals[ctid] if low <= d["executionTimestamp"] <= high]
        return [(2134, {"ctidTraderAccountId": ctid, "deal": deals, "hasMore": False})]

    def cash_flow(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        low, high = payload["fromTimestamp"], payload["toTimestamp"]
        if high - low > WEEK_MS:
            return [error("INVALID_REQUEST", "toTimestamp - fromTimestamp must be <= 1 week")]
        flows = [f for f in self.flows[ctid] if low <= f["changeBalanceTimestamp"] <= high]
        return [(2144, {"ctidTraderAccountId": ctid, "depositWithdraw": flows})]

    def close(self, ctid: int, payload: Record) -> list[tuple[int, Record]]:
        base = {"ctidTraderAccountId": ctid}
        found = [p for p in self.positions[ctid] if p["positionId"] == payload["positionId"]]
        if not found:
            return [
                (
                    2132,
                    {
                        **base,
                        "errorCode": "POSITION_NOT_FOUND",
                        "positionId": payload["positionId"],
                        "description": "not found",
                    },
                )
            ]
        position = found[0]
        self.positions[ctid].remove(position)
        side = 2 if position["tradeData"]["tradeSide"] == 1 else 1
        deal = self.deal(
            ctid,
            position["positionId"],
            side,
            1_772_442_600_000,
            1.1,
            payload["volume"],
            {"grossProfit": 0},
        )
        event = {
            **base,
            "executionType": 3,
            "deal": deal,
            "position": {**position, "positionStatus": 2},
        }
        return [(2126, event)]

    # WebServices ------------------------------------------------------------------------------

    async def manager_token(self, request: web.Request) -> web.Response:
        body: Record = await request.json()
        hashed = hashlib.md5(self.manager_password.encode()).hexdigest()
        if (body.get("login"), body.get("hashedPassword")) != (self.manager_login, hashed):
            return web.json_response({"errorCode": "WRONG_PASSWORD"}, status=403)
        return web.json_response({"webservToken": self.webserv_token})

    async def change_balance(self, request: web.Request) -> web.Response:
        if self.webserv_status is not None:
            return web.json_response({"errorCode": "UNKNOWN_ERROR"}, status=self.webserv_status)
        if request.query.get("token") != self.webserv_token:
            return web.json_response({"errorCode": "NOT_ENOUGH_RIGHTS"}, status=403)
        body: Record = await request.json()
        self.balance_changes.append(body)
        ctid = self.logins.get(request.match_info["login"])
        if ctid is None:
            return web.json_response({"errorCode": "TRADER_NOT_FOUND"}, status=404)
        delta = round(float(body["preciseAmount"]) * 100)
        withdraw = body["type"] == "WITHDRAW"
        if withdraw and self.traders[ctid]["balance"] < delta:
            return web.json_response(
                {"errorCode": "NOT_ENOUGH_MONEY", "description": "not enough money"}, status=400
            )
        now_ms = time.time_ns() // 1_000_000
        flow = self.flow(ctid, 1 if withdraw else 0, delta, now_ms, body.get("externalNote", ""))
        return web.json_response({"balanceHistoryId": flow["balanceHistoryId"]})


def error(code: str, description: str) -> tuple[int, Record]:
    return 2142, {"errorCode": code, "description": description}
