"""The news-burst benchmark: its oracle catches a broken rule, the baselines are judged by the
same oracle, and a small run writes every figure the issue names.

No timing assertions: only that the ground truth is applied and each figure was measured.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors import rules
from loadtests import news_burst, scale

SMALL = news_burst.Settings(accounts=300, duration_s=2.0, deals_per_second=30.0, polls_s=(0.5,))


@pytest.fixture(scope="module")
def run() -> news_burst.Run:
    return news_burst.prepare(SMALL, "nb")


def daily_loss_pushed(run: news_burst.Run) -> set[str]:
    """The accounts the script pushed to their daily floor (the others to their max-loss one)."""
    core, _ = news_burst.load(run.script)
    return {a for a in run.script.expected if core.accounts[a].balance > 9_500_000}


def test_script_when_prepared_then_deals_mixed_in_time_order_and_ids_unique(
    run: news_burst.Run,
) -> None:
    _, burst = news_burst.load(run.script)
    times = [e.ts_ns for e in burst]

    assert times == sorted(times)
    assert len({e.event_id for e in burst}) == len(burst)
    assert len(run.deals) == 2 * int(SMALL.deals_per_second * SMALL.duration_s)
    assert set(run.deals) <= {e.event_id for e in burst}
    assert len(run.script.expected) == len(run.script.near) == 6


def test_single_process_when_rules_are_right_then_exact(run: news_burst.Run) -> None:
    found = news_burst.single_process(run.script)

    assert found.verdict == news_burst.Verdict(expected=6, missed=[], false=[], wrong_tick=[])
    assert found.events == len(run.script.burst)
    assert found.events_per_s > 0
    assert found.cpu_us_per_event > 0


def test_oracle_when_the_daily_loss_rule_is_broken_then_reports_missed_breaches(
    run: news_burst.Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    daily = daily_loss_pushed(run)
    assert 0 < len(daily) < len(run.script.expected)  # both kinds of floor are in the script
    monkeypatch.setattr(rules, "_daily_breach", lambda *args: None)  # the rule never fires

    found = news_burst.single_process(run.script)
    polled = news_burst.polling(run, 0.5)

    # Every daily-loss breach is missed, or found later when the news took the account through
    # its max-loss floor too (on another tick); the max-loss ones are still caught on time.
    assert found.verdict.missed
    assert set(found.verdict.missed) | set(found.verdict.wrong_tick) == daily
    assert polled.verdict.missed
    assert set(polled.verdict.missed) <= daily
    assert found.verdict.false == polled.verdict.false == []


def test_oracle_when_a_floor_is_off_then_reports_wrong_ticks(
    run: news_burst.Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = rules.check_equity

    def late(account: Any, cause: str, ts_ns: int, effects: list[Any]) -> None:
        account.daily_floor -= 50_000  # a floor $500 too low breaches late, or never
        try:
            real(account, cause, ts_ns, effects)
        finally:
            account.daily_floor += 50_000

    monkeypatch.setattr(rules, "check_equity", late)
    verdict = news_burst.single_process(run.script).verdict

    daily = daily_loss_pushed(run)
    assert verdict.wrong_tick
    assert set(verdict.wrong_tick) | set(verdict.missed) == daily
    assert verdict.false == []


def test_polling_when_scanning_on_a_timer_then_detects_late_but_within_an_interval(
    run: news_burst.Run,
) -> None:
    polled = news_burst.polling(run, 0.5)

    assert polled.verdict.missed == polled.verdict.false == []
    assert polled.phases == news_burst.PHASES == 4
    assert polled.scans >= 4 * 4  # each schedule scans at least 4 times in 2 s, then once after
    # Late: a scan sees a breach only if the price still holds the account below its floor, so
    # a crossing the jitter takes back waits for a later scan (here up to the last one).
    assert 0 < polled.detection_ms.p50 <= polled.detection_ms.max
    assert polled.detection_ms.max <= 1e3 * (SMALL.duration_s + 0.5) + polled.scan_ms + 1


def test_judge_when_given_findings_then_names_missed_false_and_wrong() -> None:
    script = scale.Script(
        accounts=["a", "b", "c", "d"],
        setup=[],
        burst=[],
        burst_symbols=[],
        holders={},
        expected={"a": "t1", "b": "t2", "c": "t3"},
        near=["d"],
        closest_cents=1,
    )

    verdict = news_burst.judge(script, {"a": "t1", "b": "t9", "d": "t4"})

    assert verdict == news_burst.Verdict(expected=3, missed=["c"], false=["d"], wrong_tick=["b"])


ISSUE_KEYS = ("accounts", "events_per_s", "evaluations_per_s", "missed_breaches", "false_breaches",
              "lost_events", "rss_mb", "bytes_per_account")  # fmt: skip


@pytest.mark.postgres
def test_small_run_when_done_then_json_holds_every_figure_and_no_breach_is_wrong(
    ray_session: None, tmp_path: Any
) -> None:
    path = tmp_path / "out.json"
    argv = ["--accounts", "300", "--duration", "2", "--actor-per-account", "5",
            "--actor-ticks", "60", "--poll", "1", "60", "--json", str(path)]  # fmt: skip

    assert news_burst.main(argv) == 0
    report: dict[str, Any] = json.loads(path.read_bytes())

    for key in ISSUE_KEYS:
        assert key in report, key
    assert report["accounts"] == 300
    assert report["events_per_s"] > 0
    assert report["evaluations_per_s"] > 0
    latency = report["breach_to_freeze_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert (report["missed_breaches"], report["false_breaches"], report["lost_events"]) == (0, 0, 0)
    assert report["rss_mb"] > 0
    assert report["bytes_per_account"] > 0
    assert report["exact"] is True
    ours = report["ours"]
    assert ours["verdict"]["expected"] == 6
    assert ours["latency_samples"] == 6  # every breach frozen on the platform
    assert ours["extra_events"] == 0
    assert ours["settled"] is True
    assert report["command"] == "python -m loadtests news_burst " + " ".join(argv)
    assert ours["journal_missing"] == []
    assert set(ours["cpu_s"]) == {*news_burst.OURS, "simulator", "driver"}
    assert [p["interval_s"] for p in report["polling"]] == [1, 60]
    assert report["actor_per_account"]["actors"] == 5
    assert report["single_process"]["verdict"]["missed"] == []
