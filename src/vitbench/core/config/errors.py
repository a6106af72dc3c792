"""A pydantic ValidationError of params.yaml as one `ConfigError`: the key path, the value and what
is allowed, worded from the field's type and constraints (or its `description`).

Several errors are reported at once (`ConfigErrors`, one line per key), in this order: unknown
keys first (per section, with the closest known key: "did you mean epochs?"), then bad values,
then missing keys; in the config's order within each. A cross-field check reports itself through
`reject` with its own key and words (pydantic runs it once its section's fields are valid).
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, NoReturn, Union

import annotated_types as at
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from vitbench.core.errors import ConfigError, MissingKeyError, VitbenchError, short_list

CUSTOM = "vitbench"                       # the error type of `reject`
UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden", "invalid_key")
MISSING = ("missing", "missing_argument")
NOT_A_MAPPING = ("dataclass_type", "dataclass_args_type", "model_type", "dict_type")
BOUNDS = ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="), (at.Lt, "lt", "<"), (at.Le, "le", "<="))


def reject(key: str, value: Any, allowed: str) -> NoReturn:
    """Fail a cross-field check (inside a validator): `key` = `value` is not allowed."""
    raise PydanticCustomError(CUSTOM, "{allowed}", {"key": key, "value": value, "allowed": allowed})


class ConfigErrors(ConfigError):
    """Several bad keys of one params.yaml, all named at once; `key`, `value` and `allowed` are
    the first one's (the most telling), `errors` holds each."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        self.key, self.value, self.allowed, self.errors = first.key, first.value, first.allowed, errors
        lines = [str(e).removeprefix("params.yaml: ") for e in errors]
        VitbenchError.__init__(self, f"params.yaml has {len(errors)} errors:\n"
                               + "\n".join(f"  - {line}" for line in lines))


def config_error(exc: ValidationError, root: type, raw: Any) -> ConfigError:
    """The ConfigError of `exc` (validating `raw` as `root`): one per key, the most telling first;
    a ConfigErrors when there are several keys."""
    rank = {**dict.fromkeys(UNKNOWN, 0), **dict.fromkeys(MISSING, 2)}
    found: dict[str, ConfigError] = {}
    for err in sorted(exc.errors(include_url=False), key=lambda e: rank.get(e["type"], 1)):
        error = _one_error(err, root, raw)
        found.setdefault(error.key, error)   # a union's members fail once each: the first counts
    errors = list(found.values())
    return errors[0] if len(errors) == 1 else ConfigErrors(errors)


def _one_error(err: Any, root: type, raw: Any) -> ConfigError:
    """The ConfigError of one pydantic error."""
    if err["type"] == CUSTOM:
        ctx = err["ctx"]
        return ConfigError(ctx["key"], ctx["value"], ctx["allowed"])
    loc = tuple(err["loc"])
    if err["type"] in UNKNOWN:
        return _unknown(root, raw, loc[:-1])
    key, tp, field = _walk(root, loc)
    if err["type"] in MISSING:
        return MissingKeyError(key, _words(tp, field))
    if err["type"] in NOT_A_MAPPING:
        return ConfigError(key or "params", err["input"], f"a mapping of {_base(tp).__name__} keys")
    if err["type"] == "finite_number":
        return ConfigError(key, err["input"], "a finite number (not .nan or .inf)")
    if any(err["type"].startswith(prefix) for prefix in ("greater_than", "less_than")):
        return ConfigError(key, err["input"], _range_words(tp, field))
    return ConfigError(key, err["input"], _words(tp, field))


def _unknown(root: type, raw: Any, parent: tuple) -> ConfigError:
    """Today's unknown-key message: the first unknown key (sorted), its value, the known keys, the
    closest one, and how many unknown keys there are."""
    prefix, tp, _ = _walk(root, parent)
    node = raw
    for part in parent:
        node = node[part]
    names = sorted(getattr(_base(tp), "__pydantic_fields__", {}))
    unknown = sorted(set(node) - set(names), key=str)   # keys of mixed types (`1: a`) sort too
    first = unknown[0]
    key = f"{prefix}.{first}" if prefix else str(first)
    more = f" ({len(unknown)} unknown keys: {short_list(unknown)})" if len(unknown) > 1 else ""
    close = difflib.get_close_matches(str(first), names, n=1, cutoff=0.6)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(key, node[first], f"a known key here{guess}: {', '.join(names)}{more}")


def _walk(root: type, loc: tuple) -> tuple[str, Any, FieldInfo | None]:
    """The dotted key of `loc`, the type found there and its field (None at the top and for a
    list item)."""
    key, tp, field = "", root, None
    for part in loc:
        base = _base(tp)
        if isinstance(part, int) and typing.get_origin(base) is tuple:
            key, tp, field = f"{key}[{part}]", typing.get_args(base)[0], None
            continue
        fields = getattr(base, "__pydantic_fields__", {})
        if part not in fields:
            break                                # a union member's tag
        field = fields[part]
        key, tp = (f"{key}.{part}" if key else str(part)), field.rebuild_annotation()
    return key, tp, field


def _strip(tp: Any) -> Any:
    """`tp` without Annotated."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _base(tp: Any) -> Any:
    """`tp` without Annotated and without None (`int | None` -> int)."""
    tp = _strip(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _base(args[0])
    return tp


def _words(tp: Any, field: FieldInfo | None) -> str:
    """What a value of type `tp` may be, in words (a field's description wins)."""
    if field is not None and field.description:
        return field.description
    if _base(tp) is not _strip(tp):     # `int | None`
        return f"{_words(_base(tp), None)} or null"
    tp = _base(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_words(a, None) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_base(typing.get_args(tp)[0]).__name__}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, f"a mapping of {getattr(tp, '__name__', tp)} keys")


def _range_words(tp: Any, field: FieldInfo | None) -> str:
    """`an integer >= 1 and <= 4096`, from the bounds on `tp` (a field's description wins)."""
    if field is not None and field.description:
        return field.description
    kind = "an integer" if _base(tp) is int else "a number"
    bounds = [f"{sign} {getattr(m, name)}" for m in _constraints(tp)
              for cls, name, sign in BOUNDS if isinstance(m, cls)]
    return f"{kind} {' and '.join(bounds)}"


def _constraints(tp: Any) -> list[Any]:
    """The annotated_types bounds anywhere in `tp` (Annotated, nested FieldInfo, int | None)."""
    found: list[Any] = []
    if typing.get_origin(tp) is Annotated:
        inner, *meta = typing.get_args(tp)
        for m in meta:
            found += _constraints_of(m)
        return _constraints(inner) + found
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            found += _constraints(arg)
    return found


def _constraints_of(meta: Any) -> list[Any]:
    if isinstance(meta, FieldInfo):
        return [m for inner in meta.metadata for m in _constraints_of(inner)]
    return [meta] if isinstance(meta, (at.Gt, at.Ge, at.Lt, at.Le)) else []
