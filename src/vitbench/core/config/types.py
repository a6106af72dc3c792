"""The strict scalar types of params.yaml and the `section` decorator of its dataclasses.

Strict: an integer key takes no "5" and no 5.0, a boolean no 1 or "yes"; a number takes an integer
and the YAML 1.2 spelling `1e-5` (a string to PyYAML). No section has defaults: params.yaml holds
every value. Every section is frozen and refuses unknown keys and non-finite numbers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass as pydantic_dataclass

_YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _yaml12_float(value: Any) -> Any:
    """`1e-5` is a float in YAML 1.2 (DVC, ruamel) but a string to PyYAML: read it as one."""
    return float(value) if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()) else value


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), BeforeValidator(_yaml12_float)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Fraction = Annotated[Float, Field(ge=0.0, lt=1.0)]                  # 0 <= x < 1
Epochs = Union[Annotated[Int, Field(ge=1)], None]                   # a stage's own; null = train.epochs
Pretrained = Union[Bool, Literal["auto"]]
CacheMode = Literal["auto", "memory", "disk", "none"]  # train.cache (data/pipeline.py)

# The decorator of every params.yaml section: a frozen pydantic dataclass, validated on creation
section = pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
