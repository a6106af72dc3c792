"""Where every stage reads and writes, relative to the project root (see the contract's Outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """The standard locations of one project checkout."""

    root: Path = Path(".")

    # data
    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def clean(self) -> Path:
        return self.root / "data" / "clean"

    @property
    def clean_manifest(self) -> Path:
        return self.clean / "manifest.csv"

    @property
    def split(self) -> Path:
        return self.root / "data" / "split"

    def split_csv(self, name: str) -> Path:
        """`train`, `val` or `test`."""
        return self.split / f"{name}.csv"

    @property
    def labels(self) -> Path:
        return self.split / "labels.json"

    @property
    def augmented(self) -> Path:
        return self.root / "data" / "augmented"

    @property
    def augmented_csv(self) -> Path:
        return self.augmented / "train.csv"

    # caches outside DVC outputs
    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    def backup(self, model_id: str) -> Path:
        return self.cache / "backup" / model_id

    # models, metrics, plots
    def model(self, model_id: str) -> Path:
        return self.root / "models" / model_id

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    def metrics_json(self, name: str) -> Path:
        return self.metrics / f"{name}.json"

    def detail_json(self, name: str) -> Path:
        """metrics/<name>_detail.json: the plain (non-metric) JSON beside metrics/<name>.json."""
        return self.metrics / f"{name}_detail.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def train_plots(self, model_id: str) -> Path:
        return self.plots / model_id / "train"

    def eval_plots(self, model_id: str) -> Path:
        return self.plots / model_id / "eval"

    @property
    def compare_plots(self) -> Path:
        return self.plots / "compare"
