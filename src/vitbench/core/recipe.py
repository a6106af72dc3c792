"""The training recipe of a model: what record.json's `recipe` holds and how compare.md says it.

A phase's recipe is its params (`config.PhaseRecipe`: lr, weight decay, warm-up, label smoothing)
plus what the training data went through: the materialised copies per image (`augment.copies`,
as counted in data/augmented/train.csv) and the online augmentation (`augment_online`, the keys
that were on). No TensorFlow here: the evaluate and compare stages read it too.
"""

from __future__ import annotations

from typing import Any

from vitbench.core.config import AugmentOnline, PhaseRecipe


def recipe_record(recipe: PhaseRecipe, optimizer: str, copies: float, online: AugmentOnline,
                  *, epochs: int | None = None, patience: int | None = None,
                  tokens: str | None = None) -> dict[str, Any]:
    """record.json's `recipe`: optimizer class name, the phase's params, the schedule they give,
    materialised copies per training image and the online augmentation keys that were on; with
    `epochs`, the planned epochs and the early-stopping patience (None: none, every epoch runs);
    with `tokens`, how the from-scratch ViT cut its input (`tokens_of`)."""
    record = {"optimizer": optimizer, "lr": recipe.lr, "weight_decay": recipe.weight_decay,
              "warmup": recipe.warmup,
              "schedule": "warm-up + cosine" if recipe.warmup > 0 else "constant",
              "label_smoothing": recipe.label_smoothing, "augment_copies": copies,
              "augment_online": online.active}
    if epochs is not None:
        record.update({"epochs": epochs, "early_stopping": patience})
    if tokens is not None:
        record["tokens"] = tokens
    return record


def tokens_of(build: dict[str, Any]) -> str | None:
    """How a from-scratch ViT's `build` cuts its input, e.g. "conv tokens, stride 8: 6x6 = 36" or
    "8x8 patches (SPT): 6x6 = 36"; None for other models. Records from before the stride set the
    conv stages carry `conv_layers` (stride 2^conv_layers)."""
    if "patch_size" not in build or "image_size" not in build:
        return None
    size, stride = int(build["image_size"]), int(build["patch_size"])
    if build.get("tokenizer") == "conv":
        stride = 2 ** int(build["conv_layers"]) if build.get("conv_layers") else stride
        side = -(-size // stride)
        return f"conv tokens, stride {stride}: {side}x{side} = {side * side}"
    side = size // stride
    spt = " (SPT)" if build.get("spt") else ""
    return f"{stride}x{stride} patches{spt}: {side}x{side} = {side * side}"


def describe(recipe: dict[str, Any] | None) -> str:
    """One line for compare.md, e.g. "AdamW lr 0.001, weight decay 0.05, warm-up 10% + cosine,
    label smoothing 0.1; online: flip, mixup 0.2; 1 copy per image"; records older than the
    recipe say so."""
    if not recipe:
        return "not recorded (model trained before record.json had a recipe)"
    parts = [f"{recipe['optimizer']} lr {recipe['lr']:g}"]
    if recipe.get("weight_decay"):
        parts.append(f"weight decay {recipe['weight_decay']:g}")
    parts.append(f"warm-up {recipe['warmup']:.0%} + cosine" if recipe.get("warmup")
                 else "constant lr")
    if recipe.get("label_smoothing"):
        parts.append(f"label smoothing {recipe['label_smoothing']:g}")
    online = recipe.get("augment_online") or {}
    data = "online: " + ", ".join(k if v is True else f"{k} {v:g}" for k, v in online.items()) \
        if online else "no online augmentation"
    copies = recipe.get("augment_copies", 0)
    text = f"{', '.join(parts)}; {data}; {copies:g} materialised cop{'y' if copies == 1 else 'ies'} per image"
    if "epochs" in recipe:
        stop = (f"early stopping after {recipe['early_stopping']} epochs without a better val loss"
                if recipe["early_stopping"] is not None else "no early stopping (cosine schedule)")
        text += f"; {recipe['epochs']} epochs planned, {stop}, best epoch kept"
    return text + (f"; {recipe['tokens']} tokens" if recipe.get("tokens") else "")
