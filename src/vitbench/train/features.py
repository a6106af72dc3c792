"""The frozen-base feature cache: train a pretrained model's new head on features computed once.

In the transfer phase the pretrained base (a CNN's, or the pretrained ViT's encoder) is frozen,
so the features it gives an image (the CNN's pooled map, the ViT's class token) need not change
from one epoch to the next. Instead of running every training image through the base every epoch,
`head_on_features` runs each training image (the materialised augmented copies included) and each
validation image through it once, in inference mode, and the phase trains a copy of the model's
head (the family's `head_layers`: the CNN's Dropout "dropout" -> Dense "head", the ViT's Dense
"head"; same layers, names and initial weights) on those features. `HeadOnFeatures.copy_to` then puts the
trained head back into the full model, which is saved and fine-tuned as usual. (Without the
cache, a frozen vit-keras encoder still applies its dropout during `fit`; with it, the features
are the inference-mode ones the evaluation sees.)

The same rule holds for both families (`cnn.feature_cache`, `vit_ft.feature_cache`): the cache is
used when the section's `feature_cache` is true, the base holds pretrained weights (a random CNN
base trains in the first phase; the ViT follows the same rule, so the random-init pair is trained
alike) and the images are not augmented on the fly (features of on-the-fly
augmented images differ every epoch); `cache_blocker` says why not otherwise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadOnFeatures:
    """The head alone, and the cached features it trains and validates on."""

    model: keras.Model
    train: tf.data.Dataset
    val: tf.data.Dataset
    images: int       # images run through the base (train + val)
    seconds: float    # time spent computing their features
    layers: tuple[str, ...]   # the head's layer names

    def copy_to(self, model: keras.Model) -> None:
        """Put the trained head's weights into the full model's head layers."""
        for name in self.layers:
            model.get_layer(name).set_weights(self.model.get_layer(name).get_weights())

    def annotate(self, record: dict[str, Any]) -> None:
        """Count the feature computation in `train_seconds` and say the cache was used."""
        record["train_seconds"] = round(record["train_seconds"] + self.seconds, 3)
        record["feature_cache"] = {"images": self.images, "seconds": round(self.seconds, 3)}


def cache_blocker(cfg: Any, pretrained: bool, online: bool = False,
                  section: str = "cnn") -> str | None:
    """Why the transfer phase cannot train on cached features, or None when it can.
    `online`: training images are augmented on the fly (augment_online); `section`: the params
    section of `cfg`, as named in the message."""
    if not cfg.feature_cache:
        return f"{section}.feature_cache is false"
    if not pretrained:
        return ("no pretrained weights were loaded (a random CNN base trains in the first phase; a "
                "random ViT encoder stays frozen and only its head trains)")
    if online:
        return "online augmentation is on: the base sees a new variant of each image every epoch"
    return None


def use_feature_cache(cfg: Any, pretrained: bool, online: bool = False,
                      section: str = "cnn") -> bool:
    """Decide, and log, whether a transfer phase trains its head on cached features."""
    blocker = cache_blocker(cfg, pretrained, online, section)
    if blocker is None:
        log.info("feature cache ON (%s): the base is frozen and pretrained, so its features are "
                 "computed once per image and the head trains on them", section)
    else:
        log.info("feature cache off: %s; every epoch runs the images through the base", blocker)
    return blocker is None


def pooled_features(extractor: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of every batch of `dataset`, one pass, in the dataset's order.

    The extractor is called directly, not through `predict_on_batch`: under a MirroredStrategy
    (Keras 3.15) that hands every replica the whole batch and returns its rows once per replica.
    """
    infer = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    feats, labels = [], []
    for x, y in dataset:
        feats.append(np.asarray(infer(x), dtype="float32"))
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def head_model(model: keras.Model, layers: tuple[str, ...]) -> keras.Model:
    """A copy of `model`'s head `layers` (same layer types, names, config and current weights)
    that takes the features (the input of the head's first layer) as input."""
    width = model.get_layer(layers[0]).input.shape[-1]
    x = inputs = keras.Input((width,), name="features")
    for name in layers:
        layer = model.get_layer(name)
        clone = layer.__class__.from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=f"{model.name}_head")


def head_on_features(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset,
                     batch_size: int, seed: int, layers: tuple[str, ...]) -> HeadOnFeatures:
    """Run `train` and `val` through the frozen base once; the head and its feature datasets.

    `layers`: the head's layers, in order (the family's `head_layers`). `train` may be shuffled: one pass sees
    every image once, and the feature dataset is shuffled again (from `seed`, anew every epoch)
    as the image one was.
    """
    start = time.perf_counter()
    extractor = keras.Model(model.input, model.get_layer(layers[0]).input)
    x_train, y_train = pooled_features(extractor, train)
    x_val, y_val = pooled_features(extractor, val)
    seconds = time.perf_counter() - start
    images = len(x_train) + len(x_val)
    log.info("feature cache: %d training and %d validation images through the base in %.1f s "
             "(%.0f images/s), %d features each", len(x_train), len(x_val), seconds,
             images / max(seconds, 1e-9), x_train.shape[1])
    train_ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch_size)
    return HeadOnFeatures(head_model(model, layers), train_ds, val_ds, images, seconds, layers)
