"""vitbench as a package a user installs: `python -m vitbench`, `vitbench init DIR` (the project
files it writes, its refusals) and a built wheel in a fresh virtualenv that starts a project and
runs its first stages without this repo."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dvc_project import TINY, VENV_BIN, run, set_params

from conftest import REPO
from vitbench.cli import main
from vitbench.project_files import merge_lines, project_dvc_yaml, shipped_files


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_python_m_vitbench_is_the_vitbench_command() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "vitbench", "--help"], capture_output=True, text=True,
                          env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: vitbench ")
    assert "  init " in proc.stdout and "  predict " in proc.stdout


def test_init_dvc_yaml_is_the_repo_dag_without_src_deps() -> None:
    """The project's dvc.yaml: the same stages, params and outputs, code deps only in stages/."""
    repo = yaml.safe_load((REPO / "dvc.yaml").read_text())
    written = yaml.safe_load(project_dvc_yaml(shipped_files()["dvc.yaml"]))
    assert written.keys() == repo.keys()
    for name, stage in repo["stages"].items():
        body, mine = stage.get("do", stage), written["stages"][name].get("do", written["stages"][name])
        assert mine["deps"] == [d for d in body["deps"] if not d.startswith("src/")], name
        assert {k: v for k, v in mine.items() if k != "deps"} == {k: v for k, v in body.items() if k != "deps"}
        assert any(d.startswith("stages/") for d in mine["deps"]), name


def test_ignore_files_are_merged_not_replaced() -> None:
    shipped = "# DVC outputs\n/models\nsecrets/\n"
    assert merge_lines("secrets/\n*.log", shipped) == "secrets/\n*.log\n# vitbench\n/models\n"
    assert merge_lines("/models\nsecrets/\n", shipped) == "/models\nsecrets/\n"
    assert merge_lines("", shipped) == shipped


def test_init_refuses_to_overwrite_dvc_yaml_and_writes_nothing(tmp_path: Path) -> None:
    project = tmp_path / "existing"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "notes.txt").write_text("mine\n")
    before = _tree(project)
    result = CliRunner().invoke(main, ["init", str(project)])
    assert result.exit_code == 2
    assert "already has dvc.yaml" in result.output and "--force" in result.output
    assert _tree(project) == before and not (project / ".git").exists()


@pytest.mark.slow
def test_init_into_an_existing_repo_keeps_its_files_and_commits(tmp_path: Path) -> None:
    """An existing git repo with a commit: .gitignore merged (the user's lines kept), no commit made
    for the user; re-running is a no-op; a changed params.yaml is replaced only with --force."""
    project = tmp_path / "repo"
    project.mkdir()
    run(project, "git", "init", "-q")
    (project / ".gitignore").write_text("secrets/\n")
    run(project, "git", "add", ".gitignore")
    run(project, "git", "commit", "-q", "-m", "user's first commit")

    init = lambda *flags: CliRunner().invoke(main, ["init", str(project), *flags])  # noqa: E731
    assert init().exit_code == 0
    assert (project / ".gitignore").read_text().startswith("secrets/\n")
    assert "/models/*/*\n" in (project / ".gitignore").read_text()
    assert "html_template = plots_template.html" in (project / ".dvc" / "config").read_text()
    assert (project / ".dvc" / "plots_template.html").is_file()
    log = run(project, "git", "log", "--format=%s").stdout.splitlines()
    assert log == ["user's first commit"]
    assert init().exit_code == 0  # unchanged files: nothing to refuse

    (project / "params.yaml").write_text("seed: 1\n")
    refused = init()
    assert refused.exit_code == 2 and "params.yaml" in refused.output
    assert (project / "params.yaml").read_text() == "seed: 1\n"
    assert init("--force").exit_code == 0
    assert (project / "params.yaml").read_text() == (REPO / "params.yaml").read_text()


def _fresh_venv(tmp_path: Path) -> Path:
    """A new virtualenv with only the wheel built (through its sdist) from this repo's files; its
    dependencies are this venv's site-packages, added by a .pth line (a .pth there, such as an
    editable vitbench's, is not processed for such a path), so nothing is downloaded."""
    checkout = tmp_path / "checkout"  # the repo's files as a clone has them: no stale build metadata
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, check=True, capture_output=True, text=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, checkout / rel)
    dist = tmp_path / "dist"
    subprocess.run([f"{VENV_BIN}/uv", "build", "--no-build-isolation", "--offline", "--python",
                    sys.executable, "-o", str(dist), str(checkout)], check=True, capture_output=True)
    [wheel] = dist.glob("vitbench-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([f"{VENV_BIN}/uv", "pip", "install", "--offline", "--no-deps", "--python",
                    str(venv / "bin" / "python"), str(wheel)], check=True, capture_output=True)
    [fresh_site] = (venv / "lib").glob("python3*/site-packages")
    (fresh_site / "dev_dependencies.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    return venv


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_inits_a_project_that_runs(tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "2",
            "GIT_AUTHOR_NAME": "vitbench test", "GIT_AUTHOR_EMAIL": "test@vitbench.local",
            "GIT_COMMITTER_NAME": "vitbench test", "GIT_COMMITTER_EMAIL": "test@vitbench.local"}

    def fresh(*args: str, cwd: Path = tmp_path) -> str:
        proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    imported = fresh("python", "-c", "import vitbench; print(vitbench.__file__)").strip()
    assert Path(imported).is_relative_to(venv), imported  # the wheel, not this checkout
    assert fresh("python", "-m", "vitbench", "--help").startswith("Usage: vitbench ")

    fresh("vitbench", "init", "myproj")
    project = tmp_path / "myproj"
    assert (project / "dvc.yaml").read_text() == project_dvc_yaml((REPO / "dvc.yaml").read_text())
    assert sorted(p.name for p in (project / "stages").glob("*.py")) == \
        sorted(p.name for p in (REPO / "stages").glob("*.py"))
    assert fresh("git", "status", "--porcelain", cwd=project) == ""  # committed: dvclive needs a commit

    set_params(project, TINY)
    out = fresh("python", "-m", "dvc", "repro", "split", cwd=project)
    assert all(f"Running stage '{s}'" in out for s in ("fetch", "clean", "split"))
    split = yaml.safe_load((project / "metrics" / "split.json").read_text())
    assert split["classes"] == 10 and min(split["train"], split["val"], split["test"]) > 0
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert not [d for s in lock["stages"].values() for d in s.get("deps", [])
                if d["path"].startswith("src/")]
