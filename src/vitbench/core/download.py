"""Downloads into a cache folder: once per URL, retried, verified, never half-written.

Built on `requests` with urllib3's `Retry` (both come with DVC): connection errors and HTTP 5xx
are retried with exponential backoff (`BACKOFF_SECONDS`; urllib3 retries the first time at once,
then waits BACKOFF_SECONDS * 2, * 4, ...), HTTP 4xx fails at once. A body that ends before its
Content-Length counts as one more failed attempt on the same `Retry` budget. The body is streamed
into a temporary file with a byte progress bar and renamed into the cache only when it is complete
and, when a sha256 is given, verified: a cut-short, failed or mismatching download leaves nothing.

Used by the fetch stage (`dataset.source` URLs, `vitbench.data.sources`) and by the pretrained
weights (`vitbench.models.weights.cached_download`); it imports nothing else of vitbench but the
errors and `fsutil.sha256_file`, so neither pulls the other's code into its stage's deps.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from vitbench.core.errors import FetchError
from vitbench.core.fsutil import sha256_file

__all__ = ["NetworkError", "download", "verify_sha256"]

log = logging.getLogger(__name__)

BACKOFF_SECONDS = 1.0            # urllib3's backoff_factor
CHUNK = 1 << 16
USER_AGENT = "vitbench/0.1 (+https://github.com/vitbench)"
HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}   # the bytes as stored


class NetworkError(FetchError):
    """The server could not be reached, or the transfer kept failing (connection errors, HTTP 5xx,
    bodies cut short, after the retries): nothing is known about the file itself. Unlike an HTTP
    4xx answer or a checksum mismatch, this is what `pretrained: auto` may turn into random
    weights."""


class _CutShort(Exception):
    """The connection closed before the promised Content-Length arrived."""


def download(url: str, cache_dir: Path, sha256: str | None = None, *, retries: int = 3,
             timeout: float = 30) -> Path:
    """Download `url` into `cache_dir` once and return the cached file.

    A file already cached for this URL (and matching `sha256` when given) is reused without any
    network access. Connection errors, HTTP 5xx and bodies cut short are retried `retries` times
    with exponential backoff, then raise `NetworkError`; HTTP 4xx fails at once (`FetchError`). The file is written to a temporary name and
    renamed only when complete and, if `sha256` is given, verified; a mismatch raises `FetchError`
    and keeps nothing.
    """
    if urlparse(url).scheme not in ("http", "https"):
        raise FetchError(f"not an http(s) URL: {url}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / cache_name(url)
    if target.is_file():
        if sha256 is None or sha256_file(target) == sha256.lower():
            log.info("using the cached download %s", target)
            return target
        log.warning("cached %s does not match the expected sha256; downloading again", target)
        target.unlink()
    part = _download_with_retries(url, cache_dir, target.name, retries, timeout)
    try:
        if sha256:
            verify_sha256(part, sha256, what=url)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    log.info("downloaded %s to %s", url, target)
    return target


def cache_name(url: str) -> str:
    """A file name unique to the URL that still shows the original name."""
    base = PurePosixPath(urlparse(url).path).name or "download"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


def verify_sha256(path: Path, expected: str, *, what: str) -> None:
    """FetchError unless the sha256 of `path` is `expected` (`what` names the source)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise FetchError(f"checksum mismatch for {what}: expected sha256 {expected.lower()}, "
                         f"got {actual} (dataset.sha256)")


def retry_policy(retries: int) -> Retry:
    """`retries` more attempts after connection errors and HTTP 5xx, exponential backoff."""
    return Retry(total=retries, connect=retries, read=retries, status=retries, other=0,
                 backoff_factor=BACKOFF_SECONDS, status_forcelist=tuple(range(500, 600)),
                 allowed_methods=frozenset({"GET"}), respect_retry_after_header=False,
                 raise_on_status=True)


def _download_with_retries(url: str, cache_dir: Path, name: str, retries: int, timeout: float) -> Path:
    """Stream `url` into a temporary file in `cache_dir`; its path. The adapter's `Retry`
    retries what fails before the body; a body cut short spends one retry of the same budget."""
    retry = retry_policy(retries)
    while True:
        try:
            return _download_once(url, cache_dir, name, timeout, retry)
        except _CutShort as exc:
            try:
                retry = retry.increment(method="GET", url=url, error=ProtocolError(str(exc)))
            except MaxRetryError:
                raise NetworkError(f"download failed after {retries + 1} attempt(s): {url}: {exc}") from None
            log.warning("download of %s failed (%s); retrying", url, exc)
            retry.sleep()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            reason = exc.response.reason if exc.response is not None else exc
            raise FetchError(f"HTTP {status} {reason} for {url}") from exc
        except requests.RequestException as exc:
            raise NetworkError(f"download failed after {retries + 1} attempt(s): {url}: "
                               f"{_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """The innermost urllib3 reason of a requests error, in a few words."""
    inner = exc.args[0] if exc.args else exc
    reason = getattr(inner, "reason", None) or inner
    return str(reason) or type(exc).__name__


def _download_once(url: str, cache_dir: Path, name: str, timeout: float, retry: Retry) -> Path:
    """One request (the adapter retries its connection and 5xx answers): stream the body into a
    temporary file in `cache_dir` and return its path; nothing is left behind on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.part-", dir=cache_dir)
    part = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out, requests.Session() as session:
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            with session.get(url, headers=HEADERS, stream=True, timeout=timeout) as response:
                response.raise_for_status()
                total = int(response.headers.get("Content-Length") or 0) or None
                received = _stream(response, out, total, name)
        if total is not None and received < total:
            raise _CutShort(f"connection closed after {received} of {total} bytes")
        return part
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _stream(response: requests.Response, out: BinaryIO, total: int | None, name: str) -> int:
    """Copy the response body to `out` with a byte progress bar; return the bytes received."""
    received = 0
    with tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024) as bar:
        try:
            for block in response.raw.stream(CHUNK, decode_content=False):
                out.write(block)
                received += len(block)
                bar.update(len(block))
        except ProtocolError as exc:   # urllib3 2 enforces Content-Length while reading
            if total is None:
                raise _CutShort(str(exc)) from exc
    return received
