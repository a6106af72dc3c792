"""The training phases, the resumable loop, optimizers, the feature cache, distribution. May import core, plots, data and models."""
