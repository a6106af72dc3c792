"""benchmarks/recipe.py: its overrides are params.yaml's as the stages read them, and one tiny run
through the stage scripts end to end."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from benchscripts import colour_folders, load_benchmark
from click.testing import CliRunner


def load_script() -> ModuleType:
    """Import benchmarks/recipe.py."""
    return load_benchmark("recipe")


def test_overrides_are_params_yaml_plus_the_stated_keys(tmp_path: Path) -> None:
    bench = load_script()
    from common import pipeline_params

    from vitbench.models.registry import load_params

    extra = {"vit": {"patch_size": 4}, "train": {"batch_size": 16}}
    params = pipeline_params(bench.overrides_for(tmp_path, 64, 30, 14, extra))
    default = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert params.cnn.pretrained is False and params.augment.copies == 0
    assert (params.vit.epochs, params.cnn.epochs, params.vit_ft.epochs) == (30, 14, None)
    assert params.vit.image_size == params.cnn.image_size == 64 and params.vit.patch_size == 4
    assert params.vit.tokenizer == default.vit.tokenizer and params.train.epochs == default.train.epochs
    assert params.augment_online == default.augment_online and params.vit.lr == default.vit.lr


@pytest.mark.slow
def test_tiny_run_through_the_stages_writes_the_table(tmp_path: Path) -> None:
    data = colour_folders(tmp_path)
    out = tmp_path / "recipe.md"
    result = CliRunner().invoke(load_script().main, [
        "--data", str(data), "--image-size", "32", "--vit-epochs", "2",
        "--family", "vit", "--set", "vit.patch_size=4", "--set", "vit.layers=1",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    row = re.search(r"\| vit_scratch \| ([\d.]+) \| [\d.]+ \| 2 \| \d+ \| [\d,]+ \|", text)
    assert row and 0 <= float(row.group(1)) <= 1 and "cnn_transfer" not in text
    counts = re.search(r"split seed 42: train (\d+), val (\d+), test (\d+)", text)
    assert counts and sum(map(int, counts.groups())) == 36   # the project's split of 3 x 12 images
    # the recipe evaluate wrote: conv tokens of stride 4, every planned epoch (cosine: no early stop)
    assert "'tokens': 'conv tokens, stride 4: 8x8 = 64'" in text
    assert "'epochs': 2, 'early_stopping': None" in text and "load average" in text
