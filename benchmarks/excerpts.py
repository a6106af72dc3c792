"""The README's generated excerpts, rebuilt from committed outputs so they cannot go stale.

    python benchmarks/excerpts.py          # rewrite the blocks in README.md and docs/usage.md
    python benchmarks/excerpts.py --check  # exit 1 if a block differs (tests/test_excerpts.py)

A block sits between `<!-- NAME: ... -->` and `<!-- /NAME -->`; its text is made here from the
committed file it names, with today's code (the same `render` the command uses).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from vitbench.experiments.cv import render, verdict

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
USAGE = REPO / "docs" / "usage.md"
CV_SUMMARY = REPO / "benchmarks" / "results" / "cv_pacs.json"
COMPARE_MD = REPO / "metrics" / "compare.md"


def cv_headline(summary_file: Path = CV_SUMMARY) -> str:
    """The cross-validated PACS table and verdict of `vitbench cv` (its summary.md without the
    title), the figure and the command that made it."""
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    summary["verdict"] = verdict(summary)
    body = render(summary).split("\n", 1)[1].strip()
    return "\n".join([
        "MobileNetV2 against DeiT-Ti/16 (ViT-Ti/16 architecture), both with real ImageNet weights, on",
        "PACS cartoon (7 classes, 2,344 images), preset `matched` at 112 px, 5-fold cross-validation:",
        "every image tested once ([benchmarks/results/cv_pacs.md](benchmarks/results/cv_pacs.md) has",
        "the settings, wall time and machine).",
        "",
        body,
        "",
        "![5-fold CV on PACS cartoon](docs/img/cv_pacs.png)",
    ])


def compare_excerpt(report: Path = COMPARE_MD) -> str:
    """The demo report's conclusion and table of all models, quoted, from the committed
    metrics/compare.md (`dvc repro` on the default params)."""
    text = report.read_text(encoding="utf-8")
    start, end = text.index("## Conclusion"), text.index("## Paired tests")
    return "\n".join(f"> {line}".rstrip() for line in text[start:end].strip().splitlines())


BLOCKS = {README: {"cv-headline": cv_headline}, USAGE: {"compare-excerpt": compare_excerpt}}


def rebuilt(text: str, blocks: dict) -> str:
    """`text` with each of `blocks`' bodies replaced by its generated text."""
    for name, make in blocks.items():
        pattern = re.compile(rf"(<!-- {name}:[^\n]*-->\n)(.*?)(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"no <!-- {name}: ... --> block")
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(3), text)
    return text


def main(argv: list[str]) -> int:
    stale = 0
    for doc, blocks in BLOCKS.items():
        text = doc.read_text(encoding="utf-8")
        new = rebuilt(text, blocks)
        stale += new != text
        if "--check" not in argv:
            doc.write_text(new, encoding="utf-8")
    return int(stale > 0 and "--check" in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
