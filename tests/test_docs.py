"""The README is a front door (short, every link works) and docs/ holds one file per topic."""

import re

from tests.conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_LINES = 150


def markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "sweeps" / "README.md"]


def anchors(path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_is_at_most_150_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES


def test_every_relative_link_resolves():
    broken = []
    for file in markdown_files():
        for target in LINK.findall(file.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, fragment = target.partition("#")
            resolved = (file.parent / path).resolve() if path else file
            if not resolved.exists():
                broken.append(f"{file.relative_to(ROOT)}: {target}")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{file.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_links_every_topic_file_of_docs():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert unlinked == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[a](missing.md) [b](#title) [c](#nope)\n")
    targets = LINK.findall(page.read_text())
    assert targets == ["missing.md", "#title", "#nope"] and anchors(page) == {"title"}
