"""Sweeps: the comparison over a grid of params.yaml values, as DVC experiments.

`run_sweep` turns `-S key=v1,v2,...` (one or more keys) and `--seeds N` into one queued DVC
experiment per grid point and seed (`dvc exp run --queue -S key=v -S seed=s -n NAME`, names
such as `mtpc-25-seed-2`), starts the queue and waits, printing progress; like `vitbench seeds`,
the workspace and `dvc repro` stay as they are. Everything is checked before the first
experiment is queued: the keys exist in params.yaml, the value lists are non-empty and free of
duplicates, every grid point is a valid params.yaml (`registry.params_from_dict`) and no
experiment of the current commit already has one of the names. The summary over a swept param
is `vitbench.experiments.sweep_summary`.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vitbench.core import config
from vitbench.core.errors import ConfigError, VitbenchError
from vitbench.experiments.queue import Task, dvc, queue_tasks, start_queue, wait_for_queue
from vitbench.models import registry

SEED_KEY = "seed"


@dataclass(frozen=True)
class Point:
    """One experiment of the sweep: its name, its seed and the swept values (params.yaml keys
    -> the text handed to `dvc exp run -S`)."""

    name: str
    seed: int
    values: dict[str, str]

    def overrides(self) -> list[str]:
        """The `-S` arguments of its `dvc exp run`."""
        return [f"{key}={text}" for key, text in self.values.items()] + [f"{SEED_KEY}={self.seed}"]


def leaf_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted params.yaml key that holds a value (not a section)."""
    keys = []
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        keys += leaf_keys(value, f"{dotted}.") if isinstance(value, dict) else [dotted]
    return keys


def parse_grid(specs: Sequence[str], raw: dict[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    """`["key=v1,v2", ...]` -> {key: [(text, parsed value), ...]}, checked against the params
    `raw` (params.yaml as parsed YAML): a known value key, not the seed (`--seeds`), a non-empty
    list of scalars without duplicates, each key once."""
    leaves = leaf_keys(raw)
    grid: dict[str, list[tuple[str, Any]]] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise VitbenchError(f"-S {spec!r}: expected KEY=V1,V2,... (e.g. -S split.max_train_per_class=5,10,25)")
        if key == SEED_KEY:
            raise VitbenchError("-S seed=...: the seeds are set with --seeds N (seeds 1..N)")
        if key not in leaves:
            raise VitbenchError(f"-S {key}: no such key in params.yaml{_closest(key, leaves)}")
        if key in grid:
            raise VitbenchError(f"-S {key} is given twice: put all its values in one -S {key}=v1,v2,...")
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in items):
            raise VitbenchError(f"-S {spec!r}: an empty value list or an empty value; "
                                f"expected -S {key}=v1,v2,...")
        values = [(t, _scalar(key, t, raw)) for t in items]
        seen: dict[tuple[str, Any], str] = {}
        for t, v in values:
            same = _identity(v)
            if same in seen:
                raise VitbenchError(f"-S {key}: the value {t!r} is listed twice"
                                    + (f" ({seen[same]!r} is the same value)" if seen[same] != t else ""))
            seen[same] = t
        grid[key] = values
    if not grid:
        raise VitbenchError("nothing to sweep: give at least one -S KEY=V1,V2,...")
    return grid


def _closest(key: str, leaves: list[str]) -> str:
    """"; did you mean split.max_train_per_class?" (by the whole key or its last part)."""
    match = [k for k in leaves if key in k][:1] or difflib.get_close_matches(key, leaves, n=1, cutoff=0.6)
    if not match:
        tails = {k.rsplit(".", 1)[-1]: k for k in leaves}
        near = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)
        match = [tails[near[0]]] if near else []
    return f"; did you mean {match[0]}?" if match else ""


def _scalar(key: str, text: str, raw: dict[str, Any]) -> Any:
    """The value `dvc exp run -S key=text` writes into params.yaml, as a stage reads it back: DVC
    parses `text` with Hydra's grammar, not YAML's (`010` stays the string '010', `on` becomes
    true), so the override is applied by DVC's own code to a copy of `raw`."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / config.PARAMS_FILE
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            apply_overrides(str(path), [f"{key}={text}"])
        except DvcException as exc:
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            raise VitbenchError(f"-S {key}={text}: DVC cannot parse this value{cause}") from None
        value = _at(yaml.safe_load(path.read_text()), key.split("."))
    if isinstance(value, (dict, list)):
        raise VitbenchError(f"-S {key}={text}: a sweep takes scalar values (numbers, strings, null)")
    return value


def _as_text_note(combo: Sequence[tuple[str, Any]]) -> str:
    """" (DVC writes 010 as the string '010', not a number)" for the values YAML would read as
    something else than the string DVC writes."""
    texts = [t for t, v in combo if isinstance(v, str) and not isinstance(_yaml_or_none(t), str)]
    return "".join(f" (DVC writes {t} as the string {t!r}, not a number)" for t in texts)


def _yaml_or_none(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _at(raw: dict[str, Any], path: list[str]) -> Any:
    """The value at `path` (params.yaml keys) in `raw`."""
    for part in path:
        raw = raw[part]
    return raw


def _identity(value: Any) -> tuple[str, Any]:
    """What makes two values the same params.yaml value: numbers by value (15 and 15.0), true and
    false apart from 1 and 0, anything else by its YAML text."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return ("other", json.dumps(value))


def short_name(key: str) -> str:
    """The name part of a key: the initials of a many-word leaf (max_train_per_class -> mtpc,
    image_size -> is), a one-word leaf whole (epochs). `_tags` prefixes its section's initials
    where another params.yaml key has the same leaf (vit_ft.image_size -> vf-is)."""
    leaf = key.rsplit(".", 1)[-1]
    words = leaf.split("_")
    return "".join(w[0] for w in words if w) if len(words) > 1 else leaf


def value_label(value: Any) -> str:
    """A value as it appears in an experiment name: null -> all, 1e-05 -> 1e-05, a string with
    characters a git ref refuses -> those replaced by `_`."""
    if value is None:
        return "all"
    if isinstance(value, bool):
        return str(value).lower()
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value)).strip(".") or "_"


def plan(grid: dict[str, list[tuple[str, Any]]], seeds: Sequence[int], raw: dict[str, Any]) -> list[Point]:
    """One Point per grid point and seed, in grid order, seeds innermost; every point's params
    are validated as a stage would (`registry.params_from_dict`), so a bad value is refused here."""
    tags = _tags(list(grid), leaf_keys(raw))
    points = []
    for combo in itertools.product(*grid.values()):
        changed = raw
        for key, (text, value) in zip(grid, combo):
            changed = _with(changed, key.split("."), value)
        try:
            registry.params_from_dict(changed)
        except ConfigError as exc:
            where = ", ".join(f"{k}={t}" for k, (t, _) in zip(grid, combo))
            raise VitbenchError(f"the grid point {where} is not a valid params.yaml: {exc}"
                                + _as_text_note(combo)) from None
        stem = "-".join(f"{tags[k]}-{value_label(v)}" for k, (_, v) in zip(grid, combo))
        for seed in seeds:
            points.append(Point(f"{stem}-seed-{seed}", seed, {k: t for k, (t, _) in zip(grid, combo)}))
    names = [p.name for p in points]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise VitbenchError(f"two grid points would share the experiment name {clashes[0]}: "
                            "give the values distinct spellings")
    return points


def _tags(keys: list[str], leaves: list[str]) -> dict[str, str]:
    tags = {}
    for key in keys:
        tag = short_name(key)
        if sum(short_name(k) == tag for k in leaves) > 1 and "." in key:
            section = key.rsplit(".", 1)[0]
            tag = "".join(w[0] for w in re.split(r"[._]", section) if w) + "-" + tag
        tags[key] = tag
    return tags


def _with(raw: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of `raw` with the value at `path` replaced."""
    head, *rest = path
    return {**raw, head: _with(raw[head], rest, value) if rest else value}


def existing_names(root: Path) -> set[str]:
    """The names of the current commit's experiments (`dvc exp list --name-only`; `exp show`
    reads every experiment's metrics and takes minutes on a busy machine) and of every queued,
    running or failed one (`dvc queue status`)."""
    names = set(dvc(["exp", "list", "--name-only"], root).split())
    return names | {t.name for t in queue_tasks(root)}


def queue_points(points: Sequence[Point], root: Path, models: Sequence[str] = ()) -> set[str]:
    """Queue one `dvc exp run` per point (only `models`' evaluate stages and what they need,
    default all); refused, with nothing queued, when a name is taken. Returns their task ids."""
    taken = sorted(existing_names(root) & {p.name for p in points})
    if taken:
        raise VitbenchError(f"experiment name(s) already exist: {', '.join(taken)}; remove them "
                            "(`dvc exp remove NAME`, `dvc queue remove NAME`) or sweep other values")
    before = {t.task for t in queue_tasks(root)}
    targets = [f"evaluate@{model}" for model in models] or None
    done: list[str] = []
    try:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        logging.getLogger("kombu").setLevel(logging.ERROR)   # "No hostname was supplied"
        with Repo(str(root)) as repo:   # in-process: `dvc exp run --queue` costs seconds a call
            for point in points:
                repo.experiments.run(targets=targets, params=point.overrides(), queue=True,
                                     name=point.name)
                done.append(point.name)
    except DvcException as exc:
        if done:   # all or nothing
            dvc(["queue", "remove", *done], root)
        raise VitbenchError(f"queueing experiment {points[len(done)].name} failed: {exc}") from exc
    return {t.task for t in queue_tasks(root)} - before


class Progress:
    """Prints a line when the counts change: done / running / queued, each finished experiment
    with its time, and an estimate of the time left."""

    def __init__(self, jobs: int, echo: Callable[[str], None]) -> None:
        self.jobs, self.echo = max(1, jobs), echo
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.last: tuple[int, int, int] | None = None

    def __call__(self, rows: list[Task]) -> None:
        now = time.monotonic()
        for t in rows:
            if t.status == "Running":
                self.started.setdefault(t.task, now)
            elif t.status in ("Success", "Failed") and t.task not in self.took:
                self.took[t.task] = now - self.started.get(t.task, now)
                if t.task in self.started:
                    self.echo(f"  {t.name}: {t.status.lower()} in {_duration(self.took[t.task])}")
                else:
                    self.echo(f"  {t.name}: {t.status.lower()}")
        counts = tuple(sum(t.status in states for t in rows)
                       for states in (("Success", "Failed"), ("Running",), ("Queued",)))
        if counts != self.last:
            self.last = counts
            done, running, queued = counts
            timed = [s for s in self.took.values() if s > 0]
            left = ""
            if timed and running + queued:
                each = sum(timed) / len(timed)
                left = f"; ~{_duration(each * (running + queued) / self.jobs)} left at {_duration(each)} each"
            self.echo(f"{time.strftime('%H:%M:%S')} {done} done, {running} running, {queued} queued{left}")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def run_sweep(specs: Sequence[str], seeds: int, root: Path, models: Sequence[str] = (), jobs: int = 1,
              start: bool = True, wait: bool = True, timeout: float = 7 * 24 * 3600,
              echo: Callable[[str], None] = print) -> list[Point]:
    """Check the sweep, queue its experiments and (with `start`) run the queue with `jobs`
    workers; with `wait`, block until they finish, printing progress via `echo`."""
    if seeds < 1:
        raise VitbenchError(f"--seeds {seeds}: need at least 1")
    raw = config.read_params(root / config.PARAMS_FILE)
    points = plan(parse_grid(specs, raw), list(range(1, seeds + 1)), raw)
    tasks = queue_points(points, root, models)
    echo(f"queued {len(points)} experiment(s): {', '.join(p.name for p in points)}")
    if start:
        start_queue(root, jobs)
        if wait:
            wait_for_queue(root, timeout, tasks, Progress(jobs, echo), jobs=jobs, echo=echo)
    return points
