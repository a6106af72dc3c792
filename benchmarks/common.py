"""What the benchmark scripts share: the data prepared by the pipeline's own stages in a scratch
project, its split sizes, and the machine the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pacs_cartoon"  # default --data


def prepare(params: Any, root: Path, max_per_class: int | None = None) -> Any:
    """fetch -> clean -> (a seeded sample of at most `max_per_class` images per class) -> split ->
    augment, with `params`, in `root` (a committed git repo: dvclive needs one); its Paths."""
    from vitbench.data.augmentation import augment_dataset
    from vitbench.data.cleaning import clean_dataset
    from vitbench.data.manifest import read_manifest, write_manifest
    from vitbench.data.sources import fetch_dataset
    from vitbench.data.splitting import split_dataset
    from vitbench.errors import DataError
    from vitbench.paths import Paths

    source = params.dataset.source
    if params.dataset.kind == "folder" and not Path(source).expanduser().is_dir():
        raise DataError(f"dataset folder {source} does not exist (pass --data)")
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=bench@vitbench.local", "-c", "user.name=bench",
                    "commit", "-q", "--allow-empty", "-m", "bench"], cwd=root, check=True)
    paths = Paths(root)
    fetch_dataset(params.dataset, params.seed, paths)
    clean_dataset(params.clean, paths)
    if max_per_class is not None:  # quick runs: a seeded subset of each class
        df = read_manifest(paths.clean_manifest)
        subset = df.sample(frac=1.0, random_state=params.seed).groupby("class").head(max_per_class)
        write_manifest(subset.sort_index(), paths.clean_manifest)
    split_dataset(params.split, params.seed, paths)
    augment_dataset(params.augment, params.seed, paths)
    return paths


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
