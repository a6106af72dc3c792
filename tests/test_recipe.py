"""The training recipe: label-smoothed loss on hard or soft labels, optimizer and schedule per
phase, and the recipe recorded in record.json."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from vitbench.train import optim
from vitbench.core.config import AugmentOnline, PhaseRecipe
from vitbench.models.registry import params_with
from vitbench.core.recipe import describe, recipe_record

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25], [0.05, 0.9, 0.05]], "float32")
IDS = np.array([0, 2, 0, 1], "int32")


def identity_model() -> keras.Model:
    """Outputs its input: lets the compiled loss and metrics be checked on known probabilities."""
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Activation("linear")(inputs))


def expected_loss(targets: np.ndarray, smoothing: float) -> float:
    smooth = targets * (1 - smoothing) + smoothing / targets.shape[1]
    return float(np.mean(-(smooth * np.log(PROBS)).sum(axis=1)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_reaches_the_compiled_loss(smoothing: float) -> None:
    model = identity_model()
    optim.compile_model(model, keras.optimizers.Adam(), 6, label_smoothing=smoothing)
    onehot = np.eye(3, dtype="float32")[IDS]
    sparse = model.evaluate(PROBS, IDS, verbose=0, return_dict=True)
    dense = model.evaluate(PROBS, onehot, verbose=0, return_dict=True)
    assert sparse["loss"] == pytest.approx(expected_loss(onehot, smoothing), rel=1e-5)
    assert dense["loss"] == pytest.approx(sparse["loss"], rel=1e-5)      # integer or one-hot labels
    assert sparse["accuracy"] == dense["accuracy"] == pytest.approx(0.75)  # predicted 0, 2, 1, 1
    assert sparse["top5_accuracy"] == pytest.approx(1.0)                # only 3 classes here


def test_smoothed_and_plain_losses_differ_and_soft_labels_count_by_argmax() -> None:
    plain, smooth = identity_model(), identity_model()
    optim.compile_model(plain, keras.optimizers.Adam(), 3)
    optim.compile_model(smooth, keras.optimizers.Adam(), 3, label_smoothing=0.2)
    soft = np.array([[0.6, 0.4, 0], [0, 0.3, 0.7], [0.2, 0.8, 0], [0.5, 0.5, 0]], "float32")
    a = plain.evaluate(PROBS, soft, verbose=0, return_dict=True)
    b = smooth.evaluate(PROBS, soft, verbose=0, return_dict=True)
    assert a["loss"] == pytest.approx(expected_loss(soft, 0.0), rel=1e-5)
    assert b["loss"] == pytest.approx(expected_loss(soft, 0.2), rel=1e-5) and b["loss"] != a["loss"]
    assert a["accuracy"] == pytest.approx(0.75)  # argmax of soft labels: 0, 2, 1, 0 vs predicted 0, 2, 1, 1
    assert "top5_accuracy" not in a


def test_loss_serialises() -> None:
    loss = optim.Crossentropy(0.15)
    again = keras.losses.deserialize(json.loads(json.dumps(keras.losses.serialize(loss))))
    assert isinstance(again, optim.Crossentropy) and again.label_smoothing == 0.15


def test_compile_model_builds_the_optimizer_so_fit_traces_its_step_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimizer's variables exist once compile_model returns: created inside the first
    training step instead, they make TensorFlow trace that step a second time."""
    from keras.src.backend.tensorflow import trainer

    traces: list[object] = []
    train_step = trainer.TensorFlowTrainer.train_step
    monkeypatch.setattr(trainer.TensorFlowTrainer, "train_step",
                        lambda self, data: traces.append(data) or train_step(self, data))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    optim.compile_model(model, keras.optimizers.AdamW(0.01, weight_decay=0.1), 3)
    assert model.optimizer.built
    model.fit(PROBS, IDS, batch_size=2, epochs=2, verbose=0)
    assert len(traces) == 1


def test_make_optimizer_per_recipe() -> None:
    adam = optim.make_optimizer(PhaseRecipe(1e-3, 0.0, 0.0, 0.0), 100)
    assert type(adam) is keras.optimizers.Adam and float(adam.learning_rate) == pytest.approx(1e-3)
    adamw = optim.make_optimizer(PhaseRecipe(2e-3, 0.05, 0.1, 0.0), 100)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.05)
    schedule = adamw._learning_rate
    assert isinstance(schedule, optim.WarmupCosine)
    assert (schedule.warmup_steps, schedule.total_steps, schedule.peak_lr) == (10, 100, 2e-3)


@pytest.mark.slow
def test_weight_decay_shrinks_weights() -> None:
    """Decoupled decay acts even with a zero gradient."""
    def trained(decay: float) -> float:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
        model.layers[0].kernel.assign(np.full((2, 2), 1.0, "float32"))
        optim.compile_model(model, optim.make_optimizer(PhaseRecipe(0.1, decay, 0.0, 0.0), 10), 2)
        model.fit(np.zeros((4, 2), "float32"), np.zeros(4, "int32"), epochs=3, verbose=0)
        return float(np.abs(model.layers[0].kernel.numpy()).mean())

    assert trained(0.0) == pytest.approx(1.0) and trained(0.5) < 0.9


def test_vit_recipe_and_config_keys() -> None:
    params = params_with({"vit": {"lr": 2e-3, "weight_decay": 0.05, "warmup": 0.2,
                                  "label_smoothing": 0.1},
                          "cnn": {"transfer": {"lr": 1e-3, "label_smoothing": 0.1}},
                          "augment_online": {"flip": False, "translate": 0.0, "zoom": 0.0,
                                             "contrast": 0.0}})
    assert params.vit.recipe == PhaseRecipe(2e-3, 0.05, 0.2, 0.1)
    assert params.cnn.transfer.label_smoothing == 0.1 and params.cnn.finetune.weight_decay == 0.0
    optimizer = optim.make_optimizer(params.vit.recipe, 50)
    record = recipe_record(params.vit.recipe, type(optimizer).__name__, 1.0, params.augment_online)
    assert record == {"optimizer": "AdamW", "lr": 2e-3, "weight_decay": 0.05, "warmup": 0.2,
                      "schedule": "warm-up + cosine", "label_smoothing": 0.1,
                      "augment_copies": 1.0, "augment_online": {}}


def test_family_recipe_per_phase() -> None:
    """The registry finds each phase's recipe in its family's section."""
    from vitbench.models import registry

    params = params_with({"vit": {"label_smoothing": 0.2},
                          "vit_ft": {"finetune": {"lr": 1e-4, "warmup": 0.1}}})
    assert registry.family("vit").recipe(params.vit, "scratch") == params.vit.recipe
    assert registry.family("cnn").recipe(params.cnn, "transfer") is params.cnn.transfer
    assert registry.family("vit_ft").recipe(params.vit_ft, "finetune") == PhaseRecipe(1e-4, 0.0, 0.1, 0.1)  # the rest: params.yaml's


def test_describe_states_the_recipe() -> None:
    online = AugmentOnline.only(flip=True, mixup=0.2)
    text = describe(recipe_record(PhaseRecipe(1e-3, 0.05, 0.1, 0.1), "AdamW", 1.0, online))
    assert text == ("AdamW lr 0.001, weight decay 0.05, warm-up 10% + cosine, label smoothing 0.1; "
                    "online: flip, mixup 0.2; 1 materialised copy per image")
    plain = describe(recipe_record(PhaseRecipe(1e-5, 0.0, 0.0, 0.0), "Adam", 0.0, AugmentOnline.only()))
    assert plain == ("Adam lr 1e-05, constant lr; no online augmentation; "
                     "0 materialised copies per image")
    assert "not recorded" in describe(None)
    cosine = describe(recipe_record(PhaseRecipe(1e-3, 0.05, 0.1, 0.0), "AdamW", 0.0, AugmentOnline.only(),
                                    epochs=40, patience=None, tokens="conv tokens, stride 8: 8x8 = 64"))
    assert cosine.endswith("; 40 epochs planned, no early stopping (cosine schedule), best epoch "
                           "kept; conv tokens, stride 8: 8x8 = 64 tokens")
    constant = describe(recipe_record(PhaseRecipe(1e-5, 0.0, 0.0, 0.0), "Adam", 0.0, AugmentOnline.only(),
                                      epochs=5, patience=3))
    assert constant.endswith("; 5 epochs planned, early stopping after 3 epochs without a better "
                             "val loss, best epoch kept")


@pytest.mark.parametrize("same", [True, False])
def test_compare_md_states_each_models_recipe(tmp_path, same: bool) -> None:
    """compare.md's "Training recipe" section: each model's recipe (from plots/<id>/eval/recipe.json),
    and a warning when the models did not all see the same augmentation."""
    from test_report import DEFAULT_PREDICTIONS, NAMES, write_evaluation, write_images

    from vitbench.data.manifest import read_labels, write_labels
    from vitbench.core.fsutil import write_json
    from vitbench.core.paths import Paths
    from vitbench.report.compare import load_results, summarise
    from vitbench.report.markdown import render_markdown

    paths = Paths(tmp_path)
    write_labels(["cat", "dog", "owl"], paths.labels)
    files = write_images(paths)
    flip = AugmentOnline.only(flip=True)
    for model_id, y_pred in DEFAULT_PREDICTIONS.items():
        write_evaluation(paths, model_id, y_pred, files)
        online = flip if same or model_id != "vit_scratch" else AugmentOnline.only()
        if model_id != "vit_transfer":     # an older model: no recipe.json
            write_json(paths.eval_plots(model_id) / "recipe.json",
                       recipe_record(PhaseRecipe(1e-3, 0.0, 0.0, 0.0), "Adam", 1.0, online))
    results = load_results(paths)
    classes = read_labels(paths.labels)
    md = render_markdown(summarise(results, classes), results, classes)
    section = md.split("## Training recipe")[1].split("##")[0]
    table = md.split("## All models")[1].split("##")[0]
    header = [c.strip() for c in table.splitlines()[2].split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in table.splitlines()[4:] if line.startswith("|")]
    assert rows and {row[header.index("Epochs")] for row in rows} == {"3"}   # epochs each model got
    assert f"- {NAMES['cnn_transfer']}: Adam lr 0.001, constant lr; online: flip;" in section
    assert f"- {NAMES['vit_transfer']}: not recorded" in section
    assert ("did not all see the same augmentation" in section) is not same


@pytest.mark.slow
def test_fit_on_mixup_batches() -> None:
    """A model compiled by compile_model trains on soft-label batches and validates on integer ones."""
    from vitbench.core.config import AugmentOnline
    from vitbench.data.online import batch_augmenter

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 8, 8, 3)).astype("uint8")
    y = (np.arange(16) % 3).astype("int32")
    mix = batch_augmenter(AugmentOnline.only(mixup=0.4, cutmix=1.0), 3, 0)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(
        lambda a, b: mix(tf.cast(a, tf.float32), b))
    val = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).batch(8)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    optim.compile_model(model, keras.optimizers.Adam(0.01), 3, label_smoothing=0.1)
    history = model.fit(train, validation_data=val, epochs=2, verbose=0).history
    assert all(np.isfinite(history["loss"])) and all(np.isfinite(history["val_loss"]))
    assert 0 <= history["val_accuracy"][-1] <= 1
