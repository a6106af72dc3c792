"""`vitbench predict` on a folder mixing good images, an RGBA PNG and a text file.

What predict reads comes from the real producers: the best model from metrics/compare_detail.json
as `vitbench.report.compare.compare` writes it, the model folder (weights and record.json) from the
`published` tiny repro's training stage."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import bin_path
from test_report import CFG, DEFAULT_PREDICTIONS, SEED, Y_TRUE, write_evaluation, write_images
from vitbench.data.manifest import write_labels
from vitbench.models.registry import model_ids

MODEL_IDS = model_ids()
from vitbench.data.pipeline import load_images, preprocess_fn
from vitbench.core.errors import DataError
from vitbench.models.store import load_model
from vitbench.evaluate.predict import best_model_id, collect_inputs, predict_files
from vitbench.core.paths import Paths
from vitbench.report.compare import compare

BEST = "vit_scratch"


@pytest.fixture(scope="module")
def compare_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after the real compare stage, on evaluate outputs in which vit_scratch is best
    (built once: compare draws its figures)."""
    paths = Paths(tmp_path_factory.mktemp("compared") / "project")
    write_labels(["cat", "dog", "owl"], paths.labels)
    files = write_images(paths)
    for model_id, y_pred in {**DEFAULT_PREDICTIONS, BEST: Y_TRUE.copy()}.items():
        write_evaluation(paths, model_id, y_pred, files)
    compare(CFG, SEED, paths)
    return paths.root


@pytest.fixture
def compared(compare_outputs: Path, tmp_path: Path) -> Paths:
    """A copy of `compare_outputs` that the test may change."""
    return Paths(Path(shutil.copytree(compare_outputs, tmp_path / "project")))


@pytest.fixture
def project(compared: Paths, published: Path) -> Path:
    """`compared` with models/vit_scratch as the tiny repro's train_vit stage saved it."""
    shutil.copytree(published / "models" / BEST, compared.model(BEST))
    return compared.root


def record_of(project: Path) -> dict:
    return json.loads((project / "models" / BEST / "record.json").read_text())


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "more" / "b.png")
    rgba = rng.integers(0, 255, (48, 48, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"")
    return folder


def test_collect_inputs_walks_folders_and_reports_missing(photos: Path) -> None:
    files, failures = collect_inputs([photos, photos / "missing.jpg"])
    assert [p.name for p in files] == ["a.jpg", "b.png", "notes.txt", "transparent.png"]
    assert [f.path for f in failures] == [str(photos / "missing.jpg")]


@pytest.mark.slow
def test_predict_files_matches_the_model_and_skips_the_text_file(project: Path, photos: Path) -> None:
    model_dir = project / "models" / BEST
    record = record_of(project)
    classes, size = record["classes"], record["image_size"]
    files, _ = collect_inputs([photos])
    predictions, failures = predict_files(model_dir, files, top_k=2, progress=False)
    assert [Path(p.path).name for p in predictions] == ["a.jpg", "b.png", "transparent.png"]
    assert [(Path(f.path).name, f.reason.split(":")[0]) for f in failures] == [("notes.txt", "not_image")]
    for p in predictions:
        assert len(p.top) == 2 and p.top[0][1] >= p.top[1][1]
        assert {c for c, _ in p.top} <= set(classes)
    # the same numbers as the training pipeline on the same PNG (decode, resize, preprocess)
    model, _ = load_model(model_dir)
    x = preprocess_fn(record["preprocess"])(load_images([photos / "more" / "b.png"], size).astype(np.float32))
    proba = np.asarray(model.predict_on_batch(x))[0]
    best = int(np.argmax(proba))
    assert predictions[1].top[0] == (classes[best], pytest.approx(float(proba[best]), abs=1e-5))
    # a fully transparent image is composited on white: the same prediction as a white image
    white = photos.parent / "white.png"
    Image.new("RGB", (48, 48), "white").save(white)
    (ref,), _ = predict_files(model_dir, [white], top_k=2, progress=False)
    assert [c for c, _ in predictions[2].top] == [c for c, _ in ref.top]
    assert [s for _, s in predictions[2].top] == pytest.approx([s for _, s in ref.top], abs=1e-6)
    assert [s for _, s in predictions[0].top] != pytest.approx([s for _, s in ref.top], abs=1e-4)


@pytest.mark.slow
def test_best_model_comes_from_what_compare_writes(compared: Paths) -> None:
    assert best_model_id(compared) == BEST
    compared.metrics_json("compare_detail").write_text("{}")
    with pytest.raises(DataError, match="compare_detail.json names no best model"):
        best_model_id(compared)


@pytest.mark.slow
def test_cli_prints_predictions_reports_the_text_file_and_exits_1(project: Path, photos: Path) -> None:
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos), "--root", str(project),
                           "--format", "json", "--top-k", "3"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "b.png", "transparent.png"]
    assert all(r["label"] in record_of(project)["classes"] and len(r["top"]) == 3 for r in rows)
    assert "notes.txt" in proc.stderr and "not_image" in proc.stderr
    assert f"3 predicted with {BEST}, 1 failed" in proc.stderr


@pytest.mark.slow
def test_cli_table_on_good_images_exits_0(project: Path, photos: Path) -> None:
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos / "a.jpg"), "--root", str(project),
                           "--model", BEST], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "a.jpg" in proc.stdout and "prediction" in proc.stdout


@pytest.mark.slow   # a subprocess or a model build
def test_cli_without_a_trained_project_is_a_clear_error(tmp_path: Path, photos: Path) -> None:
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos), "--root", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "compare_detail.json not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow   # a subprocess or a model build
def test_cli_on_an_empty_folder_is_an_error(compared: Paths, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / ".thumbs").mkdir(parents=True)
    proc = subprocess.run([bin_path("vitbench"), "predict", str(empty), "--root", str(compared.root)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "nothing to predict" in proc.stderr and str(empty) in proc.stderr
    assert "holds no files" in proc.stderr and "Traceback" not in proc.stderr


def _stripes(path: Path, side: int = 4000) -> None:
    """A photo-sized image of fine stripes: a plain resize to 32 px aliases them into moire."""
    y, x = np.mgrid[0:side // 4, 0:side]
    wave = (127.5 + 127.5 * np.sin(x * 0.9 + y * 0.35)).astype(np.uint8)
    rgb = np.stack([wave, np.roll(wave, 7, axis=1), 255 - wave], axis=-1)
    Image.fromarray(rgb).save(path, quality=95)


@pytest.mark.slow  # a TF subprocess (`vitbench predict`) on a busy 2-core machine
def test_a_4000px_photo_reaches_predict_exactly_as_clean_and_the_pipeline_saw_it(
        project: Path, tmp_path: Path) -> None:
    """One preparation: clean (decode, LANCZOS to max_side) + pipeline (antialiased resize) gives
    the very tensor `vitbench predict` feeds the model."""
    from vitbench.core import config
    from vitbench.data.cleaning import clean_dataset
    from vitbench.data.imageprep import prepare_image, read_transform
    from vitbench.data.manifest import read_manifest

    size = record_of(project)["image_size"]
    paths = Paths(tmp_path / "p")
    (paths.raw / "big").mkdir(parents=True)
    _stripes(paths.raw / "big" / "photo.jpg")
    (paths.raw / "other").mkdir()
    Image.new("RGB", (64, 64), "red").save(paths.raw / "other" / "red.png")
    clean_dataset(config.Clean(min_side=32, max_side=256, min_per_class=1), paths)
    manifest = read_manifest(paths.clean_manifest)
    png = manifest.loc[manifest["class"] == "big", "path"].iloc[0]
    seen_in_training = load_images([png], size)[0]

    transform = read_transform(paths.clean, size)
    assert transform["max_side"] == 256 and transform["resize"] == "bilinear antialias"
    photo = paths.raw / "big" / "photo.jpg"
    assert np.array_equal(prepare_image(photo, transform["max_side"], size), seen_in_training)
    import tensorflow as tf
    from vitbench.data.cleaning import load_rgb

    naive = tf.cast(tf.round(tf.image.resize(np.asarray(load_rgb(photo)[0]), (size, size))), tf.uint8)
    assert np.abs(naive.numpy().astype(int) - seen_in_training).mean() > 5, "the old path aliased"

    # through predict_files and the CLI, with a model whose record carries the transform
    model_dir = project / "models" / BEST
    record = json.loads((model_dir / "record.json").read_text())
    record["input"] = transform
    (model_dir / "record.json").write_text(json.dumps(record))
    model, _ = load_model(model_dir)
    expected = np.asarray(model.predict_on_batch(
        preprocess_fn(record["preprocess"])(seen_in_training[None].astype(np.float32))))[0]
    (pred,), failures = predict_files(model_dir, [photo], top_k=3, progress=False)
    assert not failures
    assert [s for _, s in pred.top] == pytest.approx(sorted(expected, reverse=True)[:3], abs=1e-6)
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photo), "--root", str(project),
                           "--format", "json", "--top-k", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)[0]["top"]
    assert [t["probability"] for t in top] == pytest.approx(sorted(expected, reverse=True)[:3],
                                                            abs=1e-5)


@pytest.mark.slow  # a TF subprocess
def test_cli_with_a_record_of_an_unknown_arch_names_the_record(project: Path, photos: Path) -> None:
    """`vitbench predict --model`: the record's bad field, not "params.yaml: cnn.arch", no traceback."""
    record = record_of(project)
    record.update(family="cnn", build={"arch": "resnet9000", "image_size": record["image_size"],
                                       "num_classes": len(record["classes"]), "dropout": 0.2})
    record_file = project / "models" / BEST / "record.json"
    record_file.write_text(json.dumps(record))
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos / "a.jpg"), "--root", str(project),
                           "--model", BEST], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{record_file}: build.arch = 'resnet9000' is not allowed" in proc.stderr, proc.stderr
    assert "params.yaml" not in proc.stderr and "Traceback" not in proc.stderr


# --- what predict depends on, checked on load ----------------------------------------------------

def test_a_record_with_duplicate_class_names_is_refused(project: Path, photos: Path) -> None:
    record = record_of(project)
    record["classes"] = [record["classes"][0]] * len(record["classes"])
    record_file = project / "models" / BEST / "record.json"
    record_file.write_text(json.dumps(record))
    with pytest.raises(DataError, match=f"{record['classes'][0]!r} appear more than once in classes"):
        predict_files(project / "models" / BEST, [photos / "a.jpg"], progress=False)


def test_the_record_holds_the_checksum_of_weights_and_preprocess(project: Path) -> None:
    from vitbench.models.store import CHECKSUM, predict_checksum

    model_dir = project / "models" / BEST
    stored = record_of(project)[CHECKSUM]
    assert stored == predict_checksum(model_dir / "model.weights.h5", record_of(project)["preprocess"])
    assert stored != predict_checksum(model_dir / "model.weights.h5", "torch")


def test_a_changed_preprocess_or_weights_file_is_refused(project: Path, photos: Path) -> None:
    """preprocess edited (tf -> torch) or the weights changed in place (same shapes, so they
    load): both would predict wrong labels silently; refused, saying how to rebuild."""
    import h5py

    model_dir = project / "models" / BEST
    record_file, weights = model_dir / "record.json", model_dir / "model.weights.h5"
    original = record_file.read_text()
    record = json.loads(original)
    assert record["preprocess"] != "torch"
    record_file.write_text(json.dumps({**record, "preprocess": "torch"}))
    with pytest.raises(DataError, match=r"changed since training .*`dvc repro train_vit`"):
        predict_files(model_dir, [photos / "a.jpg"], progress=False)
    record_file.write_text(original)
    with h5py.File(weights, "r+") as fh:
        kernels: list = []
        fh.visititems(lambda _, obj: kernels.append(obj)
                      if isinstance(obj, h5py.Dataset) and obj.ndim == 2 else None)
        kernels[0][...] = kernels[0][...] * -1.0
    with pytest.raises(DataError, match="model.weights.h5 or preprocess = 'tf' changed since training"):
        predict_files(model_dir, [photos / "a.jpg"], progress=False)


# --- which model predicts ---------------------------------------------------------------------------

def test_cli_with_an_unknown_model_lists_the_model_ids(project: Path, photos: Path) -> None:
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos / "a.jpg"), "--root", str(project),
                           "--model", "resnet"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--model 'resnet' is neither a model id nor a model folder" in proc.stderr, proc.stderr
    assert ", ".join(MODEL_IDS) in proc.stderr
    assert f"(trained in {project / 'models'}: {BEST})" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_warns_when_a_model_meant_pretrained_has_random_weights(
        project: Path, photos: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The published vit_scratch is meant to start from random weights: no warning. The same
    folder as finetune_vit writes vit_transfer when `pretrained: auto` found no weights (record
    id vit_transfer, pretrained false) is predicted with a warning that says so."""
    model_dir = project / "models" / BEST
    predict_files(model_dir, [photos / "a.jpg"], progress=False)
    assert "RANDOM weights" not in caplog.text
    record = record_of(project)
    assert record["pretrained"] is False
    transfer = shutil.copytree(model_dir, project / "models" / "vit_transfer")
    (transfer / "record.json").write_text(json.dumps({**record, "id": "vit_transfer"}))
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos / "a.jpg"), "--root", str(project),
                           "--model", "vit_transfer"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"WARNING vitbench.evaluate.predict: {transfer} was trained from RANDOM weights" in proc.stderr
    assert "a.jpg" in proc.stdout
