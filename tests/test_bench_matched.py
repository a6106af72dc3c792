"""benchmarks/matched.py: the contrast runs (random-init pair, from-scratch ViT) go through the
stage scripts, the metrics say pretrained false, and the table labels them from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from benchscripts import colour_folders, load_benchmark
from click.testing import CliRunner


def test_random_init_overrides_keep_the_pair_and_its_inputs() -> None:
    bench = load_benchmark("matched")
    from common import pipeline_params, pipeline_raw

    runs = dict(bench.runs_of("random-init", ()))
    params = pipeline_params(bench.merge(bench.overrides_for(Path("/x"), 112, {}), runs["vit_ft"]),
                             preset=bench.PRESET)
    assert params.cnn.pretrained is False and params.vit_ft.pretrained is False
    assert (params.vit_ft.variant, params.vit_ft.normalize, params.cnn.arch) == ("ti16", "torch",
                                                                                  "mobilenetv2")
    assert params.cnn.image_size == params.vit_ft.image_size == 112
    (family, more), = bench.runs_of("scratch", ())
    assert family == "vit" and more["augment_online"] == pipeline_raw()["augment_online"]
    assert dict(bench.runs_of("real", ("cnn",))) == {"cnn": {}}


@pytest.mark.slow
def test_contrast_runs_through_the_stages_write_the_second_table(tmp_path: Path) -> None:
    data = colour_folders(tmp_path)
    out = tmp_path / "matched.md"
    result = CliRunner().invoke(load_benchmark("matched").main, [
        "--data", str(data), "--image-size", "32", "--seeds", "42",
        "--family", "vit_ft", "--runs", "random-init", "--runs", "scratch",
        "--set", "train.epochs=1", "--set", "vit_ft.epochs=1", "--set", "vit_ft.blocks=1",
        "--set", "vit.layers=1",
        "--set", "vit.image_size=24", "--set", "vit.patch_size=4", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    text = out.read_text()
    contrast = text.split("## Contrast")[1].split("## Fine-tuned")[0]
    cell = r" \| ([\d.]+) \| [\d.]+ \| 1 \| \d+ \|"
    for name, px in (("ViT-Ti/16 \\(1 block\\) \\(transfer\\) random init", 32),
                     ("ViT-Ti/16 \\(1 block\\) \\(fine-tuned\\) random init", 32),
                     ("ViT from scratch[^|]*", 24)):
        row = re.search(rf"\| {name} \| {px}{cell}", contrast)
        assert row and 0 <= float(row.group(1)) <= 1, (name, contrast)
    assert "| model |" not in text.split("## Contrast")[0]     # no real-weights rows were run
    assert "DeiT" not in contrast and "MobileNetV2 (" not in text       # nor the CNN (--family)
    assert "'flip': True" in text.split("- vit_scratch:")[1].splitlines()[0]   # its own recipe
    assert "(no complete pair yet)" in text and "load average" in text
    assert "random-init: vit_ft + `{'cnn': {'pretrained': False}, 'vit_ft': {'pretrained': False" in text
