"""A stage depends on the code it runs (issue 21), seen by DVC itself: in a copy of a reproduced
tiny project (fetch ... train_vit, evaluate@vit_scratch), editing the demo's drawing code stales
only fetch, the clean stage's code only clean, and the CNN builder no training stage of a ViT
(evaluate, which loads any family's model, does depend on it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dvc_project import changed_stages

EDITS = {"data/synthetic.py": {"fetch"}, "data/cleaning.py": {"clean"},
         "models/cnn.py": {"evaluate@vit_scratch"}}


@pytest.mark.slow
def test_editing_one_stages_code_stales_that_stage_only(published: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(published, tmp_path / "project", symlinks=True))
    never_run = changed_stages(project)          # published ran up to evaluate@vit_scratch only
    assert "train_vit" not in never_run and "evaluate@vit_scratch" not in never_run
    for edited, stales in EDITS.items():
        code = project / "src" / "vitbench" / edited
        original = code.read_text()
        code.write_text(original + "\n# edited\n")
        assert changed_stages(project) - never_run == stales, edited
        code.write_text(original)
