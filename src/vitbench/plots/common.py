"""Shared figure style and an atomic PNG writer, so every plot looks alike and is legible."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vitbench.core.fsutil import atomic_file  # noqa: E402

DPI = 110
RIGHT = "#1a7f37"   # a correct prediction
WRONG = "#cf222e"   # a wrong prediction
plt.rcParams.update({
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "text.parse_math": False,   # a class called `$\foo$` is text, not mathtext (nor a crash)
})


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG atomically (tight bbox) and close it."""
    path = Path(path)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
