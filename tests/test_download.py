"""vitbench.core.download beyond what test_sources covers: the progress bar, a body cut short on every
attempt (nothing cached, the Retry budget spent), and the retry policy itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from loopback import Server

import vitbench.core.download
from vitbench.core.download import download, retry_policy
from vitbench.core.errors import FetchError


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vitbench.core.download, "BACKOFF_SECONDS", 0.01)


def test_progress_bar_names_the_file_and_counts_its_bytes(server: Server, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    server.routes["/w.h5"] = [(200, b"x" * 3000)]
    path = download(f"{server.url}/w.h5", tmp_path)
    bar = capsys.readouterr().err
    assert path.name in bar and "2.93k/2.93k" in bar.replace("kB", "k").replace("KiB", "k")


def test_a_body_cut_short_every_time_is_never_cached(server: Server, tmp_path: Path) -> None:
    server.routes["/w.h5"] = [(0, b"partial")]
    with pytest.raises(FetchError, match=r"after 3 attempt\(s\).*connection closed after 7 of 28 bytes"):
        download(f"{server.url}/w.h5", tmp_path, retries=2)
    assert server.hits["/w.h5"] == 3 and list(tmp_path.iterdir()) == []


def test_retry_policy_retries_5xx_and_connections_not_4xx() -> None:
    policy = retry_policy(2)
    assert policy.total == 2 and policy.is_retry("GET", 503) and not policy.is_retry("GET", 404)
    assert not policy.is_retry("POST", 503)
