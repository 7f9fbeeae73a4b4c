"""The README and docs/: every relative link reaches a file, and every #anchor a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testing import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no such heading")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_link_reaches_its_target(page):
    assert broken_links(page) == []


def test_the_readme_links_every_page_of_docs():
    readme = (REPO / "README.md").read_text()
    unlinked = [page.name for page in PAGES[1:] if f"docs/{page.name}" not in readme]
    assert unlinked == []


def test_the_readme_is_one_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 120


def test_the_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[a](missing.md) [b](#title) [c](#nowhere) [d](https://x.example)\n")
    assert broken_links(page) == ["missing.md: no such file", "#nowhere: no such heading"]
