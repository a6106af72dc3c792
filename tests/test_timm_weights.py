"""timm-layout ViT weights (`vit_ft.weights: hf-hub:timm/<model>` or a `.safetensors` file): a file
built from the shared DeiT-Ti/16 .npz by the inverse mapping gives the model the .npz gives; the
hub name downloads through the hub client (from a loopback endpoint) and then works from its cache
offline; a wrong tensor is refused by name; an uncached name offline is "no network". Nothing here
reaches the internet. Skipped where the shared weights are absent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vitbench.models.registry import params_with
from vitbench.core.errors import ConfigError, FetchError, VitbenchError
from vitbench.models.vit_ft import builder as pv
from vitbench.models import registry, resolve_pretrained
from vitbench.models.vit_ft import timm_weights as tw
from vitbench.models.weights import WeightsFileError

DEIT = Path(__file__).resolve().parents[2] / "shared" / "weights" / "deit_tiny_patch16_224.npz"
REPO = "timm/deit_tiny_patch16_224.fb_in1k"
HUB = f"hf-hub:{REPO}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# what timm publishes beside DeiT-Ti/16's model.safetensors (the parts vitbench reads)
DEIT_CONFIG = {"architecture": "deit_tiny_patch16_224", "num_classes": 1000, "num_features": 192,
               "global_pool": "token",
               "pretrained_cfg": {"tag": "fb_in1k", "input_size": [3, 224, 224],
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                  "num_classes": 1000, "classifier": "head"}}
TI16 = tw.Dims(hidden=192, heads=3, mlp=768, patch=16)


@pytest.fixture(scope="module")
def deit_timm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DeiT-Ti/16 as timm publishes it: <dir>/model.safetensors and config.json, built from the
    shared .npz by `to_timm`."""
    if not DEIT.is_file():
        pytest.skip(f"{DEIT} not present")
    folder = tmp_path_factory.mktemp("deit_timm")
    with np.load(DEIT) as params:
        return tw.save_timm(dict(params), folder / tw.SAFETENSORS, DEIT_CONFIG)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache, offline, with HF_ENDPOINT on a closed loopback port (so nothing here
    can reach the real hub); the environment is set too, for `dvc repro` subprocesses."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1"),
                        ("HF_ENDPOINT", "http://127.0.0.1:9")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def prefill(cache: Path, repo: str, files: dict[str, bytes], revision: str = "main") -> None:
    """Put `files` into the hub cache layout (blobs by sha256, a snapshot of COMMIT, refs/<rev>),
    as `hf download` leaves it."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    (root / "refs").mkdir()
    (root / "refs" / revision).write_text(COMMIT)


def timm_files(safetensors: Path) -> dict[str, bytes]:
    return {tw.SAFETENSORS: safetensors.read_bytes(),
            tw.CONFIG: (safetensors.parent / tw.CONFIG).read_bytes()}


def vit_ft(**section: object):  # type: ignore[no-untyped-def]
    """A validated vit_ft section."""
    return params_with({"vit_ft": section}).vit_ft


def class_tokens(weights: str, images: np.ndarray, blocks: int = 2) -> tuple[np.ndarray, dict]:
    """What the loaded ti16 model (`blocks` blocks, at the images' size) puts under its head,
    and its build."""
    import keras

    cfg = vit_ft(variant="ti16", image_size=images.shape[1], weights=weights, pretrained=True,
                 blocks=blocks)
    family = registry.family("vit_ft")
    model, build = family.load_pretrained(cfg, family.build_kwargs(cfg, 3))
    return keras.Model(model.input, model.get_layer("head").input).predict(images, verbose=0), build


def test_round_trip_through_timm_layout_is_exact() -> None:
    if not DEIT.is_file():
        pytest.skip(f"{DEIT} not present")
    with np.load(DEIT) as params:
        original = dict(params)
    timm = tw.to_timm(original)
    assert timm["blocks.11.attn.qkv.weight"].shape == (576, 192)
    assert timm["patch_embed.proj.weight"].shape == (192, 3, 16, 16)
    back = tw.to_vit_jax(timm, TI16, "round trip", input_size=224)
    assert back.keys() == original.keys()
    for key, value in original.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.slow
def test_safetensors_file_gives_the_same_model_as_the_npz(deit_timm: Path) -> None:
    """Same class tokens for a few images (the head is new either way); `auto` normalization
    from config.json is torch and the config's architecture names the model DeiT."""
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    from_npz, _ = class_tokens(str(DEIT), images)
    from_timm, build = class_tokens(str(deit_timm), images)
    np.testing.assert_allclose(from_timm, from_npz, rtol=1e-5, atol=1e-5)
    assert build["lineage"] == "DeiT"
    assert pv.normalization(vit_ft(variant="ti16", weights=str(deit_timm))) == "torch"


def timm_forward(t: dict[str, np.ndarray], images: np.ndarray, blocks: int, heads: int) -> np.ndarray:
    """The class token under the head of timm's VisionTransformer (pre-norm blocks, fused qkv,
    exact GELU, LayerNorm eps 1e-6), written out in NumPy from timm's forward pass, on NHWC
    `images` at the checkpoint's own size (no position-embedding resize)."""
    from scipy.special import erf

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-6) * t[f"{name}.weight"] + t[f"{name}.bias"]

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    w = t["patch_embed.proj.weight"]                                     # (C, 3, p, p)
    c, p = w.shape[0], w.shape[-1]
    n, size = images.shape[0], images.shape[1]
    patches = images.reshape(n, size // p, p, size // p, p, 3).transpose(0, 1, 3, 5, 2, 4)
    x = patches.reshape(n, -1, 3 * p * p) @ w.reshape(c, -1).T + t["patch_embed.proj.bias"]
    x = np.concatenate([np.broadcast_to(t["cls_token"], (n, 1, c)), x], axis=1) + t["pos_embed"]
    for i in range(blocks):
        b = f"blocks.{i}."
        qkv = linear(norm(x, f"{b}norm1"), f"{b}attn.qkv")
        q, k, v = qkv.reshape(n, -1, 3, heads, c // heads).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2) * (c // heads) ** -0.5
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        x = x + linear((attn @ v).transpose(0, 2, 1, 3).reshape(n, -1, c), f"{b}attn.proj")
        hidden = linear(norm(x, f"{b}norm2"), f"{b}mlp.fc1")
        x = x + linear(hidden * 0.5 * (1 + erf(hidden / np.sqrt(2))), f"{b}mlp.fc2")
    return norm(x, "norm")[:, 0]


def test_converted_model_computes_what_timm_computes(deit_timm: Path) -> None:
    """Not only a round trip: the Keras model loaded from the timm file gives the class token that
    timm's own forward pass gives from the same tensors (2 blocks, 224 px)."""
    from safetensors.numpy import load_file

    images = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype("float32")
    keras_tokens, _ = class_tokens(str(deit_timm), images, blocks=2)
    expected = timm_forward(load_file(str(deit_timm)), images, blocks=2, heads=3)
    np.testing.assert_allclose(keras_tokens, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_hub_name_downloads_through_the_hub_client_then_works_offline(
        deit_timm: Path, hub_cache: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """hf_hub_download from a loopback endpoint that answers as the hub does (HEAD with
    X-Repo-Commit and ETag, then GET), into the hub cache; then offline with the endpoint gone."""
    from huggingface_hub import constants

    for name, data in timm_files(deit_timm).items():
        path = f"/{REPO}/resolve/main/{name}"
        server.routes[path] = [(200, data)]
        server.headers[path] = {"X-Repo-Commit": COMMIT,
                                "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    npz = pv.resolve_vit_weights(HUB, "ti16")
    assert server.hits[f"/{REPO}/resolve/main/{tw.SAFETENSORS}"] == 1
    assert server.hits[f"HEAD /{REPO}/resolve/main/{tw.SAFETENSORS}"] >= 1
    assert (hub_cache / f"models--timm--{REPO.split('/')[1]}" / "snapshots" / COMMIT
            / tw.SAFETENSORS).read_bytes() == deit_timm.read_bytes()
    assert npz.name.startswith("deit_tiny_patch16_224.fb_in1k-") and pv.lineage(str(npz)) == "DeiT"
    assert pv.normalization(vit_ft(variant="ti16", weights=HUB)) == "torch"

    server.routes.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert pv.resolve_vit_weights(HUB, "ti16") == npz
    assert pv.normalization(vit_ft(variant="ti16", weights=HUB)) == "torch"
    assert server.hits[f"/{REPO}/resolve/main/{tw.SAFETENSORS}"] == 1


def test_prefilled_hub_cache_offline_and_a_pinned_revision(deit_timm: Path, hub_cache: Path) -> None:
    prefill(hub_cache, REPO, timm_files(deit_timm), revision="v1")
    with pytest.raises(FetchError, match="neither reachable nor in the hub cache.*hf download"):
        pv.resolve_vit_weights(HUB, "ti16")   # main was never cached
    npz = pv.resolve_vit_weights(f"{HUB}@v1", "ti16")
    assert pv.resolve_vit_weights(f"{HUB}@{COMMIT}", "ti16") == npz
    assert pv.normalization(vit_ft(variant="ti16", weights=f"{HUB}@v1")) == "torch"
    with np.load(npz) as params, np.load(DEIT) as original:
        np.testing.assert_array_equal(params["embedding/kernel"], original["embedding/kernel"])


def test_cached_weights_without_their_config_still_load(deit_timm: Path, hub_cache: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Offline with only model.safetensors cached: the weights load, and `auto` normalization
    falls back to the name rule (no "deit" in this name: tf), saying why."""
    prefill(hub_cache, "someone/tiny_vit", {tw.SAFETENSORS: deit_timm.read_bytes()})
    assert pv.resolve_vit_weights("hf-hub:someone/tiny_vit", "ti16").name.startswith("tiny_vit-")
    assert pv.normalization(vit_ft(variant="ti16", weights="hf-hub:someone/tiny_vit")) == "tf"
    assert "config.json is neither reachable nor in the hub cache" in caplog.text


def test_uncached_hub_name_offline_is_no_network(hub_cache: Path) -> None:
    """`pretrained: auto` warns and trains from random weights; `true` is an error saying how to
    supply the weights offline."""
    cfg = vit_ft(variant="ti16", image_size=32, weights=HUB, pretrained="auto")
    family = registry.family("vit_ft")
    assert pv.normalization(cfg) == "torch"   # no config.json offline: DeiT by its name
    build = family.build_kwargs(cfg, 3)
    assert resolve_pretrained("auto", HUB, lambda: family.load_pretrained(cfg, build)) \
        == (None, False)
    with pytest.raises(VitbenchError, match="pretrained: true.*HF_HUB_OFFLINE"):
        resolve_pretrained(True, HUB, lambda: family.load_pretrained(cfg, build))


def test_hub_answering_no_such_repository_is_an_error_even_under_auto(
        hub_cache: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server.headers[f"/{REPO}/resolve/main/{tw.SAFETENSORS}"] = {"X-Error-Code": "RepoNotFound"}
    with pytest.raises(WeightsFileError, match="no such repository or revision"):
        resolve_pretrained("auto", HUB, lambda: pv.resolve_vit_weights(HUB, "ti16"))


def test_wrong_tensor_is_refused_by_name_with_both_shapes(deit_timm: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(deit_timm))
    tensors["blocks.3.mlp.fc1.weight"] = tensors["blocks.3.mlp.fc1.weight"][:767]
    save_file(tensors, str(tmp_path / "broken.safetensors"))
    with pytest.raises(WeightsFileError,
                       match=r"broken\.safetensors.*blocks\.3\.mlp\.fc1\.weight \(767, 192\) "
                             r"\(expected \(768, 192\)\)"):
        resolve_pretrained("auto", "broken",
                           lambda: pv.resolve_vit_weights(str(tmp_path / "broken.safetensors"),
                                                          "ti16"))


def test_timm_file_of_another_variant_says_what_it_holds(deit_timm: Path) -> None:
    with pytest.raises(WeightsFileError, match=r"file holds width 192, MLP 768, patch 16, 12 blocks"
                                               r"; the model needs width 384"):
        pv.resolve_vit_weights(str(deit_timm), "s16")


def test_unknown_tensor_and_foreign_normalization_are_errors(deit_timm: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    tensors = load_file(str(deit_timm))
    tensors["dist_token"] = tensors["cls_token"]   # distilled DeiT: a second token
    with pytest.raises(WeightsFileError, match="no place for: dist_token"):
        tw.to_vit_jax(tensors, TI16, "distilled")
    clip = {"pretrained_cfg": {"mean": [0.481, 0.458, 0.408], "std": [0.269, 0.261, 0.276]}}
    with pytest.raises(WeightsFileError, match="set vit_ft.normalize"):
        tw.config_normalization(clip, "clip")


def test_pos_embed_must_fit_the_configs_input_size(deit_timm: Path) -> None:
    from safetensors.numpy import load_file

    with pytest.raises(WeightsFileError, match=r"pos_embed \(1, 197, 192\) \(expected \(1, 577, 192\)\)"):
        tw.to_vit_jax(load_file(str(deit_timm)), TI16, "384", input_size=384)


@pytest.mark.parametrize("weights", ["hf-hub:deit", "hf-hub:timm/a b", "hf-hub:"])
def test_malformed_hub_names_are_config_errors(weights: str) -> None:
    with pytest.raises(ConfigError, match=r"vit_ft\.weights.*hf-hub:<owner>/<model>\[@revision\]"):
        vit_ft(weights=weights)
    with pytest.raises(ConfigError, match=r"vit_ft\.weights"):
        pv.check_weights_setting(weights)
    assert vit_ft(weights="hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k@main").weights


@pytest.mark.slow
def test_dvc_repro_finetune_vit_with_a_hub_name_from_the_offline_cache(
        deit_timm: Path, hub_cache: Path, project: Path) -> None:
    """TINY `dvc repro finetune_vit` with `hf-hub:timm/deit_tiny_patch16_224.fb_in1k` (2 blocks)
    from a prefilled cache, offline: the record says pretrained, DeiT and torch normalization.
    Then a wrong tensor in a local file is refused by name and the stage's outputs stay
    byte-identical."""
    from dvc_project import TINY, commit, run, set_params
    from test_refusals_dvc import snapshot

    prefill(hub_cache, REPO, timm_files(deit_timm))
    set_params(project, TINY)
    set_params(project, {"vit_ft": {"variant": "ti16", "pretrained": True, "weights": HUB,
                                    "blocks": 2, "normalize": "auto"}})
    commit(project, "hub weights")
    run(project, "dvc", "repro", "finetune_vit")
    record = json.loads((project / "models" / "vit_finetuned" / "record.json").read_text())
    assert record["pretrained"] is True and record["preprocess"] == "torch"
    assert record["display_name"] == "DeiT-Ti/16 (2 blocks) (fine-tuned)"

    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(deit_timm))
    tensors["blocks.0.attn.qkv.weight"] = tensors["blocks.0.attn.qkv.weight"][:, :191]
    save_file(tensors, str(project.parent / "broken.safetensors"))
    outputs = ("data", "models", "metrics")
    before = snapshot(project, outputs)
    set_params(project, {"vit_ft": {"weights": str(project.parent / "broken.safetensors"),
                                    "pretrained": "auto"}})
    commit(project, "broken weights")
    proc = run(project, "dvc", "repro", "finetune_vit", check=False)
    assert proc.returncode != 0
    assert "blocks.0.attn.qkv.weight (576, 191) (expected (576, 192))" in proc.stdout + proc.stderr
    assert snapshot(project, outputs) == before


def test_a_hub_host_that_does_not_resolve_goes_to_the_cache_without_retries(
        hub_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No network and HF_HUB_OFFLINE unset (the offline demo): the hub client would retry every
    file with back-off before reading its cache; vitbench reads the cache at once, and a file
    that is not there is a NetworkError (random weights under `pretrained: auto`)."""
    import logging

    from huggingface_hub import constants

    from vitbench.core.download import NetworkError

    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):   # no proxy between us and it
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.lower(), raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://vitbench-hub.invalid")   # RFC 2606: never resolves
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    prefill(hub_cache, REPO, {tw.CONFIG: json.dumps(DEIT_CONFIG).encode()})
    name = tw.parse_hub_name(HUB)
    with caplog.at_level(logging.INFO):
        assert tw.hub_config(name) == DEIT_CONFIG
        with pytest.raises(NetworkError, match="neither reachable nor in the hub cache"):
            tw.hub_file(name, tw.SAFETENSORS)
    assert "does not resolve" in caplog.text and "Retrying" not in caplog.text
    assert tw.hub_resolves("http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")   # behind a proxy the proxy resolves names
    assert tw.hub_resolves("http://vitbench-hub.invalid")
