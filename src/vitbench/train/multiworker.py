"""Multi-worker training (MultiWorkerMirroredStrategy, TF_CONFIG): two Keras 3 bugs worked around.

Keras 3's TensorFlow trainer (3.15) cannot `fit()` under MultiWorkerMirroredStrategy as shipped:

1. `fit()` first builds the model from its first *distributed* batch, reduced with
   `strategy.reduce("MEAN", (x, y))`; CollectiveAllReduceStrategy cannot reduce a tuple
   ("ValueError: Attempt to convert a value (PerReplica:...)"). `prebuild` builds the model, its
   compiled loss and metrics and the optimizer from one local batch instead, and makes `fit()`
   skip that step (it then takes the strategy of the scope it runs in).
2. Each step's logs are reduced across workers with `strategy.reduce("MEAN", v, axis=0)`, which
   fails on the scalar loss and metrics ("Invalid reduction dimension 0"). `prebuild` has that
   reduction average scalars over the workers (axis=None) instead; the step is otherwise Keras'.
   Every worker then sees the same logs, so early stopping stops all of them at the same epoch.

Both only apply under MultiWorkerMirroredStrategy; single-machine training is untouched.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf


def prebuild(model: keras.Model, dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> None:
    """Under MultiWorkerMirroredStrategy, make `model.fit()` work (see the module docstring); else
    do nothing. Call it after `compile()`, and call `fit()` inside `strategy.scope()`."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    _patch_log_reduction()
    x, y = next(iter(dataset.take(1)))
    with strategy.scope():
        model._symbolic_build(data_batch=(x, y))
    # fit() reduces the first batch only when the model holds a strategy of its own; without one
    # it takes the strategy of the scope it is called in (keras.src.backend.tensorflow.trainer)
    model._distribute_strategy = None


def _patch_log_reduction() -> None:
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "vitbench_patched", False):
        return

    def reduce_per_replica(values: Any, strategy: tf.distribute.Strategy, reduction: str) -> Any:
        if reduction in ("auto", "mean") and isinstance(strategy,
                                                        tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0),
                values)
        return original(values, strategy, reduction)

    reduce_per_replica.vitbench_patched = True  # type: ignore[attr-defined]
    trainer.reduce_per_replica = reduce_per_replica


def save_on_chief(model: keras.Model, target: Path, record: dict[str, Any], chief: bool) -> None:
    """`vitbench.models.store.save_model` on the chief; any other worker saves into a throwaway
    folder.

    Saving builds a bare copy of the model, and under MultiWorkerMirroredStrategy creating its
    variables is a collective every worker must join, so a worker that skipped it would leave the
    chief waiting (the usual TensorFlow pattern: every worker saves, only the chief's copy stays).
    """
    from vitbench.models.store import save_model

    if chief:
        save_model(model, target, record)
        return
    with tempfile.TemporaryDirectory(prefix="vitbench-worker-") as tmp:
        save_model(model, Path(tmp) / target.name, record)
