"""Accuracy and speed benchmark of the distillation methods, on the built-in synthetic data or
on any COCO-format data set with any teacher/student pair.

``data``: the data (an mmdet dataset config or a COCO folder); ``presets``: every method as a
preset applied to a pair; ``compose``: run configs and the pair's checks; ``plan``: the runs of
a benchmark; ``runs``: caching, resuming and running the training / test subprocesses;
``report``: aggregation, markdown, charts; ``suite``: the built-in data's pair and presets;
``speed``: per-step cost of each method against the plain student.
"""
from .plan import BenchmarkSpec, build_plan, expand_methods
from .presets import METHOD_PRESETS, MethodPlan, MethodPreset, PairInfo, Skip
from .suite import METHODS, PRESETS, MethodSpec, resolve_methods

__all__ = ['BenchmarkSpec', 'METHODS', 'METHOD_PRESETS', 'MethodPlan', 'MethodPreset',
           'MethodSpec', 'PRESETS', 'PairInfo', 'Skip', 'build_plan', 'expand_methods',
           'resolve_methods']
