"""Pretrained weights: `pretrained: auto|true|false`, the Keras cache and weights downloads.

Weights files live in the Keras cache (`$KERAS_HOME`, default `~/.keras`): `cached_download` uses
a file already there without any network; otherwise it checks with a short timeout that the
server is reachable (so an offline machine fails in seconds instead of hanging) and downloads
through `vitbench.core.download.download` (retries, temporary file renamed when complete, sha256),
then checks the Keras md5 hash when one is given.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

from vitbench.core.errors import ConfigError, DataError, FetchError, VitbenchError

log = logging.getLogger("vitbench.models")  # the warnings users grep for keep their old logger

T = TypeVar("T")

REACH_TIMEOUT = 5.0  # seconds allowed to open a connection to a weights server


class WeightsFileError(DataError):
    """A weights file that the user named (or that sits in the Keras cache) and that is there but
    is not what the model needs: unreadable, truncated, another architecture, a tensor of another
    shape, a failed checksum. An error whatever `pretrained` says."""


def resolve_pretrained(setting: bool | str, what: str,
                       try_load: Callable[[], T]) -> tuple[T | None, bool]:
    """Apply the contract's `pretrained: auto|true|false` to one attempt to load weights.

    Returns (what try_load returned, True) on success and (None, False) when the weights are not
    used: `false` never calls try_load. `auto` means "the network may be missing", nothing else:
    only a `NetworkError` (no network, server unreachable, the download kept failing) becomes a
    loud warning and random weights; `true` turns it into a VitbenchError that says how to supply
    the weights offline. Every other error (a named file that is missing, wrong, truncated or
    fails its checksum; an HTTP 4xx answer) is raised whatever the setting.
    """
    from vitbench.core.download import NetworkError

    mode = pretrained_mode(setting)
    if mode == "false":
        log.info("%s: pretrained: false, starting from random weights", what)
        return None, False
    try:
        return try_load(), True
    except NetworkError as exc:
        if mode == "true":
            raise VitbenchError(
                f"{what}: pretrained: true, but the weights could not be downloaded: {exc}. "
                "Supply them offline as described, or set pretrained: auto (or false) "
                "to train from random weights.") from exc
        log.warning("!!! %s could not be downloaded (%s); pretrained: auto, so training from "
                    "RANDOM weights; metrics will say pretrained: false", what, exc)
        return None, False


def pretrained_mode(setting: bool | str) -> str:
    """`pretrained` as "auto", "true" or "false" (YAML may give a bool); a ConfigError otherwise."""
    text = str(setting).lower() if isinstance(setting, (bool, str)) else ""
    if text not in ("auto", "true", "false"):
        raise ConfigError("pretrained", setting, "auto, true or false")
    return text


def keras_home() -> Path:
    """The Keras cache folder: `$KERAS_HOME`, else `~/.keras` (read now, not at Keras import)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def url_file_name(url: str) -> str:
    """A cache file name unique to `url` that still ends in the URL's own file name."""
    base = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


def cached_download(fname: str, origin: str, cache_subdir: str,
                    file_hash: str | None = None) -> Path:
    """`$KERAS_HOME/<cache_subdir>/<fname>`, downloaded from `origin` unless already there.

    `file_hash`: sha256 (64 hex digits) or md5 (as keras.applications gives them); a cached file
    that does not match is downloaded again, a download that does not match is a WeightsFileError
    and is not kept. Offline, a `NetworkError` in seconds that says where to copy the file; an
    HTTP 4xx answer is a FetchError (the URL is wrong).
    """
    from vitbench.core.download import NetworkError, download

    cache_dir = keras_home() / cache_subdir
    target = cache_dir / fname
    hint = f"to work offline, copy {fname} to {target} (the Keras cache; set KERAS_HOME to move it)"
    if target.is_file():
        if file_hash is None or file_matches(target, file_hash):
            return target
        log.warning("%s does not match its expected hash %s; downloading it again", target, file_hash)
    try:
        check_reachable(origin)
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir) as tmp:
            got = download(origin, Path(tmp))
            if file_hash is not None and not file_matches(got, file_hash):
                raise WeightsFileError(f"{origin} fails its checksum: expected {file_hash}, got "
                                       f"{file_digest(got, file_hash)}; the download was not kept")
            os.replace(got, target)
    except NetworkError as exc:
        raise NetworkError(f"{exc}; {hint}") from exc
    return target


def file_matches(path: Path, file_hash: str) -> bool:
    """Whether the file's sha256 (64 hex digits) or md5 is `file_hash`."""
    return file_digest(path, file_hash) == file_hash.lower()


def file_digest(path: Path, like: str) -> str:
    """The file's sha256, or its md5 when `like` (a hash to compare with) is not 64 digits long."""
    algo = hashlib.sha256() if len(like) == 64 else hashlib.md5()  # noqa: S324 - Keras' md5s
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            algo.update(block)
    return algo.hexdigest()


def check_reachable(url: str, timeout: float = REACH_TIMEOUT) -> None:
    """Open (and close) a TCP connection to the URL's server, or its proxy; NetworkError if that
    fails or takes longer than `timeout` seconds (name resolution included)."""
    from vitbench.core.download import NetworkError

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
        raise NetworkError(f"cannot reach {host}:{port} for {url}: no answer within {timeout:g} s")
    if outcome[0] is not None:
        raise NetworkError(f"cannot reach {host}:{port} for {url}: {outcome[0]}")
