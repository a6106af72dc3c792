"""One trained model on the test split: metrics, calibration, robustness, saliency, its figures and model card; predict. May import core, plots, data and models (never train)."""
