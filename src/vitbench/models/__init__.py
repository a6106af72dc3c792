"""Models: the family registry, models on disk, and pretrained weights.

- `vitbench.models.registry`: the table of model families (cnn, vit_scratch, vit_ft) and model
  ids; every "which kind of model" question is a lookup there.
- `vitbench.models.store`: `build_model`, `save_model`, `load_model` (models/<id>/ on disk), and
  the record-level lookups `display_name`, `set_backbone_trainable`, `attention_weights`.
- `vitbench.models.weights`: pretrained weights (`pretrained: auto|true|false`, the Keras cache,
  downloads), re-exported here.
"""

from __future__ import annotations

import logging

from vitbench.models import registry
from vitbench.models.weights import (REACH_TIMEOUT, WeightsFileError, cached_download,
                                     check_reachable, keras_home, resolve_pretrained)
from vitbench.models.store import (RECORD_FILE, WEIGHTS_FILE, attention_weights, build_model,
                                   count_params, display_name, load_model, save_model,
                                   set_backbone_trainable)

__all__ = ["FAMILIES", "RECORD_FILE", "WEIGHTS_FILE", "attention_weights", "build_model",
           "cached_download", "check_reachable", "count_params", "display_name", "keras_home",
           "load_model", "registry", "resolve_pretrained", "save_model", "set_backbone_trainable",
           "REACH_TIMEOUT", "WeightsFileError"]

log = logging.getLogger(__name__)

FAMILIES = tuple(registry.FAMILIES)
