"""Push ingestion over a websocket end to end: a real aiohttp server and websocket client, and
the inbox on a real database."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType, WSServerHandshakeError, web
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.ingest import (
    MAX_BODY_BYTES,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    IngestConfig,
    Ingestion,
    add_ingestion,
    handshake,
    sign,
)
from ledger.database import create_engine
from ledger.inbox import Inbox
from tests.database import database_url_on_server
from tests.integration.api.test_ingest import SECRET, NoSupervisor, deposit

MAX_EVENTS = 5


@dataclass
class Served:
    url: str  # the stream of connection mt5-a
    inbox: Inbox
    runner: web.AppRunner


@asynccontextmanager
async def serving(inbox: Inbox, **config: Any) -> AsyncIterator[Served]:
    """A real server with push ingestion for connection mt5-a on `inbox`."""
    app = create_app(NoSupervisor(), inbox.engine)  # type: ignore[arg-type]
    ingest_config = IngestConfig(secrets={"mt5-a": SECRET}, max_events=MAX_EVENTS, **config)
    add_ingestion(app, Ingestion(ingest_config, inbox))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Served(f"ws://{host}:{port}/ingest/v1/mt5-a/stream", inbox, runner)
    finally:
        if runner.server is not None:  # a test may have shut it down itself
            await runner.cleanup()


@pytest.fixture
async def served(engine: AsyncEngine) -> AsyncIterator[Served]:
    async with serving(Inbox(engine)) as found:
        yield found


def signed(
    connection: str = "mt5-a", *, secret: bytes = SECRET, at: float | None = None,
    signature: str | None = None, nonce: str | None = None,
) -> dict[str, str]:  # fmt: skip
    """The handshake headers a platform sends, with `nonce` if given (and signed over it)."""
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature or sign(secret, timestamp, handshake(connection, nonce)),
    }
    if nonce is not None:
        headers[NONCE_HEADER] = nonce
    return headers


def nonce() -> str:
    return os.urandom(16).hex()


@asynccontextmanager
async def opened(
    url: str, headers: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[ClientWebSocketResponse]:
    async with (
        ClientSession() as session,
        session.ws_connect(url, headers=headers or signed(), **options) as ws,
    ):
        yield ws


async def answer(ws: ClientWebSocketResponse) -> Any:
    message = await ws.receive(timeout=10)
    assert message.type is WSMsgType.TEXT, message
    return msgspec.json.decode(message.data)


async def send(ws: ClientWebSocketResponse, events: Any, *, binary: bool = False) -> Any:
    """Send one batch, as msgpack in a binary frame or JSON in a text frame; its answer."""
    if binary:
        await ws.send_bytes(msgspec.msgpack.encode(events))
    else:
        await ws.send_str(msgspec.json.encode(events).decode())
    return await answer(ws)


async def refused(url: str, headers: dict[str, str]) -> tuple[int, int, str, Any]:
    """The status a websocket client's handshake is refused with, then the status, content type
    and body of the same handshake sent as a plain request (the client does not show bodies)."""
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    async with ClientSession() as session:
        with pytest.raises(WSServerHandshakeError) as refusal:
            async with session.ws_connect(url, headers=headers):
                pass
        http = url.replace("ws://", "http://")
        async with session.get(http, headers=headers | upgrade) as response:
            body = await response.json(content_type=None)
            return refusal.value.status, response.status, response.content_type, body


async def stored(inbox: Inbox) -> list[tuple[str, float]]:
    """(event id, amount) of every event in mt5-a's inbox, in seq order."""
    rows = await inbox.read("mt5-a", 0, 100)
    return [(e["event_id"], e["amount"]) for e in (msgspec.json.decode(p) for _, p in rows)]


async def test_stream_when_handshake_is_signed_then_a_batch_is_accepted_and_stored(
    served: Served,
) -> None:
    async with opened(served.url) as ws:
        found = await send(ws, [deposit(1, 1_000.0), deposit(2, 500.0)])
        # Read right after the answer, no waiting: the answer comes after the commit.
        assert await stored(served.inbox) == [("p:1", 1_000.0), ("p:2", 500.0)]
    assert found == {
        "batch": 1, "accepted": 2, "duplicates": 0, "rejected": 0,
        "results": [
            {"index": 0, "status": "accepted", "event_id": "p:1"},
            {"index": 1, "status": "accepted", "event_id": "p:2"},
        ],
    }  # fmt: skip


async def test_stream_when_handshake_signature_is_wrong_then_401_before_upgrade(
    served: Served,
) -> None:
    client, status, content_type, body = await refused(served.url, signed(secret=b"other"))
    assert (client, status, content_type) == (401, 401, "application/problem+json")
    assert body["title"] == "Bad signature"
    assert "handshake" in body["detail"]


async def test_stream_when_post_signature_is_reused_for_handshake_then_401(
    served: Served,
) -> None:
    timestamp = str(int(time.time()))
    post_signature = sign(SECRET, timestamp, b"[]")  # what a POST of an empty batch carries
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: post_signature}
    client, status, _, body = await refused(served.url, headers)
    assert (client, status, body["title"]) == (401, 401, "Bad signature")


async def test_stream_when_handshake_is_unsigned_then_401(served: Served) -> None:
    client, status, _, body = await refused(served.url, {})
    assert (client, status, body["title"]) == (401, 401, "Unsigned request")


async def test_stream_when_handshake_is_stale_then_401_naming_the_skew(served: Served) -> None:
    client, status, _, body = await refused(served.url, signed(at=time.time() - 900))
    assert (client, status, body["title"]) == (401, 401, "Stale request")
    assert "tolerance is 300 s" in body["detail"]


async def test_stream_when_handshake_is_replayed_then_409_while_the_first_is_served(
    served: Served,
) -> None:
    headers = signed()
    async with opened(served.url, headers) as ws:
        client, status, _, body = await refused(served.url, headers)
        assert (client, status, body["title"]) == (409, 409, "Replayed request")
        assert (await send(ws, [deposit(1)]))["accepted"] == 1  # the first is unaffected
    assert await served.inbox.count("mt5-a") == 1


async def test_stream_when_two_open_in_the_same_second_with_different_nonces_then_both_served(
    served: Served,
) -> None:
    at = time.time()
    first, second = signed(at=at, nonce=nonce()), signed(at=at, nonce=nonce())
    assert first[TIMESTAMP_HEADER] == second[TIMESTAMP_HEADER]
    async with opened(served.url, first) as one, opened(served.url, second) as two:
        answers = await asyncio.gather(send(one, [deposit(1)]), send(two, [deposit(2)]))
        assert [(a["batch"], a["accepted"]) for a in answers] == [(1, 1), (1, 1)]
        assert (await send(one, [deposit(3)]))["batch"] == 2  # both stay open
    assert sorted(event_id for event_id, _ in await stored(served.inbox)) == ["p:1", "p:2", "p:3"]


async def test_stream_when_handshake_with_a_nonce_is_replayed_then_409(served: Served) -> None:
    headers = signed(nonce=nonce())
    async with opened(served.url, headers) as ws:
        client, status, _, body = await refused(served.url, headers)
        assert (client, status, body["title"]) == (409, 409, "Replayed request")
        assert (await send(ws, [deposit(1)]))["accepted"] == 1
    assert await served.inbox.count("mt5-a") == 1


async def test_stream_when_nonce_is_not_covered_by_the_signature_then_401(
    served: Served,
) -> None:
    without = signed()  # signed over the request line alone
    client, status, _, body = await refused(served.url, without | {NONCE_HEADER: nonce()})
    assert (client, status, body["title"]) == (401, 401, "Bad signature")
    assert "handshake, nonce" in body["detail"]
    # Nor is a nonce-covering signature valid without its nonce, or with another one.
    covering = signed(nonce=nonce())
    dropped = {k: v for k, v in covering.items() if k != NONCE_HEADER}
    for headers in (dropped, covering | {NONCE_HEADER: nonce()}):
        client, status, _, body = await refused(served.url, headers)
        assert (client, status, body["title"]) == (401, 401, "Bad signature")
    # None of those spent the signature: sent as signed, each opens a stream.
    for headers in (without, covering):
        async with opened(served.url, headers) as ws:
            assert (await send(ws, []))["batch"] == 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param("abc1234", id="too-short"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("nonce-\u00e9t\u00e9-2024", id="non-ascii"),
        pytest.param("nonce with spaces", id="space"),
    ],
)
async def test_stream_when_nonce_is_malformed_then_401_naming_the_header(
    served: Served, bad: str
) -> None:
    client, status, _, body = await refused(served.url, signed(nonce=bad))
    assert (client, status, body["title"]) == (401, 401, "Bad nonce")
    assert NONCE_HEADER in body["detail"]


async def test_stream_when_nonce_is_at_the_length_limits_then_accepted(served: Served) -> None:
    at = time.time()
    for edge in ("n" * 8, "~" * 128):
        async with opened(served.url, signed(at=at, nonce=edge)) as ws:
            assert (await send(ws, []))["batch"] == 1


async def test_stream_when_connection_is_unknown_then_404(served: Served) -> None:
    url = served.url.replace("mt5-a", "nope")
    client, status, _, body = await refused(url, signed("nope"))
    assert (client, status, body["title"]) == (404, 404, "Unknown connection")


async def test_stream_when_signed_request_is_not_an_upgrade_then_426_and_signature_not_spent(
    served: Served,
) -> None:
    headers = signed()
    async with (
        ClientSession() as session,
        session.get(served.url.replace("ws://", "http://"), headers=headers) as response,
    ):
        assert (response.status, response.headers["Upgrade"]) == (426, "websocket")
        assert (await response.json(content_type=None))["title"] == "Upgrade required"
    async with opened(served.url, headers) as ws:
        assert (await send(ws, []))["batch"] == 1


async def test_stream_when_one_event_is_malformed_then_it_alone_is_rejected_naming_the_field(
    served: Served,
) -> None:
    bad = deposit(2) | {"amount": "lots"}
    async with opened(served.url) as ws:
        found = await send(ws, [deposit(1), bad, deposit(3)])
    assert [(r["index"], r["status"]) for r in found["results"]] == [
        (0, "accepted"), (1, "rejected"), (2, "accepted"),
    ]  # fmt: skip
    assert (found["accepted"], found["rejected"]) == (2, 1)
    assert "amount" in found["results"][1]["reason"]
    assert [event_id for event_id, _ in await stored(served.inbox)] == ["p:1", "p:3"]


async def test_stream_when_event_id_repeats_across_frames_then_duplicate_and_stored_once(
    served: Served,
) -> None:
    async with opened(served.url) as ws:
        first = await send(ws, [deposit(1), deposit(2)])
        again = await send(ws, [deposit(2), deposit(3)])
    assert [r["status"] for r in first["results"]] == ["accepted", "accepted"]
    assert (again["batch"], again["duplicates"]) == (2, 1)
    assert [r["status"] for r in again["results"]] == ["duplicate", "accepted"]
    assert [event_id for event_id, _ in await stored(served.inbox)] == ["p:1", "p:2", "p:3"]


async def test_stream_when_event_id_was_pushed_on_another_stream_then_duplicate(
    served: Served,
) -> None:
    at = time.time()
    async with opened(served.url, signed(at=at, nonce=nonce())) as ws:
        await send(ws, [deposit(1)])
    # A reconnect resending what it had no answer for, in the same second: a fresh nonce makes
    # it a different signature from the first handshake's.
    async with opened(served.url, signed(at=at, nonce=nonce())) as ws:
        found = await send(ws, [deposit(1)])
    assert (found["batch"], found["results"][0]["status"]) == (1, "duplicate")
    assert await served.inbox.count("mt5-a") == 1


async def test_stream_when_frame_is_not_an_array_then_error_answer_and_next_frame_is_served(
    served: Served,
) -> None:
    async with opened(served.url) as ws:
        first = await send(ws, [deposit(1)])
        error = await send(ws, deposit(2))  # an object, not an array
        after = await send(ws, [deposit(3)])
    assert first["batch"] == 1
    assert error["batch"] == 2
    assert (error["error"]["status"], error["error"]["title"]) == (400, "Malformed body")
    assert (after["batch"], after["accepted"]) == (3, 1)
    assert [event_id for event_id, _ in await stored(served.inbox)] == ["p:1", "p:3"]


async def test_stream_when_frame_has_too_many_events_then_413_answer_and_none_of_it_stored(
    served: Served,
) -> None:
    async with opened(served.url) as ws:
        error = await send(ws, [deposit(n) for n in range(1, MAX_EVENTS + 2)])
        after = await send(ws, [deposit(100)], binary=True)
    assert (error["batch"], error["error"]["status"]) == (1, 413)
    assert error["error"]["title"] == "Too many events"
    assert (after["batch"], after["accepted"]) == (2, 1)
    assert [event_id for event_id, _ in await stored(served.inbox)] == ["p:100"]


async def test_stream_when_frame_is_msgpack_binary_then_judged_like_json(served: Served) -> None:
    bad = deposit(3) | {"amount": "lots"}
    async with opened(served.url) as ws:
        found = await send(ws, [deposit(1), deposit(1), deposit(2), bad], binary=True)
        error = await send(ws, {"not": "an array"}, binary=True)
    assert [r["status"] for r in found["results"]] == [
        "accepted", "duplicate", "accepted", "rejected",
    ]  # fmt: skip
    assert (found["batch"], found["accepted"], found["duplicates"]) == (1, 2, 1)
    assert (error["batch"], error["error"]["title"]) == (2, "Malformed body")
    assert await stored(served.inbox) == [("p:1", 100_000.0), ("p:2", 100_000.0)]


async def test_stream_when_frames_are_sent_without_waiting_then_answered_in_order(
    served: Served,
) -> None:
    async with opened(served.url) as ws:
        for n in range(1, 6):
            await ws.send_bytes(msgspec.msgpack.encode([deposit(n)]))
        answers = [await answer(ws) for _ in range(5)]
    assert [(a["batch"], a["results"][0]["event_id"]) for a in answers] == [
        (n, f"p:{n}") for n in range(1, 6)
    ]
    assert [event_id for event_id, _ in await stored(served.inbox)] == [
        f"p:{n}" for n in range(1, 6)
    ]


async def test_stream_when_frame_exceeds_the_post_body_limit_then_closed_1009_and_not_stored(
    served: Served,
) -> None:
    padded = b'[{"type": "balance"}' + b" " * MAX_BODY_BYTES + b"]"
    async with opened(served.url) as ws:
        assert (await send(ws, [deposit(1)]))["accepted"] == 1
        await ws.send_bytes(padded)
        message = await ws.receive(timeout=10)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 1009)
    assert await served.inbox.count("mt5-a") == 1


async def test_stream_when_server_shuts_down_then_stream_is_closed_going_away(
    served: Served,
) -> None:
    async with opened(served.url) as ws:
        assert (await send(ws, [deposit(1)]))["accepted"] == 1
        started = time.monotonic()
        cleanup = asyncio.create_task(served.runner.cleanup())
        message = await ws.receive(timeout=10)
        await asyncio.wait_for(cleanup, timeout=10)
    assert (message.type, message.data) == (WSMsgType.CLOSE, 1001)
    assert time.monotonic() - started < 5  # not aiohttp's 60 s wait for open handlers


async def test_stream_when_client_does_not_answer_pings_then_server_closes_it(
    engine: AsyncEngine,
) -> None:
    async with (
        serving(Inbox(engine), heartbeat_s=0.2) as served,
        opened(served.url, autoping=False) as ws,
    ):
        kinds = []
        while (message := await ws.receive(timeout=5)).type is WSMsgType.PING:
            kinds.append(message.type)
        assert kinds  # the server pinged
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)


@pytest.mark.postgres
async def test_stream_when_inbox_write_fails_then_closed_1011_without_an_answer() -> None:
    engine = create_engine(database_url_on_server("propvisor_no_such_database"))
    try:
        async with serving(Inbox(engine)) as served, opened(served.url) as ws:
            await ws.send_str(msgspec.json.encode([deposit(1)]).decode())
            message = await ws.receive(timeout=30)
            assert (message.type, message.data) == (WSMsgType.CLOSE, 1011)
    finally:
        await engine.dispose()
