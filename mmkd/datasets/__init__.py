"""Data sets for mmkd (lightweight: importing this package pulls in no heavy deps)."""
from .synthetic import SYNTHETIC_CLASSES, generate_synthetic_coco

__all__ = ["SYNTHETIC_CLASSES", "generate_synthetic_coco"]
