"""The scale benchmark: its script's ground truth holds, and a tiny run reports every figure.

No timing assertions: only that the breaches are exact and that each figure was measured.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.events import RuleBreached
from actors.plans import DEFAULT_PLAN
from actors.shard import ShardCore
from bridge.codec import decode_messages
from loadtests import scale

TINY_ARGS = ("--accounts", "200", "--actor-per-account", "10", "--actor-ticks", "60")


@pytest.fixture(scope="module")
def script() -> scale.Script:
    return scale.build_script(400, 600, 1_000.0, 3, "t")


def test_script_when_decoded_at_the_edge_then_every_message_is_valid(script: scale.Script) -> None:
    events, rejected = decode_messages(script.setup + script.burst)

    assert rejected == []
    assert len({e.event_id for e in events}) == len(events)


def test_script_when_applied_to_a_shard_then_exactly_the_expected_accounts_breach_at_their_tick(
    script: scale.Script,
) -> None:
    core = ShardCore(0)
    core.register((a, DEFAULT_PLAN) for a in script.accounts)
    setup, _ = decode_messages(script.setup)
    burst, _ = decode_messages(script.burst)

    assert not [e for e in core.apply(setup).effects if isinstance(e, RuleBreached)]
    breaches = [e for e in core.apply(burst).effects if isinstance(e, RuleBreached)]

    assert {b.account_id: b.caused_by for b in breaches} == script.expected
    assert len(script.expected) == len(script.near) == 8
    assert not set(script.near) & set(core.breached())
    assert script.closest_cents > 0


def test_script_when_built_twice_then_identical() -> None:
    first = scale.build_script(50, 90, 1_000.0, 5, "p")
    second = scale.build_script(50, 90, 1_000.0, 5, "p")

    assert (first.setup, first.burst, first.expected) == (
        second.setup,
        second.burst,
        second.expected,
    )


@pytest.mark.parametrize(("count", "rate"), [(1_000, 1_000.0), (95, 300.0), (7, 1_000.0)])
def test_paced_chunks_when_cut_then_cover_every_tick_once_at_the_rate(
    count: int, rate: float
) -> None:
    chunks = scale.paced_chunks(count, rate)

    assert [i for a, b in chunks for i in range(a, b)] == list(range(count))
    assert max(b - a for a, b in chunks) <= round(rate * scale.PACE_S) + 1


@pytest.fixture(scope="module")
def report(
    ray_session: None, migrated_postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("scale") / "scale.json"
    argv = [*TINY_ARGS, "--burst-seconds", "1", "--database-url", migrated_postgres_url]
    status = scale.main([*argv, "--json", str(path)])
    assert status == 0
    loaded: dict[str, Any] = json.loads(path.read_bytes())
    return loaded


def test_tiny_run_when_done_then_no_missed_false_or_wrong_breach(report: dict[str, Any]) -> None:
    burst = report["sizes"][0]["burst"]
    solo = report["actor_per_account"]

    assert report["exact"] is True
    assert (burst["missed"], burst["false"], burst["wrong_tick"]) == ([], [], [])
    assert burst["frozen"] == burst["breached"] == burst["expected_breaches"] > 0
    assert burst["latency_samples"] == burst["expected_breaches"]
    assert (solo["missed"], solo["false"]) == ([], [])
    assert solo["expected_breaches"] > 0


def test_tiny_run_when_done_then_json_holds_every_figure(report: dict[str, Any]) -> None:
    size = report["sizes"][0]
    solo = report["actor_per_account"]

    assert report["machine"]["cores"] >= 1
    assert report["machine"]["ray"]
    assert report["machine"]["cpu_model"]
    assert size["accounts"] == 200
    assert size["in_process"]["idle_bytes_per_account"] > 0
    assert size["in_process"]["open_bytes_per_account"] > 0
    assert size["hosting"]["shard_rss_hosted_mib"] > 0
    assert size["hosting"]["setup_events_per_s"] > 0
    burst = size["burst"]
    assert burst["ticks"] == 1_000
    for figure in ("ticks_per_s", "events_per_s", "evaluations_per_s", "drain_s"):
        assert burst[figure] > 0, figure
    assert 0 < burst["breach_to_freeze_ms"]["p50"] <= burst["breach_to_freeze_ms"]["max"]
    assert all(size["peak_rss"][k] > 0 for k in ("shards_mib", "bridge_mib", "simulator_mib"))
    assert solo["actors"] == 10
    for figure in ("creation_s", "rss_mib_per_actor", "events_per_s", "evaluations_per_s"):
        assert solo[figure] > 0, figure
