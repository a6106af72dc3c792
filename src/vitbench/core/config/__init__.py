"""The typed params.yaml: one pydantic dataclass per section, loaded and validated once.

params.yaml is the only source of values: no field here has a default, so a key missing from the
file is an error that names it, and code that builds params without a file of its own (tests,
benchmarks) starts from this source tree's params.yaml (`params_with`). Types are strict (no
"5" for 5, no 1 for true), unknown keys are refused, floats are finite, ranges are `Field`
constraints and cross-field rules `model_validator`s. `load_params()` raises `ConfigError` naming
the key, the value and what is allowed (`vitbench.core.config.errors`) before a stage touches an output.
The strict types are in `vitbench.core.config.types`, the data sections in `vitbench.core.config.data`.

The model sections (cnn, vit, vit_ft) are declared by their families (`vitbench.models.<family>`),
not here: `Params` below holds the sections every stage shares, and `params_type(sections)` the
same plus the model sections a caller names. A stage validates only what it reads, so the data
stages import no model code; `vitbench.models.registry.load_params` validates every section.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from collections.abc import Mapping
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from vitbench.core.config.data import (  # noqa: F401 (re-exported: config.Split etc.)
    ARCHIVE_SUFFIXES, Augment, AugmentOnline, Clean, Dataset, Split, Synthetic)
from vitbench.core.config.errors import config_error
from vitbench.core.config.types import (
    Bool, CacheMode, Float, Fraction, Int, Pretrained, section)
from vitbench.core.errors import ConfigError

PARAMS_FILE = "params.yaml"
PHASES = ("transfer", "finetune", "scratch")   # a model family's training phases, in order
SOURCE_PARAMS = Path(__file__).resolve().parents[4] / PARAMS_FILE  # this source tree's params.yaml
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"   # one package per model family


@section
class Train:
    epochs: Annotated[Int, Field(ge=1)]
    batch_size: Annotated[Int, Field(ge=1, le=4096)]
    patience: Annotated[Int, Field(ge=0)]
    min_steps: Union[Annotated[Int, Field(ge=1)], None]  # optimizer steps a phase runs at least
    mixed_precision: Pretrained
    deterministic: Bool     # TensorFlow op determinism: one seed, the same metrics
    cache: CacheMode

    def for_stage(self, section: Any) -> Train:
        """This Train with `epochs` replaced by the stage section's own `epochs` when set (the
        per-stage budget of cnn, vit, vit_ft); `train.epochs` otherwise."""
        own = getattr(section, "epochs", None)
        return self if own is None else dataclasses.replace(self, epochs=own)


@section
class PhaseRecipe:
    """One training phase's recipe: peak learning rate, decoupled weight decay (0 = Adam, else
    AdamW), warm-up fraction (0 = constant lr, else linear warm-up then cosine to 0) and label
    smoothing of the cross-entropy."""

    lr: Annotated[Float, Field(gt=0.0, le=1.0)]
    weight_decay: Annotated[Float, Field(ge=0.0, le=1.0)]
    warmup: Fraction
    label_smoothing: Fraction


@section
class Evaluate:
    batch_size: Annotated[Int, Field(ge=1, le=4096)]
    attention_samples: Annotated[Int, Field(ge=0, le=64)]
    robustness: Bool        # accuracy under 5 corruptions x 3 severities


@section
class Compare:
    samples: Annotated[Int, Field(ge=1, le=100)]


@section
class Params:
    """The sections every stage shares; `params_type` adds model sections after `train`."""

    seed: Annotated[Int, Field(ge=0, le=2**32 - 1)]
    dataset: Dataset
    clean: Clean
    split: Split
    augment: Augment
    augment_online: AugmentOnline
    train: Train
    evaluate: Evaluate
    compare: Compare


ModelSections = tuple[tuple[str, type], ...]   # (params.yaml section, its dataclass), in file order


@functools.cache
def params_type(sections: ModelSections = ()) -> type:
    """`Params` with the model `sections` inserted after `train`, as params.yaml orders them."""
    if not sections:
        return Params
    fields = [(f.name, f.type) for f in dataclasses.fields(Params)]
    at = [name for name, _ in fields].index("train") + 1
    fields[at:at] = list(sections)
    return section(type("Params", (), {"__annotations__": dict(fields), "__module__": __name__,
                                       "__doc__": Params.__doc__}))


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as parsed YAML (not validated); ConfigError when it is missing, empty, not
    UTF-8 or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("params file", str(path), "an existing params.yaml")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError("params file", str(path), f"UTF-8 text: byte {exc.start} (line {line}) "
                          f"is 0x{data[exc.start]:02x}, not UTF-8; save the file as UTF-8"
                          ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("params file", str(path), f"valid YAML ({exc})") from exc
    if raw is None:
        raise ConfigError("params file", str(path),
                          "the sections seed, dataset, clean, ...: the file is empty "
                          "(restore it with `git checkout params.yaml`)")
    return raw


def load_params(path: str | Path = PARAMS_FILE, sections: ModelSections = (),
                complete: bool = False) -> Any:
    """Read, type-check and validate params.yaml (the shared sections and the model `sections`);
    raise ConfigError naming every bad key. `complete`: the sections are all there are, so any
    other top-level key is unknown; else the model sections this caller does not read are left
    unread (`model_section_names`)."""
    return params_from_dict(read_params(path), sections, complete)


def params_from_dict(raw: dict[str, Any], sections: ModelSections = (),
                     complete: bool = False) -> Any:
    """Validated params from a whole params.yaml as a plain dict (as parsed from YAML)."""
    root = params_type(sections)
    if not complete and isinstance(raw, Mapping):   # the model sections this caller does not read
        unread = model_section_names() - {f.name for f in dataclasses.fields(root)}
        raw = {key: value for key, value in raw.items() if key not in unread}
    try:
        return TypeAdapter(root).validate_python(raw)
    except ValidationError as exc:
        raise config_error(exc, root, raw) from exc


def model_section_names() -> set[str]:
    """The params sections of the model families: one per package under vitbench/models/, listed
    (not imported: a stage that reads no model section runs no model code). Any other unknown
    top-level key is refused by every stage, so a misspelt section never passes."""
    return {p.name for p in MODELS_DIR.iterdir() if (p / "__init__.py").is_file()}


def params_with(changes: dict[str, Any] | None = None, base: str | Path = SOURCE_PARAMS,
                sections: ModelSections = (), complete: bool = False) -> Any:
    """`base` (this source tree's params.yaml: the defaults) with `changes` (params.yaml
    sections) merged in key by key, validated as a stage validates params.yaml."""
    return params_from_dict(merge(read_params(base), changes or {}), sections, complete)


def section_with(name: str, **changes: Any) -> Any:
    """Shared section `name` of `params_with({name: changes})`: e.g. section_with("split", val=0.2)."""
    return getattr(params_with({name: changes}), name)


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `changes` merged in, mapping by mapping (other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_dict(obj: Any) -> Any:
    """Params (or a section) back to plain YAML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
