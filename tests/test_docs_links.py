"""README.md, docs/*.md and benchmarks/results/*.md: every relative link and #anchor resolves
(sections move between them; a moved section's links must follow)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted(REPO.glob("docs/*.md")), *sorted(REPO.glob("benchmarks/results/*.md")))


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of the headings of `path`, outside code blocks."""
    found, fence = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        match = re.match(r"^#+ (.*)", line)
        if match and not fence:
            found.add(slug(match.group(1)))
    return found


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """The relative links of `path` whose file or anchor does not exist, as "file: target"."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    bad = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://|^mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            bad.append(f"{path.relative_to(root)}: {target}")
    return bad


def test_every_relative_link_resolves() -> None:
    assert not [b for doc in DOCS for b in broken_links(doc)]


def test_the_check_sees_a_broken_anchor_and_a_missing_file(tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# The title\n\n[ok](#the-title) [bad](#nope) [file](missing.md) [x](https://x.org)\n"
                   "```\n[in code](#ignored)\n```\n")
    assert broken_links(doc, tmp_path) == ["a.md: #nope", "a.md: missing.md"]
