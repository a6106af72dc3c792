"""compare.md, compare.json and compare_detail.json as `dvc repro` writes them for a user whose
class folders are named like markup and whose CNNs never learned (learning rate 1e-9): the names
show as text, and the CNNs are marked at chance and void the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from conftest import HOSTILE
from vitbench.models.registry import model_ids

MODEL_IDS = model_ids()

pytestmark = pytest.mark.slow

ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


@pytest.fixture(scope="module")
def reproduced(full_dag: Path) -> Path:
    """The suite's full `dvc repro` on tiny params (conftest.full_dag): a folder source with the
    HOSTILE class names, the CNNs' learning rates at 1e-9 (they stay at their random initial
    weights). Only read here."""
    return full_dag


def read(project: Path, name: str) -> dict:
    return json.loads((project / "metrics" / name).read_text())


def test_every_model_has_its_chance_p_from_its_own_predictions(reproduced: Path) -> None:
    import pandas as pd

    for model_id in MODEL_IDS:
        preds = pd.read_csv(reproduced / "plots" / model_id / "eval" / "predictions.csv",
                            dtype=str, keep_default_na=False)
        majority = preds["actual"].value_counts().max() / len(preds)
        correct = int((preds["actual"] == preds["predicted"]).sum())
        expected = stats.binomtest(correct, len(preds), majority, alternative="greater").pvalue
        assert read(reproduced, f"{model_id}.json")["chance_p"] == pytest.approx(expected, rel=1e-12)


def test_cnns_left_at_their_initial_weights_are_at_chance_and_void_the_verdict(reproduced: Path) -> None:
    flat, detail = read(reproduced, "compare.json"), read(reproduced, "compare_detail.json")
    md = (reproduced / "metrics" / "compare.md").read_text()
    assert {"cnn_transfer", "cnn_finetuned"} <= set(detail["models_at_chance"])
    assert flat["models_at_chance"] == len(detail["models_at_chance"]) >= 2
    assert all(isinstance(v, (int, float)) or v is None for v in flat.values())   # numbers only
    versus = detail["cnn_vs_vit"]
    assert detail["winner"] == versus["winner"] == "void"
    assert versus["best_cnn"] in versus["at_chance"]
    assert flat["cnn_vs_vit_p"] == versus["p_value"]                             # unrounded
    assert not {"cnn_transfer", "cnn_finetuned"} & set(detail["best"]["accuracy"]["models"])
    verdict = next(line for line in md.splitlines() if line.startswith("- **CNN or ViT?**"))
    assert "**no verdict**" in verdict and "a training failure" in verdict
    assert "is better" not in verdict
    for name in ("VGG16 (transfer)", "VGG16 (fine-tuned)"):
        assert f"| {name} (at chance) " in md                                   # every table row
    calibration = next(line for line in md.splitlines() if line.startswith("- Calibration"))
    assert "VGG16" not in calibration
    assert "CNNs degrade less" not in md


def test_class_names_that_are_markup_are_escaped_in_compare_md(reproduced: Path) -> None:
    from vitbench.data.manifest import read_labels

    classes = read_labels(reproduced / "data" / "split" / "labels.json")
    assert set(HOSTILE.values()) <= set(classes)          # fetch and clean kept the names
    md = (reproduced / "metrics" / "compare.md").read_text()
    assert "<img" not in md
    assert md.count("**bold**") == md.count("per column in **bold**") == 1
    assert f"\n| {ESCAPED} " in md and "\n| \\*\\*bold\\*\\* " in md    # the per-class table
