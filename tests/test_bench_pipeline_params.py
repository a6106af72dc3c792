"""The benchmark scripts measure the pipeline itself: each runs on a tiny synthetic dataset,
and the params its stages read are params.yaml's plus exactly the overrides it states."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from benchscripts import BENCHMARKS, load_benchmark

from vitbench.core.config import to_dict
from vitbench.models.registry import params_from_dict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))


def expected(overrides: dict[str, Any]) -> dict[str, Any]:
    """params.yaml merged with `overrides` (written out here, independently of the scripts)."""
    def merge(base: dict, changes: dict) -> dict:
        out = dict(base)
        for key, value in changes.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(
                base.get(key), dict) else value
        return out

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    return to_dict(params_from_dict(merge(raw, overrides)))


def test_pipeline_params_is_params_yaml_plus_overrides() -> None:
    from common import pipeline_params

    assert to_dict(pipeline_params()) == expected({})
    changes = {"seed": 3, "vit": {"layers": 1}, "train": {"epochs": 2}}
    assert to_dict(pipeline_params(changes)) == expected(changes)


@pytest.mark.slow
def test_vit_remedies_runs_the_stages_on_params_yaml_plus_its_overrides(tmp_path: Path) -> None:
    bench = load_benchmark("vit_remedies")
    options = {"image_size": 16, "patch_size": 4, "layers": 1, "batch_size": 16}
    settings = {"data": "synthetic", "seeds": (7,), "configs": ("warmup",), "max_per_class": 6,
                "budget_minutes": 5.0, "epochs": 1, "options": options}
    params = bench.params_for(bench.overrides("synthetic", 7, 1, options))
    report = bench.run_benchmark(params, settings, tmp_path)
    assert list(report["runs"]["config"]) == ["+warm-up cosine"]
    assert 0.0 <= report["runs"]["test acc"].iloc[0] <= 1.0
    stated = {"seed": 7, "dataset": {"source": "synthetic"}, "augment": {"copies": 0},
              "train": {"epochs": 1, "patience": 1, "mixed_precision": False, "batch_size": 16},
              "vit": {"tokenizer": "patch", "image_size": 16, "patch_size": 4, "layers": 1,
                      "spt": False, "lsa": False},
              "evaluate": {"attention_samples": 0, "robustness": False, "batch_size": 16}}
    assert to_dict(report["settings"]["used"]["warmup"]) == expected(stated)
    assert "online augmentation: flip, translate 0.1" in bench.render(report)


def _sets(changes: dict[str, Any], prefix: str = "") -> list[str]:
    """`changes` as `--set key=value` arguments (values in YAML flow style)."""
    out = []
    for key, value in changes.items():
        if isinstance(value, dict):
            out += _sets(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


@pytest.mark.slow
def test_run_and_throughput_use_params_yaml_plus_the_stated_sets(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from common import used_params
    from dvc_project import TINY

    from vitbench.core.paths import Paths

    bench = load_benchmark("run")
    out = tmp_path / "latest.md"
    args = ["--skip-repro", "--remedies-minutes", "0", "--steps", "1", "--family", "vit",
            "--workdir", str(tmp_path), "--out", str(out)]
    for item in _sets(TINY):
        args += ["--set", item]
    result = CliRunner().invoke(bench.main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert to_dict(used_params(Paths(tmp_path / "bench"))) == expected(TINY)
    report = out.read_text()
    assert "`train.epochs=1`" in report and "ViT from scratch" in report
    row = next(line for line in report.splitlines() if line.startswith("| ViT from scratch"))
    assert f"| {TINY['vit']['image_size']}px | {TINY['train']['batch_size']} |" in row


def test_a_bad_set_is_a_usage_error_naming_the_key(tmp_path: Path) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(load_benchmark("run").main, ["--set", "vit.layers=0", "--out",
                                                             str(tmp_path / "x.md")])
    assert result.exit_code == 2 and "vit.layers" in result.output
    assert not (tmp_path / "x.md").exists()


def test_footing_trains_both_models_at_both_input_sizes() -> None:
    """benchmarks/footing.py: params.yaml plus the data, the seed, the CNN from random init and
    the sizes of each footing; the ViT keeps params.yaml's token grid at 48 px."""
    bench = load_benchmark("footing")
    from common import pipeline_params

    base = pipeline_params(bench.overrides(Path("photos"), 3))
    assert to_dict(base) == expected({
        "seed": 3, "dataset": {"source": "photos"}, "cnn": {"pretrained": False},
        "evaluate": {"attention_samples": 0, "robustness": False}})
    grid = base.vit.image_size // base.vit.patch_size
    vit = pipeline_params(bench.overrides(Path("photos"), 3, vit_size=48,
                                          patch=base.vit.patch_size * 48 // base.vit.image_size)).vit
    assert (vit.image_size, vit.image_size // vit.patch_size) == (48, grid)       # the same tokens
    assert pipeline_params(bench.overrides(Path("photos"), 3, cnn_size=48)).cnn.image_size == 48


def test_demo_vit_candidates_are_valid_vit_ft_sections() -> None:
    """benchmarks/demo_vit.py's candidates validate as params.yaml's vit_ft plus them; ViT-B/32
    at the demo's input size."""
    bench = load_benchmark("demo_vit")
    from common import pipeline_params

    for section in ({**bench.DEIT, "weights": "deit_tiny_patch16_224.npz", "pretrained": True},
                    {**bench.DEIT, "pretrained": False}):
        vit_ft = pipeline_params({"vit_ft": section}).vit_ft
        assert (vit_ft.variant, vit_ft.blocks, vit_ft.normalize) == ("ti16", None, "torch")
    b32 = pipeline_params({"vit_ft": bench.B32}).vit_ft
    assert (b32.variant, b32.weights, b32.image_size) == ("b32", "imagenet21k+imagenet2012", 64)
