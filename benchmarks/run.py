"""The vitbench benchmark: one table of the figures the README quotes, measured on this machine.

    python benchmarks/run.py [--remedies-minutes 20] [--skip-repro] [--set train.epochs=3 ...]
                             [--out benchmarks/results/latest.md]

Everything runs on params.yaml as committed, plus the `--set` overrides (stated in the report):
the project copy's params.yaml is `common.pipeline_params(overrides)`, which the stages, `dvc repro`
and the throughput measurement read with `config.load_params`.

1. Wall time of the demo `dvc repro` from scratch (a fresh copy of the project, empty DVC cache),
   and of a second, no-op `dvc repro`.
2. Per model family: training images/s from disk and from tensors in memory (benchmarks/throughput.py),
   and per model id: inference images/s and test accuracy from that demo run's metrics.
3. The from-scratch ViT's accuracy on ../shared/datasets/pacs_cartoon (when present) with and
   without its small-dataset remedies (benchmarks/vit_remedies.py), at a stated CPU budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import PACS, machine, parse_sets, pipeline_params, write_params  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> float:
    """Run `cmd` with this venv first on PATH; return its wall seconds (raise on failure)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise click.ClickException(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def repro_figures(project: Path) -> dict[str, object]:
    """Demo `dvc repro` from scratch, then a no-op one; the metrics of every model."""
    full = timed(["dvc", "repro"], project)
    noop = timed(["dvc", "repro"], project)
    from vitbench.core.paths import Paths
    from vitbench.evaluate.outputs import read_model_metrics

    from vitbench.report.results import evaluated_ids

    models = {m: read_model_metrics(Paths(project), m) for m in evaluated_ids(Paths(project))}
    return {"repro_seconds": full, "noop_seconds": noop, "models": models}


def render(repro: dict | None, throughput: list[dict] | None, remedies: str | None,
           sets: tuple[str, ...] = ()) -> str:
    """The markdown report."""
    params = ("params.yaml with " + ", ".join(f"`{s}`" for s in sets)) if sets else "params.yaml as committed"
    out = [f"# vitbench benchmark\n\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {machine()}; "
           f"{params}."]
    if repro:
        out += ["\n## The demo pipeline\n",
                "| what | wall time |", "|---|---|",
                f"| `dvc repro` from scratch (demo params) | {repro['repro_seconds']:.0f} s |",
                f"| `dvc repro` again (nothing to do) | {repro['noop_seconds']:.1f} s |",
                "\n| model | pretrained | test accuracy | inference images/s | train s | params |",
                "|---|---|---|---|---|---|"]
        for model_id, m in repro["models"].items():
            out.append(f"| {m.get('display_name', model_id)} | {m['pretrained']} | {m['accuracy']:.3f} | "
                       f"{m['infer_images_per_second']:.0f} | {m['train_seconds']:.0f} | "
                       f"{m['params_total']:,} |")
    if throughput:
        out += ["\n## Training input pipeline: from disk vs from memory\n",
                "| model family | input | batch | images/s from disk | images/s from memory | disk/memory |",
                "|---|---|---|---|---|---|"]
        for row in throughput:
            out.append(f"| {row['model']} | {row['image_size']}px | {row['batch_size']} | "
                       f"{row['disk_images_per_s']:.0f} | {row['memory_images_per_s']:.0f} | "
                       f"{row['disk_memory_ratio']:.2f} |")
        out.append("\nA ratio near 1 means the model, not the input pipeline, is the bottleneck.")
    if remedies:
        out += ["\n## From-scratch ViT on PACS cartoon: the small-dataset remedies\n", remedies]
    return "\n".join(out) + "\n"


@click.command()
@click.option("--skip-repro", is_flag=True, help="Skip the demo `dvc repro` timing.")
@click.option("--steps", default=15, show_default=True, help="Timed training steps per family.")
@click.option("--remedies-minutes", default=20.0, show_default=True,
              help="CPU budget of the ViT remedies benchmark (0 skips it).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A params.yaml override (as `dvc exp run -S`), e.g. train.epochs=3; repeatable.")
@click.option("--family", "families", multiple=True,
              help="Throughput of these model families only (default: all).")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Make the project copy here and keep it (default: a temporary folder).")
@click.option("--out", type=click.Path(path_type=Path), default=HERE / "results" / "latest.md",
              show_default=True)
def main(skip_repro: bool, steps: int, remedies_minutes: float, sets: tuple[str, ...],
         families: tuple[str, ...], workdir: Path | None, out: Path) -> None:
    """Run every benchmark and print one markdown report."""
    sys.path.insert(0, str(REPO / "tests"))   # the project-copy helper the DAG tests use
    from dvc_project import commit, copy_project
    from throughput import FAMILIES, measure_throughput

    from vitbench.models.registry import load_params
    from vitbench.core.errors import ConfigError
    from vitbench.core.paths import Paths

    try:
        params = pipeline_params(parse_sets(sets))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None
    repro = throughput = remedies = None
    with tempfile.TemporaryDirectory(prefix="vitbench-bench-") as tmp:
        project = copy_project(REPO, (workdir or Path(tmp)) / "bench", "bench")
        write_params(params, project)
        commit(project, "benchmark params")
        if not skip_repro:
            click.echo("timing the demo `dvc repro` from scratch ...", err=True)
            repro = repro_figures(project)
        else:
            timed(["dvc", "repro", "augment"], project)
        click.echo("measuring training throughput ...", err=True)
        throughput = measure_throughput(load_params(project / "params.yaml"), Paths(project), steps,
                                        families or FAMILIES)
    if remedies_minutes > 0 and PACS.is_dir():
        click.echo("training the from-scratch ViT variants on PACS cartoon ...", err=True)
        remedies_out = out.with_name("vit_remedies.md")
        subprocess.run([sys.executable, str(HERE / "vit_remedies.py"), "--data", str(PACS),
                        "--budget-minutes", str(remedies_minutes), "--out", str(remedies_out)],
                       check=True)
        text = remedies_out.read_text()
        remedies = text.split("## Result", 1)[-1].split("## Every run", 1)[0].strip()
    report = render(repro, throughput, remedies, sets)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    click.echo(report)


if __name__ == "__main__":
    main()
