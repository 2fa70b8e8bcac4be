"""Data sets for mmkd: the synthetic shapes generator (numpy, OpenCV and pycocotools)."""
from .synthetic import SYNTHETIC_CLASSES, generate_synthetic_coco

__all__ = ["SYNTHETIC_CLASSES", "generate_synthetic_coco"]
