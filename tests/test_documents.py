"""README.md's Layout table against the tree it describes: a module or a document added without
its line there was found by hand (the runbook, six modules of app/server and app/observability);
and every relative link of the documents, to a file and to a heading in it."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_makefile import DOCUMENTS

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


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
"""A Markdown link's or image's target, its text wrapped over lines or not (the documents write
no link titles)."""
FENCED = re.compile(r"```.*?```", re.DOTALL)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def headings(document: Path) -> set[str]:
    """The anchors GitHub gives `document`'s headings: lowercased, punctuation dropped, spaces
    as hyphens, a repeated one suffixed -1, -2, ..."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    text = FENCED.sub("", document.read_text(encoding="utf-8"))  # a heading's `code` counts
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def broken_links(document: Path) -> list[str]:
    """The relative links of `document` (outside code) to no file, or to no heading of one."""
    broken = []
    for target in LINK.findall(CODE.sub("", document.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in headings(linked)
        ):
            broken.append(target)
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_a_link_to_no_file_or_no_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# Other\n\n## A section, with `code`\n\n## Twice\n## Twice\n"
    )
    document = tmp_path / "doc.md"
    links = [
        "[ok](other.md)", "[ok](other.md#a-section-with-code)", "[ok](other.md#twice-1)",
        "[ok](#doc)", "[ok](https://example.com/missing)", "`[code](missing.md)`",
        "[gone](missing.md)", "[no heading](other.md#nowhere)", "[twice](other.md#twice-2)",
        "![figure](missing.png)", "[text wrapped\nover two lines](wrapped.md)",
    ]  # fmt: skip
    document.write_text("# Doc\n\n" + "\n".join(links) + "\n")
    assert broken_links(document) == [
        "missing.md", "other.md#nowhere", "other.md#twice-2", "missing.png", "wrapped.md"
    ]  # fmt: skip


DELIMITER = re.compile(r"^\|?( *:?-{3,}:? *\|)* *:?-{3,}:? *\|? *$")
CELL_EDGE = re.compile(r"(?<!\\)\|")


def broken_tables(document: Path) -> list[int]:
    """The first line of each table of `document` (outside code blocks) that GitHub does not
    render as written: rows without a delimiter row under the first (a row split off its table
    by a blank line or a paragraph renders as text), a row with another number of cells than the
    header (cells past the header's are dropped), or a text line right after the last row
    (rendered as one more row). A `|` splits a cell inside a code span too, unless escaped."""
    lines = FENCED.sub(
        lambda block: "\n" * block.group().count("\n"), document.read_text(encoding="utf-8")
    ).split("\n")
    broken = []
    start = 0
    while start < len(lines):
        if not lines[start].startswith("|"):
            start += 1
            continue
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        rows = [len(CELL_EDGE.findall(row)) for row in lines[start:end]]
        followed = end < len(lines) and lines[end].strip() != ""
        if len(rows) < 2 or not DELIMITER.match(lines[start + 1]) or len(set(rows)) > 1 or followed:
            broken.append(start + 1)
        start = end
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_table_renders_as_one(document: Path) -> None:
    assert broken_tables(document) == []


def test_a_row_split_off_its_table_of_another_width_or_text_after_it_is_found(
    tmp_path: Path,
) -> None:
    document = tmp_path / "doc.md"
    document.write_text(
        "| a | b |\n| --- | ---: |\n| 1 | `x \\| y` |\n| 2 | 3 \\| 4 |\n\n"  # fine
        "| split off | by a blank line |\n\n"  # line 6
        "| c | d |\n| --- | --- |\n| 1 | `x | y` |\n\n"  # line 8: a row too wide
        "| e | f |\n| --- | --- |\n| 1 | 2 |\nand text right after\n\n"  # line 12
        "```\n| in code |\n```\n"
    )
    assert broken_tables(document) == [6, 8, 12]


RATIO_DOCUMENTS = ("README.md", "docs/performance.md")
"""The documents whose `make compare-http` table quotes reports/benchmarks.md's ratios to the
framework ceiling (the table whose header starts `| variant | path, bodies | req/s |`)."""
DASH = "\u2013"
"""The en dash the documents print a range with."""
CEILING_VARIANTS = ("service", "service-no-table", "service-full", "service-full-unbatched")


def ceiling_ratios(variant: str) -> list[str]:
    """`median (lowest-highest)`, an en dash between, over rounds of `variant`'s req/s and server CPU a request to the
    no-op's in the same round, from the committed reports/benchmarks.json, as the tables print
    them."""
    runs = json.loads((ROOT / "reports" / "benchmarks.json").read_text(encoding="utf-8"))["runs"]
    by = {(run["variant"], run["round"]): run for run in runs}
    rounds = sorted({run["round"] for run in runs})
    cells = []
    for key in ("requests_per_s", "cpu_s_per_1k"):
        ratios = [by[variant, r][key] / by["noop", r][key] for r in rounds]
        cells.append(f"{statistics.median(ratios):.2f} ({min(ratios):.2f}{DASH}{max(ratios):.2f})")
    return cells


@pytest.mark.parametrize("document", RATIO_DOCUMENTS)
def test_the_compare_tables_ratios_are_the_reports(document: str) -> None:
    """Each path's req/s and CPU a request against the ceiling, median and rounds' range, as
    reports/benchmarks.json gives them (a range once came from the report's rounded columns)."""
    text = (ROOT / document).read_text(encoding="utf-8")
    table = text.split("\n| variant | path, bodies | req/s |", 1)[1].split("\n\n", 1)[0]
    for variant in CEILING_VARIANTS:
        row = re.search(rf"^\| `{re.escape(variant)}` \|.*$", table, re.MULTILINE)
        assert row, (document, variant)
        quoted = [
            f"{median} ({low}{DASH}{high})"
            for median, low, high in re.findall(
                r"(?:\*\*)?(\d+\.\d\d)(?:\*\*)? \((\d+\.\d\d)\u2013(\d+\.\d\d)\)", row.group(0)
            )
        ]
        assert quoted == ceiling_ratios(variant), (document, variant)
