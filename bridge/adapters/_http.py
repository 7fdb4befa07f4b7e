"""What the platform adapters share: an HTTP client that turns transport failures and status
codes into the bridge's errors, money in cents, UTC nanoseconds, and stable ids.

Written once here, used by `mt5`, `ctrader` (its WebServices calls) and `matchtrader`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import time
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec

from bridge.platform import RateLimited, Refused, Unavailable
from bridge.ratelimit import TokenBucket

UNSUPPORTED = -2
"""The result code of a command an adapter cannot carry out on its platform: no documented API
for it was found (each adapter's docstring names which)."""

_BODY_SNIPPET = 200
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Reply(msgspec.Struct, frozen=True):
    """An HTTP answer, read in full: status, body, and the Retry-After it carried (seconds)."""

    status: int
    body: bytes
    retry_after_s: float | None = None

    def snippet(self) -> str:
        return self.body[:_BODY_SNIPPET].decode("utf-8", "replace")


class HttpClient:
    """One `aiohttp` session to one platform, behind a token bucket (the platform's published
    limit). Created lazily inside the running loop; `close` releases it."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        rate_per_s: float,
        burst: int,
        headers: dict[str, str] | None = None,
        one_connection: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.limiter = TokenBucket(rate_per_s, burst)
        self.headers = headers or {}
        self.one_connection = one_connection
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # unsafe=True: keep cookies from servers addressed by IP (many trade servers are).
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                connector=aiohttp.TCPConnector(limit=1 if self.one_connection else 100),
            )
        return self._session

    async def reset(self) -> None:
        """Drop cookies and connections: a new login starts from nothing."""
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, what: str, **kwargs: Any) -> Reply:
        """Send one request; a time-out or a dropped connection raises `Unavailable`."""
        await self.limiter.acquire()
        return await send(self.session(), method, self.base_url + path, what=what, **kwargs)


async def send(
    session: aiohttp.ClientSession, method: str, url: str, *, what: str, **kwargs: Any
) -> Reply:
    try:
        async with session.request(method, url, **kwargs) as response:
            body = await response.read()
            return Reply(response.status, body, retry_after(response.headers.get("Retry-After")))
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise Unavailable(f"{what}: {type(exc).__name__} {exc}".strip()) from exc


def raise_for_transport(reply: Reply, what: str) -> None:
    """The statuses every REST platform means the same way: 429 -> `RateLimited` (with its
    Retry-After), 401/403 -> `Refused`, 5xx -> `Unavailable`. Other statuses are the caller's."""
    if reply.status == 429:
        raise RateLimited(f"{what}: HTTP 429 {reply.snippet()}", reply.retry_after_s)
    if reply.status in (401, 403):
        raise Refused(f"{what}: HTTP {reply.status} {reply.snippet()}")
    if reply.status >= 500:
        raise Unavailable(f"{what}: HTTP {reply.status} {reply.snippet()}")


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - time.time())


def decode_or_refuse(decoder: msgspec.json.Decoder[Any], reply: Reply, what: str) -> Any:
    """Decode a 2xx body; an answer we cannot read will not become readable by retrying."""
    try:
        return decoder.decode(reply.body)
    except msgspec.DecodeError as exc:
        raise Refused(f"{what}: unexpected answer ({exc}): {reply.snippet()}") from exc


# Money ------------------------------------------------------------------------------------------


def cents(amount: float) -> int:
    """An amount in major units as integer minor units (`round(x * 100)`)."""
    return round(amount * 100)


def decimal_text(amount_cents: int) -> str:
    """Cents as an exact decimal string for the wire ("1000.00", "-0.05")."""
    return str(Decimal(amount_cents).scaleb(-2))


def scaled(value: int, digits: int) -> float:
    """A platform integer with `digits` implied decimals (cTrader `moneyDigits`) as a float."""
    return value / 10.0**digits


# Time -------------------------------------------------------------------------------------------


def now_ns() -> int:
    return time.time_ns()


def ms_to_ns(ms: int) -> int:
    return ms * 1_000_000


def rfc3339_to_ns(text: str) -> int:
    """An RFC 3339 timestamp (naive means UTC) as UTC nanoseconds, exact to the microsecond."""
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def ns_to_rfc3339(ns: int) -> str:
    """UTC nanoseconds as RFC 3339 with milliseconds ("2024-01-13T09:20:04.651Z")."""
    when = _EPOCH + dt.timedelta(microseconds=ns // 1_000)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# Ids --------------------------------------------------------------------------------------------


def stable_number(key: str) -> int:
    """A positive integer below 2**56 that is the same for `key` in every process."""
    digest = hashlib.blake2b(key.encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big") + 1


def numeric_or_stable(key: str) -> int:
    """A platform id as a positive integer: itself if it is one, else `stable_number`."""
    return int(key) if key.isdigit() and int(key) > 0 else stable_number(key)


def time_ordered_id(ts_ns: int, key: str) -> int:
    """A deal number that grows with time: millisecond of the record, then three digits of the
    record's own id. Accounts apply a deal only if its number is above the last one applied, so
    platforms whose deals and balance operations are numbered apart (cTrader, Match-Trader) get
    one time-ordered sequence instead (two records of one account in the same millisecond are
    ordered by those three digits)."""
    return (ts_ns // 1_000_000) * 1_000 + stable_number(key) % 1_000


def comment_tag(command_id: str, max_length: int) -> str:
    """The platform-side comment that makes a resent command recognisable: the command id if it
    fits the platform's comment field, else a stable digest of it."""
    if len(command_id) <= max_length:
        return command_id
    digest = hashlib.blake2b(command_id.encode(), digest_size=16).hexdigest()
    return "pv-" + digest[: max_length - 3]
