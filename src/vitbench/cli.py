"""The `vitbench` command: predictions on new images, the two studies as presets, and the
offline `dvc plots show` template."""

from __future__ import annotations

import csv
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vitbench.core.errors import VitbenchError
from vitbench.core.stage import setup_logging


def _known_model_ids(ctx: click.Context, param: click.Parameter,
                     values: tuple[str, ...]) -> tuple[str, ...]:
    """`--model` values, each one of the model ids the families declare (read when used, so
    `vitbench --help` imports no model code)."""
    from vitbench.models.registry import model_ids

    known = model_ids()
    for value in values:
        if value not in known:
            raise click.BadParameter(f"{value!r} is not one of {', '.join(known)}", ctx, param)
    return values


def model_option(text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The repeatable `--model ID` option of the experiment commands."""
    return click.option("--model", "models", multiple=True, callback=_known_model_ids,
                        metavar="ID", help=text)


@click.group()
@click.version_option(package_name="vitbench")
def main() -> None:
    """vitbench: CNN or Vision Transformer? See README.md; the pipeline itself runs with `dvc repro`."""
    setup_logging()


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_id", default=None,
              help="A model id (cnn_transfer, ..., vit_finetuned) or a models/<id> folder; "
                   "default: the best by accuracy in metrics/compare_detail.json.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "csv", "json"]))
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False),
              help="The project root (where models/ and metrics/ are).")
def predict(inputs: tuple[Path, ...], model_id: str | None, top_k: int, fmt: str, root: str) -> None:
    """Classify image files or folders. Exit code 1 if any input failed."""
    from vitbench.core.paths import Paths
    from vitbench.evaluate.predict import collect_inputs, model_dir_of, predict_files

    paths = Paths(Path(root))
    try:
        model_dir = model_dir_of(paths, model_id)
        files, failures = collect_inputs(list(inputs))
        predictions, bad = predict_files(model_dir, files, top_k=top_k)
    except VitbenchError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    failures += bad
    _print_predictions(predictions, fmt, top_k)
    for failure in failures:
        click.secho(f"skipped {failure.path}: {failure.reason}", fg="yellow", err=True)
    click.echo(f"{len(predictions)} predicted with {model_dir.name}, {len(failures)} failed", err=True)
    sys.exit(1 if failures else 0)


def _print_predictions(predictions: list, fmt: str, top_k: int) -> None:
    if fmt == "json":
        click.echo(json.dumps([{"path": p.path, "label": p.label, "confidence": round(p.confidence, 6),
                                "top": [{"label": c, "probability": round(s, 6)} for c, s in p.top]}
                               for p in predictions], indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "label", "confidence", f"top{top_k}"])
        for p in predictions:
            writer.writerow([p.path, p.label, f"{p.confidence:.4f}",
                             "; ".join(f"{c} {s:.1%}" for c, s in p.top)])
    else:
        width = max([len(p.path) for p in predictions] + [4])
        click.echo(f"{'file':<{width}}  {'prediction':<20} confidence  top-{top_k}")
        for p in predictions:
            others = ", ".join(f"{c} {s:.1%}" for c, s in p.top[1:])
            click.echo(f"{p.path:<{width}}  {p.label:<20} {p.confidence:>9.1%}   {others}")


@main.group()
def preset() -> None:
    """The two original studies (stanford_dogs, cartoon) as params presets."""


@preset.command("list")
def preset_list() -> None:
    """List the shipped presets."""
    from vitbench.experiments import presets

    for name in presets.available():
        click.echo(name)


@preset.command("show")
@click.argument("name")
def preset_show(name: str) -> None:
    """Print the `dvc exp run` command a preset stands for."""
    from vitbench.experiments import presets

    args = _guard(lambda: presets.dvc_exp_run_args(name))
    head = shlex.join(args[:5 + ("--queue" in args)])
    flags = [shlex.join(args[i:i + 2]) for i in range(5, len(args), 2)]
    click.echo(" \\\n  ".join([head, *flags]))


@preset.command("run")
@click.argument("name")
@click.option("--queue", is_flag=True, help="Queue the experiment (`dvc queue start` runs it).")
@click.option("--name", "exp_name", default=None, help="The experiment name (default: the preset's).")
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False))
def preset_run(name: str, queue: bool, exp_name: str | None, root: str) -> None:
    """Run a preset as a DVC experiment: `dvc exp run -n NAME -S ... -S ...`. The merged params
    are checked first; params.yaml is restored if the run fails."""
    from vitbench.experiments import presets

    sys.exit(_guard(lambda: presets.run(name, queue=queue, exp_name=exp_name, root=root)))


@preset.command("apply")
@click.argument("name")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False, exists=True))
def preset_apply(name: str, params_path: str) -> None:
    """Write a preset into params.yaml (comments kept); then `dvc repro`."""
    from vitbench.experiments import presets

    flags = _guard(lambda: presets.apply(name, params_path))
    click.echo(f"applied {len(flags)} settings of {name} to {params_path}")


@main.command()
@click.option("--n", "count", default=3, show_default=True, type=click.IntRange(1, 100),
              help="How many seeds (1..n, unless --seeds is given).")
@click.option("--seeds", "seed_list", default=None,
              help="Comma-separated seeds, e.g. 1,2,3 (overrides --n).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Experiments run in parallel (`dvc queue start -j`).")
@click.option("--no-wait", is_flag=True, help="Queue and start, then return at once.")
@model_option("Repeat only these models (and the stages they need); default all five.")
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False))
def seeds(count: int, seed_list: str | None, jobs: int, no_wait: bool, models: tuple[str, ...],
          root: str) -> None:
    """Run the whole comparison once per seed as queued DVC experiments (named seed-N), then
    `vitbench summarize`."""
    from vitbench.experiments import seeds as repeated

    chosen = _parse_seeds(seed_list) if seed_list is not None else list(range(1, count + 1))
    _guard(lambda: repeated.run_seeds(chosen, Path(root), jobs=jobs, wait=not no_wait,
                                      models=models))
    click.echo(f"{'started' if no_wait else 'finished'} {len(chosen)} experiment(s): "
               + ", ".join(f"seed-{s}" for s in chosen), err=True)


@main.command()
@click.option("-S", "--set", "specs", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="A params.yaml key and the values to sweep (repeat for a grid), e.g. "
                   "-S split.max_train_per_class=5,10,25,50,null (null: every image).")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1, 100),
              help="Seeds per grid point: 1..N.")
@model_option("Repeat only these models (and the stages they need); default all five.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Experiments run in parallel (`dvc queue start -j`).")
@click.option("--no-start", is_flag=True, help="Only queue them (`dvc queue start` runs them).")
@click.option("--no-wait", is_flag=True, help="Queue and start, then return at once.")
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False))
def sweep(specs: tuple[str, ...], seeds: int, models: tuple[str, ...], jobs: int, no_start: bool,
          no_wait: bool, root: str) -> None:
    """Run the comparison at every grid point and seed as queued DVC experiments (named like
    mtpc-25-seed-2), then `vitbench summarize --by KEY`."""
    from vitbench.experiments import sweep as sweeping

    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    _guard(lambda: sweeping.run_sweep(specs, seeds, Path(root), models=models, jobs=jobs,
                                      start=not no_start, wait=not no_wait, echo=echo))


@main.command()
@click.option("--folds", required=True, type=click.IntRange(2, 100),
              help="K: one experiment per fold, each fold the test split once (split.folds, split.fold).")
@model_option("Cross-validate only these models (and the stages they need); default all five.")
@click.option("--seeds", default=None, type=click.IntRange(1, 100),
              help="Repeat the whole cross-validation with seeds 1..N (default: params.yaml's seed).")
@click.option("-S", "--set", "specs", multiple=True, metavar="KEY=VALUE",
              help="A params.yaml value for every fold, e.g. -S train.epochs=10 (repeatable).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Experiments run in parallel (`dvc queue start -j`).")
@click.option("--no-start", is_flag=True, help="Only queue them (`dvc queue start` runs them).")
@click.option("--no-wait", is_flag=True, help="Queue and start, then return at once.")
@click.option("--summarize", "summarize_only", is_flag=True,
              help="Queue nothing: write the summary of the finished fold experiments.")
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False))
def cv(folds: int, models: tuple[str, ...], seeds: int | None, specs: tuple[str, ...], jobs: int,
       no_start: bool, no_wait: bool, summarize_only: bool, root: str) -> None:
    """K-fold cross-validation: the comparison on every fold as queued DVC experiments (named
    like folds-5-fold-0-seed-42), then plots/cv/summary.{json,md,png}: pooled accuracy over every
    image, McNemar over all of them and the corrected resampled t-test over the folds."""
    from vitbench.experiments import cv as crossval

    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    if summarize_only:
        summary = _guard(lambda: crossval.summarize_project(Path(root), folds, specs, seeds))
    else:
        summary = _guard(lambda: crossval.run_cv(folds, Path(root), models=models, specs=specs,
                                                 seeds=seeds, jobs=jobs, start=not no_start,
                                                 wait=not no_wait, echo=echo))
    if summary is not None:
        click.echo(crossval.render(summary) + f"\nWritten: {crossval.SUMMARY_DIR}/summary.json, "
                   "summary.md, summary.png\n")


@main.command()
@click.option("--prefix", default=None,
              help="Experiment names to include (default: seed-*, or every one with --by).")
@click.option("--by", "by", default=None, metavar="PARAM",
              help="A swept params.yaml key: accuracy per value over the seeds, the curve "
                   "(plots/sweep/PARAM.png and .csv) and where the ViT overtakes the CNN.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of markdown.")
@click.option("--root", default=".", show_default=True, type=click.Path(file_okay=False))
def summarize(prefix: str | None, by: str | None, as_json: bool, root: str) -> None:
    """Each model's accuracy over the seed experiments: mean, std, 95% interval, and whether the
    CNN-vs-ViT ranking holds in every seed; with --by, the same per value of a swept param."""
    if by is not None:
        from vitbench.experiments import sweep_summary
        from vitbench.experiments.sweep_figure import write_sweep

        summary = _guard(lambda: sweep_summary.summarize_project(Path(root), by, prefix or ""))
        png, csv_path = write_sweep(summary, Path(root) / "plots" / "sweep")
        summary["files"] = {"plot": str(png.relative_to(root)), "csv": str(csv_path.relative_to(root))}
        click.echo(json.dumps(summary, indent=2) if as_json else sweep_summary.render(summary)
                   + f"\nCurve: {summary['files']['plot']}; data: {summary['files']['csv']}\n")
        return
    from vitbench.experiments import seeds as repeated

    summary = _guard(lambda: repeated.summarize_project(Path(root), prefix or repeated.EXP_PREFIX))
    click.echo(json.dumps(summary, indent=2) if as_json else repeated.render(summary))


def _parse_seeds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers", param_hint="--seeds")
    if any(v < 0 for v in values):
        raise click.BadParameter(f"{text!r}: expected non-negative integers", param_hint="--seeds")
    return values   # none, or one twice: refused by seeds.check_seeds


@main.command("plots-template")
@click.option("--output", default=".dvc/plots_template.html", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it; .dvc/config's plots.html_template names this file.")
def plots_template(output: Path) -> None:
    """Write the offline HTML template of `dvc plots show` (vega inlined, no CDN)."""
    from vitbench.plots.offline import write_html_template

    path = write_html_template(output)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): `dvc plots show` now draws offline")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace an existing dvc.yaml, params.yaml and stage scripts.")
def init(directory: Path, force: bool) -> None:
    """Start a project in DIRECTORY (new or existing; git and DVC initialised when needed):
    dvc.yaml, params.yaml, stages/ and the DVC settings; then `cd DIRECTORY && dvc repro`."""
    from vitbench.project_files import init_project

    _guard(lambda: init_project(directory, force=force, echo=lambda line: click.echo(line, err=True)))
    click.echo(f"next: cd {shlex.quote(str(directory))} && dvc repro   (the embedded synthetic demo; "
               "set dataset.source in params.yaml for your images)")


def _guard(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except VitbenchError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
