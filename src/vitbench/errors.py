"""The errors a user can cause. A stage turns them into one clear line and a non-zero exit."""

from __future__ import annotations

from typing import Any


class VitbenchError(Exception):
    """An error caused by input, parameters or the environment, not by a bug."""


class ConfigError(VitbenchError):
    """A bad value in params.yaml: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


class DataError(VitbenchError):
    """A dataset problem: a missing file, a broken archive, too few images in a class."""


class FetchError(DataError):
    """A download or extraction failed; the previous output is left untouched."""
