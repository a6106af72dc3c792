"""train.deterministic: the same seed gives the same weights, run after run.

Op determinism is global to a TensorFlow process, so the runs happen in a child process and the
flag cannot leak into the rest of the suite."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    from pathlib import Path
    import numpy as np
    from tensorflow.python.framework import config as tf_config
    sys.path.insert(0, {tests!r})
    from test_training import git_repo, make_dataset_tree, tiny_params
    from vitbench.train import phases as training
    from vitbench.models import registry
    from vitbench.models.store import load_model

    out = []
    for run, deterministic in enumerate({modes!r}):
        root = git_repo(Path({tmp!r}) / f"run{{run}}")
        os.chdir(root)
        paths = make_dataset_tree(root)
        params = tiny_params(train={{"epochs": 2, "deterministic": deterministic}})
        training.train_family(registry.family("vit"), params.vit, params.train, params.seed, paths)
        model, record = load_model(paths.model("vit_scratch"))
        digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights()))
        out.append({{"deterministic": deterministic, "digest": digest.hexdigest(),
                     "val_loss": record["history"]["val_loss"], "seconds": record["train_seconds"],
                     "enabled": tf_config.is_op_determinism_enabled()}})
    print(json.dumps(out))
""")


def run_trainings(tmp_path: Path, modes: list[bool]) -> list[dict]:
    tests = str(Path(__file__).parent)
    code = SCRIPT.format(tests=tests, modes=modes, tmp=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_same_seed_same_weights_with_op_determinism(tmp_path: Path) -> None:
    first, second = run_trainings(tmp_path, [True, True])
    assert first["enabled"] and second["enabled"]
    assert first["digest"] == second["digest"]
    assert first["val_loss"] == second["val_loss"]
