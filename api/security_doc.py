"""The generated tables of `docs/security.md`: the permission matrix and each endpoint's permission.

Both come from the code (`api.auth.MATRIX`, the endpoint declarations), between marker comments
in the doc. `python -m api.security_doc` rewrites them in place; a test fails when they differ.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
REGENERATE = "python -m api.security_doc"


def endpoints_markdown() -> str:
    """Every admin API route as a Markdown table: method, path, permission (or public)."""
    from api.app import endpoints

    lines = ["| method | path | permission |", "|---|---|---|"]
    for endpoint in endpoints():
        needed = f"`{endpoint.permission.value}`" if endpoint.permission else "public"
        lines.append(f"| {endpoint.method} | `{endpoint.path}` | {needed} |")
    return "\n".join(lines)


def tables() -> dict[str, str]:
    """Each generated table by its marker name, freshly made from the code."""
    from api.auth import matrix_markdown

    return {"matrix": matrix_markdown(), "endpoints": endpoints_markdown()}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:start -->)\n?(.*?)\n?(<!-- {name}:end -->)", re.DOTALL)


def between(text: str, name: str) -> str:
    """The text between `<!-- name:start -->` and `<!-- name:end -->` (without the newlines
    next to the markers); `ValueError` if the markers are missing."""
    found = _block(name).search(text)
    if found is None:
        raise ValueError(f"no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    return found.group(2)


def render(text: str, fresh: dict[str, str]) -> str:
    """`text` with each named block replaced by its fresh table; the rest is left alone."""
    for name, table in fresh.items():
        text = _replace(text, name, table)
    return text


def _replace(text: str, name: str, table: str) -> str:
    between(text, name)  # the markers must be there
    return _block(name).sub(lambda m: f"{m.group(1)}\n{table}\n{m.group(3)}", text, count=1)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the tables in the doc (the default one, or the path given)."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else DOC
    text = path.read_text(encoding="utf-8")
    updated = render(text, tables())
    if updated == text:
        print(f"{path}: tables up to date")
        return 0
    path.write_text(updated, encoding="utf-8")
    print(f"{path}: tables rewritten")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
