"""models/<id>/ on disk: save -> load gives identical predictions; freezing; names; pretrained modes."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from vitbench import models
from vitbench.models import store
from vitbench.core.errors import ConfigError, DataError, FetchError
from vitbench.models.keras_file import save_keras

SIZE = 32
RECORDS: dict[str, dict[str, Any]] = {
    "cnn_finetuned": {"family": "cnn", "build": {"arch": "mobilenetv2", "image_size": SIZE,
                                                 "num_classes": 3, "dropout": 0.2}},
    "vit_scratch": {"family": "vit", "build": {
        "image_size": SIZE, "patch_size": 8, "projection_dim": 8, "num_heads": 2, "layers": 2,
        "mlp_head": [8], "dropout": 0.1, "num_classes": 3, "spt": True, "lsa": True}},
    "vit_transfer": {"family": "vit_ft", "build": {
        "variant": "b16", "image_size": SIZE, "num_classes": 3,
        "config": {"num_layers": 2, "hidden_size": 16, "mlp_dim": 32, "num_heads": 2}}},
}


def record(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, **RECORDS[model_id], "classes": ["a", "b", "c"], **extra}


def batch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype("float32")


def perturb(model: keras.Model, seed: int = 1) -> None:
    """Move every weight away from its initial value (as training would; sign kept, so
    variances stay positive), so that a fresh build cannot match the saved model."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.dtype.startswith("float"):
            w.assign(w.numpy() * rng.uniform(0.5, 1.5, w.shape) + rng.normal(0, 0.01, w.shape))


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """Each model of RECORDS built, its weights moved, saved to its folder: the folder, its
    predictions on `batch()` before saving, and those of its model.keras loaded by plain Keras
    (one fresh process for them all)."""
    root = tmp_path_factory.mktemp("saved")
    expected = {}
    for model_id in RECORDS:
        model = store.build_model(record(model_id))
        perturb(model)
        expected[model_id] = predict(model, batch())
        store.save_model(model, root / model_id, record(model_id, pretrained=False))
    keras_files = keras_files_predictions({root / m / "model.keras": batch() for m in RECORDS})
    return {m: (root / m, expected[m], keras_files[root / m / "model.keras"]) for m in RECORDS}


@pytest.mark.slow   # a build, a save and a reload per model
@pytest.mark.parametrize("model_id", list(RECORDS))
def test_save_load_gives_identical_predictions(model_id: str, saved: dict) -> None:
    folder, expected, from_keras_file = saved[model_id]
    assert sorted(p.name for p in folder.iterdir()) == ["model.keras", "model.weights.h5", "record.json"]
    loaded, rec = store.load_model(folder)
    np.testing.assert_array_equal(predict(loaded, batch()), expected)
    np.testing.assert_allclose(from_keras_file, expected, rtol=1e-5, atol=1e-6)
    assert rec["params_total"] == loaded.count_params() > 0
    assert rec["display_name"] == store.display_name(model_id, rec)
    assert rec["classes"] == ["a", "b", "c"] and rec["pretrained"] is False
    fresh = predict(store.build_model(rec), batch())
    assert not np.allclose(fresh, expected)  # the weights really came from the file


# What a Keras user types: nothing of vitbench but `import vitbench`, then Keras' own loader in
# safe mode (no `safe_mode=False`). `import vitbench` alone must not start Keras.
# Its arguments: (model.keras, inputs .npy, outputs .npy) triples.
LOAD_KERAS_FILES = """
import sys
import numpy as np
import vitbench
assert "keras" not in sys.modules, "import vitbench imported keras"
import keras
for model_file, x_file, y_file in zip(*[iter(sys.argv[1:])] * 3):
    model = keras.saving.load_model(model_file)
    np.save(y_file, keras.ops.convert_to_numpy(model(np.load(x_file), training=False)))
"""


def keras_files_predictions(inputs: dict[Path, np.ndarray]) -> dict[Path, np.ndarray]:
    """Predictions of each .keras file on its inputs, the files loaded one after the other in one
    fresh Python process by `LOAD_KERAS_FILES`."""
    with tempfile.TemporaryDirectory() as tmp:
        args = []
        for i, (path, x) in enumerate(inputs.items()):
            np.save(Path(tmp) / f"x{i}.npy", x)
            args += [str(path), f"{tmp}/x{i}.npy", f"{tmp}/y{i}.npy"]
        out = subprocess.run([sys.executable, "-c", LOAD_KERAS_FILES, *args], capture_output=True,
                             text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert out.returncode == 0, out.stderr[-3000:]
        return {path: np.load(Path(tmp) / f"y{i}.npy") for i, path in enumerate(inputs)}


def keras_file_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    """Predictions on `x` of the .keras file `path`, loaded in a fresh Python process."""
    return keras_files_predictions({path: x})[path]


@pytest.mark.parametrize("imports", ["import vitbench; import keras",
                                     "import vitbench; import tensorflow; import keras",
                                     "import keras; import vitbench"])
@pytest.mark.slow   # a subprocess or a model build
def test_import_vitbench_registers_its_layers_with_keras(imports: str) -> None:
    """Whichever comes first, vitbench or Keras (or TensorFlow, which probes for Keras before
    importing it), Keras knows vitbench's and vit-keras' layers afterwards."""
    names = ["vitbench>ClassTokenOutput", "vitbench>TransformerBlock", "Custom>ClassToken"]
    check = f"{imports}; print([keras.saving.get_registered_object(n) is not None for n in {names}])"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0 and out.stdout.strip() == "[True, True, True]", out.stderr[-3000:]


def test_a_keras_file_with_python_code_is_refused_when_saved(tmp_path: Path) -> None:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda v: v * 2, name="double")(inputs))
    with pytest.raises(ValueError, match="Lambda layer\\(s\\) double"):
        save_keras(model, tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.slow
def test_params_trainable_follows_freezing(tmp_path: Path) -> None:
    model = store.build_model(record("cnn_finetuned"))
    store.set_backbone_trainable(model, "cnn", False)
    store.save_model(model, tmp_path / "m", record("cnn_finetuned"))
    rec = json.loads((tmp_path / "m" / "record.json").read_text())
    head = model.get_layer("head")
    assert rec["params_trainable"] == head.kernel.shape[0] * 3 + 3
    kept = store.save_model(model, tmp_path / "k", record("cnn_finetuned", params_trainable=7))
    assert kept is None and store.load_model(tmp_path / "k")[1]["params_trainable"] == 7


def test_build_model_never_loads_pretrained_weights(tmp_path: Path) -> None:
    rec = record("vit_transfer")
    rec["build"] = {**rec["build"], "weights_path": str(tmp_path / "absent.npz")}
    assert store.build_model(rec).get_layer("head") is not None  # no DataError: not loaded
    cnn = record("cnn_finetuned")
    cnn["build"] = {**cnn["build"], "weights": str(tmp_path / "absent.h5")}
    assert store.build_model(cnn).get_layer("base") is not None


@pytest.mark.slow
def test_failed_save_leaves_the_previous_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = store.build_model(record("vit_scratch"))
    store.save_model(model, tmp_path / "m", record("vit_scratch", epochs_run=1))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        store.save_model(model, tmp_path / "m", record("vit_scratch", epochs_run=2))
    assert store.load_model(tmp_path / "m")[1]["epochs_run"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.slow
def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing does not exist"):
        store.load_model(tmp_path / "nothing")
    model = store.build_model(record("vit_scratch"))
    store.save_model(model, tmp_path / "m", record("vit_scratch"))
    rec_file = tmp_path / "m" / "record.json"
    good = rec_file.read_text()

    rec_file.write_text("{not json")
    with pytest.raises(DataError, match="record.json is not valid JSON"):
        store.load_model(tmp_path / "m")
    older = {k: v for k, v in json.loads(good).items() if k != "format"}   # an older vitbench's
    for found, shown in ((older, "1"), ({**older, "format": 3}, "3")):
        rec_file.write_text(json.dumps(found))
        with pytest.raises(DataError, match=rf"record.json: record format {shown} is not 2.*"
                                            r"`dvc repro --force <its training stage>`"):
            store.load_model(tmp_path / "m")
    assert json.loads(good)["format"] == 2                                   # what save_model writes
    rec_file.write_text(json.dumps({**json.loads(good), "family": "rnn"}))
    with pytest.raises(DataError, match="family = 'rnn' is not one of cnn, vit, vit_ft"):
        store.load_model(tmp_path / "m")
    rec_file.write_text(json.dumps({**json.loads(good), "build": {"image_size": SIZE, "depth": 3}}))
    with pytest.raises(DataError, match="cannot rebuild the model.*depth"):
        store.load_model(tmp_path / "m")
    bigger = json.loads(good)
    bigger["build"]["num_classes"], bigger["classes"] = 5, list("abcde")   # consistent, not the weights
    rec_file.write_text(json.dumps(bigger))
    with pytest.raises(DataError, match="model.weights.h5 does not match the architecture"):
        store.load_model(tmp_path / "m")
    (tmp_path / "m" / "model.weights.h5").unlink()
    with pytest.raises(DataError, match="model.weights.h5 does not exist"):
        store.load_model(tmp_path / "m")


def trainable_layers(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers if layer.trainable_weights}


def test_set_backbone_trainable() -> None:
    cnn = store.build_model(record("cnn_finetuned"))
    store.set_backbone_trainable(cnn, "cnn", False)
    assert trainable_layers(cnn) == {"head"}
    store.set_backbone_trainable(cnn, "cnn", True)
    base = cnn.get_layer("base")
    assert base.get_layer("Conv1").trainable and not base.get_layer("bn_Conv1").trainable

    vit_ft = store.build_model(record("vit_transfer"))
    store.set_backbone_trainable(vit_ft, "vit_ft", False)
    assert trainable_layers(vit_ft) == {"head"}
    store.set_backbone_trainable(vit_ft, "vit_ft", True)
    assert len(vit_ft.trainable_weights) == len(vit_ft.weights)

    scratch = store.build_model(record("vit_scratch"))
    store.set_backbone_trainable(scratch, "vit", False)
    assert not scratch.trainable_weights
    store.set_backbone_trainable(scratch, "vit", True)
    assert len(scratch.trainable_weights) == len(scratch.weights)
    with pytest.raises(ValueError, match="rnn"):
        store.set_backbone_trainable(scratch, "rnn", True)


def test_display_names() -> None:
    cnn = {"family": "cnn", "build": {"arch": "mobilenetv2"}}
    vgg = {"family": "cnn", "build": {"arch": "vgg16"}}
    vit_ft = {"family": "vit_ft", "build": {"variant": "b32"}}
    scratch = {"family": "vit", "build": {"spt": True, "lsa": True}}
    assert store.display_name("cnn_transfer", cnn) == "MobileNetV2 (transfer)"
    assert store.display_name("cnn_finetuned", cnn) == "MobileNetV2 (fine-tuned)"
    assert store.display_name("cnn_finetuned", vgg) == "VGG16 (fine-tuned)"
    assert store.display_name("vit_transfer", vit_ft) == "ViT-B/32 (transfer)"
    assert store.display_name("vit_finetuned", vit_ft) == "ViT-B/32 (fine-tuned)"
    assert store.display_name("vit_scratch", scratch) == "ViT from scratch (SPT+LSA)"
    assert store.display_name("vit_scratch", {**scratch, "build": {"spt": False, "lsa": True}}) \
        == "ViT from scratch (LSA)"
    assert store.display_name("vit_scratch", {**scratch, "build": {"spt": False, "lsa": False}}) \
        == "ViT from scratch"


@pytest.mark.parametrize("model_id", ["vit_scratch", "vit_transfer"])
def test_attention_weights_dispatch(model_id: str) -> None:
    model = store.build_model(record(model_id))
    weights = store.attention_weights(model, record(model_id), batch())
    assert len(weights) == 2 and weights[0].ndim == 4 and weights[0].shape[:2] == (4, 2)


def test_cnn_has_no_attention() -> None:
    with pytest.raises(ValueError, match="cnn model has no attention"):
        store.attention_weights(None, record("cnn_finetuned"), batch())


# --- resolve_pretrained, generically ----------------------------------------------------------------

def test_resolve_pretrained_modes() -> None:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return "weights"

    assert models.resolve_pretrained(False, "w", load) == (None, False) and not calls
    assert models.resolve_pretrained("auto", "w", load) == ("weights", True)
    assert models.resolve_pretrained(True, "w", load) == ("weights", True)
    assert models.resolve_pretrained("true", "w", load) == ("weights", True)
    with pytest.raises(ConfigError, match="pretrained = 'maybe'.*auto, true or false"):
        models.resolve_pretrained("maybe", "w", load)


def test_resolve_pretrained_auto_does_not_hide_bugs() -> None:
    def buggy() -> None:
        raise TypeError("a bug, not missing weights")

    with pytest.raises(TypeError):
        models.resolve_pretrained("auto", "w", buggy)


# --- reachability ------------------------------------------------------------------------------------

def test_check_reachable_ok_and_refused() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        models.check_reachable(f"http://127.0.0.1:{port}/x.h5")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FetchError, match=f"cannot reach 127.0.0.1:{port}"):
        models.check_reachable(f"http://127.0.0.1:{port}/x.h5")


def test_check_reachable_gives_up_on_a_hanging_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection attempt that never ends: check_reachable answers while it still hangs."""
    release, ended = threading.Event(), threading.Event()

    def hang(*args: object, **kwargs: object) -> None:
        release.wait(60)
        ended.set()
        raise OSError("timed out")   # what a real socket does after its timeout

    monkeypatch.setattr(socket, "create_connection", hang)
    try:
        with pytest.raises(FetchError, match="no answer within 0.2 s"):
            models.check_reachable("https://weights.example/x.npz", timeout=0.2)
        assert not ended.is_set()    # it did not wait for the attempt to end
    finally:
        release.set()


def test_keras_home_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert models.keras_home() == tmp_path / "kh"
    monkeypatch.delenv("KERAS_HOME")
    assert models.keras_home() == Path.home() / ".keras"


@pytest.mark.slow
def test_saved_weights_hold_no_optimizer_state(tmp_path: Path) -> None:
    """A compiled, trained model's file is no larger than an untrained one's (no Adam slots)."""
    import keras
    import numpy as np

    from vitbench.models.store import load_model, save_model
    from vitbench.models.vit.layers import build_vit

    build = {"image_size": 16, "patch_size": 8, "projection_dim": 8, "num_heads": 2, "layers": 1,
             "mlp_head": [8], "dropout": 0.0, "num_classes": 2, "spt": False, "lsa": False}
    record = {"family": "vit", "build": build, "classes": ["a", "b"], "image_size": 16,
              "preprocess": "tf"}
    model = build_vit(**build)
    save_model(model, tmp_path / "fresh", record)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    model.fit(x, np.array([0, 1] * 4), epochs=1, verbose=0)
    save_model(model, tmp_path / "trained", record)
    fresh = (tmp_path / "fresh" / "model.weights.h5").stat().st_size
    trained = (tmp_path / "trained" / "model.weights.h5").stat().st_size
    assert trained <= fresh * 1.05
    reloaded, _ = load_model(tmp_path / "trained")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved vit_scratch model (3 classes), built once for the tampering tests below."""
    folder = tmp_path_factory.mktemp("saved") / "vit_scratch"
    store.save_model(store.build_model(record("vit_scratch")), folder,
                      record("vit_scratch", image_size=SIZE))
    return folder


@pytest.mark.parametrize("tamper, message", [
    (lambda r: r.update(classes=["a", "b"]),
     "classes names 2 classes but the model's head has build.num_classes = 3 outputs"),
    (lambda r: r.update(image_size=-32), "image_size = -32 is not allowed"),
    (lambda r: r["build"].update(projection_dim=10**9), "build.projection_dim = 1000000000 is not allowed"),
    (lambda r: r["build"].update(layers=10**6), "build.layers = 1000000 is not allowed"),
    (lambda r: r["build"].update(mlp_head=[8, 10**8]), "build.mlp_head[1] = 100000000 is not allowed"),
    (lambda r: r.update(family="cnn", build={"arch": "resnet9000", "image_size": SIZE, "num_classes": 3,
                                             "dropout": 0.2}),
     "build.arch = 'resnet9000' is not allowed; expected one of mobilenetv2"),
], ids=["fewer-classes", "negative-size", "absurd-width", "absurd-depth", "absurd-head", "unknown-arch"])
def test_a_tampered_record_is_refused_naming_it_and_the_field(saved_vit: Path, tmp_path: Path,
                                                              tamper: Any, message: str) -> None:
    """Checked against the weights file before anything is built: no IndexError at predict time,
    no out-of-memory build, no `params.yaml: cnn.arch` for a record's arch."""
    import re
    import shutil

    folder = Path(shutil.copytree(saved_vit, tmp_path / "m"))
    rec = json.loads((folder / "record.json").read_text())
    tamper(rec)
    (folder / "record.json").write_text(json.dumps(rec))
    with pytest.raises(DataError, match=re.escape(f"{folder / 'record.json'}: {message}")):
        store.load_model(folder)
