"""The files a vitbench project starts from (dvc.yaml, params.yaml, stages/ and its DVC and git
settings) and `vitbench init`, which writes them into a folder.

This repository's own top-level files are their single source. A built wheel or sdist carries
copies in `vitbench/project/` (setup.py's build step copies them there); an editable install
reads them from the source checkout it runs from.

In a new project the stages' code is the installed vitbench package, not files of the project, so
its dvc.yaml lists no `src/vitbench/...` deps: DVC does not see a vitbench upgrade, and
`dvc repro -f` re-runs everything after one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from vitbench.core.errors import VitbenchError

# project path -> its name inside vitbench/project/ (no hidden files or .dvc/ folder in a package)
FILES = {"dvc.yaml": "dvc.yaml", "params.yaml": "params.yaml", ".dvcignore": "dvcignore",
         ".gitignore": "gitignore", ".dvc/config": "dvc_config", ".dvc/.gitignore": "dvc_gitignore",
         # the Vega-Lite templates that dvc.yaml's `plots:` name (`template: <file name>`)
         ".dvc/plots/curves_by_model.json": "dvc_plots/curves_by_model.json",
         ".dvc/plots/bars_by_model.json": "dvc_plots/bars_by_model.json"}
STAGES = "stages"  # every stages/*.py, under the same name in the package
PACKAGED = "project"
# what `vitbench init` replaces only with --force; the ignore files and .dvc/config are merged
OWNED = ("dvc.yaml", "params.yaml")
MERGED_LINES = (".gitignore", ".dvcignore", ".dvc/.gitignore")
SRC_DEP = re.compile(r"^\s*- src/\S+\s*$")
HEADER = """\
# A vitbench project's DAG, written by `vitbench init` from the dvc.yaml vitbench ships. Each stage
# lists the params sections it reads, so a params change re-runs only the stages it affects. The
# stages run the installed vitbench package, which DVC does not track: after upgrading vitbench,
# `dvc repro -f` re-runs every stage with the new code. Every output is `persist: true` and written
# atomically, so a refused or failed run leaves the previous outputs intact.
"""


class InitError(VitbenchError):
    """`vitbench init` cannot write the project: an existing file, or git / DVC missing."""


def layout(stage_scripts: list[str]) -> dict[str, str]:
    """Project path -> packaged name: FILES and the given stages/ scripts."""
    return {**FILES, **{f"{STAGES}/{name}": f"{STAGES}/{name}" for name in sorted(stage_scripts)}}


def source_layout(root: Path) -> dict[str, str]:
    """`layout` of the checkout at `root`."""
    return layout([p.name for p in (root / STAGES).glob("*.py")])


def checkout_root() -> Path | None:
    """The source checkout this vitbench runs from (an editable install), or None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "dvc.yaml").is_file() and (root / STAGES).is_dir() else None


def shipped_files() -> dict[str, str]:
    """Project path -> text: the packaged copies, or the source checkout's files."""
    packaged = resources.files("vitbench") / PACKAGED
    if packaged.is_dir():
        shipped = layout([e.name for e in (packaged / STAGES).iterdir() if e.name.endswith(".py")])
        return {rel: (packaged / name).read_text(encoding="utf-8") for rel, name in shipped.items()}
    root = checkout_root()
    if root is None:
        raise InitError(f"this vitbench install lacks its project files ({PACKAGED}/ in the "
                        "package, or a source checkout): reinstall vitbench")
    return {rel: (root / rel).read_text(encoding="utf-8") for rel in source_layout(root)}


def project_dvc_yaml(text: str) -> str:
    """The repo's dvc.yaml for a project without src/: its `src/...` deps dropped and its leading
    comment (about this repo's tests) replaced by HEADER."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    return HEADER + "".join(line for line in lines[start:] if not SRC_DEP.match(line))


def merge_lines(existing: str, extra: str) -> str:
    """An ignore file: `existing` (kept as it is) with the patterns of `extra` it lacks appended;
    all of `extra` when `existing` is empty."""
    if not existing.strip():
        return extra
    have = set(existing.splitlines())
    missing = [line for line in extra.splitlines()
               if line.strip() and not line.startswith("#") and line not in have]
    if not missing:
        return existing
    sep = "" if existing.endswith("\n") else "\n"
    return existing + sep + "# vitbench\n" + "".join(f"{line}\n" for line in missing)


def init_project(dest: Path, force: bool = False, echo: Callable[[str], None] = print) -> None:
    """Make `dest` (new or existing; git-initialised when it is not in a git work tree) a vitbench
    project: dvc.yaml, params.yaml, stages/, the ignore files, the .dvc/config settings and the
    offline `dvc plots show` template, committed when the repository has no commit yet (dvclive
    records runs against one). An existing dvc.yaml, params.yaml or different stage script is
    replaced only with `force`; nothing is written when one is in the way."""
    files = shipped_files()
    files["dvc.yaml"] = project_dvc_yaml(files["dvc.yaml"])
    if dest.exists() and not dest.is_dir():
        raise InitError(f"{dest} exists and is not a folder")
    replaced = [rel for rel, text in files.items()
                if (rel in OWNED or rel.startswith(f"{STAGES}/")) and (dest / rel).is_file()
                and (dest / rel).read_text(encoding="utf-8") != text]
    if replaced and not force:
        raise InitError(f"{dest} already has {', '.join(replaced)}: `vitbench init` would overwrite "
                        "them; move them away, or pass --force to replace them")
    first_commit = _needs_first_commit(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _ensure_dvc_repo(dest, echo)
    for rel, text in files.items():
        if rel == ".dvc/config":
            continue
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        path.write_text(merge_lines(old, text) if rel in MERGED_LINES else text, encoding="utf-8")
    template = _merge_dvc_config(dest, files[".dvc/config"], echo)
    echo(f"wrote {', '.join(sorted(files))} in {dest}"
         + (f" (replaced {', '.join(replaced)})" if replaced else ""))
    written = sorted([*files, *([template] if template else [])])
    if first_commit:
        _run(["git", "add", "--", *written], dest, "git")
        _run(["git", "commit", "-q", "-m", "vitbench init: dvc.yaml, params.yaml, stages/", "--",
              *written], dest, "git")
        echo("committed them: the repository's first commit (dvclive records runs against one)")
    else:
        echo("commit them when ready: git add " + " ".join(written) + " && git commit")


def _needs_first_commit(dest: Path) -> bool:
    """True when `dest` is in no git repository or in one without a commit; then git must know
    who commits (checked before anything is written)."""
    if shutil.which("git") is None:
        raise InitError("git not found: vitbench needs git (DVC and dvclive record runs in it); "
                        "install git")
    anchor = next(p for p in (dest.absolute(), *dest.absolute().parents) if p.is_dir())
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=anchor,
                          capture_output=True, text=True)
    if head.returncode == 0:
        return False
    for ident in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        if subprocess.run(["git", "var", ident], cwd=anchor, capture_output=True).returncode != 0:
            raise InitError("git does not know who commits (`git var " + ident + "` failed): set "
                            "`git config --global user.name NAME` and `git config --global "
                            "user.email EMAIL`; `vitbench init` makes the new repository's first "
                            "commit, which dvclive needs")
    return True


def _run(args: list[str], cwd: Path, what: str) -> str:
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise InitError(f"{args[0]} not found: vitbench needs {what}; install it") from None
    if proc.returncode != 0:
        raise InitError(f"`{' '.join(args)}` failed in {cwd}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _ensure_dvc_repo(dest: Path, echo: Callable[[str], None]) -> None:
    """`git init` when `dest` is in no git work tree; `dvc init` (--subdir below a git repo's top)
    when it has no .dvc/."""
    inside = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=dest, capture_output=True,
                            text=True)
    if inside.returncode != 0:
        _run(["git", "init", "-q"], dest, "git")
        echo(f"initialised a git repository in {dest}")
        top = dest.resolve()
    else:
        top = Path(inside.stdout.strip()).resolve()
    if (dest / ".dvc").is_dir():
        return
    subdir = ["--subdir"] if top != dest.resolve() else []
    _run([sys.executable, "-m", "dvc", "init", "-q", *subdir], dest, "DVC")
    echo(f"initialised DVC in {dest}" + (f" (a subfolder of the git repository {top})" if subdir else ""))


def _merge_dvc_config(dest: Path, shipped: str, echo: Callable[[str], None]) -> str | None:
    """Set the shipped .dvc/config keys the project's config lacks (its own values win), and write
    the offline plots template it names when that file is missing; returns the project path of
    the template it wrote (committed like the other files: `dvc plots show` needs it in every
    clone), or None."""
    from dvc.repo import Repo

    wanted = _ini_sections(shipped)
    with Repo(str(dest)) as repo, repo.config.edit("repo") as conf:
        for section, values in wanted.items():
            current = conf.setdefault(section, {})
            for key, value in values.items():
                current.setdefault(key, value)
    template = _ini_sections((dest / ".dvc" / "config").read_text()).get("plots", {}).get("html_template")
    path = dest / ".dvc" / template if template else None
    if path is None or path.is_file():
        return None
    from vitbench.plots.offline import write_html_template

    write_html_template(path)
    echo(f"wrote {path}: `dvc plots show` draws offline")
    return path.relative_to(dest).as_posix() if path.is_relative_to(dest) else None


def _ini_sections(text: str) -> dict[str, dict[str, str]]:
    """`[section]` / `key = value` lines of a DVC config file (no remotes with quoted names needed)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1].strip(), {})
        elif "=" in stripped and current is not None and not stripped.startswith(("#", ";")):
            key, value = stripped.split("=", 1)
            current[key.strip()] = value.strip()
    return sections
