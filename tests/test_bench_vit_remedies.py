"""Smoke test of benchmarks/vit_remedies.py on a few real PACS cartoon images (16px, 1 epoch)."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from benchscripts import load_benchmark
from click.testing import CliRunner


def load_script() -> ModuleType:
    """Import benchmarks/vit_remedies.py."""
    return load_benchmark("vit_remedies")


def cells(line: str) -> list[str]:
    """The stripped cells of one markdown table line."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table_rows(markdown: str, *header: str) -> list[list[str]]:
    """Cells of the data rows of the markdown table whose first header cells are `header` (the
    `|:---|---:|` separator line skipped by its content)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("|") and cells(line)[:len(header)] == list(header))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        if not re.fullmatch(r"\|[\s:|-]+\|", line.strip()):
            rows.append(cells(line))
    return rows


@pytest.mark.slow
@pytest.mark.pacs
def test_benchmark_smoke(pacs_dir: Path, tmp_path: Path) -> None:
    bench = load_script()
    out = tmp_path / "results" / "vit_remedies.md"
    result = CliRunner().invoke(bench.main, [
        "--data", str(pacs_dir), "--epochs", "1", "--image-size", "16", "--patch-size", "4", "--layers", "1",
        "--configs", "baseline,all", "--max-per-class", "10", "--seeds", "1", "--batch-size", "14",
        "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    text = out.read_text()

    runs = table_rows(text, "config", "seed")
    assert [r[0] for r in runs] == ["baseline", "SPT + LSA + warm-up cosine"]
    for row in runs:
        test_acc, val_acc = float(row[2]), float(row[3])
        assert 0.0 <= test_acc <= 1.0 and 0.0 <= val_acc <= 1.0
        assert int(row[5]) == 1  # epochs
        assert int(row[7].replace(",", "")) > 0  # params

    summary = table_rows(text, "config", "SPT")
    assert [r[0] for r in summary] == ["baseline", "SPT + LSA + warm-up cosine"]
    assert summary[0][1:3] == ["-", "-"] and summary[1][1:3] == ["yes", "yes"]
    assert float(summary[0][6]) == 0.0  # the baseline's gain over itself
    assert "1 layers" in text
    # 10 images of each of the 7 classes: 6 train, 2 val, 2 test per class
    assert re.search(r"7 classes \(.*\).*train 42, val 14, test 14", text)
    assert "Chance is 0.143 (1/7)" in text
    assert re.search(r"with 14 test images, .* standard error of 0\.\d{3}", text)
    assert re.search(r"\d+ CPU\(s\), .*TensorFlow 2\.", text, re.S)
    assert re.search(r"^\| baseline +\| - +\| - +\|", result.output, re.M)  # the table is printed too


def test_unknown_config_is_a_usage_error(tmp_path: Path) -> None:
    bench = load_script()
    result = CliRunner().invoke(bench.main, ["--configs", "baseline,nope", "--out",
                                             str(tmp_path / "x.md")])
    assert result.exit_code == 2
    assert "nope" in result.output and "baseline, spt, lsa, warmup, all" in result.output
    assert not (tmp_path / "x.md").exists()


def test_bad_patch_size_names_the_option_value(tmp_path: Path) -> None:
    bench = load_script()
    result = CliRunner().invoke(bench.main, ["--image-size", "16", "--patch-size", "5", "--out",
                                             str(tmp_path / "x.md")])
    assert result.exit_code == 2
    assert "vit.patch_size = 5" in result.output and "divisor" in result.output


def test_missing_data_folder_is_an_error(tmp_path: Path) -> None:
    bench = load_script()
    result = CliRunner().invoke(bench.main, ["--data", str(tmp_path / "absent"), "--out",
                                             str(tmp_path / "x.md")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'absent'} does not exist" in result.output
    assert not (tmp_path / "x.md").exists()
