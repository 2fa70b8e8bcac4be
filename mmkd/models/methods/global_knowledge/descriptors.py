"""Box descriptors of the Global-Knowledge method: one feature vector per box and FPN level.

Two conventions (``RobustDistillingModule(descriptor=...)``):

* ``'int_crop'`` (the released code): the mean of the map over the integer cells
  ``int(|y1| / sy) .. int(|y2| / sy)`` x ``int(|x1| / sx) .. int(|x2| / sx)``, both ends
  inclusive (so one row and column more than the box covers), clipped to the map.
* ``'roi_align'`` (mmkd's earlier choice): mmcv RoIAlign with a 1x1 output and adaptive
  sampling, i.e. the bilinear mean over the box itself.

Both are computed by mmcv's fused RoIAlign and are differentiable with respect to the map.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.ops import roi_align
from torch import Tensor

from ...utils.box_pool import pool_box_descriptors

DESCRIPTORS = ('int_crop', 'roi_align')


def check_choice(option: str, value: str, valid: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``valid``; else raise naming the option and the choices."""
    if value not in valid:
        raise ValueError(f'{option}={value!r} is not valid; choose one of '
                         f'{", ".join(repr(v) for v in valid)}.')
    return value


def int_crop_cells(boxes: Tensor, feat_hw: Tuple[int, int],
                   stride_yx: Tuple[float, float]) -> Tensor:
    """The released integer crop of each box: (N, 4) inclusive cells ``x1, y1, x2, y2``.

    ``x1 = int(|x1| / sx)``, ``x2 = int(|x2| / sx)`` (and likewise in y), clipped to the map;
    a crop whose end falls before its start keeps its start cell.

    Args:
        boxes: (N, 4) boxes in input pixels.
        feat_hw: (H, W) of the map.
        stride_yx: (sy, sx) input pixels per cell.
    """
    h, w = int(feat_hw[0]), int(feat_hw[1])
    sy, sx = float(stride_yx[0]), float(stride_yx[1])
    b = boxes.detach().float().abs()
    x1 = torch.trunc(b[:, 0] / sx).clamp(0, w - 1)
    y1 = torch.trunc(b[:, 1] / sy).clamp(0, h - 1)
    x2 = torch.maximum(torch.trunc(b[:, 2] / sx).clamp(0, w - 1), x1)
    y2 = torch.maximum(torch.trunc(b[:, 3] / sy).clamp(0, h - 1), y1)
    return torch.stack([x1, y1, x2, y2], 1)


def int_crop_descriptors(feat: Tensor, rois: Tensor, stride_yx: Tuple[float, float]) -> Tensor:
    """Mean of ``feat`` over each RoI's released integer crop (see :func:`int_crop_cells`).

    The crop is pooled by RoIAlign in cell units (spatial scale 1, aligned, adaptive sampling):
    the box ``[x1, y1, x2 + 1, y2 + 1]`` samples exactly the centres of its cells, so the result
    is the plain average of those cells, and the gradient goes to them in equal parts.

    Args:
        feat: (B, C, H, W).
        rois: (N, 5) ``[batch_idx, x1, y1, x2, y2]`` in input pixels.
        stride_yx: (sy, sx).

    Returns:
        (N, C) float32 descriptors.
    """
    if rois.numel() == 0:
        return feat.new_zeros((0, feat.shape[1]), dtype=torch.float32)
    cells = int_crop_cells(rois[:, 1:], feat.shape[-2:], stride_yx)
    cell_rois = torch.cat([rois[:, :1].float(), cells[:, :2], cells[:, 2:] + 1], 1)
    out = roi_align(feat.float(), cell_rois.to(feat.device), (1, 1), 1.0, 0, 'avg', True)
    return out.flatten(1)


def level_strides(feat_shapes: Sequence[Sequence[int]], input_hw: Sequence[int],
                  strides: Optional[Sequence[float]] = None) -> List[Tuple[float, float]]:
    """Per level, the (sy, sx) stride: ``strides[l]`` on both axes when given, else the batch
    input size over the map size (``H_in / H_l``, ``W_in / W_l``).

    Args:
        feat_shapes: per level, the map's (..., H_l, W_l) shape.
    """
    if strides is not None:
        if len(strides) != len(feat_shapes):
            raise ValueError(f'strides has {len(strides)} entries for {len(feat_shapes)} FPN '
                             'levels; give one stride per level or None to infer them.')
        return [(float(s), float(s)) for s in strides]
    return [(input_hw[0] / int(hw[-2]), input_hw[1] / int(hw[-1])) for hw in feat_shapes]


def box_descriptors(feats: Sequence[Tensor], rois: Tensor, input_hw: Tuple[int, int],
                    mode: str = 'int_crop',
                    strides: Optional[Sequence[float]] = None) -> List[Tensor]:
    """One descriptor per RoI on every level of a feature pyramid.

    Args:
        feats: L maps (B, C, H_l, W_l).
        rois: (N, 5) in input pixels.
        input_hw: (H, W) of the padded batch input.
        mode: ``'int_crop'`` or ``'roi_align'`` (see the module docstring).
        strides: per-level stride in input pixels; None infers it from the map sizes
            (per axis for ``'int_crop'``; from the heights for ``'roi_align'``).

    Returns:
        L tensors (N, C).
    """
    check_choice('descriptor', mode, DESCRIPTORS)
    strides_yx = level_strides([f.shape for f in feats], input_hw, strides)
    if mode == 'roi_align':
        return [pool_box_descriptors(f, rois, s[0]) for f, s in zip(feats, strides_yx)]
    return [int_crop_descriptors(f, rois, s) for f, s in zip(feats, strides_yx)]
