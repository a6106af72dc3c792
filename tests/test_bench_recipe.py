"""benchmarks/recipe.py: its recipes are valid params, and one tiny run end to end."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import numpy as np
import click
import pytest
from benchscripts import load_benchmark
from click.testing import CliRunner
from PIL import Image



def load_script() -> ModuleType:
    """Import benchmarks/recipe.py."""
    return load_benchmark("recipe")


def test_recipes_are_valid_params() -> None:
    bench = load_script()
    current, new, conv = (bench.params_for(name, 48, 7, {}) for name in ("current", "new", "new+conv"))
    assert current.seed == new.seed == 7 and current.cnn.pretrained is False
    assert current.augment.copies == new.augment.copies == 0
    assert current.augment_online.active == {} and current.vit.tokenizer == "patch"
    assert current.vit.patch_size == 6 and current.cnn.image_size == 48
    assert new.augment_online.active and new.vit.tokenizer == "patch" and new.vit.drop_path > 0
    assert new.vit.spt and new.vit.seq_pool and conv.vit.tokenizer == "conv" and not conv.vit.spt
    assert conv.augment_online == new.augment_online and conv.cnn == current.cnn
    assert new.vit.label_smoothing > 0 and new.cnn.transfer.label_smoothing > 0
    assert new.cnn.transfer.weight_decay > 0 and new.cnn.transfer.warmup > 0


@pytest.mark.slow
def test_tiny_run_writes_the_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for c, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        folder = tmp_path / "data" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (40, 40, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "recipe.md"
    result = CliRunner().invoke(load_script().main, [
        "--data", str(tmp_path / "data"), "--image-size", "32", "--epochs", "1",
        "--epochs-of", "vit_scratch/new+conv=2", "--family", "vit_scratch", "--family", "cnn",
        "--recipe", "new+conv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    # new+conv is a ViT-only recipe: no CNN row; its own epoch count
    assert "| ViT from scratch | new+conv |" in text and "| current |" not in text
    assert "MobileNetV2" not in text.split("## Settings")[0] and "vit_scratch/new+conv: 2" in text
    counts = re.search(r"split seed 42: train (\d+), val (\d+), test (\d+)", text)
    assert counts and sum(map(int, counts.groups())) == 36   # the project's split of 3 x 12 images
    assert "'tokenizer': 'conv'" in text and "load average" in text


def test_epochs_of_is_checked() -> None:
    bench = load_script()
    assert bench.parse_epochs_of(("cnn/new=36", "vit_scratch/current=70")) == {
        "cnn/new": 36, "vit_scratch/current": 70}
    for bad in ("cnn/old=3", "cnn=3", "vit_scratch/new=0", "cnn/new=x"):
        with pytest.raises(click.BadParameter, match="FAMILY/RECIPE=N"):
            bench.parse_epochs_of((bad,))
