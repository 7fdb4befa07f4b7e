"""`propvisor replay` as a firm runs it: the console script on every shipped plan and stream.

Also runs every `$ propvisor replay ...` example of docs/rules.md (section Replay) and compares its
output with what the command prints now, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLANS = ROOT / "deploy" / "plans"
EVENTS = ROOT / "deploy" / "events"
PROPVISOR = str(Path(sys.executable).with_name("propvisor"))

# Per plan and stream, default phase: each account's status, then its breaches as
# `rule:action@line` and, if it passed, `passed@line`.
ACTIVE = "active"
EXPECTED: dict[tuple[str, str], dict[str, str]] = {
    ("two-step-100k", "pass"): {"PASS-1": "passed passed@L18"},
    ("two-step-100k", "daily-loss"): {"DL-1": "failed daily_loss:fail@L7", "DL-2": ACTIVE},
    ("two-step-100k", "pause-resume"): {"PR-1": ACTIVE},
    ("two-step-100k", "news"): {"NEWS-1": ACTIVE},
    ("two-step-100k", "jpy-cross"): {"JPY-1": "failed daily_loss:fail@L8"},
    ("one-step-trailing-eod", "pass"): {"PASS-1": "passed passed@L18"},
    ("one-step-trailing-eod", "daily-loss"): {"DL-1": "failed daily_loss:fail@L7", "DL-2": ACTIVE},
    ("one-step-trailing-eod", "pause-resume"): {"PR-1": ACTIVE},
    ("one-step-trailing-eod", "news"): {"NEWS-1": ACTIVE},
    ("one-step-trailing-eod", "jpy-cross"): {"JPY-1": "failed daily_loss:fail@L7"},
    ("futures-trailing-intraday", "pass"): {"PASS-1": "passed passed@L14"},
    ("futures-trailing-intraday", "daily-loss"): {"DL-1": "failed max_loss:fail@L7",
                                                  "DL-2": ACTIVE},
    ("futures-trailing-intraday", "pause-resume"): {"PR-1": ACTIVE},
    ("futures-trailing-intraday", "news"): {"NEWS-1": ACTIVE},
    ("futures-trailing-intraday", "jpy-cross"): {"JPY-1": "failed max_loss:fail@L7"},
    ("daily-pause", "pass"): {"PASS-1": "passed passed@L14"},
    ("daily-pause", "daily-loss"): {
        "DL-1": "failed daily_loss:pause@L6 max_loss:fail@L7", "DL-2": ACTIVE},
    ("daily-pause", "pause-resume"): {"PR-1": "active daily_loss:pause@L4 resumed@L6"},
    ("daily-pause", "news"): {"NEWS-1": ACTIVE},
    ("daily-pause", "jpy-cross"): {"JPY-1": "failed daily_loss:pause@L7 max_loss:fail@L8"},
}  # fmt: skip
PHASE_CASES: dict[tuple[str, str, str], dict[str, str]] = {
    ("two-step-100k", "news", "funded"): {"NEWS-1": "failed news_trading:fail@L9"},
    ("two-step-100k", "pass", "verification"): {"PASS-1": "passed passed@L18"},
}
ALL_CASES: dict[tuple[str, ...], dict[str, str]] = {**EXPECTED, **PHASE_CASES}


def propvisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROPVISOR, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def summary(verdict: dict[str, Any]) -> str:
    """`status` then `rule:action@line` per breach, and `passed@`/`resumed@` milestones."""
    words = [verdict["status"]]
    words += [f"{b['rule']}:{b['action']}@{b['event_id']}" for b in verdict["breaches"]]
    for event in verdict["history"]:
        if event["type"] in ("phase_passed", "account_resumed"):
            name = "passed" if event["type"] == "phase_passed" else "resumed"
            words.append(f"{name}@{event['event_id']}")
    return " ".join(words)


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every case run once, concurrently: each process pays the interpreter's start-up."""
    cases = list(ALL_CASES)

    def run(case: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        plan, stream, *phase = case
        extra = ["--phase", phase[0]] if phase else []
        return propvisor(
            "replay", f"deploy/plans/{plan}.toml", f"deploy/events/{stream}.jsonl", "--json",
            *extra,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(cases, pool.map(run, cases), strict=True))


def test_every_shipped_plan_and_stream_is_covered() -> None:
    plans = {path.stem for path in PLANS.glob("*.toml")}
    streams = {path.stem for path in EVENTS.glob("*.jsonl")}

    assert set(EXPECTED) == {(plan, stream) for plan in plans for stream in streams}


@pytest.mark.parametrize("case", list(ALL_CASES), ids="/".join)
def test_replay_example_verdicts(
    results: dict[tuple[str, ...], subprocess.CompletedProcess[str]], case: tuple[str, ...]
) -> None:
    result = results[case]

    assert (result.returncode, result.stderr) == (0, "")
    accounts = json.loads(result.stdout)["accounts"]
    assert {account: summary(v) for account, v in accounts.items()} == ALL_CASES[case]
    phase = case[2] if len(case) == 3 else None
    assert all(v["phase"] == (phase or v["phase"]) for v in accounts.values())


def test_replay_jpy_positions_are_valued_through_usdjpy(
    results: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    # Line 8: long 10 USDJPY from 150.02 at bid 149.50 and short 5 EURJPY from 162.50 at ask
    # 163.23, both losses in JPY, divided by the USDJPY bid 149.50 (docs/rules.md, Money).
    long_jpy = (149.50 - 150.02) * 10 * 100_000
    short_jpy = (162.50 - 163.23) * 5 * 100_000
    equity = 100_000 + round(long_jpy / 149.50 * 100) / 100 + round(short_jpy / 149.50 * 100) / 100

    verdict = json.loads(results[("two-step-100k", "jpy-cross")].stdout)["accounts"]["JPY-1"]

    assert verdict["breaches"][0]["value"] == pytest.approx(equity, abs=0.005)
    assert verdict["breaches"][0]["limit"] == 95_000.0


def doc_examples() -> list[tuple[str, str]]:
    """(command, expected output) of every console block in the Replay section of the rules."""
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    section = text.split("\n## Replay\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n\$ (propvisor replay [^\n]*)\n(.*?)```", section, re.DOTALL)
    return [(command, output) for command, output in blocks]


def test_rules_doc_has_replay_examples() -> None:
    assert len(doc_examples()) >= 2


@pytest.mark.parametrize(("command", "output"), doc_examples(), ids=lambda x: x[:80])
def test_rules_doc_replay_example_matches_the_command(command: str, output: str) -> None:
    result = propvisor(*shlex.split(command)[1:])

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == output
