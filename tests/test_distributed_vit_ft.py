"""The pretrained-ViT stage under a distribution strategy (multi-worker training works for every
variant): `stages/finetune_vit.py` with the real DeiT-Ti/16 file in `vit_ft.variant:
ti16`, run under MirroredStrategy over two logical CPUs (the same replica split and all-reduce a
two-GPU machine gets). The weights load inside the strategy scope, the transfer phase trains its
head on cached class tokens, and both phases record two replicas. Skipped without the DeiT file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git_clone
from dvc_project import VENV_BIN, run, set_params

pytestmark = pytest.mark.slow

DEIT = Path(__file__).resolve().parents[2] / "shared" / "weights" / "deit_tiny_patch16_224.npz"

TWO_CPUS = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.argv = ["stages/finetune_vit.py"]
runpy.run_path("stages/finetune_vit.py", run_name="__main__")
"""


def test_finetune_vit_ti16_with_deit_under_mirrored_strategy(published: Path, tmp_path: Path) -> None:
    if not DEIT.is_file():
        pytest.skip(f"{DEIT} not present")
    clone = git_clone(published, tmp_path / "clone")
    run(clone, "dvc", "pull", "--with-deps", "augment")
    set_params(clone, {"vit_ft": {"variant": "ti16", "pretrained": True, "weights": str(DEIT),
                                  "blocks": 1, "image_size": 32, "normalize": "auto"}})
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", TWO_CPUS], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "MirroredStrategy" in proc.stderr, proc.stderr[-3000:]
    records = {m: json.loads((clone / "models" / m / "record.json").read_text())
               for m in ("vit_transfer", "vit_finetuned")}
    for model_id, record in records.items():
        assert record["replicas"] == 2, model_id
        assert record["pretrained"] is True and record["preprocess"] == "torch", model_id
        assert record["display_name"].startswith("DeiT-Ti/16 (1 block) ("), record["display_name"]
    assert records["vit_transfer"]["feature_cache"]["images"] > 0
