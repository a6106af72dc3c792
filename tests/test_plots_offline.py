"""`dvc plots show` as a user meets it: the offline template (.dvc/config's plots.html_template) is
committed, so any clone draws with no network (headless Chromium screenshots, against DVC's CDN
page); the learning curves, confusion matrices and per-class F1 charts of dvc.yaml's `plots:`
(the Vega-Lite templates in .dvc/plots/) are readable, checked on the specs DVC fills, drawn by
vl-convert."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from dvc_project import run
from PIL import Image

from conftest import REPO, git_clone

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CURVES = "Validation accuracy per epoch"  # a dvc.yaml plot id: the learning curves
CONFUSION = "plots/vit_scratch/eval/plots/sklearn/confusion_matrix.json"
F1 = "Per-class F1 on the test split"
MODEL_IDS = ("cnn_transfer", "cnn_finetuned", "vit_scratch", "vit_transfer", "vit_finetuned")
# the published project has one model: its curve takes the first colour of Vega's category scheme
FIRST_CATEGORY = np.array([0x4C, 0x78, 0xA8])
CDN_PAGE = """<!DOCTYPE html><html><head>{refresh_tag}<title>DVC Plot</title>{scripts}</head>
<body>{plot_divs}</body></html>"""  # dvc-render's default page: vega from a CDN
VEGALITE = "5.21"  # the version the offline template inlines (vitbench.plots.offline)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return CHROMIUM


def screenshot(chromium: str, html: Path, png: Path, profile: Path) -> np.ndarray:
    """The page as RGB pixels, rendered by headless Chromium with every host name unresolvable."""
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network, whatever the machine has
                    f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                    "--window-size=1000,900", f"--screenshot={png}", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def coloured(pixels: np.ndarray) -> int:
    """Pixels with a clear hue (max - min channel > 40): chart marks; text and axes are grey."""
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 40).sum())


def near(pixels: np.ndarray, colour: np.ndarray) -> int:
    return int((np.abs(pixels - colour).max(axis=2) < 40).sum())


def plot_page(project: Path, out: Path, target: str, *template: str) -> Path:
    run(project, "dvc", "plots", "show", "-o", str(out), *template, target)
    return out / "index.html"


@pytest.mark.slow
def test_plots_show_draws_offline_in_a_plain_clone(published: Path, tmp_path: Path,
                                                   chromium: str) -> None:
    """A `git clone` with nothing generated in it: the page draws the curves and the heatmap."""
    clone = git_clone(published, tmp_path / "clone")
    assert "html_template = plots_template.html" in (clone / ".dvc" / "config").read_text()
    curves = screenshot(chromium, plot_page(clone, tmp_path / "curves", CURVES),
                        tmp_path / "curves.png", tmp_path / "profile")
    confusion = screenshot(chromium, plot_page(clone, tmp_path / "cm", CONFUSION),
                           tmp_path / "cm.png", tmp_path / "profile")
    assert near(curves, FIRST_CATEGORY) > 150, "no learning curve drawn"
    assert coloured(confusion) > 20_000, "no confusion-matrix heatmap drawn"

    cdn = tmp_path / "cdn.html"
    cdn.write_text(CDN_PAGE)
    control = screenshot(chromium, plot_page(clone, tmp_path / "cdn", CURVES,
                                             "--html-template", str(cdn)),
                         tmp_path / "cdn.png", tmp_path / "profile")
    assert "cdn.jsdelivr.net" in (tmp_path / "cdn" / "index.html").read_text()
    assert coloured(control) < 50  # offline, DVC's own page stays blank


def filled_spec(project: Path, target: str) -> dict:
    """The Vega-Lite spec `dvc plots show` draws for `target`, its data filled in."""
    return json.loads(run(project, "dvc", "plots", "show", "--show-vega", target).stdout)


def svg_texts(spec: dict) -> tuple[str, list[str]]:
    """The spec drawn by vl-convert (the libraries the offline page inlines): SVG and its texts."""
    import vl_convert

    svg = vl_convert.vegalite_to_svg(spec, vl_version=VEGALITE)
    return svg, re.findall(r">([^<>]+)</text>", svg)


def x_axis_labels(svg: str) -> list[str]:
    group = re.search(r'aria-label="X-axis.*?aria-label="Y-axis', svg, re.S)
    assert group, "no x axis drawn"
    return re.findall(r">([^<>]+)</text>", group.group(0))


@pytest.mark.slow
def test_plots_name_the_models_and_count_epochs_from_one(published: Path) -> None:
    """Curves coloured and labelled by model id, x = epochs 1..3 (integer ticks only), confusion
    matrices titled by model, per-class F1 panels wrapped three a row for the five models."""
    curves = filled_spec(published, CURVES)
    svg, texts = svg_texts(curves)
    assert curves["encoding"]["color"]["field"] == "model"
    assert "vit_scratch" in texts and not any("/" in t for t in texts)  # legend: ids, not paths
    assert x_axis_labels(svg) == ["1", "2", "3", "epoch"]  # published: train.epochs 3

    _, texts = svg_texts(filled_spec(published, CONFUSION))
    assert "vit_scratch: confusion matrix on the test split" in texts

    f1 = filled_spec(published, F1)
    rows = f1["data"]["values"]
    assert {row["filename"].split("/")[0] for row in rows} == {"vit_scratch"}
    # the other four models' panels: vit_scratch's rows under their names (the layout depends on
    # the number of models, not on the scores)
    f1["data"]["values"] = [{**row, "filename": row["filename"].replace("vit_scratch", model)}
                            for model in MODEL_IDS for row in rows]
    svg, texts = svg_texts(f1)
    assert set(MODEL_IDS) <= set(texts)
    width = float(re.search(r'<svg[^>]*\swidth="([\d.]+)"', svg).group(1))
    assert width <= 1400, f"per-class F1 is {width} px wide: wider than a 1,400 px window"


def test_every_plot_template_is_a_dvc_builtin_or_a_shipped_file() -> None:
    """dvc.yaml's `template:` names resolve in this repo and in a `vitbench init` project."""
    from dvc_render.vega_templates import TEMPLATES

    from vitbench.project_files import FILES

    builtin = {t.DEFAULT_NAME for t in TEMPLATES}
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    named = {props["template"] for entry in plots if isinstance(entry, dict)
             for props in entry.values() if props and "template" in props}
    custom = named - builtin
    assert custom, "dvc.yaml uses no template of .dvc/plots/"
    for name in custom:
        rel = f".dvc/plots/{name}.json"
        assert (REPO / rel).is_file() and rel in FILES, rel
        json.loads((REPO / rel).read_text())


@pytest.mark.slow
def test_the_offline_template_is_committed_and_current() -> None:
    """Tracked by git (so every clone has it) and what `vitbench plots-template` writes with the
    installed vl-convert; after upgrading it, run `vitbench plots-template`."""
    from vitbench.plots.offline import TEMPLATE_NAME, html_template

    rel = f".dvc/{TEMPLATE_NAME}"
    ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO)
    assert ignored.returncode == 1, f"{rel} is git-ignored"
    assert (REPO / rel).read_text(encoding="utf-8") == html_template(), \
        f"{rel} is stale: run `vitbench plots-template`"


@pytest.mark.slow
def test_init_commits_the_offline_template(tmp_path: Path) -> None:
    from vitbench.cli import main

    project = tmp_path / "new"
    assert CliRunner().invoke(main, ["init", str(project)]).exit_code == 0
    tracked = run(project, "git", "ls-files", ".dvc").stdout.split()
    assert {".dvc/plots_template.html", ".dvc/plots/curves_by_model.json",
            ".dvc/plots/bars_by_model.json"} <= set(tracked)
