"""What the benchmark scripts share: params read as the stages read them, the pipeline's own
stages run on them, the split sizes, and the machine the figures were measured on.

The rule: a benchmark measures the pipeline. So a benchmark script

1. builds its params with `pipeline_params(overrides, preset=None)`: params.yaml (the one source
   of defaults), then a preset's sections (`vitbench.experiments.presets`), then the script's stated
   `overrides` (a dict of params.yaml sections, merged key by key), validated by
   `config.load_params` on that YAML exactly as a stage validates params.yaml;
2. prepares the data with `prepare(params, root, max_per_class)`: a scratch project in `root`
   (a committed git repo) whose params.yaml is `params`, and the fetch, clean, split and augment
   stage scripts run in it (optionally a seeded subset of each class after clean);
3. trains and scores a family with `train_and_evaluate(family, params, paths)`: the family's
   training stage script (train_cnn, train_vit or finetune_vit) and then the evaluate stage
   script for each model id it trains; it returns {model id: metrics/<id>.json and
   metrics/<id>_detail.json merged, as evaluate wrote them}. To vary a setting between runs, build another Params with `pipeline_params` and pass it:
   the project's params.yaml is rewritten and the stage reads it back with `load_params`.

`run_stage(name, params, paths, *args)` runs any one stage script in-process the same way.
`run_and_write(steps, render, settings, started, out)` runs a benchmark's steps and rewrites its
results markdown after each one, so a stopped benchmark keeps the rows it measured.
The Params a stage used is the return value of `used_params(paths)` (the project's params.yaml,
loaded), which tests compare with `pipeline_params(...)`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

import yaml

from vitbench.core.config import merge

REPO = Path(__file__).resolve().parents[1]
PARAMS_YAML = REPO / "params.yaml"
STAGES = REPO / "stages"
PACS = REPO.parent / "shared" / "datasets" / "pacs_cartoon"  # default --data


def pipeline_raw(overrides: dict[str, Any] | None = None, preset: str | None = None,
                 params_file: Path = PARAMS_YAML) -> dict[str, Any]:
    """params.yaml as parsed YAML, with `preset`'s sections and then `overrides` merged in."""
    from vitbench.core.config import read_params
    from vitbench.experiments.presets import load_preset

    raw = read_params(params_file)
    if preset is not None:
        raw = merge(raw, load_preset(preset))
    return merge(raw, overrides or {})


def parse_sets(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`key.sub=value` strings (as `dvc exp run -S` takes them; values are YAML) as an overrides
    dict for `pipeline_params`; a malformed item is a ConfigError naming it."""
    from vitbench.core.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("override", item, "key=value, e.g. train.epochs=3")
        *parents, leaf = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def pipeline_params(overrides: dict[str, Any] | None = None, preset: str | None = None,
                    params_file: Path = PARAMS_YAML) -> Any:
    """The Params a stage would read from params.yaml + `preset` + `overrides` (a ConfigError
    naming the key for a bad value): the merged YAML is validated by `config.load_params`."""
    import tempfile

    from vitbench.models.registry import load_params

    with tempfile.TemporaryDirectory(prefix="bench-params-") as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(pipeline_raw(overrides, preset, params_file), sort_keys=False))
        return load_params(path)


def write_params(params: Any, root: Path) -> Path:
    """Write `params` as `root`/params.yaml (what the stages run in `root` read); its path."""
    from vitbench.core.config import to_dict

    path = Path(root) / "params.yaml"
    path.write_text(yaml.safe_dump(to_dict(params), sort_keys=False))
    return path


def used_params(paths: Any) -> Any:
    """The Params the stages run in the project of `paths` read (its params.yaml, loaded)."""
    from vitbench.models.registry import load_params

    return load_params(paths.root / "params.yaml")


@functools.cache
def _stage_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"vitbench_stage_{name}", STAGES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_stage(name: str, params: Any, paths: Any, *args: str) -> None:
    """Run stages/<name>.py in-process in the project of `paths`, on `params` written to its
    params.yaml (so the stage loads them with `config.load_params`, as under `dvc repro`); a
    failing stage is a VitbenchError (its message was printed by the stage)."""
    from vitbench.core.errors import VitbenchError

    params_file = write_params(params, paths.root)
    command = _stage_module(name).main
    try:
        command.main(["--params", str(params_file), "--root", str(paths.root), *args],
                     standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise VitbenchError(f"stage {name} failed (exit code {exc.code}; its error is above)") from None


def prepare(params: Any, root: Path, max_per_class: int | None = None) -> Any:
    """The fetch, clean, (a seeded sample of at most `max_per_class` images per class,) split and
    augment stages with `params`, in `root` (made a committed git repo: dvclive needs one); its
    Paths."""
    from vitbench.data.manifest import read_manifest, write_manifest
    from vitbench.core.errors import DataError
    from vitbench.core.paths import Paths

    source = params.dataset.source
    if params.dataset.kind == "folder" and not Path(source).expanduser().is_dir():
        raise DataError(f"dataset folder {source} does not exist (pass --data)")
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=bench@vitbench.local", "-c", "user.name=bench",
                    "commit", "-q", "--allow-empty", "-m", "bench"], cwd=root, check=True)
    paths = Paths(root)
    run_stage("fetch", params, paths)
    run_stage("clean", params, paths)
    if max_per_class is not None:  # quick runs: a seeded subset of each class
        df = read_manifest(paths.clean_manifest)
        subset = df.sample(frac=1.0, random_state=params.seed).groupby("class").head(max_per_class)
        write_manifest(subset.sort_index(), paths.clean_manifest)
    run_stage("split", params, paths)
    run_stage("augment", params, paths)
    return paths


def train_and_evaluate(family: str, params: Any, paths: Any) -> dict[str, dict[str, Any]]:
    """`family`'s training stage (train_cnn, train_vit or finetune_vit) and the evaluate stage of
    every model id it trains, on `params`, in the prepared project of `paths`:
    {model id: its metrics/<id>.json and metrics/<id>_detail.json merged, as evaluate wrote them}."""
    from vitbench.models import registry
    from vitbench.evaluate.outputs import read_model_metrics

    run_stage(registry.family(family).stage, params, paths)
    metrics = {}
    for spec in registry.family(family).models:
        run_stage("evaluate", params, paths, "--model", spec.id)
        metrics[spec.id] = read_model_metrics(paths, spec.id)
    return metrics


def run_and_write(steps: Iterable[Callable[[], list[dict[str, Any]]]],
                  render: Callable[[list[dict[str, Any]], dict[str, str], tuple, tuple], str],
                  settings: dict[str, str], started: tuple, out: Path) -> str:
    """Run each of `steps` (each returns its result rows) and, after every one, write
    `render(all rows so far, settings, started, load now)` to `out` atomically (temp + rename),
    so a stopped benchmark keeps what it measured; the last text written."""
    from vitbench.core.fsutil import atomic_file

    rows: list[dict[str, Any]] = []
    text = ""
    for step in steps:
        rows += step()
        text = render(rows, settings, started, os.getloadavg())
        with atomic_file(out) as fh:
            fh.write(text)
    return text


def split_counts(paths: Any) -> dict[str, int]:
    """Images per split of the prepared project: {"train": n, "val": n, "test": n}."""
    from vitbench.data.manifest import read_manifest
    from vitbench.data.splitting import SPLITS

    return {split: len(read_manifest(paths.split_csv(split))) for split in SPLITS}


def machine_info() -> dict[str, str]:
    """CPU count and model, memory, GPU, Python, TensorFlow and Keras versions."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpus = len(tf.config.list_physical_devices("GPU"))
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": f"{memory:.0f} GiB",
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "gpus": str(gpus), "gpu": "yes" if gpus else "none"}


def machine() -> str:
    """`machine_info` in one line."""
    info = machine_info()
    return (f"{info['nproc']} cores ({info['cpu']}), {info['memory']} RAM, {info['gpus']} GPU(s), "
            f"Python {info['python']}, TensorFlow {info['tensorflow']}")


def machine_section(load_start: tuple[float, ...], load_end: tuple[float, ...],
                    seconds: str = "the seconds") -> list[str]:
    """The markdown lines of a "## Machine" section: `machine_info` and the load averages
    (`os.getloadavg()`) at the start and the end of the benchmark."""
    info = machine_info()
    start, end = ("/".join(f"{v:.2f}" for v in load) for load in (load_start, load_end))
    return ["## Machine", "",
            f"- {info['nproc']} CPU(s), {info['cpu']}, GPU: {info['gpu']}",
            f"- Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}",
            f"- load average (1/5/15 min) at start {start}, at end {end}: the machine was shared "
            f"with other jobs, so {seconds} are indicative only"]


def write_table_report(out: Path, title: str, script: str, started: float, load_start: tuple[float, ...],
                       settings: str, rows: list[dict[str, Any]]) -> str:
    """A one-table results file: the title, the script and date and wall time (`started`: a
    `time.perf_counter()`), `settings` (a paragraph), the rows as a markdown table and the
    machine; written to `out` atomically and returned."""
    import datetime as dt
    import time

    import pandas as pd

    from vitbench.core.fsutil import atomic_file

    text = "\n".join([
        f"# {title}", "",
        f"Generated by `{script}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"in {(time.perf_counter() - started) / 60:.1f} min.", "", settings, "",
        pd.DataFrame(rows).to_markdown(index=False), "",
        *machine_section(load_start, os.getloadavg()), ""])
    with atomic_file(out) as fh:
        fh.write(text)
    return text
