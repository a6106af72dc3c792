"""Grad-CAM (Selvaraju et al. 2017): where a CNN looks, the counterpart of a ViT's attention map.

The CNN models are Input -> base (a keras.applications model, layer "base") -> head layers
(see models/cnn.py). Grad-CAM takes the base's last feature map A (h x w x channels), the
gradient of the predicted class's probability with respect to it, weights each channel by its
mean gradient, sums the channels and keeps the positive part:

    cam = ReLU(sum_k mean_ij(d y_c / d A_ijk) * A_k)

scaled to 0..1 per image (red = most evidence for the predicted class in the overlays).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

BASE_LAYER = "base"


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
