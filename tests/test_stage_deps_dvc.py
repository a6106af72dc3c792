"""A stage depends on the code it runs, seen by DVC itself: in a copy of a reproduced tiny project
(fetch ... train_vit, evaluate@vit_scratch), editing the demo's drawing code stales only fetch,
the clean stage's code only clean, the from-scratch ViT's code only its own two stages, the CNN's
code none of them, and adding a pretrained-ViT variant no stage that ran (no data stage)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dvc_project import changed_stages

VIT_STAGES = {"train_vit", "evaluate@vit_scratch"}
EDITS = {   # file under src/vitbench -> (text appended, the stages it stales among those that ran)
    "data/synthetic.py": ("\n# edited\n", {"fetch"}),
    "data/cleaning.py": ("\n# edited\n", {"clean"}),
    "models/vit/layers.py": ("\n# edited\n", VIT_STAGES),
    "models/cnn/builder.py": ("\n# edited\n", set()),
    "models/vit_ft/variants.py": ('\nVIT_VARIANTS["h14"] = VitVariant("H", 14, 32)\n', set()),
    "models/registry.py": ("\n# edited\n", VIT_STAGES),   # every model stage; no data stage
}


@pytest.mark.slow
def test_editing_one_stages_code_stales_that_stage_only(published: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(published, tmp_path / "project", symlinks=True))
    never_run = changed_stages(project)          # published ran up to evaluate@vit_scratch only
    assert "train_vit" not in never_run and "evaluate@vit_scratch" not in never_run
    for edited, (appended, stales) in EDITS.items():
        code = project / "src" / "vitbench" / edited
        original = code.read_text()
        code.write_text(original + appended)
        assert changed_stages(project) - never_run == stales, edited
        code.write_text(original)
