"""A stream client's queue: a frame shared by caught-up clients, and what happens to it when the
client falls behind (the websocket itself is exercised in tests/integration/api/test_stream.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.stream import Client, Entry, Filter, StreamConfig, deltas_frame


def row(seq: int, account: str) -> Entry:
    data = json.dumps({"type": "account", "seq": seq, "account": account}).encode()
    return Entry(seq, "account", data, ("a", account), account)


def seqs(frame: bytes) -> list[int]:
    decoded = json.loads(frame)
    assert decoded["type"] == "deltas"
    return [m["seq"] for m in decoded["messages"]]


class Socket:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.pings: list[bytes] = []

    async def send_frame(self, frame: bytes, _kind: Any) -> None:
        self.frames.append(frame)

    async def ping(self, payload: bytes) -> None:
        self.pings.append(payload)


def client(max_pending: int = 100) -> tuple[Client, Socket]:
    ws = Socket()
    return Client(ws, Filter(), StreamConfig(max_pending=max_pending)), ws  # type: ignore[arg-type]


def test_a_caught_up_client_takes_the_shared_frame_as_built() -> None:
    c, _ = client()
    batch = [row(1, "A"), row(2, "B"), row(3, "A")]
    frame = deltas_frame(batch)
    c.offer_frame(frame, batch)
    assert c.shared is not None
    assert c.shared[0] is frame
    assert not c.pending
    assert not c.caught_up


def test_a_second_batch_before_the_first_is_sent_conflates_in_sequence_order() -> None:
    c, _ = client()
    first = [row(1, "A"), row(2, "B"), row(3, "A")]
    c.offer_frame(deltas_frame(first), first)
    second = [row(4, "C"), row(5, "B")]
    c.offer_frame(deltas_frame(second), second)  # not caught up: joins the pending ones
    assert c.shared is None
    assert [e.seq for e in c.pending.values()] == [3, 4, 5]
    assert c.conflated == 2  # A's seq 1 and B's seq 2


def test_a_dropped_client_forgets_the_shared_frame_too() -> None:
    c, _ = client()
    first = [row(1, "A")]
    c.offer_frame(deltas_frame(first), first)
    c.drop("going", code=1000)
    assert not c.pending
    assert c.shared is None
    c.offer_frame(deltas_frame(first), first)  # after the drop, nothing is queued
    assert c.shared is None


@pytest.mark.parametrize("batches", [1, 3])
async def test_frames_reach_the_socket_in_order(batches: int) -> None:
    c, ws = client()
    writer = asyncio.create_task(c._write())
    seq = 0
    for _ in range(batches):
        batch = [row(seq + 1, "A"), row(seq + 2, "B")]
        seq += 2
        c.offer_frame(deltas_frame(batch), batch)
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    c.drop("done", code=1000)
    await asyncio.wait_for(writer, 1.0)
    sent = [s for frame in ws.frames for s in seqs(frame)]
    assert sent == sorted(sent)
    assert sent[-2:] == [seq - 1, seq]
    assert c.sent == len(sent)


def test_a_shared_batch_counts_toward_the_queue_limit_once_it_is_pending() -> None:
    c, _ = client(max_pending=2)
    first = [row(1, "A"), row(2, "B")]
    c.offer_frame(deltas_frame(first), first)
    assert c.closing is None
    c.offer([row(3, "C")])
    assert c.closing is not None
    assert "3 messages pending" in c.closing


def test_a_probe_unanswered_for_max_behind_s_means_behind() -> None:
    c, _ = client()
    c.probe = (b"1", 100.0)
    assert not c.behind(105.0)
    assert c.behind(110.5)
    c.answered(b"0")  # an older probe's pong (or the client's own) does not count
    assert c.behind(110.5)
    c.answered(b"1")
    assert not c.behind(110.5)
    assert c.probe is None


async def test_a_probe_follows_a_frame_at_most_every_probe_s() -> None:
    ws = Socket()
    c = Client(ws, Filter(), StreamConfig(probe_s=3600.0))  # type: ignore[arg-type]
    writer = asyncio.create_task(c._write())
    for n in range(3):
        batch = [row(n + 1, "A")]
        c.offer_frame(deltas_frame(batch), batch)
        for _ in range(5):
            await asyncio.sleep(0)
    c.drop("done", code=1000)
    await asyncio.wait_for(writer, 1.0)
    assert len(ws.frames) == 3
    assert ws.pings == [b"1"], "one probe, unanswered: no other until it is"
