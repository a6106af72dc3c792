"""Build step only (the metadata is in pyproject.toml): a wheel carries this repo's dvc.yaml,
params.yaml, stages/*.py and DVC / git settings in vitbench/project/, for `vitbench init`. The
top-level files stay their single source; an editable install reads them from the checkout."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))
from vitbench.project_files import PACKAGED, source_layout  # noqa: E402


class BuildPyWithProject(build_py):
    """build_py, then the project files copied into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "vitbench" / PACKAGED
        for rel, name in source_layout(ROOT).items():
            self.mkpath(str((target / name).parent))
            self.copy_file(str(ROOT / rel), str(target / name))


setup(cmdclass={"build_py": BuildPyWithProject})
