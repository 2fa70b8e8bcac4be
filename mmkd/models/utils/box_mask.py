"""Paint per-box values onto feature-map grids (foreground masks for feature imitation)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def paint_box_mask(boxes: Tensor, feat_hw: Sequence[int], stride: Sequence[float],
                   values: Optional[Tensor] = None) -> Tensor:
    """Paint boxes onto one image's feature grid.

    A box covers the cells ``rows floor(y1/sy) .. ceil(y2/sy) - 1`` and likewise for columns,
    i.e. every cell the box overlaps; a degenerate (zero-size) box still covers the one cell that
    contains it. Where boxes overlap, the cell takes the largest value.

    Args:
        boxes: (N, 4) boxes ``x1, y1, x2, y2`` in input-image pixels.
        feat_hw: (H, W) of the feature map.
        stride: (sy, sx) input pixels per feature cell.
        values: (N,) value painted by each box; 1 for every box when None.

    Returns:
        (H, W) float tensor on ``boxes.device``, 0 where no box covers a cell.
    """
    h, w = int(feat_hw[0]), int(feat_hw[1])
    mask = boxes.new_zeros((h, w), dtype=torch.float32)
    if boxes.numel() == 0:
        return mask
    boxes = boxes.detach().float()
    sy, sx = float(stride[0]), float(stride[1])
    x1 = (boxes[:, 0] / sx).floor().clamp(0, w - 1)
    y1 = (boxes[:, 1] / sy).floor().clamp(0, h - 1)
    x2 = torch.maximum((boxes[:, 2] / sx).ceil().clamp(max=w), x1 + 1)
    y2 = torch.maximum((boxes[:, 3] / sy).ceil().clamp(max=h), y1 + 1)
    ys = torch.arange(h, device=boxes.device, dtype=torch.float32)
    xs = torch.arange(w, device=boxes.device, dtype=torch.float32)
    inside_y = (ys[None, :] >= y1[:, None]) & (ys[None, :] < y2[:, None])  # (N, H)
    inside_x = (xs[None, :] >= x1[:, None]) & (xs[None, :] < x2[:, None])  # (N, W)
    inside = inside_y[:, :, None] & inside_x[:, None, :]  # (N, H, W)
    vals = (values.detach().float() if values is not None
            else boxes.new_ones(boxes.shape[0], dtype=torch.float32))
    if values is None:
        return inside.any(0).float()
    painted = torch.where(inside, vals[:, None, None], vals.new_tensor(float('-inf')))
    covered = inside.any(0)
    return torch.where(covered, painted.max(dim=0).values, mask)


def paint_batch_masks(batch_boxes: Sequence[Tensor], feat: Tensor, input_hw: Sequence[int],
                      batch_values: Optional[Sequence[Tensor]] = None) -> Tensor:
    """Paint each image's boxes onto the grid of ``feat``.

    Args:
        batch_boxes: B tensors of shape (N_i, 4), input-image pixels.
        feat: (B, C, H, W) feature map; only its shape and device are used.
        input_hw: (H_in, W_in) padded batch input size; the stride is ``H_in / H``.
        batch_values: optional B tensors of shape (N_i,).

    Returns:
        (B, H, W) float mask.
    """
    h, w = feat.shape[-2:]
    stride = (input_hw[0] / h, input_hw[1] / w)
    masks = [paint_box_mask(b.to(feat.device), (h, w), stride,
                            None if batch_values is None else batch_values[i].to(feat.device))
             for i, b in enumerate(batch_boxes)]
    return torch.stack(masks) if masks else feat.new_zeros((0, h, w))
