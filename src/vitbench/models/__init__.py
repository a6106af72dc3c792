"""Models: the family registry, models on disk, and pretrained weights.

- `vitbench.models.registry`: the table of model families (cnn, vit_scratch, vit_ft) and model
  ids; every "which kind of model" question is a lookup there.
- `vitbench.models.store`: `build_model`, `save_model`, `load_model` (models/<id>/ on disk), and
  the record-level lookups `display_name`, `set_backbone_trainable`, `attention_weights`.
- below: pretrained weights through the Keras cache (`$KERAS_HOME`, default `~/.keras`):
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
from typing import TypeVar

import keras

from vitbench.errors import ConfigError, FetchError, VitbenchError
from vitbench.models import registry
from vitbench.models.store import (RECORD_FILE, WEIGHTS_FILE, attention_weights, build_model,
                                   count_params, display_name, load_model, save_model,
                                   set_backbone_trainable)

__all__ = ["FAMILIES", "RECORD_FILE", "WEIGHTS_FILE", "attention_weights", "build_model",
           "cached_download", "check_reachable", "count_params", "display_name", "keras_home",
           "load_model", "registry", "resolve_pretrained", "save_model", "set_backbone_trainable"]

log = logging.getLogger(__name__)

T = TypeVar("T")

FAMILIES = tuple(registry.FAMILIES)
REACH_TIMEOUT = 5.0  # seconds allowed to open a connection to a weights server


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
