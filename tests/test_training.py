"""Training: the warm-up cosine schedule, strategies, the resumable loop and the three stage entry points."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from dvc_project import TINY

from vitbench.models import registry
from vitbench.train import loop, optim, phases as training
from vitbench.core.config import merge
from vitbench.models.registry import params_with
from vitbench.data.manifest import write_labels, write_manifest
from vitbench.core.paths import Paths

CLASSES = ("circle", "square", "stripes")
COLOURS = {"circle": (220, 40, 40), "square": (40, 200, 60), "stripes": (30, 60, 230)}
TINY_VIT_B = {"dropout": 0.0, "mlp_dim": 16, "num_heads": 2, "num_layers": 1, "hidden_size": 16}
GIT = ["git", "-c", "user.email=test@vitbench.local", "-c", "user.name=vitbench test"]


# --- helpers --------------------------------------------------------------------------------------

def git_repo(root: Path) -> Path:
    """`root` as a git repository with one commit (dvclive needs a commit)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text("/data\n/models\n/.cache\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=root, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", "init"], cwd=root, check=True)
    return root


def _image(path: Path, cls: str, rng: np.random.Generator) -> str:
    noise = rng.integers(-25, 25, (40, 40, 3))
    pixels = np.clip(np.array(COLOURS[cls]) + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_dataset_tree(root: Path, per_class: int = 6, seed: int = 0) -> Paths:
    """data/clean + data/split/{train,val,test}.csv + labels.json + data/augmented, as the stages write them."""
    rng = np.random.default_rng(seed)
    paths = Paths(root)
    rows = []
    for cls in CLASSES:
        for i in range(per_class):
            file = paths.clean / cls / f"{cls}{i}.png"
            split = "val" if i % 3 == 2 else "train"
            rows.append({"path": str(file), "class": cls, "sha256": _image(file, cls, rng),
                         "split": split})
    clean = pd.DataFrame(rows)
    for split in ("train", "val", "test"):
        write_manifest(clean[clean["split"] == split], paths.split_csv(split))
    write_labels(list(CLASSES), paths.labels)
    train = clean[clean["split"] == "train"]
    augmented = []
    for row in train.itertuples():
        copy = paths.augmented / "train" / row._2 / f"{Path(row.path).stem}_a.png"
        augmented.append({"path": row.path, "class": row._2, "sha256": row.sha256,
                          "origin": row.sha256, "augmented": 0})
        augmented.append({"path": str(copy), "class": row._2, "sha256": _image(copy, row._2, rng),
                          "origin": row.sha256, "augmented": 1})
    write_manifest(pd.DataFrame(augmented), paths.augmented_csv)
    return paths


def tiny_params(seed: int = 3, **sections: dict):
    """params.yaml with tiny models, online augmentation off (as in TINY), and `sections`."""
    raw = {
        "seed": seed,
        "augment_online": TINY["augment_online"],
        "train": {"epochs": 1, "batch_size": 8, "patience": 2, "mixed_precision": False},
        "cnn": {"arch": "mobilenetv2", "image_size": 32, "pretrained": False},
        "vit": {"image_size": 16, "patch_size": 4, "projection_dim": 16, "num_heads": 2, "layers": 1,
                "mlp_head": [16], "warmup": 0.2},
        "vit_ft": {"variant": "b32", "image_size": 32, "pretrained": False, "blocks": None},
    }
    return params_with(merge(raw, sections))


def train_stage(family: str, params, paths: Paths) -> None:
    """Train a family as its stage script does: its section, train, seed, augment_online."""
    training.train_family(registry.family(family), getattr(params, family), params.train,
                          params.seed, paths, params.augment_online)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """A committed git repo holding a tiny split + augmented dataset; the working directory."""
    root = git_repo(tmp_path / "proj")
    monkeypatch.chdir(root)
    return make_dataset_tree(root)


@pytest.fixture
def tiny_vit_b(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink vit-keras' ViT-B config so finetune_vit trains in seconds (the architecture code is
    unchanged; pretrained_vit reads CONFIG_B when it builds a model)."""
    from vit_keras import vit

    monkeypatch.setattr(vit, "CONFIG_B", TINY_VIT_B)


def read_tsv_steps(path: Path) -> list[int]:
    return [int(s) for s in pd.read_csv(path, sep="\t")["step"]]


def assert_trained(paths: Paths, model_id: str, *, epochs: int, pretrained: bool) -> dict:
    """models/<id> holds weights and a complete record; plots/<id>/train holds the four curves."""
    record = json.loads((paths.model(model_id) / "record.json").read_text())
    assert (paths.model(model_id) / "model.weights.h5").is_file()
    for key in ("id", "display_name", "family", "build", "classes", "image_size", "preprocess",
                "pretrained", "train_seconds", "epochs_run", "params_total", "params_trainable",
                "history", "device", "mixed_precision"):
        assert key in record, key
    assert record["id"] == model_id and record["classes"] == list(CLASSES)
    assert record["pretrained"] is pretrained and record["device"] == "CPU"
    assert record["epochs_run"] == epochs and record["train_seconds"] > 0
    assert {len(v) for v in record["history"].values()} == {epochs}
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(record["history"])
    for part in ("train", "val"):
        for metric in ("loss", "accuracy"):
            tsv = paths.train_plots(model_id) / "plots" / "metrics" / part / f"{metric}.tsv"
            assert read_tsv_steps(tsv) == list(range(epochs)), tsv
    return record


# --- schedule, precision, strategy ----------------------------------------------------------------

def test_warmup_cosine_values():
    s = optim.WarmupCosine(1e-3, total_steps=110, warmup_steps=10, final_lr=1e-5)
    lr = lambda step: float(s(step))  # noqa: E731
    assert lr(0) == pytest.approx(1e-4)                   # (0 + 1) / 10 of the peak
    assert lr(4) == pytest.approx(5e-4)
    assert lr(9) == pytest.approx(1e-3)                   # warm-up ends at the peak
    assert lr(10) == pytest.approx(1e-3)                  # the cosine starts at the peak
    assert lr(60) == pytest.approx((1e-3 + 1e-5) / 2)     # half way down
    assert lr(110) == pytest.approx(1e-5) and lr(500) == pytest.approx(1e-5)
    values = [lr(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_cosine_serialises_inside_an_optimizer():
    s = optim.WarmupCosine(2e-3, total_steps=50, warmup_steps=5)
    opt = keras.optimizers.AdamW(learning_rate=s, weight_decay=1e-4)
    again = keras.optimizers.AdamW.from_config(json.loads(json.dumps(opt.get_config())))
    assert isinstance(again.learning_rate, optim.WarmupCosine) or isinstance(
        again._learning_rate, optim.WarmupCosine)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert restored.get_config() == s.get_config()
    assert float(restored(7)) == pytest.approx(float(s(7)))


def test_learning_rate_warmup_zero_is_constant():
    assert optim.learning_rate(1e-3, 0.0, 100) == 1e-3
    s = optim.learning_rate(1e-3, 0.1, 100)
    assert isinstance(s, optim.WarmupCosine) and s.warmup_steps == 10
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.WarmupCosine(1e-3, total_steps=5, warmup_steps=6)


def test_mixed_precision_setting():
    try:
        assert training.use_mixed_precision("auto") is False       # no GPU here
        assert keras.mixed_precision.global_policy().name == "float32"
        assert training.use_mixed_precision(True) is True
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_default_strategy_on_one_cpu(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert training.get_strategy() is tf.distribute.get_strategy()


def test_task_from_tf_config(monkeypatch):
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert training.task() == ("worker", 1, False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert training.task()[2] is True
    monkeypatch.delenv("TF_CONFIG")
    assert training.task() == ("chief", 0, True)


def run_script(code: str, cwd: Path, env: dict | None = None, timeout: float = 240) -> subprocess.Popen:
    """Start `code` in a fresh Python (TF initialises there, not in this test process)."""
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(code))
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.Popen([sys.executable, str(script)], cwd=cwd, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


TINY_FIT = """
import json, sys, keras, numpy as np, tensorflow as tf
from vitbench.models import registry
from vitbench.train import loop, optim, phases as training

def data():
    rng = np.random.default_rng(0)
    x = rng.random((48, 4)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(48, seed=1).batch(8), \\
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

def tiny_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(2, activation="softmax")])
"""


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    root = git_repo(tmp_path / "repo")
    proc = run_script(TINY_FIT + """
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = training.get_strategy()
train, val = data()
with strategy.scope():
    model = tiny_model()
    optim.compile_model(model, keras.optimizers.Adam(0.01), 2)
result = loop.fit_phase(model, train, val, epochs=1, patience=5, backup_dir="backup",
                            curves_dir="curves")
print(json.dumps({"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                  "epochs": result.epochs_run, "loss": result.history["loss"]}))
""", root)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["strategy"] == "MirroredStrategy" and result["replicas"] == 2
    assert result["epochs"] == 1 and all(np.isfinite(result["loss"]))


KILLABLE = TINY_FIT + """
import os, time
from pathlib import Path

class Marker(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        with open("markers.txt", "a") as fh:
            fh.write(f"begin {epoch}\\n")
    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == int(os.environ.get("STALL_AT", -1)) and batch == 1:
            Path("stalled").write_text("")
            time.sleep(600)   # killed here, in the middle of an epoch
    def on_epoch_end(self, epoch, logs=None):
        with open("markers.txt", "a") as fh:
            fh.write(f"end {epoch}\\n")

keras.utils.set_random_seed(0)
train, val = data()
model = tiny_model()
optim.compile_model(model, keras.optimizers.Adam(0.01), 2)
result = loop.fit_phase(model, train, val, epochs=8, patience=100, backup_dir="backup",
                            curves_dir="curves", callbacks=[Marker()])
print(json.dumps({"epochs": result.epochs_run, "resumed_from": result.resumed_from,
                  "history": result.history}))
"""


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_finished_epoch(tmp_path):
    root = git_repo(tmp_path / "repo")
    proc = run_script(KILLABLE, root, env={"STALL_AT": "3"})
    deadline = time.monotonic() + 180
    while not (root / "stalled").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "training never reached epoch 4"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    first_run = (root / "markers.txt").read_text().split()
    assert first_run[-2:] == ["begin", "3"] and "end 2" in " ".join(first_run)
    assert json.loads((root / "backup" / "training_metadata.json").read_text())["epoch"] == 3

    (root / "markers.txt").unlink()
    proc = run_script(KILLABLE, root)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    second_run = (root / "markers.txt").read_text().split("\n")
    assert second_run[0] == "begin 3"                 # not from 0
    assert result["resumed_from"] == 3 and result["epochs"] == 8
    assert {len(v) for v in result["history"].values()} == {8}   # epochs 1-3 kept from the first run
    for part in ("train", "val"):
        assert read_tsv_steps(root / "curves" / "plots" / "metrics" / part / "loss.tsv") == list(range(8))
    assert not (root / "backup").exists()             # removed once training finished


# --- the resumable loop, in process ----------------------------------------------------------------

class Interrupt(keras.callbacks.Callback):
    """Raise at the start of epoch `at`, as a crash would."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


def _frozen_model() -> keras.Model:
    """A model that does not learn (SGD at lr 0), so val_loss never improves after epoch 1."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    optim.compile_model(model, keras.optimizers.SGD(0.0), 2)
    return model


@pytest.mark.slow
def test_early_stopping_state_survives_a_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(git_repo(tmp_path / "repo"))
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0.5).astype("int32"))).batch(8)
    kwargs = {"epochs": 10, "patience": 3, "backup_dir": "backup", "curves_dir": "curves"}
    model = _frozen_model()
    with pytest.raises(KeyboardInterrupt):
        loop.fit_phase(model, ds, ds, callbacks=[Interrupt(2)], **kwargs)
    state = json.loads(Path("backup", loop.STATE_FILE).read_text())["entries"]
    assert [e["early_stopping"]["wait"] for e in state] == [0, 1]
    assert Path("backup", "best-0.npz").is_file()

    result = loop.fit_phase(_frozen_model(), ds, ds, **kwargs)
    # patience 3 counted across the interruption: epochs 2 and 3 exhaust it (a fresh count would run 6)
    assert result.resumed_from == 2 and result.epochs_run == 4 and result.best_epoch == 0
    assert read_tsv_steps(Path("curves/plots/metrics/val/loss.tsv")) == [0, 1, 2, 3]


def _damage(backup: Path, how: str) -> None:
    """Break Keras's backup files as a kill during their write leaves them."""
    meta, weights = backup / "training_metadata.json", backup / "latest.weights.h5"
    if how == "empty metadata":          # killed while the metadata was written
        meta.write_bytes(b"")
    elif how == "older weights":         # killed between the weights and the metadata
        weights.write_bytes((backup / "latest.weights.h5.bkp").read_bytes())
    elif how == "truncated weights":     # killed while the weights were written
        weights.write_bytes(weights.read_bytes()[:100])


@pytest.mark.slow
@pytest.mark.parametrize("stop_at, how, resumed", [
    (3, "empty metadata", 2), (3, "older weights", 2), (3, "truncated weights", 2),
    (1, "empty metadata", 0)])   # the first epoch's backup has no earlier copy: start again
def test_a_broken_backup_resumes_from_the_epoch_before_or_starts_again(
        tmp_path, monkeypatch, caplog, stop_at, how, resumed):
    monkeypatch.chdir(git_repo(tmp_path / "repo"))
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0.5).astype("int32"))).batch(8)
    kwargs = {"epochs": 5, "patience": None, "backup_dir": "backup", "curves_dir": "curves"}
    with pytest.raises(KeyboardInterrupt):
        loop.fit_phase(_frozen_model(), ds, ds, callbacks=[Interrupt(stop_at)], **kwargs)
    _damage(Path("backup"), how)
    result = loop.fit_phase(_frozen_model(), ds, ds, **kwargs)
    assert result.resumed_from == resumed and result.epochs_run == 5
    assert {len(v) for v in result.history.values()} == {5}
    assert read_tsv_steps(Path("curves/plots/metrics/val/loss.tsv")) == [0, 1, 2, 3, 4]
    warning = "resuming from the epoch before it" if resumed else "holds no earlier epoch"
    assert any(warning in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert not Path("backup").exists()


@pytest.mark.slow
def test_train_vit_resumes_past_an_emptied_backup_file_and_models_change_only_at_the_end(
        project, monkeypatch):
    def snapshot() -> dict[str, bytes]:
        files = sorted((project.root / "models").rglob("*"))
        return {str(p): p.read_bytes() for p in files if p.is_file()}

    train_stage("vit", tiny_params(), project)
    before = snapshot()
    params = tiny_params(train={"epochs": 4})
    real = training.fit_phase
    monkeypatch.setattr(training, "fit_phase",
                        lambda *a, **kw: real(*a, **kw, callbacks=[Interrupt(3)]))
    with pytest.raises(KeyboardInterrupt):
        train_stage("vit", params, project)
    backup = project.backup("vit_scratch") / "fit"
    (backup / "training_metadata.json").write_bytes(b"")   # as a kill during its write left it
    assert snapshot() == before
    monkeypatch.setattr(training, "fit_phase", real)
    train_stage("vit", params, project)
    assert_trained(project, "vit_scratch", epochs=4, pretrained=False)
    assert snapshot() != before and not project.backup("vit_scratch").exists()


# --- early stopping and the schedule agree ----------------------------------------------------------

def _diverging_data() -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Validation labels are the training labels flipped: the better the fit, the worse val_loss
    (best at the first epoch), so early stopping at a constant lr stops at once."""
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    return (tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
            tf.data.Dataset.from_tensor_slices((x, 1 - y)).batch(8))


def _fit(recipe, epochs: int, backup: Path, callbacks=()) -> loop.PhaseResult:
    """One phase as training.train_phase runs it: make_optimizer over the planned steps, and
    early stopping (train.patience 1) only where optim.stops_early says so."""
    keras.utils.set_random_seed(0)
    train, val = _diverging_data()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    optim.compile_model(model, optim.make_optimizer(recipe, epochs * 4), 2)
    patience = 1 if optim.stops_early(recipe) else None
    return loop.fit_phase(model, train, val, epochs=epochs, patience=patience, backup_dir=backup,
                          curves_dir=None, callbacks=callbacks)


@pytest.mark.slow
def test_a_cosine_phase_runs_its_schedule_to_the_end_and_keeps_its_best_epoch(tmp_path):
    from vitbench.core.config import PhaseRecipe

    cosine = _fit(PhaseRecipe(0.1, 0.0, 0.2, 0.0), 5, tmp_path / "cosine")
    lrs = cosine.history["learning_rate"]
    assert cosine.epochs_run == 5 and len(lrs) == 5 and cosine.best_epoch == 0
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9) and max(lrs) == pytest.approx(0.1, rel=0.05)
    assert lrs == pytest.approx([float(optim.WarmupCosine(0.1, 20, 4)(4 * (e + 1))) for e in range(5)])
    constant = _fit(PhaseRecipe(0.1, 0.0, 0.0, 0.0), 5, tmp_path / "constant")   # early stopping as before
    assert constant.epochs_run == 2 and constant.history["learning_rate"] == pytest.approx([0.1] * 2)


@pytest.mark.slow
def test_a_resumed_cosine_phase_has_the_learning_rates_of_an_uninterrupted_one(tmp_path):
    from vitbench.core.config import PhaseRecipe

    recipe = PhaseRecipe(0.1, 0.0, 0.2, 0.0)
    whole = _fit(recipe, 6, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _fit(recipe, 6, tmp_path / "resumed", callbacks=[Interrupt(3)])
    resumed = _fit(recipe, 6, tmp_path / "resumed")
    assert resumed.resumed_from == 3 and resumed.epochs_run == 6
    assert resumed.history["learning_rate"] == pytest.approx(whole.history["learning_rate"])
    assert resumed.history["learning_rate"][-1] == pytest.approx(0.0, abs=1e-9)


def test_a_stage_epochs_replace_train_epochs_for_that_stage_only():
    params = tiny_params(train={"epochs": 7}, vit={"epochs": 3})
    assert params.train.for_stage(params.vit).epochs == 3
    assert params.train.for_stage(params.cnn) is params.train and params.train.epochs == 7
    from vitbench.core.errors import ConfigError
    with pytest.raises(ConfigError, match="cnn.epochs"):
        tiny_params(cnn={"epochs": 0})


def test_open_live_resumes_matching_curves_and_rewrites_others(tmp_path, monkeypatch):
    monkeypatch.chdir(git_repo(tmp_path / "repo"))
    done = [{"loss": 1.0 - i / 10, "val_loss": 1.2 - i / 10, "accuracy": i / 10} for i in range(3)]
    loop.write_curves("curves", {k: [d[k] for d in done] for k in done[0]})
    tsv = Path("curves/plots/metrics/train/loss.tsv")
    assert read_tsv_steps(tsv) == [0, 1, 2]
    live = loop.open_live("curves", done)          # matching: continue at step 3
    loop.log_epoch(live, 3, {"loss": 0.5})
    live.end()
    assert read_tsv_steps(tsv) == [0, 1, 2, 3]
    live = loop.open_live("curves", done[:2])      # e.g. a backup one epoch behind: rewrite
    live.end()
    assert read_tsv_steps(tsv) == [0, 1]
    assert pd.read_csv(tsv, sep="\t")["loss"].tolist() == pytest.approx([1.0, 0.9])


def test_random_cnn_base_trains_from_scratch_with_fast_batchnorm():
    from vitbench.models import registry
    from vitbench.models.store import count_params
    from vitbench.models.cnn.builder import build_cnn

    model = build_cnn("mobilenetv2", 32, 3, 0.0)
    bns = [layer for layer in model.get_layer("base").layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.momentum == 0.999 for bn in bns)
    registry.family("cnn").prepare_phase(model, "transfer", pretrained=False)
    from vitbench.models.cnn.builder import SCRATCH_BN_MOMENTUM

    assert all(bn.trainable and bn.momentum == SCRATCH_BN_MOMENTUM for bn in bns)
    everything = sum(int(np.prod(w.shape)) for w in model.weights if "moving" not in w.path)
    assert count_params(model.trainable_weights) == everything
    registry.family("cnn").prepare_phase(model, "finetune", pretrained=False)
    assert not any(bn.trainable for bn in bns)                      # BatchNorm frozen again
    assert 0 < everything - count_params(model.trainable_weights) < everything / 10


@pytest.mark.slow
def test_train_cnn_without_pretrained_weights_trains_the_whole_network(project):
    """...with online augmentation (MixUp: soft labels) and a full recipe per phase, recorded.
    VGG16 (no BatchNorm: every weight trains in both phases); MobileNetV2's BatchNorm in the two
    phases is test_random_cnn_base_trains_from_scratch_with_fast_batchnorm's."""
    phase = {"lr": 1e-3, "weight_decay": 0.01, "warmup": 0.2, "label_smoothing": 0.1}
    params = tiny_params(cnn={"arch": "vgg16", "pretrained": False, "transfer": phase,
                              "finetune": {**phase, "lr": 1e-4}},
                         augment_online={"flip": True, "mixup": 0.2})
    train_stage("cnn", params, project)
    transfer = assert_trained(project, "cnn_transfer", epochs=1, pretrained=False)
    finetuned = assert_trained(project, "cnn_finetuned", epochs=1, pretrained=False)
    for record in (transfer, finetuned):                       # the whole network, not the head
        assert record["params_trainable"] == record["params_total"] > 100 * (512 + 1) * 3
    for record, lr in ((transfer, 1e-3), (finetuned, 1e-4)):
        assert record["recipe"] == {**phase, "lr": lr, "optimizer": "AdamW",
                                    "schedule": "warm-up + cosine", "augment_copies": 1.0,
                                    "augment_online": {"flip": True, "mixup": 0.2},
                                    "epochs": 1, "early_stopping": None}  # cosine: runs to the end


def test_stale_backup_is_ignored(tmp_path):
    folder = tmp_path / "backup" / "m"
    loop.prepare_backup(folder, "aaa")
    (folder / "fit").mkdir()
    loop.prepare_backup(folder, "aaa")
    assert (folder / "fit").is_dir()                   # same fingerprint: kept
    loop.prepare_backup(folder, "bbb")
    assert not (folder / "fit").exists()               # other params or data: dropped
    assert (folder / loop.FINGERPRINT_FILE).read_text().strip() == "bbb"


@pytest.mark.slow
def test_fingerprint_follows_params_data_and_code(project, monkeypatch):
    def fingerprint(params):
        return training.fingerprint(registry.family("cnn"), params.cnn, params.train, params.seed, project,
                                    params.augment_online)

    base = fingerprint(tiny_params())
    assert fingerprint(tiny_params()) == base
    assert fingerprint(tiny_params(cnn={"dropout": 0.3})) != base
    assert fingerprint(tiny_params(train={"patience": 5})) != base
    assert fingerprint(tiny_params(seed=4)) != base
    assert fingerprint(tiny_params(augment_online={"flip": True})) != base
    assert fingerprint(tiny_params(vit={"lr": 0.01})) == base
    project.labels.write_text(json.dumps({"classes": list(reversed(CLASSES))}))
    labels_changed = fingerprint(tiny_params())
    assert labels_changed != base

    # the code is what vitbench.core.deps finds training imports (the same list dvc.yaml is checked
    # against): a change to any of those files makes the backup stale
    from vitbench.core import deps

    names = {deps.relative(p) for p in deps.module_files("vitbench.train.phases")}
    assert {"vitbench/train/phases.py", "vitbench/models/registry.py",
            "vitbench/data/pipeline.py", "vitbench/core/config/__init__.py"} <= names
    assert "vitbench/evaluate/evaluation.py" not in names
    assert not any(n.startswith("vitbench/models/cnn/") for n in names)   # the stage's family: below
    real_sha = training.sha256_file
    for edited in ("registry.py", "builder.py"):   # the family's package counts too
        monkeypatch.setattr(training, "sha256_file", lambda p, e=edited: "edited" if p.name == e
                            else real_sha(p))
        assert fingerprint(tiny_params()) != labels_changed, edited
    monkeypatch.setattr(training, "sha256_file", lambda p: "edited" if p.name == "layers.py"
                        else real_sha(p))   # the from-scratch ViT's code is not the CNN's
    assert fingerprint(tiny_params()) == labels_changed


# --- the stage entry points ------------------------------------------------------------------------

@pytest.mark.slow
def test_train_vit_end_to_end(project):
    # the patch tokenizer with SPT (params.yaml's conv tokenizer: the next test)
    params = tiny_params(train={"epochs": 2}, vit={"drop_path": 0.1, "label_smoothing": 0.1,
                                                   "tokenizer": "patch", "spt": True,
                                                   "seq_pool": False, "weight_decay": 1e-4})
    train_stage("vit", params, project)
    record = assert_trained(project, "vit_scratch", epochs=2, pretrained=False)
    assert record["family"] == "vit" and record["preprocess"] == "tf"
    assert record["build"]["patch_size"] == 4 and record["build"]["num_classes"] == 3
    assert record["build"]["drop_path"] == 0.1 and record["build"]["tokenizer"] == "patch"
    assert record["recipe"] == {"optimizer": "AdamW", "lr": 1e-3, "weight_decay": 1e-4,
                                "warmup": 0.2, "schedule": "warm-up + cosine",
                                "label_smoothing": 0.1, "augment_copies": 1.0,
                                "augment_online": {}, "epochs": 2, "early_stopping": None,
                                "tokens": "4x4 patches (SPT): 4x4 = 16"}
    assert record["history"]["learning_rate"][-1] == pytest.approx(0.0, abs=1e-9)
    assert record["params_trainable"] == record["params_total"]
    assert (project.plots / "vit_patches.png").stat().st_size > 0
    assert not project.backup("vit_scratch").exists()


@pytest.mark.slow
def test_train_vit_conv_tokenizer_draws_its_tokens(project, monkeypatch):
    import vitbench.models.vit.patches as patches

    drawn: list[int] = []
    real = patches.token_grid
    monkeypatch.setattr(patches, "token_grid",
                        lambda image, n, path: (drawn.append(n), real(image, n, path))[1])
    # vit.epochs: this stage's own budget, train.epochs (3) left to the others
    params = tiny_params(train={"epochs": 3},
                         vit={"tokenizer": "conv", "spt": False, "seq_pool": True, "epochs": 1})
    train_stage("vit", params, project)
    record = assert_trained(project, "vit_scratch", epochs=1, pretrained=False)
    assert record["build"]["tokenizer"] == "conv" and record["build"]["seq_pool"] is True
    assert record["recipe"]["tokens"] == "conv tokens, stride 4: 4x4 = 16"
    assert drawn == [4] and (project.plots / "vit_patches.png").stat().st_size > 0

    from vitbench.models.store import load_model
    model, _ = load_model(project.model("vit_scratch"))
    assert model.count_params() == record["params_total"]


@pytest.mark.slow
def test_train_cnn_end_to_end_with_pretrained_weights(project, monkeypatch):
    from vitbench.models.cnn import builder as cnn_builder

    loaded = []
    monkeypatch.setattr(cnn_builder, "load_base_weights", lambda base, *a: loaded.append(base.name))
    train_stage("cnn", tiny_params(cnn={"pretrained": True}), project)
    assert loaded == ["base"]                           # the ImageNet loader was asked, once
    transfer = assert_trained(project, "cnn_transfer", epochs=1, pretrained=True)
    finetuned = assert_trained(project, "cnn_finetuned", epochs=1, pretrained=True)
    assert transfer["display_name"] == "MobileNetV2 (transfer)"
    assert transfer["preprocess"] == "tf" and transfer["build"]["arch"] == "mobilenetv2"
    head = (1280 + 1) * 3                               # the frozen base leaves the Dense head only
    assert transfer["params_trainable"] == head
    assert finetuned["params_trainable"] > 100 * head
    assert finetuned["params_total"] == transfer["params_total"]
    assert not project.backup("cnn_transfer").exists() and not project.backup("cnn_finetuned").exists()


@pytest.mark.slow
def test_finetune_vit_end_to_end_without_pretrained_weights(project, tiny_vit_b):
    train_stage("vit_ft",
                tiny_params(vit_ft={"pretrained": False}, train={"epochs": 2}), project)
    transfer = assert_trained(project, "vit_transfer", epochs=2, pretrained=False)
    finetuned = assert_trained(project, "vit_finetuned", epochs=2, pretrained=False)
    assert transfer["display_name"] == "ViT-B/32 (transfer)"
    assert finetuned["display_name"] == "ViT-B/32 (fine-tuned)"
    assert transfer["build"] == {"variant": "b32", "image_size": 32, "num_classes": 3,
                                 "representation_size": None}
    assert transfer["params_trainable"] == (16 + 1) * 3  # the head
    assert finetuned["params_trainable"] == finetuned["params_total"]


class PhaseSpy:
    """Wraps training.fit_phase: counts calls, optionally crashes on call number `crash_on`."""

    def __init__(self, crash_on: int | None = None) -> None:
        self.calls, self.crash_on, self.real = [], crash_on, training.fit_phase

    def __call__(self, *args, **kwargs):
        self.calls.append(Path(kwargs["backup_dir"]).parent.name)
        if len(self.calls) == self.crash_on:
            raise KeyboardInterrupt("killed in phase 2")
        return self.real(*args, **kwargs)


@pytest.mark.slow
def test_kill_in_phase_two_keeps_the_finished_transfer_phase(project, tiny_vit_b, monkeypatch):
    def run(params, crash_on=None) -> list[str]:
        monkeypatch.setattr(training, "fit_phase", spy := PhaseSpy(crash_on))
        if crash_on:
            with pytest.raises(KeyboardInterrupt):
                train_stage("vit_ft", params, project)
        else:
            train_stage("vit_ft", params, project)
        return spy.calls

    def dvc_deletes_outputs() -> None:  # as DVC does before re-running a stage
        for folder in (project.model("vit_transfer"), project.train_plots("vit_transfer")):
            subprocess.run(["rm", "-rf", str(folder)], check=True)

    other = tiny_params(vit_ft={"transfer": {"lr": 0.01}})
    assert run(other, crash_on=2) == ["vit_transfer", "vit_finetuned"]
    assert (project.backup("vit_transfer") / "finished" / "record.json").is_file()
    assert not project.model("vit_finetuned").exists()
    # other params: the finished transfer phase is stale and trained again
    params = tiny_params()
    assert run(params, crash_on=2) == ["vit_transfer", "vit_finetuned"]
    first = json.loads((project.model("vit_transfer") / "record.json").read_text())
    dvc_deletes_outputs()
    # same params and data: only the fine-tuning runs; the transfer model and curves come back
    assert run(params) == ["vit_finetuned"]
    again = assert_trained(project, "vit_transfer", epochs=1, pretrained=False)
    assert again["train_seconds"] == first["train_seconds"]
    assert_trained(project, "vit_finetuned", epochs=1, pretrained=False)
    assert not project.backup("vit_transfer").exists()


@pytest.mark.slow
def test_throughput_benchmark(project, tiny_vit_b):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "throughput", Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    params = tiny_params(augment_online={"flip": True, "zoom": 0.1})
    rows = bench.measure_throughput(params, project, steps=2, families=["vit_ft"])
    assert [r["family"] for r in rows] == ["vit_ft"]
    for row in rows:
        assert row["disk_images_per_s"] > 0 and row["memory_images_per_s"] > 0
        # the ratios are rounded to 3 decimals: half a unit of the last one on top of 1%
        assert row["disk_memory_ratio"] == pytest.approx(
            row["disk_images_per_s"] / row["memory_images_per_s"], rel=0.01, abs=5e-4)
        assert row["online_memory_ratio"] == pytest.approx(
            row["online_images_per_s"] / row["memory_images_per_s"], rel=0.01, abs=5e-4)
    table = bench.format_table(rows)
    assert "ViT-B/32 (transfer)" in table and "disk/memory" in table and "online/memory" in table
