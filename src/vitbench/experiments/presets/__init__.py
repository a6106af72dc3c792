"""The two original studies as presets: params overrides applied with DVC's own `-S` machinery.

A preset is a small YAML file of params.yaml sections. It never replaces params.yaml: it becomes
`-S key=value` overrides, either for `dvc exp run` (an experiment you can diff and discard) or
applied in place to params.yaml (comments kept). So params.yaml stays the single, hand-editable
source of truth and `dvc repro` works exactly as before.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vitbench.models.registry import load_params
from vitbench.core.errors import ConfigError

log = logging.getLogger(__name__)


def available() -> list[str]:
    """Names of the presets shipped with vitbench."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("vitbench.experiments.presets").iterdir()
                  if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """A shipped preset by name, or any preset YAML file by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    elif name in available():
        text = resources.files("vitbench.experiments.presets").joinpath(f"{name}.yaml").read_text()
    else:
        raise ConfigError("preset", name, f"one of {', '.join(available())} or a YAML file")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("preset", name, "a mapping of params.yaml sections")
    return data


def overrides(preset: dict[str, Any]) -> list[str]:
    """`key=value` overrides (dotted keys, YAML flow values) for `dvc exp run -S`."""
    out: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            value = yaml.safe_dump(node, default_flow_style=True, width=10_000).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip().replace(", ", ",")
            out.append(f"{prefix}={value}")

    walk("", preset)
    return out


def apply(name: str, params_path: str | Path = "params.yaml") -> list[str]:
    """Write a preset into params.yaml in place (comments kept) and validate the result."""
    from dvc.utils.hydra import apply_overrides

    flags = overrides(load_preset(name))
    params_path = Path(params_path)
    backup = params_path.read_text()
    apply_overrides(str(params_path), flags)
    try:
        load_params(params_path)
    except ConfigError as exc:
        if exc.key != "dataset.source":
            params_path.write_text(backup)
            raise
        log.warning("%s - create it (or set dataset.source) before `dvc repro`", exc)
    return flags


def check_merged(flags: list[str], params_path: str | Path = "params.yaml") -> None:
    """Refuse `flags` unless params.yaml with them applied (by DVC's own `-S` code, on a copy) is
    a valid params.yaml whose folder or archive source exists: before `dvc exp run` writes them
    into the workspace's params.yaml."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    params_path = Path(params_path)
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / params_path.name
        shutil.copyfile(params_path, merged)
        try:
            apply_overrides(str(merged), flags)
        except DvcException as exc:
            raise ConfigError("preset", " ".join(flags),
                              f"overrides DVC can apply ({exc.__cause__ or exc})") from None
        dataset = load_params(merged).dataset
    if dataset.kind in ("folder", "archive"):
        source = Path(dataset.source).expanduser()
        if not (source if source.is_absolute() else params_path.parent / source).exists():
            raise ConfigError("dataset.source", dataset.source,
                              f"an existing {dataset.kind}: create it (the preset's comments say "
                              "what goes there) or point dataset.source elsewhere")


def dvc_exp_run_args(name: str, *, queue: bool = False, exp_name: str | None = None) -> list[str]:
    """The `dvc exp run` command line that runs a preset as a named experiment."""
    args = ["dvc", "exp", "run", "-n", exp_name or Path(name).stem.replace("_", "-")]
    if queue:
        args.append("--queue")
    for flag in overrides(load_preset(name)):
        args += ["-S", flag]
    return args


def run(name: str, *, queue: bool = False, exp_name: str | None = None, root: str | Path = ".") -> int:
    """Run (or queue) a preset as a DVC experiment in the project at `root`; returns dvc's exit
    code. The merged params are checked first (`check_merged`), and params.yaml is restored byte
    for byte when the run fails (DVC leaves a failed run's values in it)."""
    params_path = Path(root) / "params.yaml"
    args = dvc_exp_run_args(name, queue=queue, exp_name=exp_name)
    check_merged(overrides(load_preset(name)), params_path)
    before = params_path.read_bytes()
    log.info("running: %s", " ".join(args))
    code = 1
    try:
        code = subprocess.call(args, cwd=root)
    finally:
        if code != 0 and params_path.read_bytes() != before:
            params_path.write_bytes(before)
            log.warning("the run failed: params.yaml is restored as it was before it")
    return code
