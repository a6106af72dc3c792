"""Many DVC experiments: the queue client, seeds, sweeps, cross-validation, presets and their summaries. May import any layer below."""
