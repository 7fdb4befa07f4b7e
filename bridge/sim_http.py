"""The platform simulator over HTTP: one `SimulatorServer` behind a JSON API, so that a bridge
(`bridge.adapters.simulated.SimulatedPlatform`) trades against it as against a platform's REST
gateway, rate limit and faults included.

    GET  /v1/events?max=N                               events, oldest first (a JSON array)
    POST /v1/commands                                   canonical commands -> a code for each
    GET  /v1/accounts?ids=A,B,...                       the states of those that exist (a batch)
    GET  /v1/accounts/{account_id}                      its balance, credit, equity, enabled
    GET  /v1/accounts/{account_id}/positions            its open positions
    GET  /v1/accounts/{account_id}/history?since_ns=N   its deals and balance operations
    GET  /v1/report                                     the simulator's report (ground truth)
    POST /v1/inject                                     JSON values to send as its own events

Commands and account queries count against the rate limit (429 with `Retry-After`); the event
stream, the report and injection do not. Injected faults answer 503 or drop the connection.
Every failure is an RFC 9457 problem (`application/problem+json`); bad input is a 400 whose
`errors` name the field (a JSON pointer into the body, or the query parameter). The market
advances in real time, at each request.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

import msgspec
from aiohttp import web

from bridge.commands import AnyPlatformCommand
from bridge.platform import CONNECTION_DROPPED, Failure, Faults, SimulatorServer
from bridge.simulator import SimulatorConfig

SERVER = web.AppKey("server", SimulatorServer)
DEFAULT_BATCH = 1_000
MAX_BATCH = 100_000
MAX_IDS = 1_000  # accounts per batch request
MAX_COMMANDS = 1_000
MAX_NS = 2**63 - 1

_json = msgspec.json.Encoder()
_commands = msgspec.json.Decoder(
    Annotated[list[AnyPlatformCommand], msgspec.Meta(max_length=MAX_COMMANDS)]
)
_raw_items = msgspec.json.Decoder(list[msgspec.Raw])
_at = re.compile(r" - at `\$([^`]*)`$")
_step = re.compile(r"\[(\d+)\]|\.([^.\[]+)")
_missing = re.compile(r"missing required field `([^`]+)`")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadInput(Exception):
    """A request the server cannot read: `where` names the field (`pointer` or `parameter`)."""

    def __init__(self, detail: str, where: dict[str, str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.where = where


def create_app(server: SimulatorServer) -> web.Application:
    """The HTTP app serving `server`."""
    app = web.Application(middlewares=[_problems])
    app[SERVER] = server
    app.router.add_get("/v1/events", get_events)
    app.router.add_post("/v1/commands", post_commands)
    app.router.add_get("/v1/accounts", get_accounts)
    app.router.add_get("/v1/accounts/{account_id}", get_account)
    app.router.add_get("/v1/accounts/{account_id}/positions", get_positions)
    app.router.add_get("/v1/accounts/{account_id}/history", get_history)
    app.router.add_get("/v1/report", get_report)
    app.router.add_post("/v1/inject", post_inject)
    return app


async def get_events(request: web.Request) -> web.Response:
    max_events = _int_param(request, "max", DEFAULT_BATCH, low=1, high=MAX_BATCH)
    return _answer(request, await request.app[SERVER].fetch(max_events), _messages)


async def post_commands(request: web.Request) -> web.Response:
    commands = _decode(_commands, await request.read())
    return _answer(request, await request.app[SERVER].carry_out(commands), _ok)


async def get_accounts(request: web.Request) -> web.Response:
    text = request.query.get("ids", "")
    ids = [part for part in text.split(",") if part]
    if not 1 <= len(ids) <= MAX_IDS:
        raise BadInput(
            f"`ids` must list 1 to {MAX_IDS} account ids, comma-separated", {"parameter": "ids"}
        )
    return _answer(request, await request.app[SERVER].account_states(ids), _ok)


async def get_account(request: web.Request) -> web.Response:
    answer = await request.app[SERVER].account_state(request.match_info["account_id"])
    return _answer(request, answer, _ok)


async def get_positions(request: web.Request) -> web.Response:
    answer = await request.app[SERVER].positions(request.match_info["account_id"])
    return _answer(request, answer, _ok)


async def get_history(request: web.Request) -> web.Response:
    since_ns = _int_param(request, "since_ns", 0, low=0, high=MAX_NS)
    answer = await request.app[SERVER].history(request.match_info["account_id"], since_ns)
    return _answer(request, answer, _messages)


async def get_report(request: web.Request) -> web.Response:
    return _ok(await request.app[SERVER].report())


async def post_inject(request: web.Request) -> web.Response:
    """Queue each element of a JSON array as a message of the server's own (fault injection:
    any JSON value, so a malformed event too)."""
    items = _decode(_raw_items, await request.read())
    await request.app[SERVER].inject([bytes(item) for item in items])
    return _ok({"injected": len(items)})


def _answer(
    request: web.Request, answer: T | Failure, ok: Callable[[T], web.Response]
) -> web.Response:
    if not isinstance(answer, Failure):
        return ok(answer)
    if answer.status == CONNECTION_DROPPED:
        # Carried out, but the caller never hears of it: its connection is gone.
        if request.transport is not None:
            request.transport.close()
        return web.Response()
    headers = {}
    if answer.retry_after_s is not None:  # RFC 9110: whole seconds
        headers["Retry-After"] = str(max(1, math.ceil(answer.retry_after_s)))
    return problem(answer.status, answer.detail, headers=headers)


def _ok(value: Any) -> web.Response:
    return web.Response(body=_json.encode(value), content_type="application/json")


def _messages(messages: Sequence[bytes]) -> web.Response:
    """JSON messages as one array, each as the server sent it (so event ids and bytes hold)."""
    return web.Response(body=b"[" + b",".join(messages) + b"]", content_type="application/json")


def problem(
    status: int,
    detail: str,
    *,
    errors: Sequence[dict[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem+json answer."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = list(errors)
    return web.Response(
        body=_json.encode(body),
        status=status,
        headers=headers,
        content_type="application/problem+json",
    )


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bad input and aiohttp's own errors (unknown path, wrong method) as problems."""
    try:
        return await handler(request)
    except BadInput as exc:
        error = {"detail": exc.detail, **exc.where}
        return problem(HTTPStatus.BAD_REQUEST, exc.detail, errors=[error])
    except web.HTTPException as exc:
        if exc.status < HTTPStatus.BAD_REQUEST:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem(exc.status, exc.reason, headers=allow)


def _int_param(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"`{name}` must be an integer, got {text!r}", {"parameter": name}) from None
    if not low <= value <= high:
        raise BadInput(f"`{name}` must be in [{low}, {high}], got {value}", {"parameter": name})
    return value


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadInput(str(exc), {"pointer": _pointer(str(exc))}) from None


def _pointer(error: str) -> str:
    """The JSON pointer (RFC 6901, as a URI fragment) to the field a msgspec error names."""
    at = _at.search(error)
    parts = [index or key for index, key in _step.findall(at.group(1) if at else "")]
    missing = _missing.search(error)
    if missing:
        parts.append(missing.group(1))
    return "#" + "".join(f"/{part}" for part in parts)


# -- running it ---------------------------------------------------------------------------------


def account_ids(count: int) -> list[str]:
    """The ids `run` pre-provisions: acc-0, acc-1, ..."""
    return [f"acc-{i}" for i in range(count)]


async def run(
    config: SimulatorConfig,
    *,
    host: str,
    port: int,
    accounts: int = 0,
    requests_per_second: float | None = None,
    burst: int | None = None,
    faults: Faults | None = None,
    ready: Callable[[str], None] = print,
) -> None:
    """Serve a new simulated server until SIGTERM or SIGINT. Its first `accounts` accounts exist
    already, funded at the configured initial balance (no deposit event, as `provision`).
    `ready` gets the URL once the port is bound (port 0 picks a free one)."""
    server = SimulatorServer(
        config, requests_per_second=requests_per_second, burst=burst, faults=faults
    )
    await server.provision(account_ids(accounts))
    runner = web.AppRunner(create_app(server))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        ready(_url(runner.addresses[0]))
        await _until_stopped()
    finally:
        await runner.cleanup()


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _url(address: Any) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
