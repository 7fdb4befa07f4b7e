"""A stream client's queue: a frame shared by caught-up clients, and what happens to it when the
client falls behind (the websocket itself is exercised in tests/integration/api/test_stream.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

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
        self.open = asyncio.Event()
        self.open.set()

    async def send_frame(self, frame: bytes, _kind: Any) -> None:
        await self.open.wait()
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


async def test_batches_arriving_while_a_frame_is_sent_come_next_in_order_and_conflated() -> None:
    ws = Socket()
    ws.open.clear()  # the socket takes nothing until told
    c = Client(ws, Filter(), StreamConfig())  # type: ignore[arg-type]
    writer = asyncio.create_task(c._write())
    first = [row(1, "A"), row(2, "B")]
    c.offer_frame(deltas_frame(first), first)
    await asyncio.sleep(0)  # the writer takes the shared frame and waits on the socket
    second = [row(3, "A"), row(4, "C")]
    c.offer_frame(deltas_frame(second), second)  # caught up: shared, not yet sent
    third = [row(5, "C"), row(6, "B")]
    c.offer_frame(deltas_frame(third), third)  # not caught up: both batches pending, conflated
    ws.open.set()
    for _ in range(10):
        await asyncio.sleep(0)
    c.drop("done", code=1000)
    await asyncio.wait_for(writer, 1.0)
    frames = [seqs(frame) for frame in ws.frames]
    assert frames == [[1, 2], [3, 5, 6]]  # A's 3 kept, C's 4 replaced by 5, B's 6 last
    assert c.sent == 5
    assert c.conflated == 1


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


async def test_one_probe_at_a_time_and_at_most_every_probe_s() -> None:
    async def pings_after_three_frames(probe_s: float, answer: bool) -> list[bytes]:
        ws = Socket()
        c = Client(ws, Filter(), StreamConfig(probe_s=probe_s))  # type: ignore[arg-type]
        writer = asyncio.create_task(c._write())
        for n in range(3):
            batch = [row(n + 1, "A")]
            c.offer_frame(deltas_frame(batch), batch)
            for _ in range(5):
                await asyncio.sleep(0)
            if answer and c.probe is not None:
                c.answered(c.probe[0])
        c.drop("done", code=1000)
        await asyncio.wait_for(writer, 1.0)
        assert len(ws.frames) == 3
        return ws.pings

    assert await pings_after_three_frames(0.0, answer=False) == [b"1"], "one unanswered"
    assert await pings_after_three_frames(0.0, answer=True) == [b"1", b"2", b"3"]
    assert await pings_after_three_frames(3600.0, answer=True) == [b"1"], "then an hour"
