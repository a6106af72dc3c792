"""Benchmark: which pretrained ViT should the demo default to? vit-keras' ViT-B/32 (the default
before) against DeiT-Ti/16 with the weights `hf-hub:timm/deit_tiny_patch16_224.fb_in1k` holds
(the default now).

On the demo's own data (params.yaml's dataset: the synthetic cartoon set) the pipeline's stage
scripts prepare one split (`common.prepare`), then `finetune_vit` and `evaluate` run for each
candidate (`common.train_and_evaluate`), everything else params.yaml's:

- ViT-B/32 with vit-keras' `imagenet21k+imagenet2012` weights (`pretrained: auto`: offline, random
  init when they cannot be downloaded; the metrics say which);
- DeiT-Ti/16 with `--weights` (a local file holding the hub checkpoint's tensors, e.g. the
  vit_jax `.npz` of ../shared/weights, or the timm `.safetensors`), `pretrained: true`;
- the same DeiT-Ti/16 from random weights (what an offline user of that default gets).

The markdown goes to stdout and `--out`, with the machine and its load.

    python benchmarks/demo_vit.py --weights ../shared/weights/deit_tiny_patch16_224.npz
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import pipeline_params, prepare, split_counts, train_and_evaluate, write_table_report  # noqa: E402


DEFAULT_OUT = HERE / "results" / "demo_vit.md"
DEFAULT_WEIGHTS = HERE.parent.parent / "shared" / "weights" / "deit_tiny_patch16_224.npz"
DEIT = {"variant": "ti16", "blocks": None, "normalize": "torch"}
B32 = {"variant": "b32", "weights": "imagenet21k+imagenet2012", "blocks": None, "normalize": "tf",
       "pretrained": "auto"}


def _row(name: str, vit_ft: dict[str, Any], paths: Any) -> dict[str, Any]:
    started = time.perf_counter()
    metrics = train_and_evaluate("vit_ft", pipeline_params({"vit_ft": vit_ft}), paths)
    seconds = time.perf_counter() - started
    t, f = metrics["vit_transfer"], metrics["vit_finetuned"]
    print(f"{name}: {t['accuracy']:.3f} / {f['accuracy']:.3f} in {seconds:.0f} s", flush=True)
    return {"vit_ft": name, "model": f["display_name"], "pretrained": f["pretrained"],
            "params": f"{f['params_total']:,}", "size MB": f"{f['size_mb']:.0f}",
            "transfer accuracy": f"{t['accuracy']:.3f}",
            "fine-tuned accuracy": f"{f['accuracy']:.3f} ({f['accuracy_ci_low']:.3f}-{f['accuracy_ci_high']:.3f})",
            "train s (both phases)": f"{f['train_seconds']:.0f}",
            "finetune_vit + 2 evaluate, wall s": f"{seconds:.0f}"}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=DEFAULT_WEIGHTS,
              help="DeiT-Ti/16's ImageNet weights as a local file (.npz or timm .safetensors).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_OUT)
def main(weights: Path, out: Path) -> None:
    """Train and score ViT-B/32 and DeiT-Ti/16 on the demo's data; write a table."""
    from vitbench.core.stage import setup_logging

    setup_logging()
    started, load_start = time.perf_counter(), os.getloadavg()
    base = pipeline_params()
    with tempfile.TemporaryDirectory(prefix="demo-vit-") as tmp:
        paths = prepare(base, Path(tmp) / "project")
        counts = split_counts(paths)
        rows = [_row("ViT-B/32, vit-keras weights", B32, paths),
                _row("DeiT-Ti/16, ImageNet weights", {**DEIT, "weights": str(weights), "pretrained": True}, paths),
                _row("DeiT-Ti/16, random init", {**DEIT, "pretrained": False}, paths)]
    settings = (
        f"Data: params.yaml's dataset ({base.dataset.kind}), train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']}. params.yaml otherwise ({base.train.epochs} epochs a phase, "
        f"vit_ft.image_size {base.vit_ft.image_size}). DeiT-Ti/16's weights: `{weights.name}`, the "
        "tensors of `hf-hub:timm/deit_tiny_patch16_224.fb_in1k`. Accuracy on the test split, the "
        "fine-tuned model's with its Wilson 95% interval.")
    text = write_table_report(out, "The demo's pretrained ViT: ViT-B/32 against DeiT-Ti/16",
                              "benchmarks/demo_vit.py", started, load_start, settings, rows)
    click.echo(text)


if __name__ == "__main__":
    main()
