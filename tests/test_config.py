"""params.yaml validation: every bad value names the key, the value and what is allowed."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vitbench.core.config import to_dict
from vitbench.models.registry import load_params, params_from_dict
from vitbench.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_committed_params_are_valid(raw: dict) -> None:
    params = load_params(REPO / "params.yaml")
    assert params.dataset.kind == "synthetic"
    assert params.vit.image_size % params.vit.patch_size == 0
    assert to_dict(params)["vit"]["mlp_head"] == raw["vit"]["mlp_head"]


def _with(raw: dict, dotted: str, value: object) -> dict:
    out = copy.deepcopy(raw)
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return out


@pytest.mark.parametrize("key, value, expect_key, expect_allowed", [
    ("train.epochs", "five", "train.epochs", "an integer"),
    ("train.epochs", 2.5, "train.epochs", "an integer"),
    ("train.epochs", 0, "train.epochs", ">= 1"),
    ("train.min_steps", 0, "train.min_steps", ">= 1"),
    ("train.min_steps", "200", "train.min_steps", "an integer"),
    ("train.batch_size", True, "train.batch_size", "an integer"),
    ("augment.flip", "yes", "augment.flip", "true or false"),
    ("split.val", 0.9, "split.val + split.test", "below 1"),
    ("split.test", 1.5, "split.test", "< 1.0"),
    ("vit.patch_size", 7, "vit.patch_size", "a divisor of vit.image_size"),
    ("vit.num_heads", 3, "vit.num_heads", "a divisor of vit.projection_dim"),
    ("vit_ft.image_size", 100, "vit_ft.image_size", "a multiple of the ti16 patch size"),
    ("vit_ft.variant", "h14", "vit_ft.variant", "ti16, s16, s32, b16, b32, l16, l32"),
    ("cnn.arch", "alexnet", "cnn.arch", "mobilenetv2"),
    ("cnn.pretrained", "maybe", "cnn.pretrained", "'auto'"),
    ("dataset.source", "", "dataset.source", "synthetic, digits"),
    ("dataset.max_extract_mb", 0, "dataset.max_extract_mb", ">= 1"),
    ("dataset.max_ratio", 0.5, "dataset.max_ratio", ">= 1.0"),
    ("split.val", float("nan"), "split.val", "a finite number"),
    ("split.test", float("inf"), "split.test", "a finite number"),
    ("augment.rotation", float("-inf"), "augment.rotation", "a finite number"),
    ("cnn.transfer.lr", float("nan"), "cnn.transfer.lr", "a finite number"),
    ("vit.warmup", ".nan", "vit.warmup", "a number"),
    ("dataset.sha256", "abc", "dataset.sha256", "64 hexadecimal"),
    ("vit_ft.weights", " ", "vit_ft.weights", ".npz file path"),
    ("clean.max_side", 16, "clean.max_side", "clean.min_side"),
    ("vit.mlp_head", [64, "x"], "vit.mlp_head[1]", "an integer"),
    ("vit.mlp_head", [], "vit.mlp_head", "one or more widths"),
    ("vit.tokenizer", "hybrid", "vit.tokenizer", "one of patch, conv"),
    ("vit.spt", True, "vit.spt", "false when vit.tokenizer is conv"),   # params.yaml: conv
    ("vit.patch_size", 6, "vit.patch_size", "a power of two"),
    ("vit.drop_path", 1.0, "vit.drop_path", "< 1.0"),
    ("vit.epochs", 0, "vit.epochs", ">= 1"),
    ("vit.label_smoothing", -0.1, "vit.label_smoothing", ">= 0.0"),
    ("cnn.transfer.label_smoothing", 1.0, "cnn.transfer.label_smoothing", "< 1.0"),
    ("cnn.finetune.warmup", 1.5, "cnn.finetune.warmup", "< 1.0"),
    ("vit_ft.transfer.weight_decay", "lots", "vit_ft.transfer.weight_decay", "a number"),
    ("augment_online.rotation", -5, "augment_online.rotation", ">= 0.0"),
    ("augment_online.erasing", 1.5, "augment_online.erasing", "<= 1.0"),
    ("augment_online.flip", 1, "augment_online.flip", "true or false"),
    ("augment_online.mixup", "big", "augment_online.mixup", "a number"),
])
def test_bad_values_name_key_value_and_allowed(raw: dict, key: str, value: object,
                                               expect_key: str, expect_allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        params_from_dict(_with(raw, key, value))
    assert info.value.key == expect_key
    assert expect_allowed in info.value.allowed
    assert expect_key in str(info.value)


def test_config_does_no_io_on_the_weights_path(raw: dict) -> None:
    """Whether vit_ft.weights exists is checked where the weights are used (finetune_vit)."""
    assert params_from_dict(_with(raw, "vit_ft.weights", "/no/such.npz")).vit_ft.weights == "/no/such.npz"


def test_unknown_keys_are_errors(raw: dict) -> None:
    with pytest.raises(ConfigError, match=r"train.epoch = 3 .*\(did you mean epochs\?\)"):
        params_from_dict(_with(raw, "train.epoch", 3))
    with pytest.raises(ConfigError, match=r"trian = \{'epochs': 20\} .*\(did you mean train\?\)"):
        params_from_dict({**raw, "trian": {"epochs": 20}})
    with pytest.raises(ConfigError, match="nonsense") as nothing_close:
        params_from_dict({**raw, "nonsense": 1})
    assert "did you mean" not in str(nothing_close.value)


@pytest.mark.slow
def test_a_misspelt_section_fails_dvc_repro_even_when_every_stage_is_cached(
        published: Path, tmp_path: Path) -> None:
    """fetch runs on every `dvc repro` (always_changed) and, like every stage, loads and checks
    the whole params.yaml first: a key no stage reads cannot pass as "up to date"."""
    from conftest import git_clone
    from dvc_project import run, stages_run

    clone = git_clone(published, tmp_path / "clone")
    run(clone, "dvc", "pull", "--with-deps", "evaluate@vit_scratch")   # the stages it ran
    raw_before = sorted(p.name for p in (clone / "data" / "raw").iterdir())
    params = clone / "params.yaml"
    params.write_text(params.read_text() + "trian:\n  epochs: 20\n")
    proc = run(clone, "dvc", "repro", "evaluate@vit_scratch", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert "params.yaml: trian = {'epochs': 20} is not allowed" in output, output[-2000:]
    assert "(did you mean train?)" in output
    assert stages_run(output) == ["fetch"]
    assert sorted(p.name for p in (clone / "data" / "raw").iterdir()) == raw_before


def test_pretrained_accepts_auto_and_booleans(raw: dict) -> None:
    for value in ("auto", True, False):
        assert params_from_dict(_with(raw, "cnn.pretrained", value)).cnn.pretrained == value


def test_source_kinds(raw: dict, tmp_path: Path) -> None:
    archive = tmp_path / "set.tar.gz"
    archive.write_bytes(b"")
    cases = {"digits": "digits", "https://example.org/a.tar": "url", str(tmp_path): "folder",
             str(archive): "archive"}
    for source, kind in cases.items():
        assert params_from_dict(_with(raw, "dataset.source", source)).dataset.kind == kind


@pytest.mark.slow   # a subprocess or a model build
def test_stage_exits_1_with_one_line_before_touching_outputs(raw: dict, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_with(raw, "vit.patch_size", 7)))
    model_dir = tmp_path / "models" / "vit_scratch"   # the stage that reads the vit section
    model_dir.mkdir(parents=True)
    (model_dir / "keep.txt").write_text("previous output")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "train_vit.py"), "--params",
                           str(params), "--root", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "vit.patch_size = 7" in proc.stderr and "a divisor of vit.image_size (96)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (model_dir / "keep.txt").read_text() == "previous output"
    # a data stage reads no model section, so runs no model code and leaves it to its stage
    fetch = subprocess.run([sys.executable, str(REPO / "stages" / "fetch.py"), "--params",
                            str(params), "--root", str(tmp_path)], capture_output=True, text=True)
    assert fetch.returncode == 0, fetch.stderr[-2000:]


def test_a_params_file_that_is_not_utf8_is_one_error_line_naming_the_byte(raw: dict,
                                                                       tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    text = yaml.safe_dump(raw).encode()
    at = text.index(b"\nsplit:") + 1
    params.write_bytes(text[:at] + "# r\u00e9sum\u00e9\n".encode("latin-1") + text[at:])
    raw_dir = tmp_path / "data" / "raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "keep.txt").write_text("previous output")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "clean.py"), "--params", str(params),
                           "--root", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = text[:at].count(b"\n") + 1
    assert f"error: clean: params.yaml: params file = '{params}' is not allowed" in errors[0]
    assert f"UTF-8 text: byte {at + 3} (line {line}) is 0xe9, not UTF-8" in errors[0]
    assert (raw_dir / "keep.txt").read_text() == "previous output"


@pytest.mark.parametrize("text", ["split:\n  val: .nan\n", "split:\n  test: .inf\n",
                                  "vit:\n  lr: -.inf\n"])
def test_yaml_nan_and_inf_are_refused(tmp_path: Path, text: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(ConfigError, match="a finite number"):
        load_params(params)


def test_unknown_keys_of_mixed_types_are_a_config_error(raw: dict, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw) + "1: a\nzz: b\n")
    with pytest.raises(ConfigError, match=r"params.yaml: 1 = 'a' is not allowed.*2 unknown keys: 1, zz"):
        load_params(params)
    with pytest.raises(ConfigError, match="train.1"):
        params_from_dict(_with(raw, "train.1", "x"))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_params_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(ConfigError, match="the file is empty"):
        load_params(params)


def test_long_lists_in_errors_are_capped(raw: dict) -> None:
    from vitbench.core.errors import short_list

    assert short_list(range(200)) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 190 more"
    assert short_list(["a", "b"]) == "a, b"
    many = {f"k{i:03d}": i for i in range(200)}
    with pytest.raises(ConfigError) as info:
        params_from_dict({**raw, **many})
    assert "and 190 more" in str(info.value) and len(str(info.value)) < 600


def test_missing_source_passes_config_fetch_checks_it(raw: dict) -> None:
    params = params_from_dict(_with(raw, "dataset.source", "/no/such/folder"))
    assert params.dataset.kind == "folder"


def test_several_bad_values_are_listed_at_once(raw: dict, tmp_path: Path) -> None:
    """Three bad values, one error naming all three (not three runs to find them)."""
    bad = _with(_with(_with(raw, "train.epochs", "five"), "split.test", 1.5), "augment.flip", "yes")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as info:
        load_params(params)
    message = str(info.value)
    assert "3 errors" in message
    for text in ("train.epochs = 'five'", "split.test = 1.5", "augment.flip = 'yes'"):
        assert text in message
    assert info.value.key in ("train.epochs", "split.test", "augment.flip")
