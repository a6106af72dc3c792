"""vitbench: CNN or Vision Transformer? A reproducible DVC pipeline that answers it for a folder of images."""

__version__ = "0.1.0"
