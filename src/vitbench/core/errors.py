"""The errors a user can cause. A stage turns them into one clear line and a non-zero exit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LIST_LIMIT = 10  # names shown in one error line before "and N more"


class VitbenchError(Exception):
    """An error caused by input, parameters or the environment, not by a bug."""


class ConfigError(VitbenchError):
    """A bad value in params.yaml: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:200] + "...'"
        super().__init__(f"params.yaml: {key} = {shown} is not allowed; expected {allowed}")


class MissingKeyError(ConfigError):
    """A key params.yaml lacks: params.yaml holds every value (vitbench has no defaults of its own)."""

    def __init__(self, key: str, allowed: str) -> None:
        self.key, self.value, self.allowed = key, None, allowed
        VitbenchError.__init__(self, f"params.yaml: {key} is missing; expected {allowed} (every "
                               "key has its value in params.yaml: copy it from vitbench's)")


class DataError(VitbenchError):
    """A dataset problem: a missing file, a broken archive, too few images in a class."""


class FetchError(DataError):
    """A download or extraction failed; the previous output is left untouched."""


def short_list(items: Iterable[Any], limit: int = LIST_LIMIT, sep: str = ", ") -> str:
    """`a, b, c and 190 more`: a list capped for one readable error or log line."""
    items = [str(i) for i in items]
    if len(items) <= limit:
        return sep.join(items)
    return f"{sep.join(items[:limit])} and {len(items) - limit} more"
