"""README.md's Layout table against the tree it describes: a module or a document added without
its line there was found by hand (the runbook, six modules of app/server and app/observability)."""

from __future__ import annotations

import re

from tests.conftest import ROOT

LISTED_PACKAGES = ("", "inference", "rest", "server", "observability")
"""app/ and the subpackages whose modules the `app/` row names one by one (`grpc/` is named as a
whole: app/grpc/README.md describes it)."""


def layout_row(path: str) -> str:
    """The cell describing `path` in README.md's Layout table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^\| `{re.escape(path)}` \| (.+) \|$", layout, re.MULTILINE)
    assert match, path
    return match.group(1)


def unlisted_modules(row: str) -> list[str]:
    return [
        str(module.relative_to(ROOT))
        for package in LISTED_PACKAGES
        for module in sorted((ROOT / "app" / package).glob("*.py"))
        if module.stem != "__init__" and f"`{module.stem}`" not in row
    ]


def test_the_layout_names_every_module_of_app() -> None:
    row = layout_row("app/")
    assert unlisted_modules(row) == []
    assert unlisted_modules(row.replace("`loop_lag`", "")) == ["app/observability/loop_lag.py"]


def test_the_layout_links_every_document_of_docs() -> None:
    row = layout_row("docs/")
    documents = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert "runbook.md" in documents
    assert [name for name in documents if f"(docs/{name})" not in row] == []
