"""Benchmark: the matched CNN-vs-ViT pair with real ImageNet weights on both sides.

MobileNetV2 (`cnn.weights`: the shared no-top .h5, 3.5 M parameters, ~72% ImageNet top-1)
against DeiT-Ti/16 (`vit_ft.variant: ti16`, `vit_ft.weights`: the shared DeiT .npz, 5.7 M
parameters, 72.2% top-1), each transfer (frozen base, feature cache) and fine-tuned, through the
pipeline: params are params.yaml + the `matched` preset + the overrides stated below and in the
results (`common.pipeline_params`, validated by `config.load_params` as a stage does); the data
is prepared once by the fetch, clean, split and augment stage scripts in a scratch project
(split seed 42); each (size, seed) runs the train_cnn and finetune_vit stage scripts and the
evaluate stage script for each of their models (`common.train_and_evaluate`). Accuracy, train
seconds, inference images/s and size are metrics/<id>.json as evaluate writes them; McNemar
compares the two fine-tuned models' plots/<id>/eval/predictions.csv (the same test images).

Overrides, the same for every run: the dataset folder, both image sizes (`--image-size`),
`seed`, `evaluate.robustness: false` (not reported here). `--set SECTION.KEY=VALUE` adds more.
`--cache-check` runs finetune_vit once more (first size, first seed) with
`vit_ft.feature_cache: false`, to measure the feature cache's speed-up on the transfer phase.

`--runs` picks what runs per size and seed (default `real`): `real` is the matched pair above;
`random-init` the contrast without pretraining: the same two architectures and recipes with
`cnn.pretrained: false` and `vit_ft.pretrained: false` (random weights; metrics say pretrained
false, and the table labels such rows "random init" from them; `vit_ft.normalize: torch` as the
DeiT file gets, and the default weights name, so the ViT is named ViT-Ti/16); `scratch` the project's default
from-scratch ViT (train_vit) on the same split, with its own recipe: params.yaml's
`augment_online` (the preset turns it off for the pretrained pair) and the `vit` section, so its
size and epochs come from `--set vit.image_size=...`, `--set vit.epochs=...` (its px column is
its own `vit.image_size`). Contrast rows go in a second table.

    nice -n 5 python benchmarks/matched.py --image-size 112 --seeds 42 --seeds 43 --cache-check
    nice -n 12 python benchmarks/matched.py --image-size 112 --seeds 42 --runs random-init \
        --runs scratch --set vit.image_size=64 --set vit.patch_size=8 --set vit.epochs=30 \
        --out benchmarks/results/matched_contrast.md
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (PACS, REPO, machine_section, merge, parse_sets,  # noqa: E402
                    pipeline_params, pipeline_raw, prepare, run_and_write, split_counts,
                    train_and_evaluate)

from vitbench.core.fsutil import read_json  # noqa: E402

log = logging.getLogger("vitbench.benchmarks.matched")

WEIGHTS = REPO.parent / "shared" / "weights"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "matched.md"
PRESET = "matched"
SPLIT_SEED = 42
FAMILIES = ("cnn", "vit_ft")
RUNS = ("real", "random-init", "scratch")


def runs_of(kind: str, families: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(family, extra overrides) of one `--runs` kind (module docstring)."""
    if kind == "scratch":   # its own recipe: params.yaml's online augmentation, not the preset's
        return [("vit", {"augment_online": pipeline_raw()["augment_online"]})]
    # random weights, the same inputs (DeiT's ImageNet mean/std); the default weights name, so
    # the model is named ViT-Ti/16, not by weights it did not load
    random = {"cnn": {"pretrained": False},
              "vit_ft": {"pretrained": False, "weights": "imagenet21k+imagenet2012",
                         "normalize": "torch"}}
    return [(f, random if kind == "random-init" else {}) for f in families or FAMILIES]


def overrides_for(data: Path, image_size: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The stated overrides on params.yaml + the preset (module docstring), `extra` last."""
    base = {"dataset": {"source": str(data)},
            "cnn": {"image_size": image_size, "weights": str(WEIGHTS / "mobilenet_v2_1.0_224_no_top.h5")},
            "vit_ft": {"image_size": image_size,
                       "weights": str(WEIGHTS / "deit_tiny_patch16_224.npz")},
            "evaluate": {"robustness": False}}
    return merge(base, extra)


def correct(paths: Any, model_id: str) -> pd.Series:
    """Per test image (by path): whether models/<id> got it right (plots/<id>/eval/predictions.csv)."""
    table = pd.read_csv(paths.eval_plots(model_id) / "predictions.csv").set_index("path")
    return table["actual"] == table["predicted"]


def run(family: str, seed: int, overrides: dict[str, Any], paths: Any,
        note: str = "") -> list[dict[str, Any]]:
    """One family's training stage and the evaluate stage of each of its models: one row per
    model, from metrics/<id>.json and models/<id>/record.json (read before the next run)."""
    params = pipeline_params({**overrides, "seed": seed}, preset=PRESET)
    size = getattr(params, family).image_size   # the from-scratch ViT: its own size
    rows = []
    for model_id, metrics in train_and_evaluate(family, params, paths).items():
        record = read_json(paths.model(model_id) / "record.json")
        cache = record.get("feature_cache")
        rows.append({
            "model": metrics["display_name"], "id": model_id, "family": family, "size": size,
            "seed": seed, "recipe": record.get("recipe", {}),
            "note": note, "accuracy": float(metrics["accuracy"]),
            "train_s": float(metrics["train_seconds"]), "epochs": int(metrics["epochs_run"]),
            "img_s": float(metrics["infer_images_per_second"]),
            "size_mb": float(metrics["size_mb"]), "params": int(metrics["params_total"]),
            "pretrained": bool(metrics["pretrained"]), "preprocess": record["preprocess"],
            "cache_s": float(cache["seconds"]) if cache else None,
            "correct": correct(paths, model_id)})
        log.info("%s %dpx seed %d%s: accuracy %.3f, %.0f s", model_id, size, seed, note,
                 rows[-1]["accuracy"], rows[-1]["train_s"])
    return rows


def mcnemar_lines(rows: list[dict[str, Any]]) -> list[str]:
    """McNemar (exact) between the fine-tuned MobileNetV2 and DeiT-Ti of each (size, seed)."""
    from vitbench.core.stats import mcnemar_exact

    lines = []
    main = [r for r in rows if not r["note"] and r["pretrained"]]
    for size, seed in dict.fromkeys((r["size"], r["seed"]) for r in main):
        pair = {r["id"]: r for r in main if (r["size"], r["seed"]) == (size, seed)}
        if {"cnn_finetuned", "vit_finetuned"} <= pair.keys():
            a, b = pair["cnn_finetuned"]["correct"], pair["vit_finetuned"]["correct"]
            test = mcnemar_exact(a.to_numpy(), b.reindex(a.index).to_numpy())
            lines.append(f"- {size} px, seed {seed}: MobileNetV2 alone right on {test.only_a}, "
                         f"{pair['vit_finetuned']['model']} alone right on {test.only_b} of "
                         f"{len(a)} test images; exact McNemar p = {test.p_value:.3g}")
    return lines


def is_contrast(row: dict[str, Any]) -> bool:
    """A contrast row: random weights (metrics say pretrained false) or the from-scratch ViT."""
    return row["family"] == "vit" or not row["pretrained"]


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table rows: the mean over seeds per model, size, weights and note."""
    lines = ["| model | px | test acc (mean) | per seed | epochs | train s | infer img/s | size MB "
             "| params | input |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        random = r["family"] != "vit" and not r["pretrained"]
        groups.setdefault((r["model"] + (" random init" if random else ""), r["size"], r["note"]),
                          []).append(r)
    for (model, size, note), runs in groups.items():
        accs = [r["accuracy"] for r in runs]
        per_seed = ", ".join(f"{a:.3f}" for a in accs)
        epochs = ", ".join(str(r["epochs"]) for r in runs)
        seconds = ", ".join(f"{r['train_s']:.0f}" for r in runs)
        name = f"{model} {note}" if note else model
        lines.append(
            f"| {name} | {size} | {sum(accs) / len(accs):.3f} | {per_seed} | {epochs} | {seconds} | "
            f"{sum(r['img_s'] for r in runs) / len(runs):.0f} | {runs[0]['size_mb']:.1f} | "
            f"{runs[0]['params']:,} | {runs[0]['preprocess']} |")
    return lines


def render(rows: list[dict[str, Any]], settings: dict[str, str], started: tuple,
           ended: tuple) -> str:
    """Markdown: the tables (real weights; contrast), McNemar, cache, recipes, settings."""
    real = [r for r in rows if not is_contrast(r)]
    contrast = [r for r in rows if is_contrast(r)]
    lines = ["# Matched pair with real ImageNet weights: MobileNetV2 vs DeiT-Ti/16, through the pipeline",
             "", f"Generated by `benchmarks/matched.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
             ""]
    if real or not contrast:
        lines += table(real)
    if contrast:
        lines += ["", "## Contrast: random init and the from-scratch ViT (same split, test images)",
                  "", *table(contrast)]
    lines += ["", "## Fine-tuned MobileNetV2 vs fine-tuned DeiT-Ti (same test images)", "",
              *(mcnemar_lines(rows) or ["- (no complete pair yet)"])]
    cached = [r for r in real if r["id"] == "vit_transfer" and not r["note"]]
    uncached = [r for r in real if r["id"] == "vit_transfer" and r["note"]]
    if cached:
        lines += ["", "## Feature cache (DeiT-Ti transfer phase)", ""]
    for c in cached:
        lines.append(f"- {c['size']} px seed {c['seed']}: transfer phase {c['train_s']:.0f} s with the "
                     f"cache ({c['cache_s']:.0f} s of it computing the class tokens once)"
                     if c["cache_s"] is not None else
                     f"- {c['size']} px seed {c['seed']}: cache not used ({c['train_s']:.0f} s)")
    for u in uncached:
        match = next((c for c in cached if (c["size"], c["seed"]) == (u["size"], u["seed"])), None)
        if match is not None:
            lines.append(f"- without it (`vit_ft.feature_cache: false`, {u['size']} px seed "
                         f"{u['seed']}): {u['train_s']:.0f} s, so the cache is "
                         f"{u['train_s'] / match['train_s']:.1f}x faster for {u['epochs']} epoch(s) "
                         f"(accuracy {u['accuracy']:.3f} without, {match['accuracy']:.3f} with)")
    recipes: dict[str, Any] = {}
    for r in rows:   # the first seed's
        if not r["note"]:
            random = r["family"] != "vit" and not r["pretrained"]
            recipes.setdefault(r["id"] + (" random init" if random else ""), r["recipe"])
    lines += ["", "## Recipes (models/<id>/record.json, first seed)", "",
              *(f"- {k}: `{v}`" for k, v in recipes.items() if v)]
    lines += ["", "## Settings", "", *(f"- {k}: {v}" for k, v in settings.items()), ""]
    lines += machine_section(started, ended)
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=PACS, show_default=True)
@click.option("--image-size", "sizes", type=int, multiple=True, default=(112,), show_default=True)
@click.option("--seeds", type=int, multiple=True, default=(42, 43), show_default=True)
@click.option("--family", "families", multiple=True, type=click.Choice(FAMILIES),
              help="only these families' stages (default both)")
@click.option("--runs", "kinds", multiple=True, type=click.Choice(RUNS), default=("real",),
              show_default=True, help="real weights; random-init pair; scratch: from-scratch ViT")
@click.option("--set", "sets", multiple=True, help="SECTION.KEY=VALUE, more overrides")
@click.option("--cache-check/--no-cache-check", default=False,
              help="finetune_vit once more without the feature cache (first size and seed)")
@click.option("--max-per-class", type=int, default=None, help="quick runs: a sample per class")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
def main(data: Path, sizes: tuple[int, ...], seeds: tuple[int, ...], families: tuple[str, ...],
         kinds: tuple[str, ...], sets: tuple[str, ...],
         cache_check: bool, max_per_class: int | None, out: Path) -> None:
    """Run both families' stages and evaluate per size and seed; write a markdown table."""
    from vitbench.data.manifest import read_labels

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra = parse_sets(sets)
    started = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-matched-") as workdir:
        first = overrides_for(data, sizes[0], extra)
        paths = prepare(pipeline_params({**first, "seed": SPLIT_SEED}, preset=PRESET),
                        Path(workdir) / "proj", max_per_class)
        counts = split_counts(paths)
        settings = {
            "data": f"`{data}`, {len(read_labels(paths.labels))} classes, split seed {SPLIT_SEED}: "
                    + ", ".join(f"{k} {v}" for k, v in counts.items()),
            "params": f"params.yaml + preset `{PRESET}` + the overrides `{first}` (image sizes "
                      f"per row, and `seed`)",
            "seeds": ", ".join(map(str, seeds)),
            "runs": "; ".join(f"{kind}: " + ", ".join(f"{family} + `{more}`" for family, more
                                                        in runs_of(kind, families))
                              for kind in dict.fromkeys(kinds)),
            "command": f"`python benchmarks/matched.py {' '.join(sys.argv[1:])}`"}
        plan = [(size, seed, family, more, "") for size in sizes for seed in seeds
                for kind in dict.fromkeys(kinds) for family, more in runs_of(kind, families)
                if family != "vit" or size == sizes[0]]   # its own size: once per seed
        if cache_check:
            plan.append((sizes[0], seeds[0], "vit_ft", {"vit_ft": {"feature_cache": False}},
                         "(no feature cache)"))
        steps = [functools.partial(run, family, seed,
                                   merge(overrides_for(data, size, extra), more), paths, note)
                 for size, seed, family, more, note in plan]
        text = run_and_write(steps, render, settings, started, out)
    click.echo(text)


if __name__ == "__main__":
    main()
