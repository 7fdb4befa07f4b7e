"""MetaTrader 5 through MetaQuotes' manager Web API (HTTPS, JSON answers): a `Platform`.

Endpoints used (request and answer shapes as MetaQuotes documents them for the Web API's REST
form; every answer is `{"retcode": "<code> <text>", "answer": ...}` with numbers as strings):

- `GET /api/auth/start?version&agent&login&type=manager` -> `srv_rand`; then
  `GET /api/auth/answer?srv_rand_answer&cli_rand` -> `cli_rand_answer`. The answer is
  MD5(MD5(MD5(password as UTF-16LE) + "WebAPI") + srv_rand bytes), and the server proves it knows
  the password the same way with `cli_rand`. The session lives on the keep-alive connection and
  its cookie, so the client keeps one connection and a cookie jar; a 403 later means the session
  is gone, and the client logs in again once.
- `POST /api/user/add?login&group&name&leverage` (passwords in the JSON body, as MetaQuotes
  recommends): provisioning, with `login` = our account id; retcode 3004 "exists" is done.
- `GET /api/user/get?login`, `POST /api/user/update?login&rights`: trading off/on by the
  `USER_RIGHT_TRADE_DISABLED` bit (4) of `Rights`, other bits kept.
- `GET /api/trade/balance?login&type&balance&comment`: balance operations (type 2 balance,
  3 credit, 5 correction), the comment carrying the command id.
- `GET /api/deal/get_batch?group&from&to`: `fetch` polls new deals of every account in
  `groups`; `GET /api/deal/get_page?login&from&to&offset&total`: `history`, and the check that a
  balance operation was not already carried out.
- `GET /api/position/get_batch?login`, `GET /api/user/account/get?login`,
  `GET /api/group/get?group` (the group's currency): positions and account state.
- `POST /api/dealer/send_request` (Action 200, a dealer execution closing each position at its
  current price): close all. Accepted means queued; the closing deals arrive through `fetch`.

Retcodes: 0 `MT_RET_OK` is done; 12 `MT_RET_ERR_FREQUENT` raises `RateLimited`; 7, 9, 10, 11,
15 (network, time-out, no connection, no service, shutdown) and HTTP 5xx or time-outs raise
`Unavailable`; a failed login raises `Refused`; any other retcode is the command's result.

MT5 stamps deals in trade-server time: `server_timezone` (an IANA zone) and
`server_shift_hours` (hours ahead of that zone's wall clock) convert it to UTC.

Not covered: the Web API's time-limited trade request results (`/api/dealer/get_request_result`)
are not awaited; deals with entry "in/out" (a netting reversal) are reported as closing only;
generated passwords for new accounts are not returned (the `Platform` interface has no place for
them). The `fetch` cursor (last deal time and ticket) lives in memory; persisting it is the
bridge's job (`cursor`/`start_ns`).

Tested only against a stub server written from the public documentation
(`tests/unit/bridge/adapters/mt5_stub.py`), never against a real MetaTrader 5 server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
import string
import zoneinfo
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from bridge.adapters._http import (
    HttpClient,
    cents,
    comment_tag,
    decimal_text,
    decode_or_refuse,
    now_ns,
    raise_for_transport,
)
from bridge.commands import (
    AnyPlatformCommand,
    CloseAllPositions,
    DisableTrading,
    EnableTrading,
    OperateBalance,
    ProvisionAccount,
)
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    Side,
    TradingDisabled,
)
from bridge.platform import (
    DONE,
    AccountState,
    NotFound,
    OpenPosition,
    RateLimited,
    Refused,
    Unavailable,
)

if TYPE_CHECKING:
    from bridge.platform import Platform

log = logging.getLogger(__name__)

MT_RET_OK = 0
MT_RET_OK_NONE = 1
MT_RET_ERR_PARAMS = 3
MT_RET_ERR_FREQUENT = 12
MT_RET_ERR_NOTFOUND = 13
MT_RET_USR_LOGIN_EXIST = 3004
_TRANSIENT = {7, 9, 10, 11, 15}  # network, time-out, no connection, no service, shutdown

USER_RIGHT_ENABLED = 0x1
USER_RIGHT_TRADE_DISABLED = 0x4

_BALANCE_TYPE = {  # EnDealAction for /api/trade/balance
    BalanceKind.DEPOSIT: 2,
    BalanceKind.WITHDRAWAL: 2,
    BalanceKind.CORRECTION: 5,
    BalanceKind.CREDIT: 3,
}
_CANCELED = {13, 14}  # DEAL_BUY_CANCELED, DEAL_SELL_CANCELED
_COMMENT_LENGTH = 31  # 32 characters with the terminating zero
_PAGE = 100  # the most deals /api/deal/get_page answers at once
_FAR_FUTURE_S = 2_000_000_000  # 2033: an upper bound no real deal reaches
_DEALER_EXECUTE = "200"  # TA_DEALER_POS_EXECUTE
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

T = TypeVar("T")


class Mt5Config(msgspec.Struct, frozen=True, kw_only=True):
    """One MT5 trade server and the manager account the bridge logs in with."""

    server: str  # our name for the server, first part of every event id
    base_url: str  # "https://mt5.example.com:443"
    login: int  # manager login
    password: str  # manager password: a configuration value, never in code
    agent: str = "propvisor"  # no spaces (MetaQuotes)
    version: int = 484  # web client version; MetaQuotes: any number not below 484
    timeout_s: float = 10.0
    requests_per_second: float = 20.0  # MetaQuotes publishes no number; 12 says "too many"
    poll_interval_s: float = 1.0
    groups: str = "*"  # group mask whose deals `fetch` polls
    server_timezone: str = "UTC"
    server_shift_hours: int = 0
    start_ns: int | None = None  # where `fetch` starts; None: when it first polls
    dedupe_lookback_s: int = 7 * 86_400  # how far back a resent balance operation is looked for


class Mt5Refusal(Refused):
    """A request answered with a retcode that is an answer (not found, no permission...)."""

    def __init__(self, what: str, retcode: int) -> None:
        super().__init__(f"{what}: retcode {retcode}")
        self.what, self.retcode = what, retcode

    def __reduce__(self) -> tuple[type, tuple[str, int]]:  # crosses Ray actor boundaries
        return type(self), (self.what, self.retcode)


class Mt5NotFound(Mt5Refusal, NotFound):
    """Retcode 13 `MT_RET_ERR_NOTFOUND`: the server has no such account (or deal, group...)."""


def refusal(what: str, retcode: int) -> Mt5Refusal:
    """The refusal of a read answered `retcode`: `NotFound` for 13, else `Mt5Refusal`."""
    return (Mt5NotFound if retcode == MT_RET_ERR_NOTFOUND else Mt5Refusal)(what, retcode)


class Cursor(msgspec.Struct, frozen=True):
    """Where `fetch` resumes: deals at or after `time_s` (server time) with a ticket above
    `ticket` (MT5 numbers deals in increasing order)."""

    time_s: int
    ticket: int


# Wire shapes (a subset of MetaQuotes' records: numbers arrive as strings, hence strict=False
# decoders; unknown fields are ignored because every record has dozens we do not read).


class _Envelope(msgspec.Struct, Generic[T]):
    retcode: str
    answer: T | None = None


class _AuthStart(msgspec.Struct):
    retcode: str
    srv_rand: str = ""


class _AuthAnswer(msgspec.Struct):
    retcode: str
    cli_rand_answer: str = ""


class _Deal(msgspec.Struct, frozen=True, rename="pascal"):
    deal: int
    login: int
    action: int
    entry: int = 0
    time: int = 0
    time_msc: int = 0
    symbol: str = ""
    price: float = 0.0
    volume: int = 0  # 1/10000 lot
    volume_ext: int = 0  # 1/100000000 lot, newer servers
    profit: float = 0.0
    storage: float = 0.0
    commission: float = 0.0
    position_id: int = msgspec.field(name="PositionID", default=0)
    comment: str = ""


class _Position(msgspec.Struct, frozen=True, rename="pascal"):
    position: int
    login: int
    symbol: str
    action: int
    volume: int = 0
    volume_ext: int = 0
    price_open: float = 0.0
    price_current: float = 0.0
    profit: float = 0.0
    digits: int = 5


class _User(msgspec.Struct, frozen=True, rename="pascal"):
    login: int
    group: str = ""
    rights: int = 0


class _Account(msgspec.Struct, frozen=True, rename="pascal"):
    login: int = 0
    balance: float = 0.0
    credit: float = 0.0
    equity: float = 0.0


class _Group(msgspec.Struct, frozen=True, rename="pascal"):
    currency: str = "USD"


class _Ticket(msgspec.Struct, frozen=True, rename="pascal"):
    ticket: int = 0


class _RequestId(msgspec.Struct, frozen=True):
    id: int = msgspec.field(name="ID", default=0)


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind, strict=False)


_auth_start = _decoder(_AuthStart)
_auth_answer = _decoder(_AuthAnswer)
_deals = _decoder(_Envelope[list[_Deal]])
_positions = _decoder(_Envelope[list[_Position]])
_user = _decoder(_Envelope[_User])
_account = _decoder(_Envelope[_Account])
_accounts = _decoder(_Envelope[list[_Account]])
_users = _decoder(_Envelope[list[_User]])
_group = _decoder(_Envelope[_Group])
_ticket = _decoder(_Envelope[_Ticket])
_request_id = _decoder(_Envelope[_RequestId])
_anything = _decoder(_Envelope[Any])
_json = msgspec.json.Encoder()


def password_hash(password: str) -> bytes:
    """MD5(MD5(password as UTF-16LE) + "WebAPI"), the key of both halves of the handshake."""
    inner = hashlib.md5(password.encode("utf-16-le")).digest()
    return hashlib.md5(inner + b"WebAPI").digest()


def challenge_answer(password: str, challenge_hex: str) -> str:
    """The answer to a random challenge: MD5(password hash + challenge bytes), in hex."""
    return hashlib.md5(password_hash(password) + bytes.fromhex(challenge_hex)).hexdigest()


def retcode_of(text: str) -> int:
    """The number of a retcode text ("0 Done" -> 0); unreadable: 2, MT_RET_ERROR."""
    head = text.strip().split(" ", 1)[0]
    return int(head) if head.lstrip("-").isdigit() else 2


def _raise_transient(code: int, text: str, what: str) -> None:
    if code == MT_RET_ERR_FREQUENT:
        raise RateLimited(f"{what}: retcode {text}")
    if code in _TRANSIENT:
        raise Unavailable(f"{what}: retcode {text}")


def new_password() -> str:
    """A password MT5 accepts: 12 characters with lower and upper case, digits and symbols."""
    alphabet = string.ascii_letters + string.digits
    body = [secrets.choice(alphabet) for _ in range(8)]
    body += [secrets.choice(string.ascii_lowercase), secrets.choice(string.ascii_uppercase)]
    body += [secrets.choice(string.digits), secrets.choice("#@!$%")]
    secrets.SystemRandom().shuffle(body)
    return "".join(body)


class ServerClock:
    """Trade-server wall time <-> UTC (MT5 stamps everything in server time)."""

    def __init__(self, timezone: str, shift_hours: int) -> None:
        self.zone = zoneinfo.ZoneInfo(timezone)
        self.shift = dt.timedelta(hours=shift_hours)

    def to_utc_ns(self, server_ms: int) -> int:
        wall = _NAIVE_EPOCH + dt.timedelta(milliseconds=server_ms) - self.shift
        delta = wall.replace(tzinfo=self.zone) - _UTC_EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000

    def to_server_s(self, utc_ns: int) -> int:
        utc = dt.datetime.fromtimestamp(utc_ns // 1_000_000_000, dt.UTC)
        wall = utc.astimezone(self.zone).replace(tzinfo=None) + self.shift
        delta = wall - _NAIVE_EPOCH
        return delta.days * 86_400 + delta.seconds


class Mt5WebApi:
    """`Platform` over one MT5 Web API connection (one server, one manager login)."""

    def __init__(self, config: Mt5Config) -> None:
        self.config = config
        self.http = HttpClient(
            config.base_url,
            timeout_s=config.timeout_s,
            rate_per_s=config.requests_per_second,
            burst=max(1, int(config.requests_per_second)),
            headers={"Connection": "keep-alive"},
            one_connection=True,  # MetaQuotes' own client keeps a single connection
        )
        self.clock = ServerClock(config.server_timezone, config.server_shift_hours)
        self.authenticated = False
        self.auth_lock = asyncio.Lock()
        self.cursor: Cursor | None = None
        self.pending: deque[bytes] = deque()
        self.next_poll = 0.0
        self.currencies: dict[str, str] = {}  # group -> currency

    async def close(self) -> None:
        await self.http.close()

    # Session ------------------------------------------------------------------------------

    async def _login(self) -> None:
        async with self.auth_lock:
            if self.authenticated:
                return
            await self.http.reset()
            config = self.config
            start = await self._auth_call(
                "/api/auth/start",
                {
                    "version": config.version,
                    "agent": config.agent,
                    "login": config.login,
                    "type": "manager",
                },
                _auth_start,
            )
            client_random = secrets.token_hex(16)
            params = {
                "srv_rand_answer": challenge_answer(config.password, start.srv_rand),
                "cli_rand": client_random,
            }
            answer = await self._auth_call("/api/auth/answer", params, _auth_answer)
            if answer.cli_rand_answer != challenge_answer(config.password, client_random):
                raise Refused("MT5 login: the server did not prove it knows the password")
            self.authenticated = True

    async def _auth_call(self, path: str, params: dict[str, Any], decoder: Any) -> Any:
        what = f"MT5 login {path}"
        reply = await self.http.request("GET", path, params=params, what=what)
        raise_for_transport(reply, what)
        parsed = decode_or_refuse(decoder, reply, what)
        code = retcode_of(parsed.retcode)
        _raise_transient(code, parsed.retcode, what)
        if reply.status != 200 or code != MT_RET_OK:
            raise Refused(f"{what}: HTTP {reply.status} retcode {parsed.retcode}")
        return parsed

    async def _call(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        decoder: msgspec.json.Decoder[Any],
        body: Any = None,
    ) -> tuple[int, Any]:
        """(retcode, answer) of one request; transient retcodes and statuses raise."""
        what = f"MT5 {path}"
        for attempt in (1, 2):
            if not self.authenticated:
                await self._login()
            data = None if body is None else _json.encode(body)
            headers = None if body is None else {"Content-Type": "application/json"}
            reply = await self.http.request(
                method, path, params=params, data=data, headers=headers, what=what
            )
            if reply.status == 403 and attempt == 1:  # the session expired: log in again once
                self.authenticated = False
                continue
            raise_for_transport(reply, what)
            break
        if reply.status != 200:
            raise Refused(f"{what}: HTTP {reply.status} {reply.snippet()}")
        envelope = decode_or_refuse(decoder, reply, what)
        code = retcode_of(envelope.retcode)
        _raise_transient(code, envelope.retcode, what)
        return code, envelope.answer

    async def _read(
        self, path: str, params: dict[str, Any], decoder: msgspec.json.Decoder[Any]
    ) -> Any:
        """The answer of a read that must succeed (any retcode but 0 is refused)."""
        code, answer = await self._call("GET", path, params, decoder)
        if code != MT_RET_OK or answer is None:
            raise refusal(f"MT5 {path} {params}", code)
        return answer

    async def _read_list(
        self,
        path: str,
        params: dict[str, Any],
        decoder: msgspec.json.Decoder[Any],
        *,
        missing_ok: bool = False,
    ) -> list[Any]:
        """A list read: "1 no data" (MT_RET_OK_NONE) or no answer is an empty list; so is "13
        not found" with `missing_ok` (a batch of logins none of which exists)."""
        code, answer = await self._call("GET", path, params, decoder)
        if code == MT_RET_ERR_NOTFOUND and missing_ok:
            return []
        if code not in (MT_RET_OK, MT_RET_OK_NONE):
            raise refusal(f"MT5 {path} {params}", code)
        return list(answer or [])

    # Events -------------------------------------------------------------------------------

    async def fetch(self, max_events: int) -> list[bytes]:
        """New deals of every account in `groups` since the cursor, oldest first."""
        loop_now = asyncio.get_running_loop().time()
        if not self.pending and loop_now >= self.next_poll:
            self.next_poll = loop_now + self.config.poll_interval_s
            await self._poll()
        count = min(max_events, len(self.pending))
        return [self.pending.popleft() for _ in range(count)]

    async def _poll(self) -> None:
        cursor = self.cursor or Cursor(self.clock.to_server_s(self.config.start_ns or now_ns()), 0)
        params = {"group": self.config.groups, "from": cursor.time_s, "to": _FAR_FUTURE_S}
        deals = await self._read_list("/api/deal/get_batch", params, _deals)
        for deal in sorted((d for d in deals if d.deal > cursor.ticket), key=lambda d: d.deal):
            event = self.to_event(deal)
            if event is not None:
                self.pending.append(msgspec.json.encode(event))
            cursor = Cursor(max(cursor.time_s, deal.time), deal.deal)
        self.cursor = cursor

    def to_event(self, deal: _Deal) -> AnyPlatformEvent | None:
        """A deal as a canonical event (None: a record that moves nothing we follow)."""
        ts_ns = self.clock.to_utc_ns(deal.time_msc or deal.time * 1000)
        event_id = f"{self.config.server}:deal:{deal.deal}"
        if deal.action in (0, 1):
            return self._trade(deal, event_id, ts_ns)
        if deal.action in _CANCELED or deal.action < 0:
            return None
        kind = _balance_kind(deal.action, deal.profit)
        return BalanceOperated(
            event_id=event_id,
            ts_ns=ts_ns,
            account_id=str(deal.login),
            deal_id=deal.deal,
            kind=kind,
            amount=deal.profit,
        )

    def _trade(self, deal: _Deal, event_id: str, ts_ns: int) -> DealExecuted | None:
        volume = _lots(deal.volume, deal.volume_ext)
        if volume <= 0 or deal.price <= 0 or not deal.symbol:
            log.warning("MT5 deal %s has no volume, price or symbol; skipped", deal.deal)
            return None
        if deal.entry == 2:
            log.warning("MT5 deal %s reverses a netting position; reported as closing", deal.deal)
        return DealExecuted(
            event_id=event_id,
            ts_ns=ts_ns,
            account_id=str(deal.login),
            deal_id=deal.deal,
            position_id=deal.position_id or deal.deal,
            symbol=deal.symbol,
            entry=DealEntry.IN if deal.entry == 0 else DealEntry.OUT,
            side=Side.BUY if deal.action == 0 else Side.SELL,
            volume=volume,
            price=deal.price,
            profit=deal.profit,
            commission=deal.commission,
            swap=deal.storage,
        )

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        deals = await self._deals_of(account_id, since_ns)
        events = (self.to_event(d) for d in sorted(deals, key=lambda d: d.deal))
        return [msgspec.json.encode(e) for e in events if e is not None and e.ts_ns >= since_ns]

    async def _deals_of(self, account_id: str, since_ns: int) -> list[_Deal]:
        deals: list[_Deal] = []
        params: dict[str, Any] = {
            "login": account_id,
            "from": self.clock.to_server_s(since_ns),
            "to": _FAR_FUTURE_S,
            "offset": 0,
            "total": _PAGE,
        }
        while True:
            page = await self._read_list("/api/deal/get_page", params, _deals)
            deals.extend(page)
            if len(page) < _PAGE:
                return deals
            params["offset"] += _PAGE

    # State --------------------------------------------------------------------------------

    async def positions(self, account_id: str) -> list[OpenPosition]:
        return [_open_position(p) for p in await self._positions_of(account_id)]

    async def _positions_of(self, account_id: str) -> list[_Position]:
        return await self._read_list("/api/position/get_batch", {"login": account_id}, _positions)

    async def account_state(self, account_id: str) -> AccountState:
        account = await self._read("/api/user/account/get", {"login": account_id}, _account)
        return await self._state(account_id, account, await self._user(account_id))

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState]:
        """`BatchStates`: two requests for many logins (`/api/user/account/get_batch` and
        `/api/user/get_batch`); a login the server does not have is left out."""
        logins = ",".join(a for a in dict.fromkeys(account_ids) if a.isdigit())
        if not logins:
            return []
        accounts = await self._read_list(
            "/api/user/account/get_batch", {"login": logins}, _accounts, missing_ok=True
        )
        users = await self._read_list(
            "/api/user/get_batch", {"login": logins}, _users, missing_ok=True
        )
        by_login = {str(user.login): user for user in users}
        return [
            await self._state(str(a.login), a, by_login[str(a.login)])
            for a in accounts
            if str(a.login) in by_login
        ]

    async def _state(self, account_id: str, account: _Account, user: _User) -> AccountState:
        enabled = bool(user.rights & USER_RIGHT_ENABLED) and not (
            user.rights & USER_RIGHT_TRADE_DISABLED
        )
        return AccountState(
            account_id=account_id,
            currency=await self._currency(user.group),
            balance_cents=cents(account.balance),
            credit_cents=cents(account.credit),
            equity_cents=cents(account.equity),
            enabled=enabled,
        )

    async def _user(self, account_id: str) -> _User:
        user: _User = await self._read("/api/user/get", {"login": account_id}, _user)
        return user

    async def _currency(self, group: str) -> str:
        if group not in self.currencies:
            found = await self._read("/api/group/get", {"group": group}, _group)
            self.currencies[group] = found.currency
        return self.currencies[group]

    # Commands -----------------------------------------------------------------------------

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        return [await self._execute(command) for command in commands]

    async def _execute(self, command: AnyPlatformCommand) -> int:
        if not command.account_id.isdigit():
            log.error("MT5 logins are numbers; %s cannot be one", command.account_id)
            return MT_RET_ERR_PARAMS
        try:
            return await self._carry_out(command)
        except Mt5Refusal as refusal:  # e.g. 13 "not found": this command's answer, not the batch's
            log.error("MT5 %s for %s: %s", type(command).__name__, command.account_id, refusal)
            return refusal.retcode

    async def _carry_out(self, command: AnyPlatformCommand) -> int:
        if isinstance(command, DisableTrading):
            return await self._set_trading(command.account_id, False, command.command_id)
        if isinstance(command, EnableTrading):
            return await self._set_trading(command.account_id, True, command.command_id)
        if isinstance(command, OperateBalance):
            return await self._operate_balance(command)
        if isinstance(command, ProvisionAccount):
            return await self._provision(command)
        return await self._close_all(command)

    async def _set_trading(self, account_id: str, enabled: bool, command_id: str) -> int:
        user = await self._user(account_id)
        rights = user.rights & ~USER_RIGHT_TRADE_DISABLED
        rights = rights if enabled else rights | USER_RIGHT_TRADE_DISABLED
        if rights != user.rights:
            params = {"login": account_id, "rights": rights}
            code, _ = await self._call("POST", "/api/user/update", params, _anything)
            if code != MT_RET_OK:
                return code
        if not enabled:  # the update answered: confirm the freeze as an event
            self.pending.append(msgspec.json.encode(self._disabled(account_id, command_id)))
        return DONE

    def _disabled(self, account_id: str, command_id: str) -> TradingDisabled:
        return TradingDisabled(
            event_id=f"{self.config.server}:disabled:{command_id}",
            ts_ns=now_ns(),
            account_id=account_id,
            command_id=command_id,
        )

    async def _operate_balance(self, command: OperateBalance) -> int:
        amount = command.amount_cents
        signed = -amount if command.kind is BalanceKind.WITHDRAWAL else amount
        tag = comment_tag(command.command_id, _COMMENT_LENGTH)
        return await self._balance(command.account_id, _BALANCE_TYPE[command.kind], signed, tag)

    async def _balance(self, account_id: str, kind: int, amount_cents: int, tag: str) -> int:
        """One balance operation, unless a deal with its comment is already on the account."""
        since = now_ns() - self.config.dedupe_lookback_s * 1_000_000_000
        for deal in await self._deals_of(account_id, since):
            if deal.comment == tag and deal.action not in (0, 1):
                return DONE  # a resend of an operation already carried out
        params = {
            "login": account_id,
            "type": kind,
            "balance": decimal_text(amount_cents),
            "comment": tag,
        }
        code, _ = await self._call("GET", "/api/trade/balance", params, _ticket)
        return code

    async def _provision(self, command: ProvisionAccount) -> int:
        params = {
            "login": command.account_id,
            "group": command.group,
            "name": command.name or command.account_id,
            "leverage": command.leverage,
        }
        body = {"PassMain": new_password(), "PassInvestor": new_password()}
        code, _ = await self._call("POST", "/api/user/add", params, _anything, body)
        if code not in (MT_RET_OK, MT_RET_USR_LOGIN_EXIST):
            return code
        if command.deposit_cents == 0:
            return DONE
        tag = comment_tag(command.command_id, _COMMENT_LENGTH)
        return await self._balance(command.account_id, 2, command.deposit_cents, tag)

    async def _close_all(self, command: CloseAllPositions) -> int:
        for position in await self._positions_of(command.account_id):
            code, _ = await self._call(
                "POST", "/api/dealer/send_request", {}, _request_id, _closing_request(position)
            )
            if code != MT_RET_OK:
                return code
        return DONE


def _balance_kind(action: int, amount: float) -> BalanceKind:
    if action == 2:
        return BalanceKind.DEPOSIT if amount >= 0 else BalanceKind.WITHDRAWAL
    if action == 3:
        return BalanceKind.CREDIT
    return BalanceKind.CORRECTION  # charges, corrections, bonuses, commissions, dividends...


def _lots(volume: int, volume_ext: int) -> float:
    return volume_ext / 100_000_000 if volume_ext else volume / 10_000


def _open_position(position: _Position) -> OpenPosition:
    return OpenPosition(
        position_id=position.position,
        symbol=position.symbol,
        side=Side.BUY if position.action == 0 else Side.SELL,
        volume=_lots(position.volume, position.volume_ext),
        open_price=position.price_open,
        profit_cents=cents(position.profit),
    )


def _closing_request(position: _Position) -> dict[str, str]:
    """A dealer execution of the opposite side of `position` at its current price."""
    return {
        "Action": _DEALER_EXECUTE,
        "Login": str(position.login),
        "Symbol": position.symbol,
        "Volume": str(position.volume),
        "Type": "1" if position.action == 0 else "0",
        "Position": str(position.position),
        "PriceOrder": f"{position.price_current:.{position.digits}f}",
        "Digits": str(position.digits),
        "TypeFill": "0",
    }


if TYPE_CHECKING:
    _conforms: type[Platform] = Mt5WebApi
