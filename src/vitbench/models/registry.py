"""The model families, collected: every "which kind of model" question is a lookup here.

Each family declares itself in its own package (`vitbench.models.<name>`, see
`vitbench.models.family`) with `FAMILY = register(Family(...))`. The registry holds no table of its
own: `family(name)` imports that one package when first asked, so a stage imports only the family
it runs (its dvc.yaml deps stay its own), and `families()` imports every family package under
`vitbench/models/` for the callers that need them all (the CLI, predict, the full params check).
The contract's model ids, each family's params section, display names and `identity` are read
from the declarations.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from vitbench.core import config
from vitbench.core.errors import ConfigError
from vitbench.models.family import PHASE_LABELS, Family, ModelSpec

_DECLARED: dict[str, Family] = {}
PACKAGE_DIR = Path(__file__).resolve().parent


def register(family: Family) -> Family:
    """Record `family` (called by its package's `__init__`); returns it, for `FAMILY = register(...)`."""
    if family.name in _DECLARED and _DECLARED[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is declared twice")
    clash = {m.id for m in family.models} & {m.id for f in _DECLARED.values()
                                             if f.name != family.name for m in f.models}
    if clash:
        raise ValueError(f"model ids {sorted(clash)} of family {family.name!r} are taken")
    _DECLARED[family.name] = family
    return family


def family_names() -> tuple[str, ...]:
    """The family packages under vitbench/models/ (each holds an `__init__` declaring FAMILY),
    found without importing them, and any family registered otherwise, in name order."""
    packages = {info.name for info in pkgutil.iter_modules([str(PACKAGE_DIR)]) if info.ispkg}
    return tuple(sorted(packages | set(_DECLARED)))


def family(name: str) -> Family:
    """The family called `name` (its package imported now if it was not), or a ValueError
    naming the known ones."""
    if name not in _DECLARED and name in family_names():
        importlib.import_module(f"vitbench.models.{name}")
    try:
        return _DECLARED[name]
    except KeyError:
        raise ValueError(f"family = {name!r} is not one of {', '.join(family_names())}") from None


def families() -> dict[str, Family]:
    """Every family, in name order (imports all the family packages)."""
    return {name: family(name) for name in family_names()}


def models() -> dict[str, ModelSpec]:
    """The contract's model ids, family by family, each in training order."""
    return {m.id: m for f in families().values() for m in f.models}


def model_ids() -> tuple[str, ...]:
    """The model ids (dvc.yaml's evaluate foreach keys, the `--model` choices)."""
    return tuple(models())


def model_spec(model_id: str) -> ModelSpec:
    """The spec of a contract model id, or a ConfigError naming the known ones."""
    specs = {m.id: m for f in _DECLARED.values() for m in f.models}
    if model_id not in specs:
        specs = models()
    try:
        return specs[model_id]
    except KeyError:
        raise ConfigError("model id", model_id, f"one of {', '.join(specs)}") from None


def family_of(model_id: str) -> Family:
    """The family that trains `model_id`."""
    return family(model_spec(model_id).family)


def kind(model_id: str) -> str:
    """CNN or ViT: the side of the comparison the model id's family is on."""
    return family_of(model_id).kind


def identity(model_id: str) -> dict[str, Any]:
    """What evaluate records about the model itself (metrics/<id>_detail.json, read by compare,
    the report and the experiment summaries): its family, kind (CNN or ViT) and whether it is
    meant to start from pretrained weights, and the phase that trained it (its place in tables)."""
    spec = model_spec(model_id)
    return {"family": spec.family, "phase": spec.phase, "kind": kind(model_id),
            "meant_pretrained": spec.meant_pretrained}


def display_name(model_id: str, family_name: str, build: dict[str, Any]) -> str:
    """"MobileNetV2 (fine-tuned)", "ViT-B/32 (transfer)", "ViT from scratch (SPT+LSA)"."""
    owner = family(family_name)
    base = owner.base_name(build)
    if len(set(owner.phases.values())) < 2:   # one phase: nothing to tell apart
        return base
    return f"{base} ({PHASE_LABELS[model_spec(model_id).phase]})"


# --- the whole params.yaml: the shared sections and every family's ------------------------------

def model_sections() -> config.ModelSections:
    """(section, dataclass) of every family, in name order."""
    return tuple(s for f in families().values() for s in f.params)


def load_params(path: str | Path = config.PARAMS_FILE) -> Any:
    """params.yaml validated whole: every section, an unknown one refused (ConfigError)."""
    return config.load_params(path, model_sections(), complete=True)


def params_from_dict(raw: dict[str, Any]) -> Any:
    """A whole params.yaml as a plain dict, validated like `load_params`."""
    return config.params_from_dict(raw, model_sections(), complete=True)


def params_with(changes: dict[str, Any] | None = None, base: str | Path = config.SOURCE_PARAMS) -> Any:
    """This source tree's params.yaml with `changes` merged in, validated whole."""
    return config.params_with(changes, base, model_sections(), complete=True)


def section_with(name: str, **changes: Any) -> Any:
    """Section `name` (shared or a family's) of `params_with({name: changes})`."""
    return getattr(params_with({name: changes}), name)


def section_names() -> tuple[str, ...]:
    """Every top-level key of params.yaml, in file order."""
    return tuple(f.name for f in dataclasses.fields(config.params_type(model_sections())))
