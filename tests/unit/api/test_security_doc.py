"""`docs/security.md` shows the permission matrix and each endpoint's permission as the code has
them: the tables between its markers are compared with freshly generated ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from api import security_doc
from api.auth import Role

STALE = (
    "docs/security.md is out of date with the code ({name} table): "
    f"run `{security_doc.REGENERATE}` to regenerate its tables"
)


@pytest.mark.parametrize("name", ["matrix", "endpoints"])
def test_security_doc_when_compared_with_the_code_then_its_tables_are_the_generated_ones(
    name: str,
) -> None:
    text = security_doc.DOC.read_text(encoding="utf-8")

    shown = security_doc.between(text, name)

    assert shown == security_doc.tables()[name], STALE.format(name=name)


def test_security_doc_when_read_then_every_role_is_described_outside_the_tables() -> None:
    text = security_doc.DOC.read_text(encoding="utf-8")
    roles = text.split("## Roles", 1)[1].split("## Permission matrix", 1)[0]

    missing = [role.value for role in Role if f"- `{role.value}`:" not in roles]

    assert missing == [], f"docs/security.md, section Roles, does not describe {missing}"


def test_endpoints_table_when_generated_then_each_route_says_public_or_its_permission() -> None:
    rows = security_doc.endpoints_markdown().splitlines()[2:]

    assert "| GET | `/api/v1/health` | public |" in rows
    assert "| GET | `/api/v1/audit` | `audit:read` |" in rows
    assert "| GET | `/api/v1/audit/verify` | `audit:read` |" in rows


def test_render_when_tables_stale_then_only_the_text_between_markers_changes() -> None:
    text = (
        "intro\n<!-- matrix:start -->\nold\ntable\n<!-- matrix:end -->\nmiddle\n"
        "<!-- endpoints:start --><!-- endpoints:end -->\nend\n"
    )

    rendered = security_doc.render(text, {"matrix": "| new |", "endpoints": "| e |"})

    assert rendered == (
        "intro\n<!-- matrix:start -->\n| new |\n<!-- matrix:end -->\nmiddle\n"
        "<!-- endpoints:start -->\n| e |\n<!-- endpoints:end -->\nend\n"
    )
    assert security_doc.render(rendered, {"matrix": "| new |", "endpoints": "| e |"}) == rendered


def test_render_when_markers_missing_then_error_names_them() -> None:
    with pytest.raises(ValueError, match="matrix:start"):
        security_doc.render("no markers here", {"matrix": "| t |"})


def test_main_when_doc_stale_then_rewritten_to_the_generated_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "security.md"
    doc.write_text(
        "# S\n<!-- matrix:start -->\n<!-- matrix:end -->\n"
        "<!-- endpoints:start -->\n| stale |\n<!-- endpoints:end -->\n",
        encoding="utf-8",
    )

    assert security_doc.main([str(doc)]) == 0
    assert security_doc.main([str(doc)]) == 0

    text = doc.read_text(encoding="utf-8")
    assert security_doc.between(text, "matrix") == security_doc.tables()["matrix"]
    assert security_doc.between(text, "endpoints") == security_doc.tables()["endpoints"]
    assert capsys.readouterr().out.splitlines() == [
        f"{doc}: tables rewritten",
        f"{doc}: tables up to date",
    ]
