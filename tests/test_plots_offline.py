"""`dvc plots show` draws its charts with no network: headless Chromium screenshots of the page
made with the offline template (.dvc/config's plots.html_template), against DVC's CDN page."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvc_project import run

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CURVES = "Validation accuracy per epoch"  # a dvc.yaml plot id: the learning curves
CONFUSION = "plots/vit_scratch/eval/plots/sklearn/confusion_matrix.json"
PURPLE = np.array([0x94, 0x5D, 0xD6])  # the first line colour of DVC's templates
CDN_PAGE = """<!DOCTYPE html><html><head>{refresh_tag}<title>DVC Plot</title>{scripts}</head>
<body>{plot_divs}</body></html>"""  # dvc-render's default page: vega from a CDN


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


def purple(pixels: np.ndarray) -> int:
    return int((np.abs(pixels - PURPLE).max(axis=2) < 40).sum())


def plot_page(project: Path, out: Path, target: str, *template: str) -> Path:
    run(project, "dvc", "plots", "show", "-o", str(out), *template, target)
    return out / "index.html"


def test_plots_show_draws_curves_and_confusion_matrix_offline(published: Path, tmp_path: Path,
                                                              chromium: str) -> None:
    config = (published / ".dvc" / "config").read_text()
    assert "html_template = plots_template.html" in config
    curves = screenshot(chromium, plot_page(published, tmp_path / "curves", CURVES),
                        tmp_path / "curves.png", tmp_path / "profile")
    confusion = screenshot(chromium, plot_page(published, tmp_path / "cm", CONFUSION),
                           tmp_path / "cm.png", tmp_path / "profile")
    assert purple(curves) > 150, "no learning curve drawn"
    assert coloured(confusion) > 20_000, "no confusion-matrix heatmap drawn"

    cdn = tmp_path / "cdn.html"
    cdn.write_text(CDN_PAGE)
    control = screenshot(chromium, plot_page(published, tmp_path / "cdn", CURVES,
                                             "--html-template", str(cdn)),
                         tmp_path / "cdn.png", tmp_path / "profile")
    assert "cdn.jsdelivr.net" in (tmp_path / "cdn" / "index.html").read_text()
    assert coloured(control) < 50 and purple(control) < 10  # offline, DVC's own page stays blank
