"""A Vision Transformer trained from scratch, after the Keras examples "Image classification with
Vision Transformer" and "Train a Vision Transformer on small-scale datasets" (Lee et al. 2021,
shifted patch tokenization and locality self-attention), with the small-data options of the
Compact Convolutional Transformer (Hassani et al. 2021: a convolutional tokenizer and sequence
pooling) and stochastic depth (Huang et al. 2016).

    image -> Patches, ShiftedPatchTokenization or ConvTokenizer -> PatchEncoder (projection + positions)
          -> TransformerBlock x layers (LayerNorm, MHA or LSA, DropPath residual, LayerNorm, GELU MLP,
             DropPath residual)
          -> LayerNorm -> Flatten + Dropout (or SeqPool) -> Mlp head -> Dense softmax "head" (float32)

Each idea is one small serializable layer. Attention heads split the projection
(key_dim = projection_dim / num_heads) as in the original ViT; each TransformerBlock also returns
its attention weights so they can be shown (`attention_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from vitbench.models.family import block_outputs

HEAD_DROPOUT = 0.5  # dropout before and inside the MLP head, as in the Keras example
LAYER_NORM_EPS = 1e-6
serializable = keras.saving.register_keras_serializable(package="vitbench")


# --- patches as numpy, for figures and tests -------------------------------------------------------

def extract_patches(images: np.ndarray, patch_size: int) -> np.ndarray:
    """[B, H, W, C] -> [B, patches, patch_size*patch_size*C] (or one [H, W, C] image -> [patches, ...]),
    patches in row-major order, each flattened (row, column, channel) - exactly as `Patches`."""
    single = images.ndim == 3
    batch = images[np.newaxis] if single else images
    b, h, w, c = batch.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of patch_size {p}")
    x = batch.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = x.reshape(b, (h // p) * (w // p), p * p * c)
    return patches[0] if single else patches


def reassemble_patches(patches: np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    """The inverse of `extract_patches` for square images."""
    single = patches.ndim == 2
    batch = patches[np.newaxis] if single else patches
    n, p = image_size // patch_size, patch_size
    b, count, size = batch.shape
    if count != n * n or size % (p * p):
        raise ValueError(f"{count} patches of {size} values do not tile a {image_size}px image "
                         f"with patch_size {patch_size}")
    c = size // (p * p)
    x = batch.reshape(b, n, n, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    images = x.reshape(b, image_size, image_size, c)
    return images[0] if single else images


# --- layers ------------------------------------------------------------------------------------------

@serializable
class Patches(keras.layers.Layer):
    """Cut images [B, H, W, C] into non-overlapping patches [B, patches, patch_size^2 * C]."""

    def __init__(self, patch_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images: Any) -> Any:
        _, h, w, c = images.shape
        p = self.patch_size
        x = ops.reshape(images, (-1, h // p, p, w // p, p, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, (h // p) * (w // p), p * p * c))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "patch_size": self.patch_size}


@serializable
class ShiftedPatchTokenization(keras.layers.Layer):
    """SPT (Lee et al. 2021): the image and its four diagonal half-patch shifts, stacked on the
    channel axis, cut into patches, layer-normalised and linearly projected to projection_dim."""

    SHIFTS = ((-1, -1), (1, -1), (-1, 1), (1, 1))  # (down, right) in half patches: left-up, ...

    def __init__(self, patch_size: int, projection_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.projection_dim = projection_dim
        self.patches = Patches(patch_size)
        self.norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS)
        self.projection = keras.layers.Dense(projection_dim)

    def build(self, input_shape: Any) -> None:  # so that a loaded model.keras builds it too
        _, h, w, c = input_shape
        p = self.patch_size
        patches = (None, (h // p) * (w // p), p * p * c * (1 + len(self.SHIFTS)))
        self.norm.build(patches)
        self.projection.build(patches)

    def call(self, images: Any) -> Any:
        half = self.patch_size // 2
        shifted = [shift_image(images, dy * half, dx * half) for dy, dx in self.SHIFTS]
        stacked = ops.concatenate([images, *shifted], axis=-1)
        return self.projection(self.norm(self.patches(stacked)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "patch_size": self.patch_size,
                "projection_dim": self.projection_dim}


def shift_image(images: Any, dy: int, dx: int) -> Any:
    """Move images [B, H, W, C] down by dy and right by dx pixels (negative: up/left), zero-filled."""
    _, h, w, _ = images.shape
    cropped = images[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0), :]
    return ops.pad(cropped, [[0, 0], [max(dy, 0), max(-dy, 0)], [max(dx, 0), max(-dx, 0)], [0, 0]])


@serializable
class PatchEncoder(keras.layers.Layer):
    """Linear projection of each patch (skipped when `project` is False, e.g. after SPT, which
    projects already) plus a learned position embedding."""

    def __init__(self, num_patches: int, projection_dim: int, project: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection_dim = projection_dim
        self.project = project
        self.projection = keras.layers.Dense(projection_dim) if project else None

    def build(self, input_shape: Any) -> None:
        if self.projection is not None:
            self.projection.build(input_shape)
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=(1, self.num_patches, self.projection_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, patches: Any) -> Any:
        tokens = self.projection(patches) if self.projection is not None else patches
        return tokens + ops.cast(self.position_embedding, tokens.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_patches": self.num_patches,
                "projection_dim": self.projection_dim, "project": self.project}


@serializable
class MultiHeadAttentionLSA(keras.layers.MultiHeadAttention):
    """Locality self-attention (Lee et al. 2021): scores divided by a learnable temperature
    (initially sqrt(key_dim)) instead of the fixed sqrt(key_dim), and each token's attention to
    itself masked out (the diagonal), so attention looks at the other tokens."""

    def build(self, query_shape: Any, value_shape: Any, key_shape: Any = None) -> None:
        super().build(query_shape, value_shape, key_shape)
        self.tau = self.add_weight(
            name="tau", shape=(),
            initializer=keras.initializers.Constant(math.sqrt(float(self._key_dim))))

    def _compute_attention(self, query: Any, key: Any, value: Any, attention_mask: Any = None,
                           training: Any = None, return_attention_scores: bool = False,
                           use_causal_mask: bool = False) -> tuple[Any, Any]:
        query = ops.multiply(query, ops.cast(1.0 / self.tau, query.dtype))
        scores = ops.einsum(self._dot_product_equation, key, query)  # [B, heads, T, S]
        not_self = ops.logical_not(ops.eye(scores.shape[-2], scores.shape[-1], dtype="bool"))
        if attention_mask is not None:
            not_self = ops.logical_and(ops.cast(attention_mask, "bool"), not_self)
        scores = self._masked_softmax(scores, not_self)
        dropped = self._dropout_layer(scores, training=training)
        return ops.einsum(self._combine_equation, dropped, value), scores


@serializable
class Mlp(keras.layers.Layer):
    """Dense(GELU) + Dropout for each width in `units`."""

    def __init__(self, units: Sequence[int], dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = [int(u) for u in units]
        self.dropout = dropout
        self.dense = [keras.layers.Dense(u, activation="gelu") for u in self.units]
        self.drop = [keras.layers.Dropout(dropout) for _ in self.units]

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for dense in self.dense:
            dense.build(shape)
            shape = (*shape[:-1], dense.units)

    def call(self, x: Any, training: Any = None) -> Any:
        for dense, drop in zip(self.dense, self.drop):
            x = drop(dense(x), training=training)
        return x

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*tuple(input_shape)[:-1], self.units[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "dropout": self.dropout}


@serializable
class TransformerBlock(keras.layers.Layer):
    """Pre-norm encoder block: x + Attention(LN(x)), then + Mlp(LN(.)) (widths 2d, d), each
    branch through DropPath(`drop_path`). Returns (tokens, attention weights [B, heads, tokens, tokens])."""

    def __init__(self, projection_dim: int, num_heads: int, dropout: float, lsa: bool,
                 drop_path: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.projection_dim, self.num_heads = projection_dim, num_heads
        self.dropout, self.lsa, self.drop_path = dropout, lsa, float(drop_path)
        self.drop_branch = [DropPath(drop_path), DropPath(drop_path)]
        attention = MultiHeadAttentionLSA if lsa else keras.layers.MultiHeadAttention
        self.norm1 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS)
        self.attention = attention(num_heads=num_heads, key_dim=projection_dim // num_heads,
                                   dropout=dropout)
        self.norm2 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS)
        self.mlp = Mlp([projection_dim * 2, projection_dim], dropout)

    def build(self, input_shape: Any) -> None:
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)

    def call(self, x: Any, training: Any = None) -> tuple[Any, Any]:
        y = self.norm1(x)
        y, weights = self.attention(y, y, return_attention_scores=True, training=training)
        x = x + self.drop_branch[0](y, training=training)
        y = self.mlp(self.norm2(x), training=training)
        return x + self.drop_branch[1](y, training=training), weights

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, Any]:
        tokens = input_shape[1]
        return tuple(input_shape), (input_shape[0], self.num_heads, tokens, tokens)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "projection_dim": self.projection_dim,
                "num_heads": self.num_heads, "dropout": self.dropout, "lsa": self.lsa,
                "drop_path": self.drop_path}


@serializable
class ConvTokenizer(keras.layers.Layer):
    """CCT tokenizer: `conv_layers` x (Conv2D 3x3 + ReLU + MaxPool 3x3 stride 2), the last with
    `projection_dim` filters; the feature map [B, h, w, d] becomes tokens [B, h*w, d]."""

    def __init__(self, projection_dim: int, conv_layers: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.projection_dim, self.conv_layers = projection_dim, conv_layers
        self.convs = [keras.layers.Conv2D(projection_dim, 3, padding="same", use_bias=False,
                                          activation="relu") for _ in range(conv_layers)]
        self.pools = [keras.layers.MaxPooling2D(3, strides=2, padding="same")
                      for _ in range(conv_layers)]

    @staticmethod
    def grid(image_size: int, conv_layers: int) -> int:
        """Tokens per side after `conv_layers` stride-2 poolings of an `image_size` image."""
        for _ in range(conv_layers):
            image_size = -(-image_size // 2)
        return image_size

    @staticmethod
    def receptive_field(conv_layers: int) -> int:
        """Pixels per side that one token sees: each stage adds a 3x3 conv and a 3x3 pool."""
        field, jump = 1, 1
        for _ in range(conv_layers):
            field += 4 * jump  # conv 3x3 (stride 1) then pool 3x3: 2 * jump each
            jump *= 2
        return field

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for conv, pool in zip(self.convs, self.pools):
            conv.build(shape)
            shape = pool.compute_output_shape(conv.compute_output_shape(shape))

    def call(self, images: Any) -> Any:
        x = images
        for conv, pool in zip(self.convs, self.pools):
            x = pool(conv(x))
        _, h, w, d = x.shape
        return ops.reshape(x, (-1, h * w, d))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        side = self.grid(int(input_shape[1]), self.conv_layers)
        return (input_shape[0], side * side, self.projection_dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "projection_dim": self.projection_dim,
                "conv_layers": self.conv_layers}


@serializable
class DropPath(keras.layers.Layer):
    """Stochastic depth: in training, drop a residual branch for a whole sample with probability
    `rate` (the kept ones scaled by 1/(1-rate)); the identity at inference."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x: Any, training: Any = None) -> Any:
        if not training or self.seed_generator is None:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return x * ops.cast(mask / keep, x.dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@serializable
class SeqPool(keras.layers.Layer):
    """CCT sequence pooling: a softmax over tokens of a learned score weights their average,
    [B, tokens, d] -> [B, d] (instead of flattening or a class token)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score = keras.layers.Dense(1)

    def build(self, input_shape: Any) -> None:
        self.score.build(input_shape)

    def call(self, tokens: Any) -> Any:
        weights = ops.softmax(self.score(tokens), axis=1)          # [B, tokens, 1]
        return ops.sum(weights * tokens, axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[-1])


# --- the model ---------------------------------------------------------------------------------------

def conv_stages(patch_size: int) -> int:
    """The ConvTokenizer stages that give token stride `patch_size`: log2(patch_size), so a
    power of two >= 2 (each stage pools by 2); ValueError otherwise."""
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f"patch_size {patch_size} is not a power of two >= 2 (the conv "
                         "tokenizer's stride: one conv + pool/2 stage per factor of 2)")
    return patch_size.bit_length() - 1


def build_vit(image_size: int, patch_size: int, projection_dim: int, num_heads: int, layers: int,
              mlp_head: Sequence[int], dropout: float, num_classes: int, spt: bool,
              lsa: bool, drop_path: float = 0.0, tokenizer: str = "patch",
              seq_pool: bool = False) -> keras.Model:
    """The from-scratch ViT classifier for [B, image_size, image_size, 3] inputs scaled to -1..1.

    `patch_size` is the token stride of both tokenizers: "patch" cuts non-overlapping
    patch_size x patch_size patches (SPT when `spt`); "conv" runs a ConvTokenizer of
    log2(patch_size) stages (`conv_stages`; spt unused). `drop_path`: the stochastic depth
    rate of the last block, rising linearly from 0 at the first. `seq_pool`: SeqPool instead of
    Flatten.
    """
    if tokenizer not in ("patch", "conv"):
        raise ValueError(f"tokenizer {tokenizer!r} is not one of patch, conv")
    if tokenizer == "patch" and image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    conv_layers = conv_stages(patch_size) if tokenizer == "conv" else 0
    if projection_dim % num_heads:
        raise ValueError(f"projection_dim {projection_dim} is not a multiple of num_heads {num_heads}")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if tokenizer == "conv":
        num_patches = ConvTokenizer.grid(image_size, conv_layers) ** 2
        tokens = ConvTokenizer(projection_dim, conv_layers, name="tokenizer")(inputs)
    elif spt:
        num_patches = (image_size // patch_size) ** 2
        tokens = ShiftedPatchTokenization(patch_size, projection_dim, name="tokenizer")(inputs)
    else:
        num_patches = (image_size // patch_size) ** 2
        tokens = Patches(patch_size, name="patches")(inputs)
    projected = tokenizer == "conv" or spt
    x = PatchEncoder(num_patches, projection_dim, project=not projected, name="patch_encoder")(tokens)
    for i in range(layers):
        rate = drop_path * i / max(layers - 1, 1)
        x, _ = TransformerBlock(projection_dim, num_heads, dropout, lsa, rate,
                                name=f"transformer_block_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name="encoder_norm")(x)
    if seq_pool:
        x = SeqPool(name="seq_pool")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dropout(HEAD_DROPOUT, name="head_dropout")(x)
    x = Mlp(list(mlp_head), HEAD_DROPOUT, name="mlp_head")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)
    tag = "".join(name for name, on in (("_conv", tokenizer == "conv"), ("_spt", spt),
                                        ("_lsa", lsa), ("_seqpool", seq_pool)) if on)
    return keras.Model(inputs, outputs, name=f"vit_scratch{tag}")


def attention_weights(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """One array [batch, heads, tokens, tokens] per TransformerBlock, for inputs `x`."""
    blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
    return block_outputs(model, [block.output[1] for block in blocks], x)
