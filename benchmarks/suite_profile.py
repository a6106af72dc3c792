"""Where the test suite's time goes: each test file's CPU, the machine's, and the host's speed.

Runs `make test` with this file as a pytest plugin (`-p suite_profile`), which appends one JSON
line per test to `<out>/tests.jsonl`: its wall time and its CPU (the test process's own, and that
plus the CPU of the subprocesses it waited for: `dvc repro` and its stages). Meanwhile
/proc/stat is sampled every two seconds into `<out>/stat.log`: the machine's busy CPU, which also
counts what no test waits for (DVC's queue workers, which run the queued experiments). A
pure-Python loop is timed before and after as a reference of the host's speed, which moves from
run to run on shared machines; compare suite times only at a similar reference.

    python benchmarks/suite_profile.py run --out /tmp/profile     # then prints the report
    python benchmarks/suite_profile.py report /tmp/profile
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import pytest

OUT_ENV = "SUITE_PROFILE_OUT"
FAST_TIER_LIMIT = 1.0      # seconds: a test over this belongs in the slow tier (pyproject's marker)
STAT_PERIOD = 2.0          # seconds between /proc/stat samples
REFERENCE_LOOP = 30_000_000


# --- the pytest plugin ------------------------------------------------------------------------

def _cpu_seconds() -> tuple[float, float]:
    """This process's CPU, and that plus the CPU of its children it waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = own.ru_utime + own.ru_stime
    return mine, mine + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Record the test's wall time and CPU (setup, call and teardown; `own`: in the test process
    alone, without its subprocesses) in $SUITE_PROFILE_OUT (nothing when it is unset)."""
    start, (own, cpu) = time.time(), _cpu_seconds()
    yield
    if OUT_ENV not in os.environ:
        return
    own_after, cpu_after = _cpu_seconds()
    row = {"id": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
           "start": start, "wall": time.time() - start, "cpu": cpu_after - cpu,
           "own": own_after - own, "slow": item.get_closest_marker("slow") is not None}
    with open(os.environ[OUT_ENV], "a") as out:
        out.write(json.dumps(row) + "\n")


# --- the measurements -------------------------------------------------------------------------

def host_reference() -> float:
    """Seconds a fixed pure-Python loop takes on one core."""
    start, total = time.perf_counter(), 0
    for i in range(REFERENCE_LOOP):
        total += i
    return time.perf_counter() - start


def sample_stat(path: Path, stop: threading.Event, period: float = STAT_PERIOD) -> None:
    """Append `<unix time> <the cpu line of /proc/stat>` to `path` every `period` s until `stop`."""
    with open(path, "a") as out:
        while not stop.is_set():
            with open("/proc/stat") as stat:
                out.write(f"{time.time():.1f} {stat.readline().strip()}\n")
            out.flush()
            stop.wait(period)


def busy_seconds(stat_lines: list[str], start: float, end: float) -> tuple[float, float, list[float]]:
    """From `sample_stat`'s lines: the machine's busy and total CPU seconds between `start` and
    `end` (all cores; busy = not idle or waiting on I/O), and the busy fraction per 30 s."""
    samples = []
    for line in stat_lines:
        stamp, _cpu, *ticks = line.split()
        if start - STAT_PERIOD <= float(stamp) <= end + STAT_PERIOD:
            values = [int(t) for t in ticks]
            samples.append((float(stamp), sum(values) - values[3] - values[4], sum(values)))
    if len(samples) < 2:
        return 0.0, 0.0, []
    hz = os.sysconf("SC_CLK_TCK")
    step = max(1, round(30 / STAT_PERIOD))
    marks = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    fractions = [(b[1] - a[1]) / max(1, b[2] - a[2]) for a, b in zip(marks, marks[1:])]
    return (samples[-1][1] - samples[0][1]) / hz, (samples[-1][2] - samples[0][2]) / hz, fractions


def report(out: Path, top: int = 25) -> str:
    """The profile in `out` as text: times, CPU, the busy fraction and the costliest test files."""
    rows = [json.loads(line) for line in (out / "tests.jsonl").read_text().splitlines()]
    if not rows:
        raise click.ClickException(f"{out / 'tests.jsonl'} holds no test")
    start, end = min(r["start"] for r in rows), max(r["start"] + r["wall"] for r in rows)
    stat = out / "stat.log"
    busy, total, fractions = busy_seconds(stat.read_text().splitlines() if stat.is_file() else [],
                                          start, end)
    tests_cpu = sum(r["cpu"] for r in rows)
    files: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "cpu": 0.0, "own": 0.0, "wall": 0.0, "n": 0, "first": end, "last": start, "workers": set()})
    for r in rows:
        f = files[r["id"].split("::")[0]]
        f["cpu"] += r["cpu"]
        f["own"] += r["own"]
        f["wall"] += r["wall"]
        f["n"] += 1
        f["first"], f["last"] = min(f["first"], r["start"]), max(f["last"], r["start"] + r["wall"])
        f["workers"].add(r["worker"])
    lines = [f"{len(rows)} tests from the first start to the last end: {end - start:.0f} s",
             f"CPU in the tests and the subprocesses they waited for: {tests_cpu:.0f} s "
             f"({sum(r['own'] for r in rows):.0f} s in the pytest processes themselves)"]
    if total:
        lines += [f"the machine's busy CPU meanwhile: {busy:.0f} s of {total:.0f} s "
                  f"({busy - tests_cpu:.0f} s outside the tests: DVC's queue workers, collection)",
                  "busy fraction per 30 s: " + " ".join(f"{f:.0%}" for f in fractions)]
    reference = out / "reference.json"
    if reference.is_file():
        ref = json.loads(reference.read_text())
        lines.append(f"host reference loop: {ref['before']:.2f} s before, {ref['after']:.2f} s after")
    lines += ["", "CPU s: the tests' and their subprocesses'; own s: in the pytest process alone",
              f"{'test file':44} {'CPU s':>7} {'own s':>7} {'wall s':>7} {'tests':>5}  from-to (s)"
              "  workers"]
    for name, f in sorted(files.items(), key=lambda kv: -kv[1]["cpu"])[:top]:
        lines.append(f"{Path(name).name:44} {f['cpu']:7.1f} {f['own']:7.1f} {f['wall']:7.1f} "
                     f"{f['n']:5d}  "
                     f"{f['first'] - start:4.0f}-{f['last'] - start:4.0f}  {','.join(sorted(f['workers']))}")
    unmarked = sorted((r for r in rows if not r.get("slow") and r["wall"] > FAST_TIER_LIMIT),
                      key=lambda r: -r["wall"])
    if unmarked:
        lines += ["", f"not marked slow but over {FAST_TIER_LIMIT:g} s (the fast tier's rule):"]
        lines += [f"  {r['wall']:5.1f} s  {r['id']}" for r in unmarked]
    return "\n".join(lines)


@click.group()
def main() -> None:
    """Profile the test suite (`run`) or print a profile again (`report`)."""


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A new folder for tests.jsonl, stat.log and reference.json.")
@click.option("--workers", type=int, default=None, help="TEST_WORKERS for make (its default if unset).")
@click.option("--pytest-args", default="", help="More pytest arguments, e.g. '-m \"not slow\"'.")
def run(out: Path, workers: int | None, pytest_args: str) -> None:
    """Run `make test` in this project with the plugin on, then print the report."""
    out.mkdir(parents=True)
    before = host_reference()
    stop = threading.Event()
    sampler = threading.Thread(target=sample_stat, args=(out / "stat.log", stop), daemon=True)
    sampler.start()
    env = {**os.environ, OUT_ENV: str(out.resolve() / "tests.jsonl"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                       os.environ.get("PYTHONPATH")]))}
    make = ["make", "test", f"PYTEST_ARGS=-p suite_profile {pytest_args}".strip()]
    if workers:
        make.append(f"TEST_WORKERS={workers}")
    code = subprocess.run(make, cwd=Path(__file__).resolve().parents[1], env=env).returncode
    stop.set()
    sampler.join()
    (out / "reference.json").write_text(json.dumps({"before": before, "after": host_reference()}))
    click.echo(report(out))
    sys.exit(code)


@main.command("report")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", default=25, show_default=True, help="How many test files to list.")
def report_command(out: Path, top: int) -> None:
    """Print the profile written by `run` into OUT."""
    click.echo(report(out, top))


if __name__ == "__main__":
    main()
