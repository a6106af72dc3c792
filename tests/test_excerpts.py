"""The README's generated excerpts match what today's code makes of the committed outputs, and
the committed cross-validation summary is consistent with itself (intervals and tests recomputed
from its counts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scipy.stats import binomtest

from vitbench.core import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import excerpts  # noqa: E402


@pytest.mark.parametrize("doc", list(excerpts.BLOCKS), ids=lambda d: d.name)
def test_generated_blocks_are_current(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert excerpts.rebuilt(text, excerpts.BLOCKS[doc]) == text, \
        f"run `python benchmarks/excerpts.py` and commit {doc.name}"


def test_the_committed_cv_summary_agrees_with_its_counts() -> None:
    summary = json.loads(excerpts.CV_SUMMARY.read_text(encoding="utf-8"))
    for model in summary["models"].values():
        assert model["total"] == summary["test_images"]
        assert model["correct"] == sum(f["correct"] for f in model["per_fold"])
        ci = stats.accuracy_interval(model["correct"], model["total"])
        assert (model["ci_low"], model["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert model["chance_p"] == pytest.approx(
            stats.chance_p(model["correct"], model["total"], summary["chance"]), rel=1e-9)
    for pair in (summary["versus"], *summary["pairwise"]):
        assert pair["a_minus_b"] == pytest.approx((pair["only_a"] - pair["only_b"]) / pair["images"])
        assert pair["p_value"] == pytest.approx(binomtest(pair["only_a"], pair["only_a"] + pair["only_b"]).pvalue)
