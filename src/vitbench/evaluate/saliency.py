"""Where a model looks: Grad-CAM for CNNs, attention rollout for ViTs (maps 0..1 per image).

Grad-CAM (Selvaraju et al. 2017), the counterpart of a ViT's attention map.

The CNN models are Input -> base (a keras.applications model, layer "base") -> head layers
(see models/cnn.py). Grad-CAM takes the base's last feature map A (h x w x channels), the
gradient of the predicted class's probability with respect to it, weights each channel by its
mean gradient, sums the channels and keeps the positive part:

    cam = ReLU(sum_k mean_ij(d y_c / d A_ijk) * A_k)

scaled to 0..1 per image (red = most evidence for the predicted class in the overlays).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

BASE_LAYER = "base"


def saliency_maps(model: keras.Model, family: Any, x: np.ndarray) -> np.ndarray:
    """`[batch, h, w]` maps (0..1) of where a model of `family` (a `models.registry.Family`) looks
    for the preprocessed images `x`: attention rollout when the family has attention, else Grad-CAM."""
    if family.attention is None:
        return gradcam(model, x)
    return attention_rollout(family.attention(model, x), class_token=family.saliency.class_token)


def gradcam(model: keras.Model, x: np.ndarray, class_ids: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM maps `[batch, h, w]` (0..1) of a CNN model for the preprocessed images `x`;
    `class_ids` defaults to each image's predicted class."""
    layers = model.layers
    names = [layer.name for layer in layers]
    if BASE_LAYER not in names:
        raise ValueError(f"Grad-CAM needs a layer named {BASE_LAYER!r} (the CNN base); "
                         f"{model.name} has {', '.join(names)}")
    head = [layer for layer in layers[names.index(BASE_LAYER) + 1:]]
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        features = layers[names.index(BASE_LAYER)](x, training=False)
        tape.watch(features)
        out = features
        for layer in head:
            out = layer(out, training=False)
        ids = tf.argmax(out, axis=-1) if class_ids is None else tf.constant(class_ids, tf.int64)
        score = tf.gather(out, ids, axis=1, batch_dims=1)
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy().astype(np.float64)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def attention_rollout(weights: list[np.ndarray], class_token: bool) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) as a `[batch, grid, grid]` map scaled to 0..1.

    `weights` holds one `[batch, heads, tokens, tokens]` array per layer, first layer first. Heads
    are averaged, the identity added for the residual path, rows renormalised, and the layers
    multiplied through. The map is the class token's row (`class_token`), otherwise the mean over
    all query tokens.
    """
    if not weights:
        raise ValueError("attention_rollout needs the weights of at least one layer")
    rollout = None
    for layer in weights:
        att = np.asarray(layer, dtype=np.float64).mean(axis=1)
        att = att + np.eye(att.shape[-1])
        att = att / att.sum(axis=-1, keepdims=True)
        rollout = att if rollout is None else att @ rollout
    assert rollout is not None
    scores = rollout[:, 0, 1:] if class_token else rollout.mean(axis=1)
    grid = int(round(np.sqrt(scores.shape[1])))
    if grid * grid != scores.shape[1]:
        raise ValueError(f"{scores.shape[1]} patch tokens do not form a square grid "
                         f"(class_token={class_token})")
    lo, hi = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    scaled = np.divide(scores - lo, hi - lo, out=np.zeros_like(scores), where=hi > lo)
    return scaled.reshape(-1, grid, grid)
