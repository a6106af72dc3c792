"""dvc.yaml tells the truth: each stage lists exactly the code it runs and the params it reads.

The truth is derived from the code by `vitbench.core.deps` (a static walk of the stage script's
imports, function-level ones included, and of its `params.<section>` reads). A folder in deps
(e.g. src/vitbench/models) stands for every .py file under it, and is right only if the stage runs
all of them. Non-code deps (data/, models/<id>, metrics/) are not checked here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from vitbench.core import deps

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("src/", "stages/")


def dvc_stages() -> dict[str, dict]:
    """Stage name -> definition; the evaluate foreach gives one stage per model id
    (`evaluate@<id>`, its template with `${key}` and `${item.family}` filled in)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        for key, item in stage["foreach"].items():
            text = yaml.safe_dump(stage["do"]).replace("${key}", key)
            for field, value in item.items():
                text = text.replace("${item.%s}" % field, value)
            out[f"{name}@{key}"] = yaml.safe_load(text)
    return out


def stage_family(name: str) -> str | None:
    """The family package an `evaluate@<id>` stage loads at run time (from the model's record)."""
    if "@" not in name:
        return None
    from vitbench.models import registry

    return registry.family_of(name.split("@", 1)[1]).module


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


def derived_code(script: Path, family: str | None = None) -> set[str]:
    """The script and every vitbench file it runs (plus the files of `family`'s package)."""
    files = deps.script_files(script) + (deps.module_files(family) if family else [])
    return {script.relative_to(REPO).as_posix(), *(p.relative_to(REPO).as_posix() for p in files)}


def declared_params(stage: dict) -> set[str]:
    return {p for p in stage.get("params", []) if isinstance(p, str)}


def differences(name: str, stage: dict) -> list[str]:
    script = stage_script(stage)
    problems = []
    code, listed = derived_code(script, stage_family(name)), declared_code(stage)
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


@pytest.mark.slow
def test_every_stage_lists_exactly_its_code_and_params():
    problems = [p for name, stage in dvc_stages().items() for p in differences(name, stage)]
    assert not problems, "dvc.yaml disagrees with the code:\n" + "\n".join(problems)


def test_every_stage_script_is_in_the_dag():
    scripts = {stage_script(stage).name for stage in dvc_stages().values()}
    assert scripts == {p.name for p in (REPO / "stages").glob("*.py")}


# --- the walk itself --------------------------------------------------------------------------------

def test_walk_sees_function_level_imports_and_skips_type_checking(tmp_path: Path):
    """Imports at any level and a family declaration's `later("module:function")` count."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import os\nfrom typing import TYPE_CHECKING\nfrom vitbench.core import paths\n"
        "if TYPE_CHECKING:\n    from vitbench.report import compare\n"
        "split = later('vitbench.data.splitting:split_dataset')\n"
        "def main(params):\n    from vitbench.models.store import load_model\n"
        "    import vitbench.data.cleaning\n    return params.clean, params.seed\n")
    direct = deps.imported_modules(script)
    assert direct == {"vitbench", "vitbench.core", "vitbench.core.paths", "vitbench.models",
                      "vitbench.models.store", "vitbench.data", "vitbench.data.cleaning",
                      "vitbench.data.splitting"}
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
    ("vitbench.models.vit", "vitbench/models/vit/patches.py"),       # the family's own figure
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


def stage_code(name: str) -> set[str]:
    """vitbench files (relative to src/) a stage runs, its family's package included."""
    family = stage_family(name)
    files = deps.script_files(stage_script(dvc_stages()[name])) + (
        deps.module_files(family) if family else [])
    return {deps.relative(p) for p in files}


@pytest.mark.parametrize("stage, edited, stales", [
    ("train_vit", "vitbench/models/cnn/builder.py", False),          # the CNN builder
    ("train_vit", "vitbench/models/vit_ft/builder.py", False),
    ("finetune_vit", "vitbench/models/cnn/archs.py", False),
    ("finetune_vit", "vitbench/models/vit/layers.py", False),        # the from-scratch ViT
    ("train_cnn", "vitbench/models/vit/layers.py", False),
    ("train_cnn", "vitbench/models/vit/patches.py", False),
    ("train_cnn", "vitbench/models/cnn/builder.py", True),
    ("finetune_vit", "vitbench/models/vit_ft/timm_weights.py", True),
    ("evaluate@cnn_transfer", "vitbench/models/cnn/builder.py", True),
    ("evaluate@cnn_transfer", "vitbench/models/vit/layers.py", False),
    ("evaluate@cnn_finetuned", "vitbench/models/vit_ft/builder.py", False),
    ("evaluate@vit_scratch", "vitbench/models/vit/layers.py", True),
    ("evaluate@vit_scratch", "vitbench/models/cnn/archs.py", False),
    ("evaluate@vit_finetuned", "vitbench/models/vit_ft/variants.py", True),
    ("train_vit", "vitbench/data/synthetic.py", False),      # the demo's drawing code
    ("evaluate@vit_scratch", "vitbench/data/synthetic.py", False),
    ("train_vit", "vitbench/data/cleaning.py", False),       # the clean stage's code
    ("compare", "vitbench/models/registry.py", False),       # compare reads metrics/<id>.json
    ("fetch", "vitbench/data/synthetic.py", True),
    ("split", "vitbench/models/registry.py", False),         # data stages run no model code
    ("augment", "vitbench/models/vit_ft/variants.py", False),
])
def test_a_stage_depends_only_on_the_code_it_runs(stage: str, edited: str, stales: bool) -> None:
    assert (edited in stage_code(stage)) is stales


def test_the_model_ids_of_dvc_yaml_are_the_families() -> None:
    """The evaluate keys are the declared model ids, each with its family; every family's
    training stage is in the DAG and compare reads every model's results."""
    from vitbench.models import registry

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    foreach = stages["evaluate"]["foreach"]
    assert tuple(foreach) == registry.model_ids()
    assert {key: item["family"] for key, item in foreach.items()} == {
        m.id: m.family for m in registry.models().values()}
    assert {f.stage for f in registry.families().values()} <= set(stages)
    compare = set(stages["compare"]["deps"])
    ids = registry.model_ids()
    assert {f"metrics/{m}.json" for m in ids} | {f"plots/{m}/eval" for m in ids} <= compare


# --- the layers ----------------------------------------------------------------------------------

LAYERS = ("core", "plots", "data", "models", "train", "evaluate", "report", "experiments")
MAY_NOT_IMPORT = {   # a layer's modules never import these layers
    "core": set(LAYERS) - {"core"},
    "plots": set(LAYERS) - {"core", "plots"},
    "data": {"models", "train", "evaluate", "report", "experiments"},
    "models": {"train", "evaluate", "report", "experiments"},
    "train": {"evaluate", "report", "experiments"},
    "evaluate": {"train", "report", "experiments"},
    "report": {"models", "train", "experiments"},
}


def test_each_layer_imports_only_the_layers_below_it() -> None:
    graph = _module_graph()
    layer = lambda module: module.split(".")[1]  # noqa: E731 - vitbench.<layer>.x
    found = sorted(f"{m} imports {n}" for m, targets in graph.items() for n in targets
                   if layer(m) in MAY_NOT_IMPORT and layer(n) in MAY_NOT_IMPORT[layer(m)])
    assert not found, "\n".join(found)


def test_each_layer_says_what_it_may_import() -> None:
    for name in LAYERS:
        doc = ast.get_docstring(ast.parse((deps.PACKAGE_DIR / name / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), name


def test_few_loose_modules() -> None:
    loose = {p.name for p in deps.PACKAGE_DIR.glob("*.py")} - {"__init__.py", "__main__.py", "cli.py"}
    assert len(loose) <= 3, sorted(loose)
