"""The DVC queue client (vitbench.experiments.queue.wait_for_queue) rides out the local queue's known faults:
a worker that died and left tasks queued, and a `dvc queue status` that fails once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dvc_project import TINY, VENV_BIN, commit, run, set_params
from vitbench.experiments import queue
from vitbench.core.errors import VitbenchError

pytestmark = pytest.mark.slow


def test_a_stalled_queue_is_restarted_and_a_failed_status_polled_again(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task queued with no worker (as after a worker died) runs once the client restarts the
    queue; one failing `dvc queue status` in between does not end the wait."""
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    set_params(project, TINY)
    commit(project, "tiny params")
    run(project, "dvc", "exp", "run", "--queue", "-n", "only-fetch", "fetch")
    monkeypatch.setattr(queue, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(queue, "POLL_MAX_SECONDS", 0.2)
    monkeypatch.setattr(queue, "STALL_SECONDS", 0.3)
    real, calls = queue.queue_tasks, []

    def flaky(root: Path) -> list[queue.Task]:
        calls.append(root)
        if len(calls) == 2:
            raise VitbenchError("`dvc queue status` failed: Expecting value: line 1 column 1 (char 0)")
        return real(root)

    monkeypatch.setattr(queue, "queue_tasks", flaky)
    said: list[str] = []
    rows = queue.wait_for_queue(project, timeout=600, echo=said.append)
    assert [(t.name, t.status) for t in rows] == [("only-fetch", "Success")]
    assert said == ["experiments are queued but none runs: restarting the queue's workers"]


def test_status_failing_every_time_is_an_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "POLL_SECONDS", 0.0)

    def broken(root: Path) -> list[queue.Task]:
        raise VitbenchError("`dvc queue status` failed: boom")

    monkeypatch.setattr(queue, "queue_tasks", broken)
    with pytest.raises(VitbenchError, match="boom"):
        queue.wait_for_queue(project, timeout=60)
