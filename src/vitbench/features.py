"""The frozen-base feature cache: train a CNN's new head on features computed once.

In the transfer phase the pretrained base is frozen and runs in inference mode, so the pooled
features it gives an image never change from one epoch to the next. Instead of running every
training image through the base every epoch, `head_on_features` runs each training image (the
materialised augmented copies included) and each validation image through it once, and the
phase trains a copy of the model's head (Dropout "dropout" -> Dense "head", the same layers,
names and initial weights) on those features. `HeadOnFeatures.copy_to` then puts the trained head
back into the full model, which is saved and fine-tuned as usual.

The cache is used when `cnn.feature_cache` is true, the base holds pretrained weights (a random
base trains in the first phase) and the images are not augmented on the fly (features of
on-the-fly augmented images differ every epoch); `cache_blocker` says why not otherwise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from vitbench.config import Cnn

log = logging.getLogger(__name__)

FEATURES_LAYER = "pool"           # the last layer of the CNN whose output the head reads
HEAD_LAYERS = ("dropout", "head")  # the head, in order


@dataclass(frozen=True)
class HeadOnFeatures:
    """The head alone, and the cached features it trains and validates on."""

    model: keras.Model
    train: tf.data.Dataset
    val: tf.data.Dataset
    images: int       # images run through the base (train + val)
    seconds: float    # time spent computing their features

    def copy_to(self, model: keras.Model) -> None:
        """Put the trained head's weights into the full model's head layers."""
        for name in HEAD_LAYERS:
            model.get_layer(name).set_weights(self.model.get_layer(name).get_weights())

    def annotate(self, record: dict[str, Any]) -> None:
        """Count the feature computation in `train_seconds` and say the cache was used."""
        record["train_seconds"] = round(record["train_seconds"] + self.seconds, 3)
        record["feature_cache"] = {"images": self.images, "seconds": round(self.seconds, 3)}


def cache_blocker(cfg: Cnn, pretrained: bool, online: bool = False) -> str | None:
    """Why the transfer phase cannot train on cached features, or None when it can.
    `online`: training images are augmented on the fly (augment_online)."""
    if not cfg.feature_cache:
        return "cnn.feature_cache is false"
    if not pretrained:
        return "no pretrained weights, so the base trains in the first phase"
    if online:
        return "online augmentation is on: the base sees a new variant of each image every epoch"
    return None


def use_feature_cache(cfg: Cnn, pretrained: bool, online: bool = False) -> bool:
    """Decide, and log, whether the CNN transfer phase trains its head on cached features."""
    blocker = cache_blocker(cfg, pretrained, online)
    if blocker is None:
        log.info("feature cache ON: the base is frozen and pretrained, so its pooled features are "
                 "computed once per image and the head trains on them")
    else:
        log.info("feature cache off: %s; every epoch runs the images through the base", blocker)
    return blocker is None


def pooled_features(extractor: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of every batch of `dataset`, one pass, in the dataset's order."""
    feats, labels = [], []
    for x, y in dataset:
        feats.append(np.asarray(extractor.predict_on_batch(x), dtype="float32"))
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def head_model(model: keras.Model) -> keras.Model:
    """A copy of `model`'s head (same layer types, names, config and current weights) that takes
    the pooled features as input."""
    width = model.get_layer(FEATURES_LAYER).output.shape[-1]
    x = inputs = keras.Input((width,), name="features")
    for name in HEAD_LAYERS:
        layer = model.get_layer(name)
        clone = layer.__class__.from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=f"{model.name}_head")


def head_on_features(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset,
                     batch_size: int, seed: int) -> HeadOnFeatures:
    """Run `train` and `val` through the frozen base once; the head and its feature datasets.

    `train` may be shuffled: one pass sees every image once, and the feature dataset is shuffled
    again (from `seed`, anew every epoch) as the image one was.
    """
    start = time.perf_counter()
    extractor = keras.Model(model.input, model.get_layer(FEATURES_LAYER).output)
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
    return HeadOnFeatures(head_model(model), train_ds, val_ds, images, seconds)
