"""`vitbench predict` on a folder mixing good images, an RGBA PNG and a text file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import bin_path
from vitbench.fsutil import write_json
from vitbench.models import save_model
from vitbench.models.vit import build_vit
from vitbench.data.pipeline import load_images, preprocess_fn
from vitbench.models import load_model
from vitbench.predict import best_model_id, collect_inputs, predict_files
from vitbench.paths import Paths

CLASSES = ["cat", "dog", "tree"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with a small saved ViT as models/cnn_finetuned and a compare.json naming it.

    A random ViT (LayerNorm, no BatchNorm) gives input-dependent outputs, so the checks below
    can tell one preprocessing from another.
    """
    build = {"image_size": 32, "patch_size": 8, "projection_dim": 16, "num_heads": 2, "layers": 1,
             "mlp_head": [16], "dropout": 0.0, "num_classes": 3, "spt": True, "lsa": True}
    save_model(build_vit(**build), tmp_path / "models" / "cnn_finetuned", {
        "id": "cnn_finetuned", "family": "vit_scratch", "build": build, "classes": CLASSES,
        "image_size": 32, "preprocess": "vit", "pretrained": False})
    write_json(tmp_path / "metrics" / "compare.json", {"best": {"accuracy": {"value": 0.9, "models": ["cnn_finetuned", "vit_scratch"]}}})
    return tmp_path


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
    files, _ = collect_inputs([photos])
    predictions, failures = predict_files(project / "models" / "cnn_finetuned", files, top_k=2,
                                          progress=False)
    assert [Path(p.path).name for p in predictions] == ["a.jpg", "b.png", "transparent.png"]
    assert [(Path(f.path).name, f.reason.split(":")[0]) for f in failures] == [("notes.txt", "not_image")]
    for p in predictions:
        assert len(p.top) == 2 and p.top[0][1] >= p.top[1][1]
        assert {c for c, _ in p.top} <= set(CLASSES)
    # the same numbers as the training pipeline on the same PNG (decode, resize, preprocess)
    model, _ = load_model(project / "models" / "cnn_finetuned")
    x = preprocess_fn("vit")(load_images([photos / "more" / "b.png"], 32).astype(np.float32))
    proba = np.asarray(model.predict_on_batch(x))[0]
    best = int(np.argmax(proba))
    assert predictions[1].top[0] == (CLASSES[best], pytest.approx(float(proba[best]), abs=1e-5))
    # a fully transparent image is composited on white: the same prediction as a white image
    white = photos.parent / "white.png"
    Image.new("RGB", (48, 48), "white").save(white)
    (ref,), _ = predict_files(project / "models" / "cnn_finetuned", [white], top_k=2, progress=False)
    assert [c for c, _ in predictions[2].top] == [c for c, _ in ref.top]
    assert [s for _, s in predictions[2].top] == pytest.approx([s for _, s in ref.top], abs=1e-6)
    assert [s for _, s in predictions[0].top] != pytest.approx([s for _, s in ref.top], abs=1e-3)


def test_best_model_comes_from_compare_json(project: Path) -> None:
    assert best_model_id(Paths(project)) == "cnn_finetuned"


@pytest.mark.slow
def test_cli_prints_predictions_reports_the_text_file_and_exits_1(project: Path, photos: Path) -> None:
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos), "--root", str(project),
                           "--format", "json", "--top-k", "3"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "b.png", "transparent.png"]
    assert all(r["label"] in CLASSES and len(r["top"]) == 3 for r in rows)
    assert "notes.txt" in proc.stderr and "not_image" in proc.stderr
    assert "3 predicted with cnn_finetuned, 1 failed" in proc.stderr


@pytest.mark.slow
def test_cli_table_on_good_images_exits_0(project: Path, photos: Path) -> None:
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos / "a.jpg"), "--root", str(project),
                           "--model", "cnn_finetuned"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "a.jpg" in proc.stdout and "prediction" in proc.stdout


def test_cli_without_a_trained_project_is_a_clear_error(tmp_path: Path, photos: Path) -> None:
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photos), "--root", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "compare.json not found" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_on_an_empty_folder_is_an_error(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / ".thumbs").mkdir(parents=True)
    proc = subprocess.run([bin_path("vitbench"), "predict", str(empty), "--root", str(project)],
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
    from vitbench import config
    from vitbench.data.cleaning import clean_dataset
    from vitbench.data.imageprep import prepare_image, read_transform
    from vitbench.data.manifest import read_manifest

    paths = Paths(tmp_path / "p")
    (paths.raw / "big").mkdir(parents=True)
    _stripes(paths.raw / "big" / "photo.jpg")
    (paths.raw / "other").mkdir()
    Image.new("RGB", (64, 64), "red").save(paths.raw / "other" / "red.png")
    clean_dataset(config.Clean(min_side=32, max_side=256, min_per_class=1), paths)
    manifest = read_manifest(paths.clean_manifest)
    png = manifest.loc[manifest["class"] == "big", "path"].iloc[0]
    seen_in_training = load_images([png], 32)[0]

    transform = read_transform(paths.clean, 32)
    assert transform["max_side"] == 256 and transform["resize"] == "bilinear antialias"
    photo = paths.raw / "big" / "photo.jpg"
    assert np.array_equal(prepare_image(photo, transform["max_side"], 32), seen_in_training)
    import tensorflow as tf
    from vitbench.data.cleaning import load_rgb

    naive = tf.cast(tf.round(tf.image.resize(np.asarray(load_rgb(photo)[0]), (32, 32))), tf.uint8)
    assert np.abs(naive.numpy().astype(int) - seen_in_training).mean() > 5, "the old path aliased"

    # through predict_files and the CLI, with a model whose record carries the transform
    model_dir = project / "models" / "cnn_finetuned"
    record = json.loads((model_dir / "record.json").read_text())
    record["input"] = transform
    (model_dir / "record.json").write_text(json.dumps(record))
    model, _ = load_model(model_dir)
    expected = np.asarray(model.predict_on_batch(
        preprocess_fn("vit")(seen_in_training[None].astype(np.float32))))[0]
    (pred,), failures = predict_files(model_dir, [photo], top_k=3, progress=False)
    assert not failures
    assert [s for _, s in pred.top] == pytest.approx(sorted(expected, reverse=True), abs=1e-6)
    proc = subprocess.run([bin_path("vitbench"), "predict", str(photo), "--root", str(project),
                           "--format", "json", "--top-k", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)[0]["top"]
    assert [t["probability"] for t in top] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
