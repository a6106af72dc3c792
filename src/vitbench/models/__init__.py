"""Models: one package per family, each declaring itself (`cnn`, `vit`, `vit_ft`; see `family`),
the registry that collects them, models on disk (`store`, `keras_file`) and pretrained weights
(`weights`). May import core and plots; never data stages' code above the pipeline, train,
evaluate, report or experiments.

- `vitbench.models.registry`: the families and model ids, found from the family packages.
- `vitbench.models.store`: `build_model`, `save_model`, `load_model` (models/<id>/ on disk), and
  the record-level lookups `display_name`, `set_backbone_trainable`, `attention_weights`.
- `vitbench.models.weights`: pretrained weights (`pretrained: auto|true|false`, the Keras cache,
  downloads), re-exported here.
"""

from __future__ import annotations

from vitbench.models import registry
from vitbench.models.weights import (REACH_TIMEOUT, WeightsFileError, cached_download,
                                     check_reachable, keras_home, resolve_pretrained)
from vitbench.models.store import (RECORD_FILE, WEIGHTS_FILE, attention_weights, build_model,
                                   count_params, display_name, load_model, save_model,
                                   set_backbone_trainable)

__all__ = ["RECORD_FILE", "WEIGHTS_FILE", "attention_weights", "build_model",
           "cached_download", "check_reachable", "count_params", "display_name", "keras_home",
           "load_model", "registry", "resolve_pretrained", "save_model", "set_backbone_trainable",
           "REACH_TIMEOUT", "WeightsFileError"]
