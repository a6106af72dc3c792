"""Benchmark: equal footing. Is a verdict between a CNN and a ViT that see different input sizes
one of models or of pixels?

On a folder of images (default: PACS cartoon) the pipeline's own stage scripts prepare one split
(`common.prepare`), then train and score (`common.train_and_evaluate`: the training stage, then
`evaluate`) the from-scratch pair at three footings, everything else params.yaml's:

- the CNN at `cnn.image_size` (96 px), the ViT at `--small` (48 px);
- both at the CNN's size;
- both at `--small`.

The ViT keeps params.yaml's token grid at every size (`vit.patch_size` scaled with
`vit.image_size`: 12 x 12 tokens, stride 4 at 48 px, 8 at 96 px), so the transformer's cost stays
and only the conv tokenizer sees more or fewer pixels.

Both CNN ids are trained (train_cnn); the row is `cnn_finetuned` (both phases), from random init
(`cnn.pretrained: false`) as `vit_scratch` is. Each pair is compared with McNemar's exact test
on the same test images. The markdown goes to stdout and `--out`, with the machine and its load.

    python benchmarks/footing.py --data ../shared/datasets/pacs_cartoon
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import PACS, pipeline_params, prepare, split_counts, train_and_evaluate, write_table_report  # noqa: E402

from vitbench.core import stats  # noqa: E402

DEFAULT_OUT = HERE / "results" / "footing.md"
CNN, VIT = "cnn_finetuned", "vit_scratch"


def overrides(data: Path, seed: int, cnn_size: int | None = None, vit_size: int | None = None,
              patch: int | None = None) -> dict[str, Any]:
    """params.yaml's changes: the data, the seed, the CNN from random init, no figures that do not
    change the accuracy, and the sizes given (None: params.yaml's)."""
    cnn: dict[str, Any] = {"pretrained": False}
    vit: dict[str, Any] = {}
    if cnn_size is not None:
        cnn["image_size"] = cnn_size
    if vit_size is not None:
        vit.update(image_size=vit_size, patch_size=patch)
    return {"seed": seed, "dataset": {"source": str(data)}, "cnn": cnn, "vit": vit,
            "evaluate": {"attention_samples": 0, "robustness": False}}


def _run(family: str, model_id: str, params: Any, paths: Any) -> dict[str, Any]:
    metrics = train_and_evaluate(family, params, paths)[model_id]
    preds = pd.read_csv(paths.eval_plots(model_id) / "predictions.csv",
                        dtype=str, keep_default_na=False).set_index("path")
    print(f"{metrics['display_name']} at {metrics['image_size']} px: {metrics['accuracy']:.3f}", flush=True)
    return {"metrics": metrics, "correct": preds["actual"] == preds["predicted"]}


def _row(name: str, cnn: dict[str, Any], vit: dict[str, Any]) -> dict[str, Any]:
    test = stats.mcnemar_exact(vit["correct"].to_numpy(), cnn["correct"].loc[vit["correct"].index].to_numpy())
    c, v = cnn["metrics"], vit["metrics"]
    return {"footing": name, "CNN px": c["image_size"], "ViT px": v["image_size"],
            "CNN accuracy": f"{c['accuracy']:.3f} ({c['accuracy_ci_low']:.3f}-{c['accuracy_ci_high']:.3f})",
            "ViT accuracy": f"{v['accuracy']:.3f} ({v['accuracy_ci_low']:.3f}-{v['accuracy_ci_high']:.3f})",
            "ViT - CNN": f"{(v['accuracy'] - c['accuracy']) * 100:+.1f} pt", "McNemar p": f"{test.p_value:.2g}",
            "train s (CNN, ViT)": f"{c['train_seconds']:.0f}, {v['train_seconds']:.0f}"}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--data", type=click.Path(path_type=Path, file_okay=False), default=PACS,
              help="Folder with one sub-folder of images per class.")
@click.option("--seed", type=click.IntRange(min=0), default=1)
@click.option("--small", type=click.IntRange(min=8), default=48,
              help="The smaller input size (the CNN's cnn.image_size is the larger).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_OUT)
def main(data: Path, seed: int, small: int, out: Path) -> None:
    """Train the from-scratch CNN and ViT at the CNN's input size and at `--small`; write a table."""
    from vitbench.core.stage import setup_logging

    setup_logging()
    started, load_start = time.perf_counter(), os.getloadavg()
    base = pipeline_params(overrides(data, seed))
    big = base.cnn.image_size

    def vit_at(size: int) -> Any:   # the token grid of params.yaml's vit section kept
        return pipeline_params(overrides(data, seed, vit_size=size,
                                         patch=base.vit.patch_size * size // base.vit.image_size))

    with tempfile.TemporaryDirectory(prefix="footing-") as tmp:
        paths = prepare(base, Path(tmp) / "project")
        counts = split_counts(paths)
        cnn_big = _run("cnn", CNN, base, paths)
        vit_small = _run("vit", VIT, vit_at(small), paths)
        vit_big = _run("vit", VIT, vit_at(big), paths)
        cnn_small = _run("cnn", CNN, pipeline_params(overrides(data, seed, cnn_size=small)), paths)
    rows = [_row(f"CNN at {big} px, ViT at {small} px", cnn_big, vit_small),
            _row(f"both at {big} px", cnn_big, vit_big),
            _row(f"both at {small} px", cnn_small, vit_small)]
    settings = (
        f"Data: `{data}`, split seed {seed}: train {counts['train']}, val {counts['val']}, test {counts['test']}. "
        f"params.yaml otherwise ({base.train.epochs} epochs, batch {base.train.batch_size}, online "
        "augmentation); the CNN is MobileNetV2 fine-tuned from random init (cnn_finetuned, "
        "`cnn.pretrained: false`), the ViT the from-scratch one (vit_scratch). Accuracy on the test "
        "split with its Wilson 95% interval; McNemar's exact test on the same test images.")
    text = write_table_report(out, "Equal footing: the from-scratch CNN and ViT at each other's input size",
                              "benchmarks/footing.py", started, load_start, settings, rows)
    click.echo(text)


if __name__ == "__main__":
    main()
