"""The real DeiT-Tiny/16 weights (../shared/weights, MANIFEST.txt) in the pretrained-ViT family:
they load into `vit_ft.variant: ti16` through `vit_ft.weights`, give class tokens a linear probe
separates far better than random weights', are downloaded like an official file, and run through
`dvc repro` into a model whose record, evaluation and prediction all use DeiT's normalization.
Skipped where the shared files are absent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vitbench.models.registry import params_with
from vitbench.models.vit_ft import builder as pv
from vitbench.models import registry

DEIT = Path(__file__).resolve().parents[2] / "shared" / "weights" / "deit_tiny_patch16_224.npz"


@pytest.fixture
def deit() -> Path:
    if not DEIT.is_file():
        pytest.skip(f"{DEIT} not present")
    return DEIT


def vit_ft(**section: object):  # type: ignore[no-untyped-def]
    """A validated vit_ft section."""
    return params_with({"vit_ft": section}).vit_ft


@pytest.mark.slow
def test_deit_loads_into_ti16_through_vit_ft_weights(deit: Path) -> None:
    cfg = vit_ft(variant="ti16", image_size=32, weights=str(deit), pretrained=True, blocks=None)
    family = registry.family("vit_ft")
    assert family.preprocess(cfg) == "torch"
    model, build = family.load_pretrained(cfg, family.build_kwargs(cfg, 7))
    assert build == {"variant": "ti16", "image_size": 32, "num_classes": 7,
                     "representation_size": None, "lineage": "DeiT"}
    assert registry.display_name("vit_finetuned", "vit_ft", build) == "DeiT-Ti/16 (fine-tuned)"
    with np.load(deit) as params:
        np.testing.assert_array_equal(model.get_layer("embedding").kernel.numpy(),
                                      params["embedding/kernel"])
        mlp = model.get_layer("Transformer_encoderblock_11").mlpblock.layers[0]
        np.testing.assert_array_equal(mlp.kernel.numpy(),
                                      params["Transformer/encoderblock_11/MlpBlock_3/Dense_0/kernel"])
    assert 5_400_000 < model.count_params() < 5_600_000  # 5.72 M with the 1000-class head


@pytest.mark.slow
def test_deit_on_another_variant_is_an_error_naming_file_and_fit(deit: Path) -> None:
    cfg = vit_ft(variant="s16", image_size=32, weights=str(deit), pretrained="auto")
    family = registry.family("vit_ft")
    with pytest.raises(pv.WeightsFileError,
                       match=r"deit_tiny_patch16_224\.npz does not fit vit_ft\.variant s16.*width "
                             r"192 \(the model has 384\).*fits vit_ft\.variant ti16"):
        family.load_pretrained(cfg, family.build_kwargs(cfg, 7))


@pytest.mark.slow
def test_class_token_probe_is_far_above_random_weights(deit: Path, pacs_dir: Path) -> None:
    """Logistic regression on the class tokens of 8 PACS cartoon images per class (5-fold):
    DeiT, loaded and normalized as the pipeline does, against the same model with random weights
    (0.857 against 0.51 at 112 px with 20 per class when this test was written)."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from vitbench.data.pipeline import load_images, preprocess_fn

    files, labels = [], []
    for label, folder in enumerate(sorted(p for p in pacs_dir.iterdir() if p.is_dir())):
        picked = sorted(folder.iterdir())[:8]
        files += [str(f) for f in picked]
        labels += [label] * len(picked)
    cfg = vit_ft(variant="ti16", image_size=64, weights=str(deit), blocks=None)
    x = np.asarray(preprocess_fn(pv.normalization(cfg))(load_images(files, 64).astype("float32")))
    scores = {}
    for name, weights in (("deit", str(deit)), ("random", None)):
        keras.utils.set_random_seed(0)
        model = pv.build_vit_ft("ti16", 64, 7, weights_path=weights)
        tokens = keras.Model(model.input, model.get_layer("head").input).predict(x, verbose=0)
        scores[name] = cross_val_score(LogisticRegression(max_iter=3000), tokens, labels, cv=4).mean()
    assert scores["deit"] > scores["random"] + 0.2, scores
    assert scores["deit"] > 0.6, scores


@pytest.mark.slow
def test_official_ti16_file_is_downloaded_once_into_the_keras_cache(
        deit: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """`vit_ft.weights: imagenet21k+imagenet2012` on ti16 fetches the AugReg ViT-Ti/16 file by its
    published name (here the loopback server serves the DeiT file under it), then the cache."""
    fname, _ = pv.release_file("ti16", "imagenet21k+imagenet2012")
    server.routes[f"/augreg/{fname}"] = [(200, deit.read_bytes())]
    monkeypatch.setattr(pv, "AUGREG_URL", f"{server.url}/augreg")
    cfg = vit_ft(variant="ti16", image_size=32, pretrained=True, weights="imagenet21k+imagenet2012")
    family = registry.family("vit_ft")
    assert family.preprocess(cfg) == "tf"  # Google's checkpoint: [-1, 1]
    model, build = family.load_pretrained(cfg, family.build_kwargs(cfg, 3))
    cached = Path(os.environ["KERAS_HOME"]) / "weights" / fname
    assert cached.read_bytes() == deit.read_bytes() and "lineage" not in build
    assert registry.display_name("vit_transfer", "vit_ft", build) == "ViT-Ti/16 (transfer)"
    assert server.hits[f"/augreg/{fname}"] == 1
    pv.resolve_vit_weights("imagenet21k+imagenet2012", "ti16")   # again: from the cache
    assert server.hits[f"/augreg/{fname}"] == 1


@pytest.mark.slow
def test_dvc_repro_with_deit_records_it_and_predict_matches_evaluate(deit: Path, project: Path) -> None:
    """A tiny `dvc repro evaluate@vit_finetuned` with the DeiT file (2 of its blocks, 32 px):
    the record says pretrained and torch normalization, evaluate's metrics say pretrained, and
    `vitbench predict` gives a test image the probabilities evaluate gave it."""
    from conftest import bin_path
    from dvc_project import TINY, commit, run, set_params

    set_params(project, TINY)
    set_params(project, {"vit_ft": {"variant": "ti16", "pretrained": True, "weights": str(deit),
                                    "blocks": 2, "normalize": "auto"}})
    commit(project, "deit")
    run(project, "dvc", "repro", "evaluate@vit_finetuned")
    record = json.loads((project / "models" / "vit_finetuned" / "record.json").read_text())
    assert record["pretrained"] is True and record["preprocess"] == "torch"
    assert record["display_name"] == "DeiT-Ti/16 (2 blocks) (fine-tuned)"
    transfer = json.loads((project / "models" / "vit_transfer" / "record.json").read_text())
    assert transfer["feature_cache"]["images"] > 0   # frozen pretrained encoder: cached tokens
    metrics = json.loads((project / "metrics" / "vit_finetuned.json").read_text())
    assert metrics["pretrained"] is True
    table = pd.read_csv(project / "plots" / "vit_finetuned" / "eval" / "predictions.csv")
    first = table.iloc[0]
    proc = subprocess.run([bin_path("vitbench"), "predict", str(project / first["path"]),
                           "--root", str(project), "--model", "vit_finetuned", "--format", "json",
                           "--top-k", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)[0]["top"]
    expected = [(c, float(p)) for c, p in (item.split(":") for item in first["top3"].split("|"))]
    assert [t["label"] for t in top] == [c for c, _ in expected]
    assert [t["probability"] for t in top] == pytest.approx([p for _, p in expected], abs=1e-4)


def test_matched_preset_is_mobilenetv2_against_vit_ti16_with_real_weights() -> None:
    """The preset validates on params.yaml; the study presets keep their ViT-B/32."""
    from vitbench.experiments import presets

    matched = presets.load_preset("matched")
    params = params_with(matched)
    assert (params.cnn.arch, params.vit_ft.variant) == ("mobilenetv2", "ti16")
    assert params.cnn.pretrained is True and params.vit_ft.pretrained is True
    assert params.cnn.image_size == params.vit_ft.image_size
    assert "vit_ft.variant=ti16" in presets.overrides(matched)
    for study in ("cartoon", "stanford_dogs"):
        assert presets.load_preset(study)["vit_ft"]["variant"] == "b32"
