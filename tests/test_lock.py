"""requirements.lock: every dependency pinned exactly, inside pyproject's ranges, and (under
`make test`, which sets VITBENCH_LOCK) exactly what is installed."""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

LOCK = REPO / "requirements.lock"


def _pins(path: Path) -> dict[str, tuple[str, Marker | None]]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        [spec] = req.specifier  # exactly one `==` per line
        assert spec.operator == "==" and "*" not in spec.version, line
        pins[canonicalize_name(req.name)] = (spec.version, req.marker)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_every_declared_dependency_is_pinned_inside_its_range() -> None:
    pins = _pins(LOCK)
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in {LOCK.name}: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (req, pins[name][0])
    assert re.search(r"uv pip compile pyproject\.toml --extra dev", LOCK.read_text())


def test_installed_versions_are_the_locked_ones() -> None:
    if not os.environ.get("VITBENCH_LOCK"):
        pytest.skip("not installed from the lock (`make test` sets VITBENCH_LOCK)")
    wrong = []
    for name, (version, marker) in _pins(Path(os.environ["VITBENCH_LOCK"])).items():
        if marker is not None and not marker.evaluate():
            continue  # another platform's package
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong.append(f"{name}: locked {version}, installed {installed}")
    assert not wrong, "\n".join(wrong)
