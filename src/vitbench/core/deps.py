"""What a stage reads, derived from the code: the vitbench modules it imports and its params sections.

One static walk (no import, so no TensorFlow start-up) over the AST of a stage script and of every
vitbench module it reaches: `import vitbench.x`, `from vitbench.x import y` (y a module or not) and
relative imports, at module level or inside functions, and `later("vitbench.x:f")` (a family
declaration's reference to its Keras code, `vitbench.models.family.later`); `if TYPE_CHECKING:`
imports are skipped (they never run). Importing `vitbench.a.b` runs `vitbench/__init__.py` and
`vitbench/a/__init__.py` too, so package `__init__` files count.

Used by tests/test_dvc_deps.py (dvc.yaml must list exactly these files and params sections) and by
the training backups' fingerprint (`vitbench.train.phases.fingerprint`), so both have one idea of a
stage's code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "vitbench"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
PARAMS_ARG = "params"
LATER = "later"   # vitbench.models.family.later("module:function"): an import on first call


def module_path(name: str) -> Path | None:
    """The file of vitbench module `name` (a package's `__init__.py`), or None if there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    """`vitbench.a.b` -> [vitbench, vitbench.a, vitbench.a.b]: importing it runs all three."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node, except the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _later_module(node: ast.AST) -> str | None:
    """The module of a `later("module:function")` call with a literal target, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == LATER \
            and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value.partition(":")[0]
    return None


def imported_modules(file: Path, module: str | None = None) -> set[str]:
    """The vitbench modules `file` (module `module`, for relative imports) imports directly."""
    tree = ast.parse(file.read_text(), str(file))
    package = module if module and file.name == "__init__.py" else (module or "").rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif (later_target := _later_module(node)) is not None:
            names = [later_target]
        else:
            continue
        for name in names:
            if module_path(name) is not None:
                found.update(n for n in _with_parents(name) if module_path(n) is not None)
    return found


def closure(roots: Iterable[str]) -> set[str]:
    """`roots` and every vitbench module they import, transitively."""
    seen: set[str] = set()
    todo = [n for root in roots for n in _with_parents(root)]
    while todo:
        name = todo.pop()
        path = module_path(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        todo.extend(imported_modules(path, name) - seen)
    return seen


def module_files(module: str) -> list[Path]:
    """The files of vitbench module `module` and of every vitbench module it imports, sorted."""
    return sorted(p for p in (module_path(n) for n in closure([module])) if p is not None)


def script_files(script: Path) -> list[Path]:
    """The vitbench files a script (e.g. stages/train_cnn.py) runs, directly or not, sorted."""
    mods = closure(imported_modules(script))
    return sorted(p for p in (module_path(n) for n in mods) if p is not None)


def params_sections(script: Path) -> tuple[set[str], list[int]]:
    """(the `params.<section>` a stage script reads, lines where it uses `params` as a whole).

    A stage function that hands the whole Params on cannot be checked: its callee could read any
    section, so those lines are returned for the caller to report.
    """
    tree = ast.parse(script.read_text(), str(script))
    sections: set[str] = set()
    attribute_bases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == PARAMS_ARG:
            sections.add(node.attr)
            attribute_bases.add(id(node.value))
    whole = sorted(node.lineno for node in ast.walk(tree)
                   if isinstance(node, ast.Name) and node.id == PARAMS_ARG
                   and isinstance(node.ctx, ast.Load) and id(node) not in attribute_bases)
    return sections, whole


def relative(path: Path) -> str:
    """`path` relative to the folder holding the vitbench package, e.g. `vitbench/train/phases.py`."""
    return path.resolve().relative_to(PACKAGE_DIR.parent).as_posix()
