"""benchmarks/suite_profile.py: the plugin's lines and the /proc/stat samples make the report."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from benchscripts import BENCHMARKS, load_benchmark

TESTS = '''
import subprocess, sys

def test_waits_for_a_child():
    subprocess.run([sys.executable, "-c", "import time; sum(range(3 * 10**7)); time.sleep(1.1)"],
                   check=True)

def test_quick():
    assert True
'''


@pytest.mark.slow
def test_report_counts_the_tests_and_the_cpu_of_their_children(tmp_path: Path) -> None:
    profile = load_benchmark("suite_profile")
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_sample.py").write_text(TESTS)
    out = tmp_path / "profile"
    out.mkdir()
    stop = threading.Event()
    sampler = threading.Thread(target=profile.sample_stat, args=(out / "stat.log", stop, 0.2))
    sampler.start()
    env = {**os.environ, profile.OUT_ENV: str(out / "tests.jsonl"), "PYTHONPATH": str(BENCHMARKS)}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "suite_profile",
                               "-p", "no:cacheprovider", "test_sample.py"], cwd=tmp_path / "suite",
                              env=env, capture_output=True, text=True)
    finally:
        stop.set()
        sampler.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = profile.report(out)
    assert text.startswith("2 tests from the first start to the last end")
    row = next(line for line in text.splitlines() if line.startswith("test_sample.py"))
    cpu, own, wall, count = row.split()[1:5]
    assert float(cpu) > 0.3 and float(wall) > 0.3 and count == "2"   # the child's loop counted
    assert float(own) < float(cpu) - 0.2                               # in the child, not in pytest
    assert "the machine's busy CPU meanwhile" in text and "busy fraction per 30 s" in text
    unmarked = text.split("not marked slow but over 1 s (the fast tier's rule):\n")[1].splitlines()
    assert [line.split()[-1] for line in unmarked] == ["test_sample.py::test_waits_for_a_child"]
