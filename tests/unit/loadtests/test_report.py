"""The bench report: the Markdown names each scenario's command and figures, and the README's
Performance section is the one the committed report makes."""

from __future__ import annotations

from loadtests import report
from loadtests.__main__ import SCENARIOS, command_of


def sample() -> report.Report:
    burst = {
        "accounts": 10_000, "events_per_s": 1095.2, "evaluations_per_s": 1161.0,
        "breach_to_freeze_ms": {"p50": 19.3, "p99": 88.8, "max": 100.5},
        "missed_breaches": 0, "false_breaches": 0, "lost_events": 0, "rss_mb": 1049.0,
        "bytes_per_account": 8986.0, "cpu_busy_pct": 99.1,
        "ours": {"events_per_s": 1095.2, "breach_to_freeze_ms": {"p50": 19.3, "p99": 88.8,
                 "max": 100.5}, "verdict": {"missed": [], "false": []}, "cpu_us_per_event": 12.5},
        "single_process": {"events_per_s": 62_500.0, "cpu_us_per_event": 16.0,
                           "verdict": {"missed": [], "false": []}},
        "polling": [{"interval_s": 60.0, "phases": 4, "scan_ms": 86.6, "cpu_share": 0.0014,
                     "detection_ms": {"p50": 54_067.0, "p99": 59_539.0, "max": 59_703.0},
                     "verdict": {"missed": ["a"], "false": []}}],
        "actor_per_account": {"actors": 10, "events_per_s": 1445.0, "rss_mib_per_actor": 155.8,
                              "creation_s_per_actor": 0.564, "missed": [], "false": []},
    }  # fmt: skip
    return report.Report(
        generated="2026-11-25 01:00 UTC",
        machine=report.Machine(
            cpu_model="Test CPU", cores=2, ram_gib=23.5, python="3.11.7", platform="Linux"
        ),
        commit="abc1234",
        dirty=False,
        scenarios={
            "news_burst": report.Run(command="python -m loadtests news_burst --accounts 10000",
                                     exit_status=0, seconds=54.0, figures=burst),
            "payouts": report.Run(command="python -m loadtests payouts", exit_status=1,
                                  seconds=16.0, figures={"requests": 3000, "decided_s": 3.7,
                                  "request_ms": {"p99": 3400.0}, "one_payout_per_key": True}),
            "actor_cost": report.Run(command="python -m loadtests actor_cost"),
        },
    )  # fmt: skip


def test_markdown_when_rendered_then_names_machine_commands_figures_and_baselines() -> None:
    text = report.markdown(sample())

    assert "Test CPU, 2 cores, 23.5 GiB RAM" in text
    assert "`abc1234`" in text
    assert "| news_burst | `python -m loadtests news_burst --accounts 10000` |" in text
    assert "1,095 events/s" in text
    assert "19.3 / 88.8 / 100.5 ms" in text
    assert "missed 0, false 0, lost events 0" in text
    assert "3,000 requests decided in 3.70 s" in text
    assert "(exit status 1)" in text  # a failed scenario says so
    assert "actor_cost" not in text  # no JSON, no row
    assert "| polling every 60 s (4 phases) |" in text
    assert "54,067.0 / 59,539.0 / 59,703.0 ms | 1 / 0 |" in text
    assert "| single process, no Ray | 62,500 events/s" in text
    assert "| one Ray actor per account (10) | 1,445 events/s" in text


def test_markdown_when_a_full_size_run_is_published_then_it_has_rows_and_the_baselines() -> None:
    with_full = sample()
    figures = dict(with_full.scenarios["news_burst"].figures or {})
    figures["accounts"] = 50_000
    figures["single_process"] = {"events_per_s": 1.0, "cpu_us_per_event": 2.0,
                                 "verdict": {"missed": [], "false": []}}  # fmt: skip
    command = "python -m loadtests news_burst --accounts 50000 --duration 30"
    with_full.full["news_burst"] = report.Run(command=command, figures=figures)

    text = report.markdown(with_full)

    assert "At full size" in text
    assert f"| news_burst | `{command}` | 50,000 accounts:" in text
    assert f"in the same run (`{command}`)" in text  # the baselines come from the full run
    assert "| single process, no Ray | 1 events/s" in text


def test_markdown_when_a_figure_is_missing_then_shows_a_question_mark() -> None:
    broken = sample()
    figures = broken.scenarios["payouts"].figures
    assert figures is not None
    del figures["decided_s"]

    assert "3,000 requests decided in ? s" in report.markdown(broken)


def test_readme_when_rewritten_then_only_the_section_changes() -> None:
    text = f"intro\n{report.BEGIN}\nold figures\n{report.END}\noutro\n"

    rewritten = report.rewrite_readme(text, sample())

    assert rewritten.startswith("intro\n")
    assert rewritten.endswith("\noutro\n")
    assert "old figures" not in rewritten
    assert report.markdown(sample()) in rewritten


def test_readme_when_checked_then_its_performance_section_is_the_committed_reports() -> None:
    assert report.check(), "run `python -m loadtests.report --publish` after `make bench`"


def test_committed_report_when_loaded_then_every_scenario_ran_with_this_command() -> None:
    committed = report.load(report.PUBLISHED / "report.json")

    assert list(committed.scenarios) == list(SCENARIOS)
    for name, scenario in SCENARIOS.items():
        assert committed.scenarios[name].command == command_of(scenario), name
        assert committed.scenarios[name].exit_status == 0, name
    assert committed.scenarios["news_burst"].figures is not None
