"""Accuracy and speed benchmark of the distillation methods on the built-in synthetic data.

``suite``: which methods and presets exist; ``runs``: planning, caching, resuming and running
the training / test subprocesses; ``report``: aggregation, markdown, charts; ``speed``: per-step
cost of each method against the plain student.
"""
from .suite import METHODS, PRESETS, MethodSpec, resolve_methods

__all__ = ['METHODS', 'PRESETS', 'MethodSpec', 'resolve_methods']
