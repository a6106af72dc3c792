"""vitbench: CNN or Vision Transformer? A reproducible DVC pipeline that answers it for a folder of images."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

KERAS_LAYERS = "vitbench.models.keras_file"   # its register_layers: every layer a model.keras holds


def register_layers_with_keras() -> None:
    """Make `keras.saving.load_model` find vitbench's layers once `import vitbench` ran: now if
    Keras is imported already, else right after Keras is imported (so `import vitbench` itself
    stays as quick as it was; TensorFlow starts only with Keras)."""
    if "keras" in sys.modules:
        _import_layers()
    elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())


def _import_layers() -> None:
    try:
        importlib.import_module(KERAS_LAYERS).register_layers()
    except ImportError as exc:   # a broken install must not break `import keras` for the caller
        logging.getLogger(__name__).warning("vitbench's Keras layers are not registered (%s): "
                                            "models/<id>/model.keras will not load", exc)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of the top-level `keras` package so that vitbench's
    layers are registered as soon as Keras has been imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        # stays in sys.meta_path until Keras is imported: a mere probe (importlib.util.find_spec,
        # as TensorFlow does) loads nothing
        if name != "keras" or "keras" in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterKeras)]
        _import_layers()


register_layers_with_keras()
