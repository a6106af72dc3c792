"""`pretrained: auto` through `dvc repro`: a weights file the user named that fails its checksum or
is truncated stops the stage with one `error:` line naming the file, and every model, metric and
curve of the earlier run stays byte-identical; it never trains from random weights. (The other
cases, missing files and misshapen tensors, are tested where the weights are loaded:
test_models_cnn.py, test_transfer.py, test_models_pretrained_vit.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_models_cnn import randomised_base, write_keras_h5
from test_models_pretrained_vit import flax_params, write_npz
from test_refusals_dvc import params_text, refused, with_changes

pytestmark = pytest.mark.slow

OUTS = ("models", "metrics", "plots/cnn_transfer", "plots/cnn_finetuned", "plots/vit_transfer",
        "plots/vit_finetuned")
TI = {"hidden_size": 192, "num_heads": 3, "mlp_dim": 768, "num_layers": 1}   # ViT-Ti, one block


@pytest.fixture(scope="module")
def trained(full_dag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the suite's full tiny `dvc repro` (conftest.full_dag: random weights), committed."""
    from conftest import copy_built

    return copy_built(full_dag, tmp_path_factory.mktemp("weights") / "project")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weight-files")
    mobilenet = write_keras_h5(randomised_base("mobilenetv2"), folder / "mobilenet_v2_no_top.h5")
    whole = write_npz(folder / "ti16.npz", flax_params(TI, grid=2)).read_bytes()
    truncated = folder / "ti16_truncated.npz"
    truncated.write_bytes(whole[: len(whole) // 2])
    return {"mobilenet": mobilenet, "truncated": truncated}


def test_cnn_weights_failing_their_checksum_are_refused(trained: Path, files: dict[str, Path]) -> None:
    path = files["mobilenet"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    changes = {"cnn": {"pretrained": "auto", "weights": str(path), "weights_sha256": "0" * 64}}
    with params_text(trained, with_changes(trained, changes)):
        output = refused(trained, "train_cnn", f"error: train_cnn: cnn.weights: {path} fails its "
                         f"checksum: its sha256 is {sha}", OUTS)
    assert "RANDOM" not in output


def test_a_truncated_vit_npz_is_refused(trained: Path, files: dict[str, Path]) -> None:
    changes = {"vit_ft": {"variant": "ti16", "pretrained": "auto", "weights": str(files["truncated"])}}
    with params_text(trained, with_changes(trained, changes)):
        output = refused(trained, "finetune_vit", f"error: finetune_vit: ViT weights file "
                         f"{files['truncated']} is not a readable", OUTS)
    assert "RANDOM" not in output
