"""Import a script of benchmarks/ (not a package) as a module, and a tiny image folder, for the
benchmark tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as module `name` (registered in sys.modules, as dataclasses need)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def colour_folders(root: Path, per_class: int = 12) -> Path:
    """`root`/data: 3 classes (class0..2) of `per_class` noisy 40 px images, red, green and blue
    (a folder dataset the benchmarks fetch like PACS); its path."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        folder = root / "data" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (40, 40, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root / "data"
