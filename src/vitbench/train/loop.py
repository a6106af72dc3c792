"""The resumable fit loop every training phase runs (`fit_phase`): early stopping on `val_loss`
with the best weights restored, dvclive learning curves, and a backup after every epoch
(`TrainingState`, a BackupAndRestore that also keeps the history, epoch times and early-stopping
state), so a killed run resumes from its last finished epoch. Backups live outside DVC outputs
(`.cache/backup/<id>/`), stamped with a fingerprint of what they came from (`prepare_backup`).
Keras's own backup files are written atomically here, and a broken one (a kill during a write by
an older version, a truncated file) resumes from the previous epoch's copy or, without one, is
dropped with a warning: the phase starts again instead of failing on every run."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from vitbench.core.fsutil import atomic_dir, atomic_file, atomic_path, read_json, sha256_file, write_json
from vitbench.core.paths import Paths

log = logging.getLogger(__name__)

CURVE_METRICS = ("loss", "accuracy", "top5_accuracy")  # logged to dvclive as train/<m>, val/<m>
STATE_FILE = "vitbench_state.json"
WEIGHTS_SHA256 = "weights_sha256"   # in Keras's training_metadata.json: the weights it goes with
FINGERPRINT_FILE = "fingerprint.txt"


class LogLearningRate(keras.callbacks.Callback):
    """Add `learning_rate` to each epoch's logs: where the optimizer's schedule stands after the
    epoch's last step (the lr the next step would use; 0 at the end of a cosine to 0)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's early stopping (best weights restored at the end) that never stops a phase before
    `min_epochs` epochs have run: a step budget (`train.min_steps`) is run whole."""

    def __init__(self, min_epochs: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_epochs = min_epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and epoch + 1 < self.min_epochs:
            self.model.stop_training, self.stopped_epoch = False, 0


class TrainingState(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also backs up the per-epoch history, epoch times and early stopping.

    Each epoch, our state (and the best weights, when they changed) is written *before* Keras
    writes the weights and the epoch number, so on resume it is never behind the weights; entries
    past the restored epoch are dropped. Must come after the EarlyStopping it restores in the
    callback list.
    """

    def __init__(self, backup_dir: str | Path, early_stopping: EarlyStopping,
                 write: bool = True) -> None:
        super().__init__(str(backup_dir), double_checkpoint=True)
        self.dir, self.early_stopping, self.write = Path(backup_dir), early_stopping, write
        self.entries: list[dict[str, Any]] = []
        self.resumed_from = 0
        self._started = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Keras keeps _initial_epoch on the model across fit() calls: a resumed phase 1 would
        # otherwise make phase 2 skip epochs. BackupAndRestore sets it again when resuming.
        self.model._initial_epoch = None
        self._repair()
        super().on_train_begin(logs)
        start = int(self.model._initial_epoch or 0)
        saved = self._read_state() if start else []
        self.entries, self.resumed_from = saved[:start], start
        if start:
            if len(self.entries) < start:
                log.warning("backup in %s resumes at epoch %d but holds the history of only %d",
                            self.dir, start + 1, len(self.entries))
            self._restore_early_stopping()
            log.info("resuming from the backup in %s after epoch %d", self.dir, start)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def _save_model(self) -> None:
        """Keras's double checkpoint, with every file replaced whole: the current pair (weights,
        metadata) is copied to `.bkp`, then the new weights and then metadata naming their sha256
        replace it, so wherever a kill lands one of the two pairs is whole and matching."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (weights, meta), (prev_weights, prev_meta) = self._pair(""), self._pair(".bkp")
        for current, prev in ((weights, prev_weights), (meta, prev_meta)):
            if current.is_file():
                with atomic_path(prev) as tmp:
                    shutil.copyfile(current, tmp)
        with atomic_path(weights, suffix=".weights.h5") as tmp:   # Keras checks the suffix
            self.model.save_weights(tmp, overwrite=True)
        write_json(meta, {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                          WEIGHTS_SHA256: sha256_file(weights)})

    def _pair(self, suffix: str) -> tuple[Path, Path]:
        """Keras's weights and training-metadata files (`.bkp`: the previous epoch's)."""
        return Path(self._weights_path + suffix), Path(self._training_metadata_path + suffix)

    def _repair(self) -> None:
        """Make Keras's backup loadable before it is loaded: a broken current pair is replaced
        by the previous epoch's; with none usable the backup is dropped and the phase restarts."""
        current, prev = self._pair(""), self._pair(".bkp")
        if not any(p.exists() for p in current):
            return
        problem = _unusable(*current)
        if problem is None:
            return
        if prev[1].exists() and _unusable(*prev) is None:
            log.warning("the backup in %s is broken (%s): resuming from the epoch before it",
                        self.dir, problem)
            for src, dst in zip(prev, current):
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
            return
        log.warning("the backup in %s is broken (%s) and holds no earlier epoch: it is removed "
                    "and the phase starts again", self.dir, problem)
        shutil.rmtree(self.dir)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        es = self.early_stopping
        self.entries.append({
            "epoch": epoch,
            "logs": {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0},
            "seconds": time.perf_counter() - self._started,
            "early_stopping": {"best": None if es.best is None else float(es.best),
                               "wait": es.wait, "best_epoch": es.best_epoch},
        })
        if self.write:
            self._write_state(epoch)
        super().on_epoch_end(epoch, logs)

    def history(self) -> dict[str, list[float]]:
        """Keras-style history (metric -> per-epoch values) over every epoch, resumed ones included."""
        keys = list(dict.fromkeys(k for e in self.entries for k in e["logs"]))
        return {k: [e["logs"].get(k, float("nan")) for e in self.entries] for k in keys}

    @property
    def seconds(self) -> float:
        return float(sum(e["seconds"] for e in self.entries))

    def _best_file(self, epoch: int) -> Path:
        return self.dir / f"best-{epoch}.npz"

    def _write_state(self, epoch: int) -> None:
        es = self.early_stopping
        self.dir.mkdir(parents=True, exist_ok=True)
        if es.best_weights is not None and es.best_epoch == epoch:
            with atomic_file(self._best_file(epoch), "wb") as fh:
                np.savez(fh, *es.best_weights)
        write_json(self.dir / STATE_FILE, {"entries": self.entries})
        # keep the best weights the last two entries refer to (the state may be one epoch ahead)
        keep = {self._best_file(e["early_stopping"]["best_epoch"]) for e in self.entries[-2:]}
        for stale in set(self.dir.glob("best-*.npz")) - keep:
            stale.unlink(missing_ok=True)

    def _read_state(self) -> list[dict[str, Any]]:
        path = self.dir / STATE_FILE
        return list(read_json(path)["entries"]) if path.is_file() else []

    def _restore_early_stopping(self) -> None:
        if not self.entries:
            return
        saved, es = self.entries[-1]["early_stopping"], self.early_stopping
        es.best, es.wait, es.best_epoch = saved["best"], saved["wait"], saved["best_epoch"]
        best = self._best_file(es.best_epoch)
        if es.restore_best_weights and best.is_file():
            with np.load(best) as npz:
                es.best_weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
        elif es.restore_best_weights:
            log.warning("best weights of epoch %d are missing from %s; early stopping restarts "
                        "its search for the best epoch", es.best_epoch + 1, self.dir)
            es.best, es.wait = None, 0


def _unusable(weights: Path, meta: Path) -> str | None:
    """Why Keras could not resume from this weights + metadata pair; None when it can."""
    try:
        saved = read_json(meta)
        epoch = saved["epoch"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{meta.name} is unreadable: {type(exc).__name__}: {exc}"
    if not isinstance(epoch, int) or epoch < 0:
        return f"{meta.name} holds epoch {epoch!r}"
    if not weights.is_file():
        return f"{weights.name} is missing"
    if WEIGHTS_SHA256 in saved:
        return (None if sha256_file(weights) == saved[WEIGHTS_SHA256]
                else f"{weights.name} is not the file {meta.name} was written with")
    try:   # metadata written by Keras itself: the weights must at least open
        import h5py

        h5py.File(weights, "r").close()
    except OSError as exc:
        return f"{weights.name} is unreadable: {exc}"
    return None


def open_live(live_dir: str | Path, done: Sequence[dict[str, float]]) -> Any:
    """A dvclive.Live in `live_dir` whose curves hold exactly the epochs in `done`.

    It resumes the existing curves when they match `done`; otherwise (DVC deletes stage outputs
    before re-running a stage) it starts them afresh and writes `done` again.
    """
    from dvclive import Live

    kwargs = {"dir": str(live_dir), "save_dvc_exp": False, "dvcyaml": None}
    if done:
        live = Live(resume=True, **kwargs)
        if live.step == len(done):
            return live
    live = Live(resume=False, **kwargs)
    for epoch, logs in enumerate(done):
        log_epoch(live, epoch, logs)
    return live


def log_epoch(live: Any, epoch: int, logs: dict[str, float]) -> None:
    """Log one epoch's `loss`/`val_loss`... as `train/loss`, `val/loss`... at step = epoch."""
    live.step = epoch
    for name in CURVE_METRICS:
        for key, prefix in ((name, "train"), (f"val_{name}", "val")):
            if key in logs:
                live.log_metric(f"{prefix}/{name}", float(logs[key]))
    live.next_step()


def write_curves(live_dir: str | Path, history: dict[str, list[float]]) -> None:
    """Write learning curves for a finished history (metric -> per-epoch values)."""
    epochs = max((len(v) for v in history.values()), default=0)
    open_live(live_dir, [{k: v[i] for k, v in history.items() if i < len(v)}
                         for i in range(epochs)]).end()


def publish_curves(live_dir: Path, target: Path) -> None:
    """Replace plots/<id>/train with a finished phase's curves, atomically: a failed or refused
    run never leaves half-written curves there (they grow in the backup folder meanwhile)."""
    with atomic_dir(target) as tmp:
        shutil.copytree(live_dir, tmp, dirs_exist_ok=True)


class LiveCurves(keras.callbacks.Callback):
    """Learning curves in dvclive: train/{loss,accuracy}, val/{loss,accuracy} each epoch."""

    def __init__(self, live_dir: str | Path, state: TrainingState) -> None:
        super().__init__()
        self.dir, self.state, self.live = Path(live_dir), state, None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.live = open_live(self.dir, [e["logs"] for e in self.state.entries])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        log_epoch(self.live, epoch, logs or {})

    def on_train_end(self, logs: dict | None = None) -> None:
        self.live.end()


@dataclass(frozen=True)
class PhaseResult:
    """What one fit_phase did, resumed epochs included."""

    history: dict[str, list[float]]
    epochs_run: int
    seconds: float
    best_epoch: int
    resumed_from: int
    steps_run: int    # optimizer steps (the optimizer's own count, resumed steps included)


def fit_phase(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset, *, epochs: int,
              patience: int | None, backup_dir: str | Path, curves_dir: str | Path | None,
              callbacks: Sequence[keras.callbacks.Callback] = (), write: bool = True,
              steps_per_epoch: int | None = None, min_epochs: int = 0) -> PhaseResult:
    """Fit a compiled model with early stopping, backups after each epoch and dvclive curves.

    `patience` None: no early stopping, every epoch runs (a scheduled lr: `optim.stops_early`);
    either way the weights of the lowest `val_loss` are restored at the end. The history holds
    each epoch's `learning_rate` (`LogLearningRate`). Re-running it after a kill resumes from the
    last finished epoch in `backup_dir`; the backup is removed when fit ends. `write=False`
    (non-chief workers) keeps backups only. `steps_per_epoch` None: an epoch is one pass over
    `train`; else `train` is repeated and cut into epochs of that many steps (virtual epochs,
    each one validated). Early stopping never stops before `min_epochs` epochs have run.
    """
    # patience >= epochs never stops: the wait reaches at most epochs - 1
    early = EarlyStopping(min_epochs, monitor="val_loss", restore_best_weights=True,
                          patience=epochs if patience is None else patience)
    state = TrainingState(backup_dir, early, write=write)
    chain: list[keras.callbacks.Callback] = [LogLearningRate(), early, state]
    if curves_dir is not None and write:
        chain.append(LiveCurves(curves_dir, state))
    model.fit(train.repeat() if steps_per_epoch else train, validation_data=val, epochs=epochs,
              steps_per_epoch=steps_per_epoch, callbacks=chain + list(callbacks), shuffle=False,
              verbose=1 if sys.stdout.isatty() else 2)
    best = early.best_epoch if early.best is not None else max(len(state.entries) - 1, 0)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return PhaseResult(state.history(), len(state.entries), state.seconds, int(best),
                       state.resumed_from, steps)


# --- backups outside DVC outputs ----------------------------------------------------------------

def prepare_backup(folder: Path, print_: str) -> Path:
    """`folder`, emptied first when it holds a backup of other params or data; stamped `print_`."""
    stamp = folder / FINGERPRINT_FILE
    if folder.exists() and (not stamp.is_file() or stamp.read_text().strip() != print_):
        log.info("ignoring the stale backup in %s (params, data or code changed)", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not stamp.is_file():
        with atomic_file(stamp) as fh:
            fh.write(print_ + "\n")
    return folder


def clean_backups(paths: Paths, model_ids: Sequence[str]) -> None:
    """Remove the backups of a stage that finished."""
    for model_id in model_ids:
        shutil.rmtree(paths.backup(model_id), ignore_errors=True)
