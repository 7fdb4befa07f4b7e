"""The affiliate benchmark at a small size: every sale accrued, a statement per affiliate,
payouts made, the books reconciled; its report holds the figures. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import affiliates

pytestmark = pytest.mark.postgres


def test_small_run_accrues_every_sale_and_reconciles(tmp_path: Path) -> None:
    path = tmp_path / "affiliates.json"

    status = affiliates.main(["--affiliates", "40", "--purchases", "2000", "--json", str(path)])

    report = json.loads(path.read_bytes())
    assert status == 0
    assert report["reconciled"] is True
    assert report["lines"] > 0
    assert report["statements"] > 0
    assert report["paid"] > 0
    assert report["events_per_s"] > 0
    assert report[
        "command"
    ] == "python -m loadtests affiliates --affiliates 40 --purchases 2000 --json " + str(path)
