"""`SimulatedPlatform`: the `Platform` protocol over the simulator's HTTP API (`bridge.sim_http`).

Failures map as a real platform's would: 429 is `RateLimited` (with `Retry-After`), any other 4xx
`Refused`, 5xx, a dropped connection or a time-out `Unavailable`. An answer it cannot read is
`Refused`: retrying will not make it readable (as in the other adapters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from bridge.adapters._http import retry_after
from bridge.commands import AnyPlatformCommand
from bridge.platform import AccountState, OpenPosition, Refused, Unavailable, platform_error
from bridge.simulator import SimulatorReport

T = TypeVar("T")

_json = msgspec.json.Encoder()
_raw_items = msgspec.json.Decoder(list[msgspec.Raw])
_codes = msgspec.json.Decoder(list[int])
_positions = msgspec.json.Decoder(list[OpenPosition])
_state = msgspec.json.Decoder(AccountState)
_states = msgspec.json.Decoder(list[AccountState])
_report = msgspec.json.Decoder(SimulatorReport)


class _Problem(msgspec.Struct):
    detail: str = ""


_problem = msgspec.json.Decoder(_Problem)


class SimulatedPlatform:
    """A connection to a simulated server at `base_url` (what `propvisor simulate` prints). Its
    HTTP session opens at the first request, so an unused connection can be sent to an actor;
    `close` it (or use it as an async context manager) when done."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base = URL(base_url)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, max_events: int) -> list[bytes]:
        body = await self._call("GET", ("events",), params={"max": max_events})
        return [bytes(item) for item in _read(_raw_items, body)]

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        body = await self._call("POST", ("commands",), body=_json.encode(list(commands)))
        codes = _read(_codes, body)
        if len(codes) != len(commands):
            raise Unavailable(f"{len(codes)} result codes for {len(commands)} commands")
        return codes

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        path = ("accounts", account_id, "history")
        body = await self._call("GET", path, params={"since_ns": since_ns})
        return [bytes(item) for item in _read(_raw_items, body)]

    async def positions(self, account_id: str) -> list[OpenPosition]:
        return _read(_positions, await self._call("GET", ("accounts", account_id, "positions")))

    async def account_state(self, account_id: str) -> AccountState:
        return _read(_state, await self._call("GET", ("accounts", account_id)))

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState]:
        """`BatchStates`: one request for many accounts (unknown ones are left out)."""
        body = await self._call("GET", ("accounts",), params={"ids": ",".join(account_ids)})
        return _read(_states, body)

    async def report(self) -> SimulatorReport:
        """The simulator's report: its ground truth, and the requests it answered 429."""
        return _read(_report, await self._call("GET", ("report",)))

    async def inject(self, messages: Sequence[bytes]) -> None:
        """Have the server send these JSON messages as its own (fault injection)."""
        await self._call("POST", ("inject",), body=b"[" + b",".join(messages) + b"]")

    async def _call(
        self,
        method: str,
        path: Sequence[str],
        *,
        params: Mapping[str, int | str] | None = None,
        body: bytes | None = None,
    ) -> bytes:
        """One request; its answer's body, or the protocol's error."""
        url = self.base.joinpath("v1", *(quote(part, safe="") for part in path), encoded=True)
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with self._open().request(
                method, url, params=params, data=body, headers=headers
            ) as response:
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{method} {url.path}: {exc!r}") from exc
        if response.status >= 400:
            detail = _detail(payload) or f"{method} {url.path}: HTTP {response.status}"
            raise platform_error(
                response.status, detail, retry_after(response.headers.get("Retry-After"))
            )
        return payload

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session


def _read(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise Refused(f"unexpected answer: {exc}") from exc


def _detail(payload: bytes) -> str:
    try:
        return _problem.decode(payload).detail
    except msgspec.DecodeError:
        return ""
