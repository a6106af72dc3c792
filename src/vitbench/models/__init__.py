"""Models: one package per family, each declaring itself (`cnn`, `vit`, `vit_ft`; see `family`),
the registry that collects them, models on disk (`store`, `keras_file`) and pretrained weights
(`weights`). May import core and plots; never data stages' code above the pipeline, train,
evaluate, report or experiments.

- `vitbench.models.registry`: the families and model ids, found from the family packages.
- `vitbench.models.store`: `build_model`, `save_model`, `load_model` (models/<id>/ on disk), and
  the record-level lookups `display_name`, `set_backbone_trainable`, `attention_weights`.
- `vitbench.models.weights`: pretrained weights (`pretrained: auto|true|false`, the Keras cache,
  downloads), re-exported here.

Importing this package, the registry or a family's declaration starts no TensorFlow (Keras comes
with `store`, the builders and the layers): the CLI's experiment commands and argument errors stay
quick.
"""

from __future__ import annotations

from vitbench.models import registry
from vitbench.models.weights import (REACH_TIMEOUT, WeightsFileError, cached_download,
                                     check_reachable, keras_home, resolve_pretrained)

__all__ = ["cached_download", "check_reachable", "keras_home", "registry", "resolve_pretrained",
           "REACH_TIMEOUT", "WeightsFileError"]
