"""The README's generated excerpts, rebuilt from committed outputs so they cannot go stale.

    python benchmarks/excerpts.py          # rewrite the blocks in README.md
    python benchmarks/excerpts.py --check  # exit 1 if a block differs (tests/test_excerpts.py)

A block sits between `<!-- NAME: ... -->` and `<!-- /NAME -->`; its text is made here from the
committed file it names, with today's code (the same `render` the command uses).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from vitbench.cv import render, verdict

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CV_SUMMARY = REPO / "benchmarks" / "results" / "cv_pacs.json"


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


BLOCKS = {"cv-headline": cv_headline}


def rebuilt(text: str) -> str:
    """`text` with every known block's body replaced by its generated text."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:[^\n]*-->\n)(.*?)(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}: ... --> block")
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(3), text)
    return text


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    new = rebuilt(text)
    if "--check" in argv:
        return int(new != text)
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
