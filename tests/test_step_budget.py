"""Step budgets (`train.min_steps`): a phase runs at least that many optimizer steps whatever
the data size, in `train.epochs` longer epochs (validated once each), and records `steps_run`."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from dvc_project import TINY, commit, run, set_params, stages_run

from vitbench.train import loop, optim
from vitbench.models.registry import section_with
from vitbench.train.phases import StepBudget, step_budget


@pytest.mark.parametrize("epochs, batches, min_steps, expected", [
    (3, 4, None, StepBudget(3, 4, False, 0)),     # null: today's epochs
    (3, 4, 10, StepBudget(3, 4, False, 3)),       # 12 steps already: passes, none stopped early
    (3, 4, 12, StepBudget(3, 4, False, 3)),
    (3, 1, 10, StepBudget(3, 4, True, 3)),        # 1 step a pass: 3 epochs of 4 steps
    (2, 1, 200, StepBudget(2, 100, True, 2)),
    (5, 2, 11, StepBudget(5, 3, True, 4)),        # 4 epochs of 3 reach 11: stopping may come after
])
def test_step_budget(epochs: int, batches: int, min_steps: int | None, expected: StepBudget) -> None:
    budget = step_budget(section_with("train", epochs=epochs, min_steps=min_steps), batches)
    assert budget == expected
    assert budget.steps >= (min_steps or 0)
    assert budget.min_epochs * budget.steps_per_epoch >= (min_steps or 0)


def _frozen() -> keras.Model:
    """val_loss never improves after the first epoch (SGD at lr 0): early stopping stops at once."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    optim.compile_model(model, keras.optimizers.SGD(0.0), 2)
    return model


@pytest.mark.parametrize("steps, min_epochs, epochs_run", [(None, 0, 2), (None, 4, 4), (5, 3, 3)])
def test_virtual_epochs_and_early_stopping_wait_for_the_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: int | None, min_epochs: int,
        epochs_run: int) -> None:
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0.5).astype("int32"))).batch(8)
    result = loop.fit_phase(_frozen(), ds, ds, epochs=6, patience=1, backup_dir="backup",
                            curves_dir=None, steps_per_epoch=steps, min_epochs=min_epochs)
    assert result.epochs_run == epochs_run and result.best_epoch == 0
    assert result.steps_run == epochs_run * (steps or 2)   # 2 batches a pass


def _trained(project: Path, model_id: str) -> dict:
    return json.loads((project / "models" / model_id / "record.json").read_text())


@pytest.mark.slow
def test_min_steps_through_train_vit_at_two_images_per_class(project: Path) -> None:
    set_params(project, {**TINY, "split": {**TINY["split"], "max_train_per_class": 2},
                         "train": {**TINY["train"], "epochs": 2, "min_steps": 15}})
    commit(project, "tiny, 2 images per class, 15 steps a phase")
    proc = run(project, "dvc", "repro", "train_vit")
    assert stages_run(proc.stdout)[-1] == "train_vit"
    rows = len((project / "data" / "augmented" / "train.csv").read_text().splitlines()) - 1
    one_pass = -(-rows // TINY["train"]["batch_size"])
    assert one_pass < 8, "the data alone would make fewer than min_steps steps"
    record = _trained(project, "vit_scratch")
    assert isinstance(record["steps_run"], int) and record["steps_run"] >= 15
    assert record["epochs_run"] == 2 and {len(v) for v in record["history"].values()} == {2}
    assert "vit_scratch: 2 epochs of 8 steps on repeated data" in proc.stdout + proc.stderr

    set_params(project, {"train": {"min_steps": None}})   # null: one pass an epoch, as before
    run(project, "dvc", "repro", "train_vit")
    record = _trained(project, "vit_scratch")
    assert record["steps_run"] == record["epochs_run"] * one_pass == 2 * one_pass
