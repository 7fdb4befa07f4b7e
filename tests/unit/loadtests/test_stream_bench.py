"""The stream benchmark: its scenario data is what the shards expect, its frame helpers speak
websocket, and a small run on real Ray, PostgreSQL and websockets reports every figure.

No timing assertions: only that each figure was measured and is consistent with the others.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from actors.shard import ShardCore
from bridge.codec import decode_event_batch
from bridge.events import DealExecuted, PriceTicked
from loadtests import stream
from tests.database import admin_url

SMALL = stream.Options(
    clients=6,
    slow=2,
    accounts=40,
    seconds=4.0,
    warmup_s=0.5,
    max_stall_s=1.0,
    ring_size=1_000,
)


def test_setup_when_split_then_each_account_is_on_one_shard_with_its_positions_open() -> None:
    options = stream.Options(accounts=25, shards=3)

    batches = stream.setup_batches(options)

    hosted = [a for ids, _ in batches for a in ids]
    assert sorted(hosted) == [stream.account_id(i) for i in range(25)]
    for ids, payload in batches:
        events = decode_event_batch(payload)
        ticks = [e for e in events if isinstance(e, PriceTicked)]
        deals = [e for e in events if isinstance(e, DealExecuted)]
        assert [t.symbol for t in ticks] == [s.symbol for s in stream.SYMBOLS]
        assert {d.account_id for d in deals} == set(ids)
        core = ShardCore(0)
        core.register((a, stream.plan()) for a in ids)
        core.apply(events)
        assert core.stats.rejected_events == 0
        assert all(core.accounts[a].positions for a in ids)
    assert stream.count_positions(options) == sum(
        len(decode_event_batch(p)) - len(stream.SYMBOLS) for _, p in batches
    )


def test_walker_when_stepped_then_every_price_moves_and_stays_near_its_start() -> None:
    walker = stream.Walker(seed=1)
    previous = [s.mid for s in stream.SYMBOLS]

    for step in range(3_000):
        ticks = walker.step(step)
        assert [t.symbol for t in ticks] == [s.symbol for s in stream.SYMBOLS]
        assert all(m != p for m, p in zip(walker.mids, previous, strict=True))
        previous = list(walker.mids)

    for symbol, mid in zip(stream.SYMBOLS, walker.mids, strict=True):
        assert abs(mid - symbol.mid) <= (stream.MAX_DRIFT_POINTS + 5) * symbol.point
    assert walker.count == 3_000 * len(stream.SYMBOLS)


def test_masked_frame_when_unmasked_then_the_payload_comes_back() -> None:
    frame = stream.masked_text_frame(b'{"type":"subscribe"}')

    assert frame[0] == 0x81
    assert frame[1] == 0x80 | 20
    mask, body = frame[2:6], frame[6:]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == b'{"type":"subscribe"}'


def test_close_of_when_a_close_follows_long_frames_then_its_code_and_reason() -> None:
    text = b"\x81\x7e" + (300).to_bytes(2, "big") + b"x" * 300
    big = b"\x81\x7f" + (70_000).to_bytes(8, "big") + b"y" * 70_000
    close = b"\x88\x0d" + (4008).to_bytes(2, "big") + b"slow, sorry"

    assert stream.close_of(text + big + close) == "4008 slow, sorry"
    assert stream.close_of(text + big) is None


def test_default_options_when_read_then_they_are_the_issue_s_fleet() -> None:
    options = stream.Options()

    assert (options.clients, options.fast, options.stalled, options.sleepy) == (100, 90, 5, 5)


@pytest.fixture(scope="module")
def report(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("stream") / "stream.json"
    argv = [
        *("--clients", str(SMALL.clients), "--slow", str(SMALL.slow)),
        *("--accounts", str(SMALL.accounts), "--seconds", str(SMALL.seconds)),
        *("--warmup", str(SMALL.warmup_s), "--max-stall-s", str(SMALL.max_stall_s)),
        *("--ring-size", str(SMALL.ring_size), "--admin-url", admin_url()),
        *("--json", str(path)),
    ]
    assert stream.main(argv) == 0
    loaded: dict[str, Any] = json.loads(path.read_bytes())
    return loaded


@pytest.mark.postgres
def test_small_run_when_done_then_every_fast_client_followed_the_stream(
    report: dict[str, Any],
) -> None:
    load, fast = report["load"], report["fast"]

    assert report["ok"] is True
    assert fast["clients"] == 4
    assert fast["disconnected"] == []
    assert load["account_messages"] > 0
    assert load["account_messages_per_s"] > 0
    assert load["ticks_per_s"] > 0
    assert load["commands_sent"] == 0
    assert load["positions"] == stream.count_positions(SMALL)
    assert fast["samples"] > 0
    assert 0 < fast["lag_ms"]["p50"] <= fast["lag_ms"]["p99"] <= fast["lag_ms"]["max"]
    assert fast["lag_p90_ms"] <= fast["lag_p999_ms"] <= fast["lag_ms"]["max"]
    low, median, high = fast["per_client_per_s"]
    assert 0 < low <= median <= high
    # Each fast client gets every account's rows, latest first when it falls behind: never more
    # than the hub emitted (the windows differ by the lag only).
    assert 0 < fast["delivered_share"] <= 1.1
    assert fast["server_sent"] > 0


@pytest.mark.postgres
def test_small_run_when_done_then_each_stage_s_lag_is_at_most_the_next_one_s(
    report: dict[str, Any],
) -> None:
    stages = report["stages"]
    order = ("shard_sent_ms", "hub_arrived_ms", "hub_emitted_ms", "server_read_ms")

    for name in order:
        assert 0 < stages[name]["p50"] <= stages[name]["max"], name
    # Each stage is measured later than the one before it, from the same `applied_ns`: the
    # medians cannot go down (the clients see conflated rows, so theirs is left out).
    medians = [stages[name]["p50"] for name in order]
    assert medians == sorted(medians)
    assert stages["server_read_ms"] == report["fast"]["read_lag_ms"]
    assert stages["client_ms"] == report["fast"]["lag_ms"]
    assert stages["publications"] > 0
    assert stages["reads_per_s"] > 0
    assert stages["messages_per_read"]["p50"] >= 1
    assert 0 < stages["read_round_trip_ms"]["p50"] <= stages["read_round_trip_ms"]["max"]
    assert 0 < stages["read_loop_wait_ms"]["p50"] <= stages["read_loop_wait_ms"]["max"]


@pytest.mark.postgres
def test_small_run_when_done_then_the_stalled_client_was_cut_and_counted(
    report: dict[str, Any],
) -> None:
    slow = report["slow"]

    assert (slow["stalled"], slow["sleepy"]) == (1, 1)
    assert slow["server_dropped"] >= 1
    assert slow["first_drop_s"] is not None
    assert slow["first_drop_s"] <= slow["last_drop_s"]
    assert all(ending is not None for ending in slow["stalled_endings"])


@pytest.mark.postgres
def test_small_run_when_done_then_memory_and_cpu_were_sampled(report: dict[str, Any]) -> None:
    memory, cpu = report["memory"], report["cpu"]

    assert memory["ring_filled"] is True
    assert memory["ring_size"] == SMALL.ring_size
    assert 0 < memory["before_load"] <= memory["window_peak"]
    assert memory["window_min"] <= memory["window_start"] <= memory["window_peak"]
    assert memory["window_min"] <= memory["window_end"] <= memory["window_peak"]
    assert 0 < memory["window_end_trimmed"] <= memory["window_peak"]
    assert memory["hub_start"] > 0
    assert memory["hub_end"] > 0
    for process in ("server", "clients", "hub", "shards", "feeder"):
        assert cpu[process] > 0, process
    assert 0 < cpu["machine_busy_pct"] <= 100
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["cpu_model"]
    assert report["database"].startswith("PostgreSQL")
    series = report["series"]
    assert [p[0] for p in series] == sorted(p[0] for p in series)
    assert max(p[3] for p in series) >= SMALL.fast + SMALL.sleepy
    assert series[-1][4] == report["slow"]["server_dropped"]


@pytest.mark.postgres
def test_render_when_given_a_report_then_a_markdown_table_with_the_goal(
    report: dict[str, Any],
) -> None:
    decoded = msgspec.convert(report, stream.Report)

    table = stream.render(decoded)

    assert table.splitlines()[2] == "| figure | value |"
    assert "| lag ms p50 / p99 / max |" in table
    assert "p99 < 100 ms" in table


@pytest.mark.postgres
def test_json_when_written_then_it_holds_the_options_used(report: dict[str, Any]) -> None:
    assert report["scenario"] == "stream_fanout"
    assert report["options"]["clients"] == SMALL.clients
    assert report["options"]["accounts"] == SMALL.accounts
    assert "admin_url" not in report["options"]
