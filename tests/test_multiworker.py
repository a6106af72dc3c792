"""A real two-worker training run (MultiWorkerMirroredStrategy on loopback): the chief runs the
stage through `dvc repro`, the worker runs the same command in its own clone, as two machines
would; only the chief writes the model, the curves, the figure and dvc.lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import git_clone
from dvc_project import VENV_BIN, changed_stages, run

pytestmark = pytest.mark.slow

CHIEF_OUTS = ("models/vit_scratch", "plots/vit_scratch/train", "plots/vit_patches.png")


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _metrics(lines: list[str]) -> list[str]:
    """The `accuracy: ... val_loss: ...` part of Keras' epoch lines (timings dropped)."""
    return [line.split("/step - ", 1)[1] for line in lines]


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{p}" for p in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def test_two_workers_train_vit_scratch_and_only_the_chief_writes(published: Path,
                                                                 tmp_path: Path) -> None:
    machines = []
    for name in ("chief", "worker"):  # two "machines": a clone each, the data pulled from the remote
        clone = git_clone(published, tmp_path / name)
        run(clone, "dvc", "pull", "--with-deps", "augment")
        machines.append(clone)
    chief, worker = machines
    ports = free_ports(2)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2", "DVC_NO_ANALYTICS": "1"}
    started = time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=cwd, env={**env, "TF_CONFIG": tf_config(ports, i)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, (cwd, cmd) in enumerate([(chief, ["dvc", "repro", "train_vit"]),
                                             (worker, ["python", "stages/train_vit.py"])])]
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    seconds = time.monotonic() - started
    print(f"two-worker train_vit: {seconds:.1f} s")
    for name, log in zip(("chief", "worker"), logs):
        (tmp_path / f"{name}.log").write_text(log)
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"see {tmp_path}/chief.log, worker.log:\n{log[-3000:]}"
        assert "CollectiveAllReduceStrategy with 2 replica(s)" in log, log[-4000:]
    epochs = [[line for line in log.splitlines() if "/step - " in line and "loss: " in line] for log in logs]
    assert epochs[0] and _metrics(epochs[0]) == _metrics(epochs[1])  # the same all-reduced logs

    record = json.loads((chief / "models" / "vit_scratch" / "record.json").read_text())
    assert record["replicas"] == 2 and record["epochs_run"] >= 1
    assert (chief / "models" / "vit_scratch" / "model.weights.h5").is_file()
    assert list((chief / "plots" / "vit_scratch" / "train").rglob("accuracy.tsv"))
    assert "train_vit" not in changed_stages(chief)  # dvc.lock records the chief's outputs
    assert not (worker / "models" / "vit_scratch" / "model.weights.h5").exists(), "the worker wrote the model"
    assert not (worker / "models" / "vit_scratch" / "model.keras").exists(), "the worker wrote the model"
    changed = subprocess.run(["git", "status", "--porcelain", "--", *CHIEF_OUTS[1:]], cwd=worker,
                             capture_output=True, text=True, check=True).stdout
    assert changed == "", f"the worker wrote curves or figures:\n{changed}"  # git holds them
    for machine in machines:  # backups are removed when the stage finishes, on both
        assert not (machine / ".cache" / "backup" / "vit_scratch").exists(), machine.name
