"""What a training phase compiles with: the optimizer (Adam, or AdamW with decoupled weight
decay), the warm-up + cosine learning-rate schedule, the label-smoothed cross-entropy and the
accuracy metrics, all on integer or one-hot/soft labels (MixUp, CutMix)."""

from __future__ import annotations

import math
from typing import Any

import keras

from vitbench.core.config import PhaseRecipe


@keras.saving.register_keras_serializable(package="vitbench")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_lr` over `warmup_steps`, then cosine decay to `final_lr` at `total_steps`.

    Step s < warmup: peak * (s + 1) / warmup; then final + (peak - final) * (1 + cos(pi * p)) / 2
    with p = (s - warmup) / (total - warmup), clipped to [0, 1].
    """

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int,
                 final_lr: float = 0.0) -> None:
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps})"
                             " and total_steps >= 1")
        self.peak_lr, self.final_lr = float(peak_lr), float(final_lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "float32")
        warm = self.peak_lr * (step + 1.0) / max(self.warmup_steps, 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = self.final_lr + 0.5 * (self.peak_lr - self.final_lr) * (
            1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict[str, Any]:
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "final_lr": self.final_lr}


def learning_rate(lr: float, warmup: float, total_steps: int) -> float | WarmupCosine:
    """`warmup` = 0: the constant `lr`; else a WarmupCosine warming up that fraction of steps."""
    if warmup <= 0:
        return lr
    return WarmupCosine(lr, total_steps, max(1, round(warmup * total_steps)))


def stops_early(recipe: PhaseRecipe) -> bool:
    """Whether early stopping applies to a phase of `recipe`: only at a constant lr. A warm-up +
    cosine phase runs every planned epoch, so that its lr anneals to the end it was planned for,
    and keeps the weights of its best epoch (docs/design.md, "Early stopping and the schedule")."""
    return recipe.warmup <= 0


def make_optimizer(recipe: PhaseRecipe, total_steps: int) -> keras.optimizers.Optimizer:
    """A phase's optimizer: Adam, or AdamW when `recipe.weight_decay` > 0 (decoupled decay),
    at `recipe.lr`, warm-up + cosine over `total_steps` when `recipe.warmup` > 0."""
    lr = learning_rate(recipe.lr, recipe.warmup, total_steps)
    if recipe.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=recipe.weight_decay)
    return keras.optimizers.Adam(learning_rate=lr)


def dense_labels(y_true: Any, y_pred: Any) -> Any:
    """Labels as float one-hot rows like `y_pred` [b, c]: integer ids [b] (or [b, 1]) are one-hot
    encoded; one-hot or soft labels (MixUp, CutMix) [b, c] pass through."""
    classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == classes and classes != 1:
        return keras.ops.cast(y_true, y_pred.dtype)
    ids = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
    return keras.ops.one_hot(ids, classes, dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="vitbench")
class Crossentropy(keras.losses.Loss):
    """Categorical cross-entropy with label smoothing, on integer or one-hot/soft labels."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "crossentropy",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return keras.losses.categorical_crossentropy(
            dense_labels(y_true, y_pred), y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _accuracy(y_true: Any, y_pred: Any) -> Any:
    return keras.metrics.categorical_accuracy(dense_labels(y_true, y_pred), y_pred)


def _top5_accuracy(y_true: Any, y_pred: Any) -> Any:
    return keras.metrics.top_k_categorical_accuracy(dense_labels(y_true, y_pred), y_pred, k=5)


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, num_classes: int,
                  label_smoothing: float = 0.0) -> None:
    """Cross-entropy (label-smoothed when asked) and accuracy, plus top-5 accuracy when there are
    > 5 classes; all take integer labels or one-hot/soft ones (MixUp, CutMix). Accuracy counts
    the argmax of a soft label as its class.

    The optimizer's variables are created here, on the model's trainable variables as they stand
    (call it after setting trainability, inside the strategy's scope): created by the first
    training step instead, they make TensorFlow trace that step twice."""
    metrics: list[Any] = [keras.metrics.MeanMetricWrapper(_accuracy, name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.MeanMetricWrapper(_top5_accuracy, name="top5_accuracy"))
    model.compile(optimizer=optimizer, loss=Crossentropy(label_smoothing), metrics=metrics)
    if not model.optimizer.built:   # model.optimizer: a LossScaleOptimizer under mixed precision
        model.optimizer.build(model.trainable_variables)
