"""What fetch skipped or renamed, by reason: metrics/fetch.json and metrics/fetch_rejected.csv.

Nothing fetch leaves out or renames goes unreported: every skip (hidden files, AppleDouble
`._*`, loose files, empty class folders, links, empty archive entries) and every rename (name
collisions, duplicate archive entries, names that are not UTF-8, blank class names, names over 255
bytes, class names that would not be one safe folder) is one row of the CSV and one count in the
metrics.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vitbench.core.fsutil import atomic_file, write_json

log = logging.getLogger(__name__)

SKIP_REASONS = ("hidden", "appledouble", "loose_file", "empty_class", "dangling_link",
                "symlinked_folder", "link_outside", "not_regular", "empty_file")
RENAME_REASONS = ("name_collision", "duplicate_entry", "non_utf8_name", "blank_name", "long_name",
                  "unsafe_name")
COLUMNS = ("source", "class", "reason", "detail")
REJECTED_CSV = "fetch_rejected.csv"   # in metrics/, next to fetch.json


def shown(path: str | Path) -> str:
    """A path as printable UTF-8 text, even when its bytes are not UTF-8 (`caf\\xe9.jpg`)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


@dataclass
class FetchReport:
    """Rows of (source, class, reason, detail); reason is one of SKIP_REASONS or RENAME_REASONS."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, source: str | Path, cls: str, reason: str, detail: str = "") -> None:
        assert reason in SKIP_REASONS + RENAME_REASONS, reason
        self.rows.append((shown(source), cls, reason, detail))
        log.debug("fetch %s: %s (%s)", reason, shown(source), detail)

    def counts(self) -> Counter:
        return Counter(r[2] for r in self.rows)

    def metrics(self, files: int, classes: int) -> dict:
        """metrics/fetch.json: few, flat keys (zeros included) for `dvc metrics show`."""
        counts = self.counts()
        return {"files": files, "classes": classes,
                "skipped": {r: counts[r] for r in SKIP_REASONS},
                "renamed": {r: counts[r] for r in RENAME_REASONS}}

    def log_summary(self) -> None:
        counts = self.counts()
        for reasons, what in ((SKIP_REASONS, "skipped"), (RENAME_REASONS, "renamed")):
            parts = [f"{counts[r]} {r}" for r in reasons if counts[r]]
            if parts:
                log.warning("fetch %s: %s (listed in metrics/fetch_rejected.csv)", what,
                            ", ".join(parts))

    def write(self, metrics_json: Path, csv: Path, files: int, classes: int) -> dict:
        """Write both reports atomically; return the metrics."""
        import pandas as pd  # here: the fetch stage's up-to-date check must start fast

        metrics = self.metrics(files, classes)
        frame = pd.DataFrame(sorted(self.rows), columns=list(COLUMNS))
        with atomic_file(csv) as fh:
            frame.to_csv(fh, index=False)
        write_json(metrics_json, metrics)
        return metrics
