"""dvc.yaml tells the truth: each stage lists exactly the code it runs and the params it reads.

The truth is derived from the code by `vitbench.core.deps` (a static walk of the stage script's
imports, function-level ones included, and of its `params.<section>` reads). A folder in deps
(e.g. src/vitbench/models) stands for every .py file under it, and is right only if the stage runs
all of them. Non-code deps (data/, models/<id>, metrics/) are not checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vitbench.core import deps

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("src/", "stages/")


def dvc_stages() -> dict[str, dict]:
    """Stage name -> definition; a foreach stage (evaluate) is checked through its template."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def stage_script(stage: dict) -> Path:
    match = re.search(r"python (stages/\S+\.py)", stage["cmd"])
    assert match, f"cannot find the stage script in {stage['cmd']!r}"
    return REPO / match.group(1)


def declared_code(stage: dict) -> set[str]:
    """The code files a stage's deps cover (folders expanded to their .py files)."""
    files = set()
    for dep in stage.get("deps", []):
        if not dep.startswith(CODE_ROOTS):
            continue
        path = REPO / dep
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files.update(p.relative_to(REPO).as_posix() for p in found)
    return files


def derived_code(script: Path) -> set[str]:
    return {script.relative_to(REPO).as_posix(),
            *(p.relative_to(REPO).as_posix() for p in deps.script_files(script))}


def declared_params(stage: dict) -> set[str]:
    return {p for p in stage.get("params", []) if isinstance(p, str)}


def differences(name: str, stage: dict) -> list[str]:
    script = stage_script(stage)
    problems = []
    code, listed = derived_code(script), declared_code(stage)
    if code - listed:
        problems.append(f"{name}: deps lack {', '.join(sorted(code - listed))}")
    if listed - code:
        problems.append(f"{name}: deps list code it does not run: {', '.join(sorted(listed - code))}")
    sections, whole = deps.params_sections(script)
    if whole:
        problems.append(f"{name}: {script.name} hands the whole params on (line(s) "
                        f"{', '.join(map(str, whole))}); pass the sections it reads")
    if sections != declared_params(stage):
        problems.append(f"{name}: params should be {sorted(sections)}, dvc.yaml has "
                        f"{sorted(declared_params(stage))}")
    return problems


def test_every_stage_lists_exactly_its_code_and_params():
    problems = [p for name, stage in dvc_stages().items() for p in differences(name, stage)]
    assert not problems, "dvc.yaml disagrees with the code:\n" + "\n".join(problems)


def test_every_stage_script_is_in_the_dag():
    scripts = {stage_script(stage).name for stage in dvc_stages().values()}
    assert scripts == {p.name for p in (REPO / "stages").glob("*.py")}


# --- the walk itself --------------------------------------------------------------------------------

def test_walk_sees_function_level_imports_and_skips_type_checking(tmp_path: Path):
    script = tmp_path / "stage.py"
    script.write_text(
        "import os\nfrom typing import TYPE_CHECKING\nfrom vitbench.core import paths\n"
        "if TYPE_CHECKING:\n    from vitbench.report import compare\n"
        "def main(params):\n    from vitbench.models import load_model\n"
        "    import vitbench.data.cleaning\n    return params.clean, params.seed\n")
    direct = deps.imported_modules(script)
    assert direct == {"vitbench", "vitbench.core", "vitbench.core.paths", "vitbench.models", "vitbench.data",
                      "vitbench.data.cleaning"}
    files = {deps.relative(p) for p in deps.script_files(script)}
    assert "vitbench/models/registry.py" in files and "vitbench/report/compare.py" not in files
    assert "vitbench/data/__init__.py" in files           # package __init__ files count
    assert deps.params_sections(script) == ({"clean", "seed"}, [])


def test_whole_params_is_reported(tmp_path: Path):
    script = tmp_path / "stage.py"
    script.write_text("def main(params, paths):\n    run(params.seed)\n    run(params, paths)\n")
    assert deps.params_sections(script) == ({"seed"}, [3])


@pytest.mark.parametrize("module, expected", [
    ("vitbench.data.augmentation", "vitbench/data/imageprep.py"),   # the PNG encoder it uses
    ("vitbench.train.phases", "vitbench/models/patches.py"),             # imported inside train_vit
])
def test_transitive_imports(module: str, expected: str):
    assert expected in {deps.relative(p) for p in deps.module_files(module)}


def _module_graph() -> dict[str, set[str]]:
    """vitbench module -> the vitbench modules (not packages) it imports, function-level included."""
    graph = {}
    for file in deps.PACKAGE_DIR.rglob("*.py"):
        if file.name == "__init__.py":
            continue
        name = ".".join(file.relative_to(deps.PACKAGE_DIR.parent).with_suffix("").parts)
        graph[name] = {m for m in deps.imported_modules(file, name)
                       if m != name and deps.module_path(m).name != "__init__.py"}
    return graph


def test_no_two_modules_import_each_other_even_indirectly() -> None:
    graph = _module_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(m for m in graph if m in reaches(m))
    assert not cycles, f"import cycles through: {', '.join(cycles)}"


@pytest.mark.parametrize("stage, edited, stales", [
    ("train_vit", "vitbench/models/cnn.py", False),          # the CNN builder
    ("train_vit", "vitbench/models/pretrained_vit.py", False),
    ("finetune_vit", "vitbench/models/cnn.py", False),
    ("train_cnn", "vitbench/models/cnn.py", True),
    ("finetune_vit", "vitbench/models/pretrained_vit.py", True),
    ("evaluate", "vitbench/models/cnn.py", True),             # evaluates any family's model
    ("train_vit", "vitbench/data/synthetic.py", False),      # the demo's drawing code
    ("evaluate", "vitbench/data/synthetic.py", False),
    ("train_vit", "vitbench/data/cleaning.py", False),       # the clean stage's code
    ("compare", "vitbench/models/registry.py", False),       # compare reads metrics/<id>.json
    ("fetch", "vitbench/data/synthetic.py", True),
])
def test_a_stage_depends_only_on_the_code_it_runs(stage: str, edited: str, stales: bool) -> None:
    script = stage_script(dvc_stages()[stage])
    assert (edited in {deps.relative(p) for p in deps.script_files(script)}) is stales


def test_the_model_ids_of_dvc_yaml_are_the_registrys() -> None:
    from vitbench.core.model_ids import MODEL_IDS

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert tuple(stages["evaluate"]["foreach"]) == MODEL_IDS
    compare = set(stages["compare"]["deps"])
    assert {f"metrics/{m}.json" for m in MODEL_IDS} | {f"plots/{m}/eval" for m in MODEL_IDS} <= compare
