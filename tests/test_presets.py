"""The two studies as presets: their settings, `dvc params diff`, and the dogs fetch path."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvc_project import commit, run, set_params
from vitbench.experiments import presets
from vitbench.models.registry import load_params
from vitbench.core.errors import ConfigError

DOG_SYNSETS = ("n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02116738-African_hunting_dog")


def test_shipped_presets() -> None:
    assert presets.available() == ["cartoon", "matched", "stanford_dogs"]
    with pytest.raises(ConfigError, match="preset"):
        presets.load_preset("imagenet")


def test_dogs_preset_is_the_first_study() -> None:
    flags = presets.overrides(presets.load_preset("stanford_dogs"))
    for flag in ("dataset.source=http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar",
                 "split.max_train_per_class=100", "cnn.arch=vgg16", "train.batch_size=16",
                 "train.epochs=10", "vit.image_size=72", "vit.patch_size=6",
                 "vit.mlp_head=[2048,1024]", "vit_ft.variant=b32", "vit_ft.image_size=224"):
        assert flag in flags, flag
    assert any(f.startswith("dataset.sha256=a443fc2f") for f in flags)


def test_preset_run_command_is_a_named_experiment() -> None:
    args = presets.dvc_exp_run_args("cartoon", queue=True)
    assert args[:6] == ["dvc", "exp", "run", "-n", "cartoon", "--queue"]
    assert "cnn.finetune.lr=1.0e-05" in args and "train.epochs=50" in args


@pytest.mark.slow
def test_apply_shows_the_study_in_params_diff(project: Path) -> None:
    presets.apply("stanford_dogs", project / "params.yaml")
    params = load_params(project / "params.yaml")
    assert params.cnn.arch == "vgg16" and params.train.batch_size == 16
    assert "# synthetic | digits" in (project / "params.yaml").read_text()  # comments kept
    diff = json.loads(run(project, "dvc", "params", "diff", "--json").stdout)["params.yaml"]
    assert diff["cnn.arch"] == {"old": "mobilenetv2", "new": "vgg16"}
    assert diff["train.epochs"]["new"] == 10 and diff["vit_ft.image_size"]["new"] == 224
    assert diff["dataset.source"]["new"].endswith("ImageNetDogs/images.tar")


def _stanford_dogs_tar() -> bytes:
    """A tar laid out like the official images.tar: Images/<synset>-<breed>/<synset>_<n>.jpg."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for synset in DOG_SYNSETS:
            for i in range(3):
                img = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(img, "JPEG")
                info = tarfile.TarInfo(f"Images/{synset}/{synset.split('-')[0]}_{i}.jpg")
                info.size = img.tell()
                img.seek(0)
                tar.addfile(info, img)
    return buf.getvalue()


@pytest.mark.slow
def test_dogs_preset_fetches_breeds_from_a_loopback_stand_in(project: Path, server) -> None:  # type: ignore[no-untyped-def]
    archive = _stanford_dogs_tar()
    server.routes["/aditya86/ImageNetDogs/images.tar"] = [(200, archive)]
    presets.apply("stanford_dogs", project / "params.yaml")
    set_params(project, {"dataset": {"source": f"{server.url}/aditya86/ImageNetDogs/images.tar",
                                     "sha256": hashlib.sha256(archive).hexdigest()}})
    commit(project)
    run(project, "python", "stages/fetch.py")
    raw = project / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == ["African_hunting_dog", "Chihuahua",
                                                     "Japanese_spaniel"]
    assert all(len(list(d.iterdir())) == 3 for d in raw.iterdir())
    # a second fetch is served from the download cache
    run(project, "python", "stages/fetch.py")
    assert server.hits["/aditya86/ImageNetDogs/images.tar"] == 1


def test_matched_preset_augments_online_as_measured_for_both_families() -> None:
    """Preset matched turns on params.yaml's online augmentation and 10 epochs per phase (the
    recipe measured best on both sides: benchmarks/results/matched_160_aug_e10_*.md); the
    augmentation is one section, so both families get it and both feature caches follow the
    same rule."""
    default = load_params(Path(__file__).resolve().parents[1] / "params.yaml").augment_online
    online = presets.load_preset("matched")["augment_online"]
    assert online == {"flip": True, "translate": 0.1, "zoom": 0.1, "contrast": 0.2}
    assert all(getattr(default, key) == value for key, value in online.items())
    raw = presets.load_preset("matched")
    assert raw["cnn"]["feature_cache"] == raw["vit_ft"]["feature_cache"]
    assert raw["cnn"]["transfer"] == raw["vit_ft"]["transfer"]
    assert raw["cnn"]["finetune"] == raw["vit_ft"]["finetune"]
    assert raw["cnn"]["epochs"] == raw["vit_ft"]["epochs"] == 10    # per phase, the same budget


def _preset_run(project: Path, *args: str):  # type: ignore[no-untyped-def]
    from conftest import bin_path

    return run(project, bin_path("vitbench"), "preset", "run", *args, check=False)


@pytest.mark.slow
def test_preset_run_refuses_a_missing_source_and_leaves_params_yaml(project: Path) -> None:
    """`preset run cartoon` without ./cartoon: refused before DVC is called, params.yaml and the
    outputs byte-identical, no experiment."""
    before = (project / "params.yaml").read_bytes()
    proc = _preset_run(project, "cartoon")
    assert proc.returncode == 2, proc.stderr
    assert "dataset.source = 'cartoon'" in proc.stderr and "an existing folder" in proc.stderr
    assert (project / "params.yaml").read_bytes() == before
    assert run(project, "dvc", "exp", "list", "--name-only").stdout.strip() == ""
    bad = project / "bad.yaml"
    bad.write_text("train:\n  epochs: 0\nsplit:\n  test: 1.5\n")
    proc = _preset_run(project, str(bad))
    assert proc.returncode == 2 and "train.epochs = 0" in proc.stderr and "split.test = 1.5" in proc.stderr
    assert (project / "params.yaml").read_bytes() == before


@pytest.mark.slow
def test_preset_run_that_fails_in_dvc_restores_params_yaml(project: Path) -> None:
    """A valid preset whose run fails in its first stage (an existing but empty source folder):
    DVC leaves the preset's values in params.yaml; `preset run` puts the file back byte for byte."""
    (project / "empty").mkdir()
    preset = project / "empty_source.yaml"
    preset.write_text("dataset:\n  source: empty\ntrain:\n  epochs: 2\n")
    before = (project / "params.yaml").read_bytes()
    proc = _preset_run(project, str(preset))
    assert proc.returncode != 0
    assert "params.yaml is restored" in proc.stderr
    assert (project / "params.yaml").read_bytes() == before
