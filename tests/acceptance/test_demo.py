"""The demo as a newcomer runs it: the `propvisor` command on embedded defaults."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from ledger.database import create_engine
from ledger.journal import Journal

SUMMARY_KEYS = {"accounts", "events", "breaches", "frozen", "breach_to_freeze_ms", "duration_s",
                "database"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_demo(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROPVISOR_")}
    env["PROPVISOR_RECKLESS_FRACTION"] = "0.2"  # enough breaches in a few seconds
    command = [str(Path(sys.executable).with_name("propvisor")), "demo", *args]
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=240, check=False
    )


async def journal_counts(database: Path) -> tuple[int, int]:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        journal = Journal(engine)
        return await journal.count("rule_breached"), await journal.count("account_frozen")
    finally:
        await engine.dispose()


def test_demo_freezes_exactly_the_accounts_the_simulator_drove_past_their_limits(
    tmp_path: Path,
) -> None:
    ports = ["--http-port", "0", "--dashboard-port", str(free_port())]
    result = run_demo(
        tmp_path, "--accounts", "600", "--duration", "6", "--json", "out.json", *ports
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Ray dashboard:" in result.stdout
    assert "HTTP app:" in result.stdout
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["accounts"] == 600
    assert summary["breaches"] > 0
    assert summary["frozen"] == summary["breaches"]
    frozen = set(summary["frozen_accounts"])
    truth = summary["simulator"]
    assert frozen == set(truth["crossed"]), "frozen accounts differ from the simulator's crossings"
    assert frozen == set(truth["disabled"]), "the platform did not disable every frozen account"
    assert summary["database"].startswith("sqlite:///")
    breached, frozen_rows = asyncio.run(journal_counts(tmp_path / "var" / "propvisor.db"))
    assert (breached, frozen_rows) == (summary["breaches"], summary["frozen"])
