"""Which pyramid level a pooled box comes from: detectron2's canonical rule in mmdet's terms.

detectron2's ``ROIPooler`` (used by the DSIG and GID releases) pools a box of size
``s = sqrt(w * h)`` from level ``floor(4 + log2(s / 224))`` (P4 for a 224 px box), clamped to the
pyramid. mmdet's ``SingleRoIExtractor`` pools it from index ``floor(log2(s / finest_scale))``
of its ``featmap_strides``. On a pyramid whose first level is P_k (stride 2^k) the two agree for
``finest_scale = 224 * 2^k / 16 = 14 * stride_0``: 56 when the first level is P2 (mmdet's
default, the R-CNN pyramid P2-P5) and **112** when it is P3 (RetinaNet's P3-P7), where mmdet's
default 56 pools every box below 224 px one level too coarse.
"""
from __future__ import annotations

from typing import Optional, Sequence

#: detectron2's canonical box size (px) and level: a box of 224 px is pooled from P4.
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4


def canonical_finest_scale(featmap_strides: Sequence[float]) -> int:
    """The ``SingleRoIExtractor.finest_scale`` that reproduces the canonical rule on a pyramid
    with these strides (first level P_k has stride 2^k): ``14 * strides[0]``.

    Args:
        featmap_strides: strides of the pooled levels, finest first (e.g. [8, 16, 32, 64, 128]).

    Returns:
        112 for a P3-first pyramid, 56 for a P2-first one.
    """
    if not featmap_strides:
        raise ValueError('canonical_finest_scale needs at least one feature-map stride')
    first = featmap_strides[0]
    first = first[0] if isinstance(first, (tuple, list)) else first
    return int(round(CANONICAL_BOX_SIZE * float(first) / 2 ** CANONICAL_LEVEL))


def resolve_finest_scale(finest_scale: Optional[int], featmap_strides: Sequence[float],
                         owner: str) -> int:
    """``finest_scale`` if given (a positive int), else :func:`canonical_finest_scale`."""
    if finest_scale is None:
        return canonical_finest_scale(featmap_strides)
    if int(finest_scale) <= 0:
        raise ValueError(f'{owner}: finest_scale must be a positive number of pixels (None = '
                         f'the release\'s canonical rule), got {finest_scale!r}')
    return int(finest_scale)
