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


def paint_box_mask_overwrite(boxes: Tensor, feat_hw: Sequence[int], stride: Sequence[float],
                             values: Tensor) -> Tensor:
    """Paint boxes onto one image's grid the way the Global-Knowledge release does.

    Box ``k`` covers rows ``int(y1/sy) .. min(int(y2/sy), H) - 1`` and columns
    ``int(x1/sx) .. min(int(x2/sx), W) - 1`` (``int`` truncates; the end is exclusive, so a box
    ending inside a cell does not cover it). Boxes are painted in input order and a later box
    overwrites earlier values. A box whose row or column range is empty ("degenerate") sets only
    the cell ``(int(y1/sy), int(x1/sx))`` (clamped to the grid) to the maximum of that cell's
    current value and its own value. Negative values are painted as they are.

    Computed at once: a cell takes the value of the last covering box, then the maximum with
    the degenerate boxes that come after that box, which equals painting box by box.

    Args:
        boxes: (N, 4) boxes ``x1, y1, x2, y2`` in input-image pixels, in painting order.
        feat_hw: (H, W) of the feature map.
        stride: (sy, sx) input pixels per feature cell.
        values: (N,) value painted by each box.

    Returns:
        (H, W) float tensor on ``boxes.device``, 0 where nothing was painted.
    """
    h, w = int(feat_hw[0]), int(feat_hw[1])
    mask = boxes.new_zeros((h, w), dtype=torch.float32)
    n = int(boxes.shape[0])
    if n == 0:
        return mask
    boxes = boxes.detach().float()
    vals = values.detach().float().to(boxes.device)
    sy, sx = float(stride[0]), float(stride[1])
    x1, x2 = torch.trunc(boxes[:, 0] / sx), torch.trunc(boxes[:, 2] / sx).clamp(max=w)
    y1, y2 = torch.trunc(boxes[:, 1] / sy), torch.trunc(boxes[:, 3] / sy).clamp(max=h)
    degenerate = (x2 <= x1) | (y2 <= y1)
    ys = torch.arange(h, device=boxes.device, dtype=torch.float32)
    xs = torch.arange(w, device=boxes.device, dtype=torch.float32)
    inside = (((ys[None, :] >= y1[:, None]) & (ys[None, :] < y2[:, None]))[:, :, None]
              & ((xs[None, :] >= x1[:, None]) & (xs[None, :] < x2[:, None]))[:, None, :]
              & ~degenerate[:, None, None])  # (N, H, W)
    order = torch.arange(n, device=boxes.device)
    last = torch.where(inside, order[:, None, None], order.new_full((), -1)).amax(0)  # (H, W)
    out = torch.where(last >= 0, vals[last.clamp(min=0)], mask)
    if bool(degenerate.any()):
        k = degenerate.nonzero(as_tuple=True)[0]
        cy = y1[k].clamp(0, h - 1).long()
        cx = x1[k].clamp(0, w - 1).long()
        after = k > last[cy, cx]  # painted after the last box that overwrote the cell
        cells = (cy * w + cx)[after]
        late = out.new_full((h * w, ), float('-inf')).scatter_reduce(
            0, cells, vals[k][after], reduce='amax')
        out = torch.maximum(out.flatten(), late).view(h, w)
    return out


def paint_inclusive_cells(y1: Tensor, y2: Tensor, x1: Tensor, x2: Tensor,
                          feat_hw: Sequence[int], values: Tensor) -> Tensor:
    """Paint integer cell ranges, both ends **inclusive**, onto one (H, W) grid.

    Box ``k`` covers rows ``y1[k] .. y2[k]`` and columns ``x1[k] .. x2[k]``, cut to the grid
    (an end past the grid stops at its edge; a start below 0 starts at 0). Where boxes overlap,
    the cell takes the largest value. This is the cell rule of FGD's released masks
    (:func:`mmkd.models.losses.fgd.fgd_masks_released` computes the ranges).

    Args:
        y1, y2, x1, x2: (N,) integer-valued (any dtype) first and last row / column of each box.
        feat_hw: (H, W) of the grid.
        values: (N,) value painted by each box.

    Returns:
        (H, W) float32 tensor on ``values.device``, 0 where no box covers a cell.
    """
    h, w = int(feat_hw[0]), int(feat_hw[1])
    mask = values.new_zeros((h, w), dtype=torch.float32)
    if values.numel() == 0:
        return mask
    ys = torch.arange(h, device=values.device, dtype=torch.float32)
    xs = torch.arange(w, device=values.device, dtype=torch.float32)
    y1, y2, x1, x2 = (v.detach().float().to(values.device) for v in (y1, y2, x1, x2))
    inside = (((ys[None, :] >= y1[:, None]) & (ys[None, :] <= y2[:, None]))[:, :, None]
              & ((xs[None, :] >= x1[:, None]) & (xs[None, :] <= x2[:, None]))[:, None, :])
    painted = torch.where(inside, values.detach().float()[:, None, None],
                          mask.new_tensor(float('-inf')))
    return torch.where(inside.any(0), painted.max(dim=0).values, mask)
