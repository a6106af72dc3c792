"""Online augmentation: Keras 3 preprocessing layers applied to every training batch in tf.data.

`augment_online` in params.yaml picks the layers and their strengths (see `config.AugmentOnline`).
They run on uint8-range float batches [b, s, s, 3] (values 0..255), before the model's
preprocessing, and only in the training pipeline: validation, test, evaluation and prediction
inputs never pass through them. Every layer is seeded from `seed` and the batches are augmented
one after the other (no parallel calls), so the same seed gives the same augmented batches.

MixUp and CutMix mix pairs of images and their labels, so with either of them on the training
labels become soft one-hot mixtures; the training loss and metrics accept both integer and
one-hot labels (`vitbench.train.optim.compile_model`). With both on, each batch gets one of the two,
chosen with probability 1/2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from vitbench.core.config import AugmentOnline
from vitbench.data.pipeline import BatchAugment, resize_uint8

VALUE_RANGE = (0, 255)
RANDAUGMENT_OPS = 2
ERASING_SCALE = (0.02, 0.25)  # area fraction of the erased rectangle


def image_layers(cfg: AugmentOnline, seed: int) -> list[keras.layers.Layer]:
    """The per-image layers that are on, in a fixed order, each seeded from `seed`."""
    specs: list[tuple[bool, Callable[[int], keras.layers.Layer]]] = [
        (cfg.flip, lambda s: keras.layers.RandomFlip("horizontal", seed=s)),
        (cfg.rotation > 0, lambda s: keras.layers.RandomRotation(cfg.rotation / 360.0, seed=s)),
        (cfg.translate > 0,
         lambda s: keras.layers.RandomTranslation(cfg.translate, cfg.translate, seed=s)),
        (cfg.zoom > 0, lambda s: keras.layers.RandomZoom(cfg.zoom, cfg.zoom, seed=s)),
        (cfg.brightness > 0, lambda s: keras.layers.RandomBrightness(
            cfg.brightness, value_range=VALUE_RANGE, seed=s)),
        (cfg.contrast > 0, lambda s: keras.layers.RandomContrast(
            cfg.contrast, value_range=VALUE_RANGE, seed=s)),
        (cfg.randaugment > 0, lambda s: keras.layers.RandAugment(
            value_range=VALUE_RANGE, num_ops=RANDAUGMENT_OPS, factor=cfg.randaugment, seed=s)),
        (cfg.erasing > 0, lambda s: keras.layers.RandomErasing(
            factor=cfg.erasing, scale=ERASING_SCALE, value_range=VALUE_RANGE, seed=s)),
    ]
    return [make(_layer_seed(seed, i)) for i, (on, make) in enumerate(specs) if on]


def batch_augmenter(cfg: AugmentOnline, num_classes: int, seed: int) -> BatchAugment | None:
    """(images 0..255 float32 [b, s, s, 3], int labels [b]) -> the augmented batch, or None when
    every key is off. With MixUp/CutMix on, labels come out as float32 one-hot mixtures [b, c]."""
    layers = image_layers(cfg, seed)
    mixers = [keras.layers.MixUp(alpha=cfg.mixup, seed=_layer_seed(seed, 100))] if cfg.mixup else []
    if cfg.cutmix:
        mixers.append(keras.layers.CutMix(factor=cfg.cutmix, seed=_layer_seed(seed, 101)))
    if not layers and not mixers:
        return None
    choice = keras.random.SeedGenerator(_layer_seed(seed, 102))

    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        for layer in layers:
            images = layer(images, training=True)
        if mixers:
            onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
            images, labels = _mix(mixers, images, onehot, choice)
        return tf.clip_by_value(images, 0.0, 255.0), labels

    return augment


def _mix(mixers: list[keras.layers.Layer], images: tf.Tensor, labels: tf.Tensor,
         choice: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """One of `mixers` (chosen at random per batch when there are two) on images and labels."""
    def run(layer: keras.layers.Layer) -> Callable[[], tuple[tf.Tensor, tf.Tensor]]:
        def apply() -> tuple[tf.Tensor, tf.Tensor]:
            out = layer({"images": images, "labels": labels}, training=True)
            return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)
        return apply

    if len(mixers) == 1:
        return run(mixers[0])()
    coin = keras.random.uniform((), seed=choice)
    return tf.cond(coin < 0.5, run(mixers[0]), run(mixers[1]))


def _layer_seed(seed: int, index: int) -> int:
    """A distinct, reproducible seed per layer (Keras seeds must fit in 32 bits)."""
    return (int(seed) * 1009 + 7919 * (index + 1)) % (2**31 - 1)


def online_variants(cfg: AugmentOnline, images: Sequence[np.ndarray], seed: int, count: int,
                    size: int) -> list[list[np.ndarray]]:
    """`count` online-augmented versions of each uint8 image (resized to `size` first), drawn as
    the training pipeline draws them: the images form one batch (so MixUp and CutMix mix them
    with each other), augmented `count` times in a row. Empty lists when every key is off."""
    augment = batch_augmenter(cfg, max(len(images), 1), seed)
    if augment is None or not images:
        return [[] for _ in images]
    batch = tf.cast(tf.stack([resize_uint8(image, size) for image in images]), tf.float32)
    labels = tf.range(len(images), dtype=tf.int32)
    draws = []
    for _ in range(count):
        x, _ = augment(batch, labels)
        draws.append(np.clip(np.rint(np.asarray(x)), 0, 255).astype(np.uint8))
    return [[draw[i] for draw in draws] for i in range(len(images))]
