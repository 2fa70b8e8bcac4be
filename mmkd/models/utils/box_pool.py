"""Pool one descriptor per box from a feature map with mmcv's fused RoIAlign."""
from __future__ import annotations

from typing import List, Sequence

import torch
from mmcv.ops import roi_align
from torch import Tensor


def pool_box_descriptors(feat: Tensor, rois: Tensor, stride: float) -> Tensor:
    """Average the feature map over each box: a (N, C) descriptor per RoI.

    Uses mmcv's RoIAlign with a 1x1 output and adaptive sampling (``sampling_ratio=0``: about
    one bilinear sample per feature cell in each direction), i.e. the mean of the map over the
    box, computed by the fused op on the CPU or GPU.

    Args:
        feat: (B, C, H, W) feature map.
        rois: (N, 5) ``[batch_idx, x1, y1, x2, y2]`` in input-image pixels.
        stride: input pixels per feature cell.

    Returns:
        (N, C) descriptors (float32), differentiable w.r.t. ``feat``.
    """
    if rois.numel() == 0:
        return feat.new_zeros((0, feat.shape[1]), dtype=torch.float32)
    out = roi_align(feat.float(), rois.float(), (1, 1), 1.0 / float(stride), 0, 'avg', True)
    return out.flatten(1)


def pool_levels(feats: Sequence[Tensor], rois: Tensor, input_h: int) -> List[Tensor]:
    """:func:`pool_box_descriptors` of the same RoIs on every level of a feature pyramid.

    Args:
        feats: L tensors (B, C, H_l, W_l).
        rois: (N, 5) in input-image pixels.
        input_h: height of the padded batch input; level l's stride is ``input_h / H_l``.

    Returns:
        L tensors (N, C).
    """
    return [pool_box_descriptors(f, rois, input_h / f.shape[-2]) for f in feats]


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Per-image (N_i, 4) boxes -> (sum N_i, 5) rois with the image index in column 0."""
    parts = [torch.cat([b.new_full((b.shape[0], 1), i), b[:, :4]], 1)
             for i, b in enumerate(boxes)]
    return torch.cat(parts) if parts else torch.zeros((0, 5))
