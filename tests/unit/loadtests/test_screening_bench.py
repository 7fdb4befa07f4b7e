"""The screening benchmark: every seeded listed person is found under another spelling, and the
report holds its figures. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests import screening


def test_small_run_when_done_then_every_seeded_person_found(tmp_path: Path) -> None:
    path = tmp_path / "screening.json"

    status = screening.main(["--entries", "800", "--traders", "600", "--seeded", "60",
                             "--json", str(path)])  # fmt: skip

    report = json.loads(path.read_bytes())
    assert status == 0
    assert (report["seeded_found"], report["seeded_missed"]) == (60, [])
    assert report["names_indexed"] > report["entries"] == 800
    assert report["screenings_per_s"] > 0
    assert report["command"].startswith("python -m loadtests screening --entries 800")
