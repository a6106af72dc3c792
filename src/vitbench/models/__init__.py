"""Models: build one from its record, save and load it, freeze its backbone, find pretrained weights.

A trained model lives in `models/<id>/` as `model.weights.h5` (Keras weights only, never a pickled
or Lambda-bearing model file) plus `record.json`, whose `family` and `build` say how to rebuild
the architecture (see docs/design.md, "Models on disk"). Loading therefore never needs
`safe_mode=False` and never downloads anything.

Pretrained weights come through the Keras cache (`$KERAS_HOME`, default `~/.keras`):
`cached_download` looks there first and, before asking Keras to download, checks with a short
timeout that the server is reachable, so an offline machine fails in seconds instead of hanging.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import keras
import numpy as np

from vitbench.errors import ConfigError, DataError, FetchError, VitbenchError
from vitbench.fsutil import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

T = TypeVar("T")

FAMILIES = ("cnn", "vit_scratch", "vit_ft")
WEIGHTS_FILE = "model.weights.h5"
RECORD_FILE = "record.json"
REACH_TIMEOUT = 5.0  # seconds allowed to open a connection to a weights server
# Build arguments that would load pretrained weights; a rebuild from a record never does.
_WEIGHT_KWARGS = {"cnn": "weights", "vit_ft": "weights_path"}


# --- building, saving, loading ------------------------------------------------------------------

def build_model(record: dict[str, Any]) -> keras.Model:
    """Rebuild the (randomly initialised) architecture a record describes; never downloads weights."""
    family, build = _check_record(record, "record")
    kwargs = dict(build)
    if family in _WEIGHT_KWARGS:
        kwargs[_WEIGHT_KWARGS[family]] = None
    return _builder(family)(**kwargs)


def save_model(model: keras.Model, model_dir: str | Path, record: dict[str, Any]) -> None:
    """Write `model.weights.h5` (weights only, no optimizer state) and `record.json` atomically.

    `params_total`, `params_trainable` and (when the record has an `id`) `display_name` are
    filled in when missing.
    """
    _check_record(record, "record")
    record = dict(record)
    record.setdefault("params_total", int(model.count_params()))
    record.setdefault("params_trainable", count_params(model.trainable_weights))
    if "id" in record:
        record.setdefault("display_name", display_name(record["id"], record))
    # Keras 3 writes a compiled model's optimizer slots into the weights file too (3x the size
    # after Adam); a fresh, uncompiled copy of the architecture holds only the model's weights.
    bare = build_model(record)
    bare.set_weights(model.get_weights())
    with atomic_dir(model_dir) as tmp:
        bare.save_weights(tmp / WEIGHTS_FILE)
        write_json(tmp / RECORD_FILE, record)
    log.info("saved %s (%s parameters) to %s", record.get("id", "model"),
             f"{record['params_total']:,}", model_dir)


def load_model(model_dir: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """Rebuild the model saved in `model_dir` and load its weights; returns (model, record)."""
    model_dir = Path(model_dir)
    weights, record_file = model_dir / WEIGHTS_FILE, model_dir / RECORD_FILE
    for path in (model_dir, weights, record_file):
        if not path.exists():
            raise DataError(f"{path} does not exist: {model_dir} is not a saved model "
                            "(run its training stage first)")
    try:
        record = read_json(record_file)
    except ValueError as exc:
        raise DataError(f"{record_file} is not valid JSON: {exc}") from exc
    _check_record(record, str(record_file))
    try:
        model = build_model(record)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{record_file}: cannot rebuild the model from its build arguments "
                        f"{record['build']}: {exc}") from exc
    try:
        model.load_weights(weights)
    except (ValueError, OSError) as exc:
        raise DataError(f"{weights} does not match the architecture in {record_file}: {exc}") from exc
    return model, record


def count_params(weights: list[Any]) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(np.prod(w.shape) for w in weights))


def _check_record(record: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    family, build = record.get("family"), record.get("build")
    if family not in FAMILIES:
        raise DataError(f"{where}: family = {family!r} is not one of {', '.join(FAMILIES)}")
    if not isinstance(build, dict):
        raise DataError(f"{where}: build = {build!r} must be the builder's keyword arguments")
    return family, build


def _builder(family: str) -> Callable[..., keras.Model]:
    from vitbench.models import cnn, pretrained_vit, vit

    return {"cnn": cnn.build_cnn, "vit_scratch": vit.build_vit,
            "vit_ft": pretrained_vit.build_vit_ft}[family]


# --- training helpers -----------------------------------------------------------------------------

def set_backbone_trainable(model: keras.Model, family: str, trainable: bool) -> None:
    """Freeze or unfreeze the pretrained part: cnn -> layer "base"; vit_ft -> all but "head";
    vit_scratch -> every layer. Recompile the model afterwards for the change to take effect.

    A CNN's BatchNormalization layers stay frozen, hence in inference mode, when the base is
    unfrozen: Keras 3 lets `fit`'s training=True override the training=False the base is called
    with (keras-team/keras#20285), and only a frozen BatchNormalization ignores it.
    """
    if family == "cnn":
        base = model.get_layer("base")
        base.trainable = trainable
        for layer in base.layers:  # keras.applications bases are flat
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    elif family == "vit_ft":
        for layer in model.layers:
            if layer.name != "head":
                layer.trainable = trainable
    elif family == "vit_scratch":
        for layer in model.layers:
            layer.trainable = trainable
    else:
        raise ValueError(f"family = {family!r} is not one of {', '.join(FAMILIES)}")


def display_name(model_id: str, record: dict[str, Any]) -> str:
    """Human name from the architecture, e.g. "MobileNetV2 (fine-tuned)", "ViT-B/32 (transfer)"."""
    family, build = _check_record(record, f"record of {model_id}")
    if family == "vit_scratch":
        tricks = "+".join(name for name, on in (("SPT", build.get("spt")), ("LSA", build.get("lsa"))) if on)
        return "ViT from scratch" + (f" ({tricks})" if tricks else "")
    if family == "cnn":
        from vitbench.models.cnn import get_arch

        base = get_arch(build["arch"]).display
    else:
        from vitbench.models.pretrained_vit import variant_name

        base = variant_name(build["variant"])
    phase = "fine-tuned" if model_id.endswith("finetuned") else "transfer"
    return f"{base} ({phase})"


def attention_weights(model: keras.Model, record: dict[str, Any], x: np.ndarray) -> list[np.ndarray]:
    """Per transformer layer, the attention weights [batch, heads, tokens, tokens] of a ViT model."""
    family, _ = _check_record(record, "record")
    if family == "vit_scratch":
        from vitbench.models import vit

        return vit.attention_weights(model, x)
    if family == "vit_ft":
        from vitbench.models import pretrained_vit

        return pretrained_vit.attention_weights(model, x)
    raise ValueError(f"a {family} model has no attention weights")


# --- pretrained weights ---------------------------------------------------------------------------

def resolve_pretrained(setting: bool | str, what: str,
                       try_load: Callable[[], T]) -> tuple[T | None, bool]:
    """Apply the contract's `pretrained: auto|true|false` to one attempt to load weights.

    Returns (what try_load returned, True) on success and (None, False) when the weights are not
    used: `false` never calls try_load; `auto` turns a failure into a loud warning; `true` turns
    it into a VitbenchError that says how to supply the weights offline.
    """
    mode = _pretrained_mode(setting)
    if mode == "false":
        log.info("%s: pretrained: false, starting from random weights", what)
        return None, False
    try:
        return try_load(), True
    except Exception as exc:  # noqa: BLE001 - narrowed by _is_weights_failure below
        if not _is_weights_failure(exc):
            raise
        if mode == "true":
            raise VitbenchError(
                f"{what}: pretrained: true, but the weights could not be loaded: {exc}. "
                "Supply them offline as described, or set pretrained: auto (or false) "
                "to train from random weights.") from exc
        log.warning("!!! %s: no ImageNet weights reachable (%s); training from RANDOM weights; "
                    "metrics will say pretrained: false", what, exc)
        return None, False


def _pretrained_mode(setting: bool | str) -> str:
    text = str(setting).lower() if isinstance(setting, (bool, str)) else ""
    if text not in ("auto", "true", "false"):
        raise ConfigError("pretrained", setting, "auto, true or false")
    return text


def _is_weights_failure(exc: Exception) -> bool:
    """A missing/unreachable/corrupt weights file, as opposed to a bug.

    keras.utils.get_file reports network errors as a bare `Exception`, h5py bad files as OSError,
    hash and shape mismatches as ValueError.
    """
    return isinstance(exc, (VitbenchError, OSError, ValueError)) or type(exc) is Exception


def keras_home() -> Path:
    """The Keras cache folder: `$KERAS_HOME`, else `~/.keras` (read now, not at Keras import)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def cached_download(fname: str, origin: str, cache_subdir: str,
                    file_hash: str | None = None) -> Path:
    """`keras.utils.get_file` into the Keras cache, failing fast (FetchError) when offline."""
    cache_dir = keras_home()
    target = cache_dir / cache_subdir / fname
    hint = f"to work offline, copy {fname} to {target} (the Keras cache; set KERAS_HOME to move it)"
    if not target.is_file():
        try:
            check_reachable(origin)
        except FetchError as exc:
            raise FetchError(f"{exc}; {hint}") from exc
    try:
        path = keras.utils.get_file(fname, origin, cache_subdir=cache_subdir,
                                    cache_dir=str(cache_dir), file_hash=file_hash)
    except Exception as exc:  # noqa: BLE001 - get_file raises a bare Exception on network errors
        raise FetchError(f"cannot download {origin}: {exc}; {hint}") from exc
    return Path(path)


def check_reachable(url: str, timeout: float = REACH_TIMEOUT) -> None:
    """Open (and close) a TCP connection to the URL's server, or its proxy; FetchError if that
    fails or takes longer than `timeout` seconds (name resolution included)."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname
    if not host:
        raise FetchError(f"cannot download {url}: not a URL with a host name")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo ignores socket timeouts
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise FetchError(f"cannot reach {host}:{port} for {url}: no answer within {timeout:g} s")
    if outcome[0] is not None:
        raise FetchError(f"cannot reach {host}:{port} for {url}: {outcome[0]}")
