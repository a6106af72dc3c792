"""The DVC queue client: running `dvc`, starting and waiting for the experiment queue, and
reading finished experiments (`dvc exp show --json`, and each experiment's metrics and
predictions at its git commit). `vitbench seeds`, `sweep`, `cv` and `summarize` build on it."""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from vitbench.core.errors import VitbenchError
from vitbench.core.paths import Paths
from vitbench.models import registry

FINISHED = (None, "success")   # executor states of a finished experiment (None: not from the queue)
POLL_SECONDS = 2.0       # the first wait between two `dvc queue status` polls, then half again longer
POLL_MAX_SECONDS = 15.0  # each time, up to this: every poll is a whole dvc process
STALL_SECONDS = 120.0    # tasks queued and none running this long: the queue's workers are restarted
STATUS_RETRIES = 3     # `dvc queue status` failures in a row ridden out before giving up
QUEUE_STATES = ("Queued", "Running", "Success", "Failed")


def _run_dvc(args: list[str], root: Path, **kwargs: Any) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["dvc", *args], cwd=root, **kwargs)
    except FileNotFoundError:
        raise VitbenchError("`dvc` is not on PATH: activate the project's environment "
                            "(`source .venv/bin/activate`) first") from None


def dvc(args: list[str], root: Path) -> str:
    """The output of `dvc ARGS` run in `root`; a VitbenchError with its message if it fails."""
    proc = _run_dvc(args, root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VitbenchError(f"`dvc {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def exp_show(root: Path) -> Any:
    """`dvc exp show --json` of the project at `root`, parsed (every experiment of the current
    commit, nested under its baseline; `walk` lists them)."""
    return json.loads(dvc(["exp", "show", "--json"], root) or "[]")


def start_queue(root: Path, jobs: int) -> None:
    """`dvc queue start -j JOBS`. Its workers are daemons that inherit its output: reading that
    through pipes (as `dvc` does) would block until the last experiment ends, so it goes to a
    file, read back only when the command fails."""
    with tempfile.TemporaryFile("w+") as log:
        code = _run_dvc(["queue", "start", "-j", str(jobs)], root, stdin=subprocess.DEVNULL,
                        stdout=log, stderr=log).returncode
        if code != 0:
            log.seek(0)
            raise VitbenchError(f"`dvc queue start -j {jobs}` failed: {log.read().strip()}")


@dataclass(frozen=True)
class Task:
    """One row of `dvc queue status`."""

    task: str      # short task id
    name: str
    status: str    # Queued, Running, Success or Failed


def queue_tasks(root: Path) -> list[Task]:
    """The rows of `dvc queue status` (queued, running and finished tasks)."""
    rows = []
    for line in dvc(["queue", "status"], root).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in QUEUE_STATES and parts[0] != "Task":
            rows.append(Task(parts[0], parts[1], parts[-1]))
    return rows


def wait_for_queue(root: Path, timeout: float, tasks: set[str] | None = None,
                   progress: Callable[[list[Task]], None] | None = None, *, jobs: int = 1,
                   echo: Callable[[str], None] = print) -> list[Task]:
    """Block until none of `tasks` (task ids; default every task) is queued or running, calling
    `progress` with their rows at each poll; a failed one is a VitbenchError naming it.

    The polls grow apart (POLL_SECONDS, then half again longer each time up to POLL_MAX_SECONDS):
    each is a `dvc` process, and on a small machine frequent polls take CPU from the experiments.

    Two known faults of DVC's local queue on a loaded machine are ridden out: a `dvc queue
    status` that fails once (a half-written broker message) is polled again, up to
    STATUS_RETRIES times in a row; and a dead worker that leaves tasks queued with none running
    for STALL_SECONDS is replaced (`dvc queue start -j JOBS` keeps the live ones)."""
    deadline = time.monotonic() + timeout
    failures = 0
    wait = POLL_SECONDS
    stalled_since: float | None = None
    while True:
        try:
            rows = [t for t in queue_tasks(root) if tasks is None or t.task in tasks]
            failures = 0
        except VitbenchError:
            failures += 1
            if failures > STATUS_RETRIES:
                raise
            time.sleep(POLL_SECONDS)
            continue
        if progress is not None:
            progress(rows)
        if not any(t.status in ("Queued", "Running") for t in rows):
            break
        if time.monotonic() > deadline:
            raise VitbenchError(f"the experiments did not finish within {timeout:.0f} s: "
                                + ", ".join(f"{t.name} {t.status}" for t in rows))
        if any(t.status == "Running" for t in rows):
            stalled_since = None
        elif stalled_since is None:
            stalled_since = time.monotonic()
        elif time.monotonic() - stalled_since >= STALL_SECONDS:
            stalled_since = None
            echo("experiments are queued but none runs: restarting the queue's workers")
            start_queue(root, jobs)
        time.sleep(wait)
        wait = min(POLL_MAX_SECONDS, wait * 1.5)
    failed = [f"{t.task} {t.name}" for t in rows if t.status == "Failed"]
    if failed:
        raise VitbenchError("experiment(s) failed (see `dvc queue logs NAME`):\n" + "\n".join(failed))
    return rows


def with_detail(metrics: dict[str, Any], root: Path | None, rev: str,
                model_id: str) -> dict[str, Any]:
    """A model's metrics in an experiment (metrics/<id>.json: numbers only) with what evaluate
    wrote beside them merged in: metrics/<id>_detail.json (display name, kind, meant_pretrained,
    input size, ...) at the experiment's commit `rev`. As they are without `root`, or for an
    experiment from before that file (its metrics/<id>.json held the names)."""
    if root is None or not rev:
        return metrics
    try:
        detail = json.loads(_file_at(root, rev, Paths(root).detail_json(model_id)))
    except VitbenchError:
        if "kind" in metrics:
            return metrics
        raise
    return {**detail, **metrics}


def json_at(root: Path, rev: str, path: Path) -> dict[str, Any]:
    """The JSON file `path` (in the project `root`) as the experiment's commit `rev` holds it:
    files outside dvc.yaml `metrics:`, which `dvc exp show` does not list, such as
    metrics/split.json."""
    return json.loads(_file_at(root, rev, path))


def _file_at(root: Path, rev: str, path: Path) -> str:
    """The text of `path` (in the project `root`) as commit `rev` holds it (`git show REV:PATH`);
    a VitbenchError if it cannot be read."""
    relative = path.relative_to(root).as_posix()
    proc = subprocess.run(["git", "show", f"{rev}:{relative}"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VitbenchError(f"{relative} of experiment commit {rev[:7]} could not be read: "
                            f"{proc.stderr.strip()}")
    return proc.stdout


def model_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{model id: its metrics} of every metrics/<id>.json in an experiment that evaluate wrote
    (it has `accuracy`), the contract's ids first, in their order."""
    found = {}
    for path, entry in metrics.items():
        data = (entry or {}).get("data") or {}
        stem = PurePosixPath(path).stem
        if PurePosixPath(path).parent.name == "metrics" and "accuracy" in data:
            found[stem] = data
    order = {m: i for i, m in enumerate(registry.model_ids())}
    return {m: found[m] for m in sorted(found, key=lambda m: (order.get(m, len(order)), m))}


def walk(node: Any, state: str | None = None) -> list[tuple[dict[str, Any], str | None]]:
    """Every dict with a `data` key, depth first (exp show nests experiments under baselines),
    with the state of the nearest enclosing executor (None where there is none)."""
    found = []
    if isinstance(node, dict):
        executor = node.get("executor")
        if isinstance(executor, dict):
            state = executor.get("state")
        if "data" in node and isinstance(node["data"], dict):
            found.append((node, state))
        for value in node.values():
            if isinstance(value, (dict, list)):
                found += walk(value, state)
    elif isinstance(node, list):
        for item in node:
            found += walk(item, state)
    return found


def predictions_at(root: Path, rev: str, model_id: str) -> pd.DataFrame:
    """plots/<id>/eval/predictions.csv (actual and predicted class per test image, indexed by
    path) of the experiment at git commit `rev`."""
    text = _file_at(root, rev, Paths(root).eval_plots(model_id) / "predictions.csv")
    return pd.read_csv(io.StringIO(text), dtype={"path": str, "actual": str, "predicted": str},
                       keep_default_na=False).drop_duplicates("path").set_index("path")
